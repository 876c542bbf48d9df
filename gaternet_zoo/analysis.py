"""Gate analysis figures, as in the GaterNet paper's analysis: how often each gate fires over an evaluation set.

:func:`analyze` evaluates a GaterNet on a data source and writes, with matplotlib's Agg backend:

* ``site_open_fraction.png``: mean open fraction of the gates of every gate site (block), as a bar chart;
* ``gate_firing_histogram.png``: histogram of each gate's firing rate (fraction of images for which it is open),
  with the always-off (rate 0) and always-on (rate 1) gates marked apart from the input-dependent ones;
* ``class_gate_heatmap.png``: class x gate mean gate activity, gate sites separated by lines;
* ``gate_stats.json``: the evaluation report, per-gate firing rates, per-site statistics and the class x gate
  matrix.
"""
from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ._constants import DEFAULT_DATA_SOURCE
from .evaluation import default_accelerator, evaluate_model, has_gates, model_from_name, write_json
from .utils.gate_stats import GateStatistics, site_gate_columns

__all__ = ['NoGatesError', 'analyze', 'plot_class_gate_heatmap', 'plot_firing_histogram', 'plot_site_open_fraction',
           'site_table', 'write_figures']

FIGURE_NAMES = dict(site='site_open_fraction.png', histogram='gate_firing_histogram.png',
                    heatmap='class_gate_heatmap.png', json='gate_stats.json')


class NoGatesError(ValueError):
    """The model has no gates (a plain backbone), so there is nothing to analyse."""


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use('Agg', force=True)
    import matplotlib.pyplot as plt

    return plt


def _check_gated(model: nn.Module, name: str) -> None:
    if not has_gates(model):
        arch = (getattr(model, 'pretrained_cfg', None) or {}).get('architecture', type(model).__name__)
        raise NoGatesError(
            f'{name} is a plain backbone ({arch}) without gates, so there are no gate statistics to analyse; '
            'use a GaterNet such as gaternet_resnet20 (`gaternet-zoo list`), or `gaternet-zoo eval` for accuracy.')


def site_table(stats: GateStatistics) -> list[dict[str, Any]]:
    """Per gate site: name, channels, open fraction and its always-on/always-off/input-dependent gate counts, and
    with branch gates the open fraction of the site's branch gate (``branch_open_fraction``).

    The gates of a site are its filter gates; a site without them (``filter_gates=False``) has its branch gate.
    """
    fired = stats._require()
    rows = []
    for site in stats.gate_sites:
        f = fired[site_gate_columns(site)]
        on, off = int((f == stats.count).sum()), int((f == 0).sum())
        row = dict(name=site.name, channels=site.num_channels,
                   open_fraction=(f.float() / stats.count).mean().item(), always_on=on, always_off=off,
                   input_dependent=f.numel() - on - off)
        if getattr(site, 'branch_offset', None) is not None:  # a model with branch gates: reported apart
            row['branch_open_fraction'] = fired[site.branch_offset].item() / stats.count
        rows.append(row)
    return rows


def plot_site_open_fraction(stats: GateStatistics, path: str | os.PathLike, title: str = '') -> Path:
    """Bar chart of the mean open fraction of every gate site, with the overall mean as a dashed line."""
    plt = _pyplot()
    rows = site_table(stats)
    names = [r['name'] for r in rows]
    fig, ax = plt.subplots(figsize=(max(6.0, 0.35 * len(rows) + 2.0), 4.0), dpi=120)
    ax.bar(range(len(rows)), [r['open_fraction'] for r in rows], color='tab:blue', edgecolor='black', linewidth=0.4)
    ax.axhline(stats.mean_open_fraction, color='tab:red', linestyle='--', linewidth=1.0,
               label=f'mean over all gates: {stats.mean_open_fraction:.2f}')
    ax.set_xticks(range(len(rows)))
    ax.set_xticklabels(names, rotation=60, ha='right', fontsize=7 if len(rows) > 20 else 8)
    ax.set_ylim(0.0, 1.0)
    ax.set_ylabel('open fraction of gates')
    ax.set_xlabel('gate site (block)')
    ax.set_title(title or f'Open gates per block ({stats.count:,} images)')
    ax.legend(loc='upper right', fontsize=8)
    ax.grid(axis='y', alpha=0.3)
    fig.tight_layout()
    return _save(fig, path)


