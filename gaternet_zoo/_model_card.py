"""The model card, rendered from one template by huggingface_hub's ``ModelCard.from_template``.

Every figure in the card comes from the model's ``pretrained_cfg`` (measured by the recipe that trained or
evaluated it) or is computed here from the model itself (parameters, MACs); anything not measured is printed as
"not measured", never guessed.
"""
from __future__ import annotations

from typing import Any

from huggingface_hub import ModelCard, ModelCardData
from torch import nn

from .utils.gate_stats import has_gates

__all__ = ['render_model_card', 'MODEL_CARD_TEMPLATE', 'static_export_summary']

CITATION = """@inproceedings{chen2019gaternet,
  title     = {You Look Twice: GaterNet for Dynamic Filter Selection in CNNs},
  author    = {Chen, Zhourong and Li, Yang and Bengio, Samy and Si, Si},
  booktitle = {Proceedings of the IEEE/CVF Conference on Computer Vision and Pattern Recognition (CVPR)},
  year      = {2019}
}"""

MODEL_CARD_TEMPLATE = """---
{{ card_data }}
---

# {{ model_name }}

{{ description }}

## Model details

| | |
|---|---|
| Architecture | `{{ architecture }}` |
{%- for key, value in details %}
| {{ key }} | {{ value }} |
{%- endfor %}

## Usage

```python
import gaternet_zoo

model = gaternet_zoo.create_model("hf-hub:{{ repo_id }}").eval()
```

{%- if hub_entry %}

```python
import torch

model = torch.hub.load("gaternet-zoo/gaternet_zoo", "{{ hub_entry }}", pretrained=True, trust_repo=True)
```
{%- endif %}

```python
import gaternet_zoo  # registers the zoo's architectures with timm
import timm

model = timm.create_model("hf-hub:{{ repo_id }}", pretrained=True).eval()
```

Preprocessing: resize/crop to {{ input_size }}, normalise with mean {{ mean }} and std {{ std }}
(`timm.data.resolve_data_config(model=model)` gives the same).
{%- if gate_size %} For the gates of an image: `model.forward_gates(x)` ({{ gate_size }} per image, binary in
eval mode).{% endif %}

## Metrics

| metric | value |
|---|---|
{%- for key, value in metrics %}
| {{ key }} | {{ value }} |
{%- endfor %}

{{ metrics_note }}

## Training

{{ recipe }}

## License

Weights: `{{ license }}`. Code: Apache-2.0 (gaternet_zoo).

## Citation

```bibtex
{{ citation }}
```
"""


def _fmt(value: Any, pattern: str = '{}') -> str:
    return 'not measured' if value is None else pattern.format(value)


def static_export_summary(info: dict[str, Any]) -> str:
    """One sentence on what a static export did, from its ``pretrained_cfg['static_export']``."""
    text = (f'{info.get("gates")} gates fixed from {info.get("calibration_samples")} calibration images '
            f'({info.get("calibration") or "unrecorded data"}): {info.get("gates_always_on")} always open, '
            f'{info.get("gates_always_off")} always closed; ')
    if info.get('plugin_prunes') is False:  # absent from exports made before plugins that cannot prune exported
        text += (f'no filter removed (gating plugin {info.get("plugin")!r} cannot prune), '
                 f'{info.get("filters_zeroed")} kept at 0')
    else:
        text += (f'{info.get("filters_removed")} filters removed, {info.get("filters_zeroed")} kept at 0 '
                 f'(round_to={info.get("round_to")})')
    if info.get('branches_dropped'):  # absent from exports made before branches were dropped
        text += f'; {info["branches_dropped"]} residual branches dropped (their blocks run as their shortcut)'
    dependent = info.get('gates_input_dependent') or 0
    if dependent:
        text += (f'; {dependent} input-dependent gates fixed by input_dependent="{info.get("input_dependent")}" '
                 f'({info.get("input_dependent_opened")} open, the others closed), which changes what the model '
                 'computes')
    return text


