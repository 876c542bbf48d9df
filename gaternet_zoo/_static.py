"""Static export: a GaterNet whose gates are constant becomes its plain backbone, without the gater.

Over a calibration set every gate is always open, always closed or input-dependent (``GateStatistics.counts``). When
none of the gates a model keeps is input-dependent, the gater's output is the same vector for every calibration
image, and the gated backbone computes a fixed function: always-closed filters are pruned (as
:func:`~gaternet_zoo.prune_gaternet` does, ``round_to`` included), always-open gates multiply by 1 and go, and a kept
filter whose gate is always closed (one ``round_to`` added back) gets zero scale and shift in its norm, so it still
outputs 0. :func:`export_static` returns that backbone as a :class:`~gaternet_zoo.StaticBackbone`: no gater, no gate
slot, its logits equal to the GaterNet's (mask mode) on every input whose gates take those constant values, the
calibration set by construction. Where the gating plugin knows a block's shortcut, a pruned block adds its kept
channels into the shortcut at their indices (no zero map of the full width, no zeros added), and a block none of
whose filters acts runs as its shortcut alone (``dropped_branches``): its branch does not run at all.

Where gates are input-dependent the export is refused (:class:`InputDependentGatesError`), naming them, unless the
caller fixes them explicitly: ``input_dependent="open"`` keeps their filters always open, ``"majority"`` fixes each at
the state it took for most calibration images. Either changes what the model computes; its card says so, with
the number of gates fixed.

A gating plugin that cannot prune (the block plugins: ``timm_resnetv2``, ``timm_regnet``, ``timm_convnext``,
``timm_efficientnet``, ``timm_densenet``) still exports: no filter is removed (``round_to`` does not apply), a filter
whose gate is fixed closed is zeroed where its gate point says (``GatePoint.zero_at``: the scale and shift of the
norm after the gated conv, or the conv's own weights and bias, and a layer scale, where no norm comes before the
gate), and a branch with no acting filter is dropped where the plugin knows the block's shortcut. A filter the
plugin cannot zero exactly, in a branch that still runs, is refused (``PruningError``, naming the sites).
"""
from __future__ import annotations

import torch
from torch import nn

from ._prune import check_round_to, prune_gaternet, refuse_inner_gates
from .layers.pruning import PruningError
from .utils.gate_stats import GateStatistics, has_gates

__all__ = ['INPUT_DEPENDENT_CHOICES', 'InputDependentGatesError', 'export_static', 'gate_states']

#: What :func:`export_static` does with input-dependent gates: refuse (the default, the only exact choice), keep
#: them open, or fix each at its more frequent state over the calibration data.
INPUT_DEPENDENT_CHOICES = ('refuse', 'open', 'majority')

#: pretrained_cfg fields of the GaterNet that describe its inputs, kept by its static export. The tag, dataset,
#: metrics and checksums are not: they describe published weights, which a model built without them carries too.
_KEPT_CFG_KEYS = ('input_size', 'test_input_size', 'min_input_size', 'fixed_input_size', 'interpolation', 'crop_pct',
                  'test_crop_pct', 'crop_mode', 'mean', 'std', 'label_names', 'pool_size', 'license', 'paper_name',
                  'paper_ids')


class InputDependentGatesError(PruningError):
    """A static export was refused: some gates the model keeps open for some calibration images and not others."""


def gate_states(model: nn.Module, stats: GateStatistics) -> dict[str, torch.Tensor]:
    """Per gate over the data ``stats`` accumulated: ``always_on``, ``always_off`` and ``input_dependent`` masks.

    One mask entry per gated filter. With branch gates a filter acts when its gate and its block's branch gate are
    both open, so the states are those of the effective gates (a filter of an always-closed branch is always off;
    without filter gates, ``filter_gates=False``, every filter of a site takes its branch gate's state).
    Gates of filters a pruned model no longer computes count as neither input-dependent nor always on: their
    filters output 0 whatever the gater says.
    """
    if not has_gates(model):
        raise PruningError(f'{type(model).__name__} has no gates; a static export starts from a GaterNet')
    fired = stats._require()
    if fired.numel() != model.gate_size:
        raise ValueError(f'the gate statistics cover {fired.numel()} gates, the model has {model.gate_size}')
    fired = stats.effective_firing_rate * stats.count
    kept = torch.ones(fired.numel(), dtype=torch.bool)
    for site in model.gate_sites:
        if site.name in (model.pruned_filters or {}):
            kept[site.offset:site.offset + site.num_channels] = False
            kept[[site.offset + i for i in model.pruned_filters[site.name]]] = True
    on, off = (fired.round() == stats.count) & kept, (fired.round() == 0) | ~kept
    return dict(always_on=on, always_off=off, input_dependent=~on & ~off)