def plot_firing_histogram(stats: GateStatistics, path: str | os.PathLike, bins: int = 20, title: str = '') -> Path:
    """Histogram of the gates' firing rates; always-off and always-on gates are drawn as separate bars at 0 and 1."""
    plt = _pyplot()
    rate = stats.firing_rate
    counts = stats.counts()
    middle = rate[(stats.fired > 0) & (stats.fired < stats.count)].tolist()
    width = 1.0 / bins
    fig, ax = plt.subplots(figsize=(7.0, 4.0), dpi=120)
    ax.hist(middle, bins=bins, range=(0.0, 1.0), color='tab:blue', edgecolor='black', linewidth=0.4,
            label=f'input-dependent: {counts["input_dependent"]:,}')
    ax.bar([-width], [counts['always_off']], width=width, color='tab:red', edgecolor='black', linewidth=0.4,
           label=f'always off (never fire): {counts["always_off"]:,}')
    ax.bar([1.0 + width], [counts['always_on']], width=width, color='tab:green', edgecolor='black', linewidth=0.4,
           label=f'always on (fire for every image): {counts["always_on"]:,}')
    ax.set_xlim(-2.0 * width, 1.0 + 2.0 * width)
    ax.set_xlabel(f'firing rate: fraction of the {stats.count:,} images for which a gate is open')
    ax.set_ylabel('number of gates')
    ax.set_title(title or f'How often each of the {stats.gate_size:,} gates fires')
    ax.legend(loc='upper center', fontsize=8)
    ax.grid(axis='y', alpha=0.3)
    fig.tight_layout()
    return _save(fig, path)


def plot_class_gate_heatmap(matrix: torch.Tensor, class_names: list[str] | tuple[str, ...],
                            gate_sites: tuple[Any, ...], path: str | os.PathLike, title: str = '') -> Path:
    """Heat map of the class x gate mean gate activity; vertical lines separate the gate sites (a dashed white one
    the branch gates, after the filter gates, of a model that has them)."""
    plt = _pyplot()
    data = matrix.float().numpy()
    fig, ax = plt.subplots(figsize=(10.0, max(3.0, 0.3 * data.shape[0] + 1.5)), dpi=120)
    image = ax.imshow(data, aspect='auto', interpolation='nearest', cmap='viridis', vmin=0.0, vmax=1.0)
    columns = [site_gate_columns(s) for s in gate_sites]  # a site without filter gates: its branch gate's column
    for cols in columns[1:]:
        ax.axvline(cols[0] - 0.5, color='red', linewidth=0.8)
    filters = sum(s.num_channels for s in gate_sites if getattr(s, 'filter_gates', True))
    if filters and any(getattr(s, 'branch_offset', None) is not None for s in gate_sites):  # the last columns
        ax.axvline(filters - 0.5, color='white', linewidth=1.5, linestyle='--')
    step = max(1, math.ceil(len(gate_sites) / 30))
    shown = gate_sites[::step]
    ax.set_xticks([(cols[0] + cols[-1]) / 2 for cols in columns[::step]])
    ax.set_xticklabels([s.name for s in shown], rotation=60, ha='right', fontsize=7)
    ax.set_yticks(range(data.shape[0]))
    ax.set_yticklabels(list(class_names)[:data.shape[0]], fontsize=7 if data.shape[0] > 20 else 8)
    ax.set_xlabel('gate (grouped by gate site; red lines separate the sites)')
    ax.set_ylabel('class')
    ax.set_title(title or 'Mean gate activity per class')
    fig.colorbar(image, ax=ax, label='mean gate activity', fraction=0.03, pad=0.01)
    fig.tight_layout()
    return _save(fig, path)