def render_model_card(model: nn.Module, repo_id: str | None = None, **kwargs: Any) -> ModelCard:
    """Render the card of ``model`` from its ``pretrained_cfg`` and measured figures.

    Args:
        model: A zoo model (``GaterNet`` or plain backbone) with ``pretrained_cfg``.
        repo_id: Hub repository the card is for; defaults to ``gaternet-zoo/<architecture>.<tag>``.
        **kwargs: Ignored (accepted for ``ModelHubMixin.save_pretrained(model_card_kwargs=...)``).
    """
    from .utils.macs import count_params, gaternet_macs

    cfg = dict(getattr(model, 'pretrained_cfg', {}) or {})
    architecture = cfg.get('architecture') or type(model).__name__
    tag = cfg.get('tag')
    name = f'{architecture}.{tag}' if tag else architecture
    repo_id = repo_id or f'gaternet-zoo/{name}'
    metrics_cfg = dict(cfg.get('metrics') or {})
    gate_stats = dict(cfg.get('gate_stats') or {})
    dataset = cfg.get('dataset')
    is_gaternet = has_gates(model)

    details = [('Parameters', f'{count_params(model) / 1e6:.3f} M'),
               ('sha256 of model.safetensors', f'`{cfg.get("sha256") or "not recorded"}`')]
    metrics = [(f'top-1 on {dataset or "its dataset"} (%)', _fmt(metrics_cfg.get('top1'), '{:.2f}')),
               (f'top-5 on {dataset or "its dataset"} (%)', _fmt(metrics_cfg.get('top5'), '{:.2f}'))]
    if is_gaternet:
        macs = gaternet_macs(model)
        details += [
            ('Backbone', f'`{model.backbone_name}` ({count_params(model.backbone) / 1e6:.3f} M params)'),
            ('Gater', f'`{model.gater_name}` + FC bottleneck {model.gater.fc1.out_features} '
                      f'({count_params(model.gater) / 1e6:.3f} M params)'),
            ('Gates', f'{model.gate_size} over {len(model.gate_sites)} residual blocks' + (
                ' (branch gates only, one per residual branch: filter_gates=False, so every filter of an open '
                'branch is on and a closed gate skips its whole branch)' if not getattr(model, 'filter_gates', True)
                else f' ({model.num_filter_gates} filter gates and {model.num_branch_gates} branch gates, one per '
                'residual branch)' if getattr(model, 'num_branch_gates', 0) else '') + (
                ', on each branch\'s inner conv (gate_placement="inner": a closed gate removes a filter of that conv '
                'and an input channel of the next)' if getattr(model, 'gate_placement', 'last') == 'inner' else '')),
        ]
        metrics += [
            ('backbone MACs per image (dense)', f'{macs["backbone"] / 1e6:.2f} M'),
            ('gater MACs per image', f'{macs["gater"] / 1e6:.2f} M'),
            ('backbone MACs used given the gates', _fmt(metrics_cfg.get('backbone_macs_used'), '{:,}')),
            ('mean fraction of open gates', _fmt(gate_stats.get('mean_open_fraction'), '{:.4f}')),
            ('always-on / always-off / input-dependent gates',
             ' / '.join(_fmt(gate_stats.get(k)) for k in ('always_on', 'always_off', 'input_dependent'))),
        ]
    else:
        import torch

        from .utils.macs import count_macs

        was_training = model.training
        model.eval()
        total, _ = count_macs(model, torch.zeros(1, *cfg.get('input_size', (3, 32, 32))))
        model.train(was_training)
        metrics.append(('MACs per image', f'{total / 1e6:.2f} M'))
    latency = metrics_cfg.get('latency_ms')
    metrics.append(('latency (ms per batch)', 'not measured' if latency is None else
                    f'{latency:.2f} at batch {metrics_cfg.get("latency_batch_size")} on '
                    f'{cfg.get("hardware") or "unrecorded hardware"}'))
    for key, value in metrics_cfg.items():
        if key not in ('top1', 'top5', 'latency_ms', 'latency_batch_size', 'backbone_macs_used'):
            metrics.append((key, value))

    recipe = cfg.get('recipe') or 'No training recipe recorded for these weights.'
    if isinstance(recipe, dict):
        recipe = '\n'.join(f'- **{k}**: `{v}`' for k, v in recipe.items())
    gated = ('one input-dependent binary gate per residual branch (`filter_gates=False`: no filter gates; a closed '
             'gate makes its block its shortcut, and skip execution does not run the branch)'
             if not getattr(model, 'filter_gates', True) else
             'one input-dependent binary gate per filter of the last conv of each residual branch')
    description = cfg.get('description') or (
        f'A GaterNet (Chen et al., CVPR 2019): the `{getattr(model, "backbone_name", "")}` backbone with {gated}, '
        'produced by a separate gater network.' if is_gaternet else
        f'The plain `{architecture}` backbone, as a baseline for GaterNets.')

    pruning = cfg.get('pruning')
    if pruning:
        description += (
            f' **Pruned export**: {pruning.get("filters_removed")} of its {pruning.get("filters_gated")} gated filters '
            f'(in {pruning.get("sites_pruned")} blocks) are removed for real, the {pruning.get("rule")} '
            f'({pruning.get("calibration_samples")} images: {pruning.get("calibration") or "unrecorded data"}). Its '
            'outputs equal the gated model\'s wherever those gates stay closed, which holds on that data by '
            'construction; on other data a removed filter cannot open.')

    static_export = cfg.get('static_export')
    if static_export:
        description = (
            f'The `{getattr(model, "backbone_name", "")}` backbone of the GaterNet `{static_export.get("source")}`, '
            'exported without its gater (a static export): ' + static_export_summary(static_export) + '. '
            + ('Its outputs equal the GaterNet\'s on every input whose gates take those constant values, which holds '
               'on the calibration data by construction.' if static_export.get('exact') else
               'It is not the GaterNet\'s function: measure its accuracy before use.'))

    card_data = ModelCardData(
        library_name='gaternet_zoo', license=cfg.get('license') or 'apache-2.0',
        tags=['gaternet', 'dynamic-network', 'image-classification', 'timm', 'model_hub_mixin'],
        pipeline_tag='image-classification', datasets=[dataset] if dataset else None)
    # torch.hub has an entry per registered zoo model; a static export is rebuilt from its config.json only.
    hub_entry = None if static_export else architecture if architecture != 'gaternet' else 'gaternet_resnet20'
    return ModelCard.from_template(
        card_data, template_str=MODEL_CARD_TEMPLATE, model_name=name, description=description,
        architecture=architecture, details=details, repo_id=repo_id, hub_entry=hub_entry,
        input_size=tuple(cfg.get('input_size', ())), mean=tuple(cfg.get('mean', ())), std=tuple(cfg.get('std', ())),
        gate_size=getattr(model, 'gate_size', 0), metrics=metrics,
        metrics_note='Figures marked "not measured" were not measured for these weights.',
        recipe=recipe, license=cfg.get('license') or 'apache-2.0', citation=CITATION)