def _refusal(model: nn.Module, stats: GateStatistics, dependent: torch.Tensor) -> InputDependentGatesError:
    per_site = [(s.name, int(dependent[s.offset:s.offset + s.num_channels].sum())) for s in model.gate_sites]
    per_site = [(name, n) for name, n in per_site if n]
    shown = ', '.join(f'{name} ({n})' for name, n in per_site[:12]) + (
        f', and {len(per_site) - 12} more sites' if len(per_site) > 12 else '')
    return InputDependentGatesError(
        f'{int(dependent.sum())} of the {dependent.numel()} filter gates are input-dependent over the calibration data '
        f'({stats.count} images: open for some, closed for others), at {len(per_site)} gate sites: {shown}. Their '
        'gates change from image to image, so no model without the gater computes what this GaterNet does. Keep '
        'the GaterNet (prune_gaternet / `gaternet-zoo prune` without --static removes the always-closed filters and '
        'keeps the gater), or fix those gates explicitly: input_dependent="open" (--input-dependent open) keeps their '
        'filters always open, "majority" fixes each at its more frequent state; both change what the model '
        'computes, so measure the exported model\'s accuracy before using it.')


def _zeroing_refusal(plugin: str, refused: list, closed: dict[str, list[int]],
                     pruned_filters: dict[str, list[int]]) -> PruningError:
    """The error for filters fixed closed that the plugin cannot make output 0 in a model without gates."""
    def filters(site) -> str:  # the site's own filter indices, not those of a pruned conv
        kept = pruned_filters.get(site.name, range(site.num_channels))
        own = [kept[j] for j in closed[site.name]]
        return f'{site.name} (filters {", ".join(map(str, own[:6]))}{", ..." if len(own) > 6 else ""})'

    shown = ', '.join(filters(site) for site, _ in refused[:6]) + (
        f' and {len(refused) - 6} more sites' if len(refused) > 6 else '')
    reasons = list(dict.fromkeys(str(error) for _, error in refused))  # distinct, in site order
    why = '; '.join(reasons[:2]) + (f'; and {len(reasons) - 2} other reasons' if len(reasons) > 2 else '')
    return PruningError(
        f'{sum(len(closed[s.name]) for s, _ in refused)} filters whose gates are fixed closed cannot be made to output '
        f'0 without their gates by gating plugin {plugin!r}, at {len(refused)} gate sites whose branches still run: '
        f'{shown}. Why: {why}. A static model would compute something else there, so none is exported. Keep the '
        'GaterNet (set_execution("skip") does not compute those filters), or give the plugin a way to zero them '
        '(GatePoint.zero_at, or GatingPlugin.zero_filters).')