def _save(fig: Any, path: str | os.PathLike) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    _pyplot().close(fig)
    return path


def _nan_to_none(rows: list[list[float]]) -> list[list[float | None]]:
    return [[None if math.isnan(v) else v for v in row] for row in rows]


def write_figures(stats: GateStatistics, out_dir: str | os.PathLike, class_names: tuple[str, ...] | list[str],
                  report: dict[str, Any] | None = None) -> dict[str, Path]:
    """Write the three figures and ``gate_stats.json`` for accumulated statistics.

    Args:
        stats: Statistics accumulated with ``num_classes`` (for the heat map) and labels.
        out_dir: Output folder (created).
        class_names: Name of every class index of the data.
        report: Extra JSON fields (e.g. the evaluation report) stored under ``report``.

    Returns:
        ``{"site", "histogram", "heatmap", "json"}`` -> written path.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    matrix = stats.class_gate_matrix()[:len(class_names)]
    paths = dict(site=plot_site_open_fraction(stats, out / FIGURE_NAMES['site']),
                 histogram=plot_firing_histogram(stats, out / FIGURE_NAMES['histogram']),
                 heatmap=plot_class_gate_heatmap(matrix, class_names, stats.gate_sites, out / FIGURE_NAMES['heatmap']))
    payload = dict(report=report or {}, summary=stats.summary(), sites=site_table(stats),
                   firing_rate=stats.firing_rate.tolist(), class_names=list(class_names),
                   class_gate_matrix=_nan_to_none(matrix.tolist()),
                   gate_sites=[dict(name=s.name, conv=s.conv, channels=s.num_channels, offset=s.offset,
                                    **({'branch_gate': s.branch_offset}
                                       if getattr(s, 'branch_offset', None) is not None else {}),
                                    **({} if getattr(s, 'filter_gates', True) else {'filter_gates': False}))
                               for s in stats.gate_sites])
    paths['json'] = write_json(payload, out / FIGURE_NAMES['json'])
    return paths


def analyze(
        model: str | nn.Module,
        source: Any = DEFAULT_DATA_SOURCE,
        out_dir: str | os.PathLike = 'analysis',
        *,
        split: str = 'test',
        batch_size: int = 128,
        max_samples: int | None = None,
        accelerator: Any | None = None,
        num_classes: int | None = None,
) -> tuple[dict[str, Any], dict[str, Path]]:
    """Evaluate a GaterNet on ``source`` and write the gate analysis figures and ``gate_stats.json``.

    Args:
        model: A GaterNet or a name ``create_model`` accepts (``local-dir:``/``hf-hub:`` included).
        source: Data source (see :func:`gaternet_zoo.evaluation.build_eval_data`).
        out_dir: Output folder.
        split: Split to evaluate.
        batch_size: Batch size per process.
        max_samples: Use only the first ``max_samples`` rows.
        accelerator: Optional ``accelerate.Accelerator``; only its main process writes files.
        num_classes: The data's number of classes, declared (for labels without ``ClassLabel`` metadata); it must
            equal the model's.

    Returns:
        ``(report, paths)``: the evaluation report and the written files (empty on non-main processes).

    Raises:
        NoGatesError: ``model`` is a plain backbone.
        DataSourceError: The data's classes differ from the model's.
    """
    name = model if isinstance(model, str) else type(model).__name__
    if isinstance(model, str):
        model = model_from_name(model)
    _check_gated(model, name)
    if accelerator is None:
        accelerator = default_accelerator()
    report, result, model, data = evaluate_model(model, source, split=split, batch_size=batch_size,
                                                 max_samples=max_samples, accelerator=accelerator,
                                                 collect_class_stats=True, num_classes=num_classes)
    report['model'] = name
    if not accelerator.is_main_process:
        return report, {}
    assert result.gate_stats is not None  # Checked by _check_gated.
    return report, write_figures(result.gate_stats, out_dir, data.class_names, report)