@torch.no_grad()
def export_static(
        model: nn.Module,
        stats: GateStatistics,
        *,
        calibration: str = '',
        source: str = '',
        round_to: int | None = None,
        input_dependent: str = 'refuse',
) -> nn.Module:
    """The backbone of ``model`` with its constant gates folded away: a plain model without gater or gate slots.

    Args:
        model: A trained :class:`~gaternet_zoo.GaterNet`, pruned or not (left unchanged).
        stats: Its evaluation gate statistics over the calibration data (``GateStatistics.update`` on eval gates).
        calibration: Says which data that was (recorded in the export's ``pretrained_cfg`` and card).
        source: Names the GaterNet (``gaternet_resnet20.cifar10``, a folder, ...), recorded likewise; its
            architecture when empty.
        round_to: For a model not yet pruned: keep a multiple of this many filters per gate site (see
            :func:`~gaternet_zoo.prune_gaternet`; the extra filters are zeroed, so the logits do not change). 1 by
            default. A pruned model keeps its own pruning. A model whose gating plugin cannot prune keeps every
            filter, so only ``None`` or 1 apply to it.
        input_dependent: ``"refuse"`` (the default): raise :class:`InputDependentGatesError` if any gate the model
            keeps is input-dependent over ``stats``' data. ``"open"``: keep those filters always open;
            ``"majority"``: open those that opened for at least half of the images and remove the others. Both
            change what the model computes (recorded in the export's ``pretrained_cfg['static_export']``).

    Returns:
        A :class:`~gaternet_zoo.StaticBackbone` in eval mode whose logits equal ``model``'s (eval, mask mode) on
        every input whose gates take the constant values, with ``pretrained_cfg['static_export']`` describing the
        export. ``save_pretrained`` writes it in the Hub format; ``create_model("local-dir:...")`` loads it.

    Raises:
        InputDependentGatesError: Input-dependent gates and ``input_dependent="refuse"``; the message names them.
        PruningError: The gating plugin cannot prune (where it prunes at all: e.g. SE blocks of ``timm_resnet``) or
            zero the filters that need it, in a branch that still runs; the message names the sites and filters.
            Or the model's gates are inner ones (``gate_placement="inner"``).
        ValueError: A bad ``round_to`` or ``input_dependent``, one ``round_to`` for a model already pruned with
            another, or a ``round_to`` above 1 for a model whose gating plugin cannot prune.
    """
    from ._plugins import get_plugin
    from .models.static_backbone import StaticBackbone
    from .utils.gate_stats import GateStatistics as Stats

    if input_dependent not in INPUT_DEPENDENT_CHOICES:
        raise ValueError(f'input_dependent must be one of {INPUT_DEPENDENT_CHOICES}, got {input_dependent!r}')
    refuse_inner_gates(model, 'exported as a static backbone')
    if round_to is not None:
        check_round_to(round_to)
    states = gate_states(model, stats)
    dependent = states['input_dependent']
    if dependent.any() and input_dependent == 'refuse':
        raise _refusal(model, stats, dependent)
    rate = stats.effective_firing_rate
    fixed_open = states['always_on'] | (dependent if input_dependent == 'open' else dependent & (rate >= 0.5))

    plugin = get_plugin(model.plugin_name)
    # A plugin that cannot prune (the block plugins: timm_resnetv2, timm_regnet, timm_convnext, ...) still exports:
    # every filter stays, and the closed ones are zeroed in the weights below.
    prunes = plugin.overrides('prune_site')
    if getattr(model, 'pruned_filters', None):
        recorded = int(((getattr(model, 'pretrained_cfg', None) or {}).get('pruning') or {}).get('round_to', 1))
        if round_to is not None and round_to != recorded:
            raise ValueError(f'this model is already pruned (round_to={recorded}); export it as it is, or export the '
                             f'original GaterNet with round_to={round_to}')
        pruned, round_to = model, recorded
    elif not prunes:
        if round_to not in (None, 1):
            raise ValueError(
                f'round_to={round_to} does not apply to this model: its gating plugin {plugin.name!r} cannot prune, '
                'so the static export keeps every filter (the always-closed ones zeroed) and has no kept filters '
                'to round. Export it with round_to=None (without --round-to).')
        pruned, round_to = model, 1
    else:
        round_to = 1 if round_to is None else round_to
        # Gates fixed closed are pruned as always-closed ones are: statistics in which every gate is constant.
        fixed_fired = fixed_open.long() * stats.count
        # Branch gates are folded into the filters' gates above: in the fixed statistics every branch is open. (A
        # model without filter gates has only branch gates; the filters' fixed states are in effective_fired.)
        own = fixed_fired[:stats.num_filter_gates]
        branch_open = torch.full((model.gate_size - own.numel(),), stats.count, dtype=torch.long)
        fixed = Stats(model.gate_sites, count=stats.count, fired=torch.cat([own, branch_open]),
                      effective_fired=fixed_fired if branch_open.numel() else None)
        pruned = prune_gaternet(model, fixed, calibration=calibration, round_to=round_to)

    config = dict(getattr(model, '_hub_mixin_config', None) or {})
    backbone_args = {k: v for k, v in (config.get('backbone_args') or {}).items()
                     if k not in ('pretrained', 'pretrained_cfg', 'pretrained_cfg_overlay')}
    source_cfg = dict(getattr(model, 'pretrained_cfg', None) or {})
    cfg = {k: source_cfg[k] for k in _KEPT_CFG_KEYS if source_cfg.get(k) is not None}
    cfg['num_classes'] = model.num_classes
    if isinstance(source_cfg.get('classifier'), str) and source_cfg['classifier'].startswith('backbone.'):
        cfg['classifier'] = source_cfg['classifier']
    first = source_cfg.get('first_conv')
    first = [first] if isinstance(first, str) else list(first or [])
    if [c for c in first if c.startswith('backbone.')]:
        cfg['first_conv'] = [c for c in first if c.startswith('backbone.')][0]
    # Per site, the filters its conv keeps whose gate is fixed closed: they are zeroed in the weights below.
    closed = {}
    for site in model.gate_sites:
        kept = pruned.pruned_filters.get(site.name, range(site.num_channels))
        closed[site.name] = [j for j, f in enumerate(kept) if not fixed_open[site.offset + f]]
    # A branch none of whose kept filters acts adds 0 to its shortcut: where the plugin knows that shortcut, the
    # block runs as its shortcut alone rather than computing convs whose output is thrown away.
    dropped = [s.name for s in model.gate_sites
               if len(closed[s.name]) == len(pruned.pruned_filters.get(s.name, range(s.num_channels)))
               and plugin.has_shortcut(pruned.backbone.get_submodule(s.name))]
    static = StaticBackbone(
        backbone=model.backbone_name, num_classes=model.num_classes, in_chans=model.in_chans,
        plugin=model.plugin_name, backbone_args=backbone_args or None, drop_rate=config.get('drop_rate') or 0.0,
        global_pool=config.get('global_pool'), pruned_filters=pruned.pruned_filters or None,
        dropped_branches=dropped or None)
    static.pretrained_cfg = static.default_cfg = dict(cfg, architecture='static_backbone')
    reference = next(iter(model.parameters()))
    static.to(device=reference.device)
    static.backbone.load_state_dict(pruned.backbone.state_dict(), strict=True)

    zeroed, refused = 0, []
    for site in model.gate_sites:
        # A dropped branch's filters are zeroed too where the plugin can: its weights then say what the branch
        # computes, should a model be rebuilt without `dropped_branches` (which runs the branch) and given them.
        # Where it cannot, the export stays exact (the branch does not run), so only the other sites refuse.
        if closed[site.name]:
            try:
                plugin.zero_filters(static.backbone, site, torch.tensor(closed[site.name], dtype=torch.long))
                zeroed += len(closed[site.name])
            except PruningError as e:
                if site.name not in dropped:
                    refused.append((site, e))
    if refused:
        raise _zeroing_refusal(plugin.name, refused, closed, pruned.pruned_filters)
    removed = sum(s.num_channels - len(pruned.pruned_filters.get(s.name, range(s.num_channels)))
                  for s in model.gate_sites)
    counts = {k: int(v.sum()) for k, v in states.items()}
    static.pretrained_cfg['static_export'] = {
        'source': source or source_cfg.get('architecture') or type(model).__name__,
        'calibration': calibration, 'calibration_samples': stats.count,
        'gates': model.gate_size, 'filter_gates': int(getattr(model, 'num_filter_gates', dependent.numel())),
        'gates_always_on': counts['always_on'], 'gates_always_off': counts['always_off'],
        'gates_input_dependent': counts['input_dependent'], 'input_dependent': input_dependent,
        'input_dependent_opened': int((dependent & fixed_open).sum()), 'exact': not bool(dependent.any()),
        'filters_removed': removed, 'filters_zeroed': zeroed, 'sites_pruned': len(pruned.pruned_filters),
        'branches_dropped': len(dropped), 'round_to': int(round_to), 'plugin': plugin.name, 'plugin_prunes': prunes}
    return static.eval()

