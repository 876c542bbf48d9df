"""Figures of training runs, drawn from their :class:`~gaternet_zoo.training.RunRecord`: one function per figure."""
from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from ._run_dir import RunRecord

__all__ = ['plot_training_curves']


def plot_training_curves(runs: Sequence[str | os.PathLike | RunRecord], out: str | os.PathLike, *,
                         split: str | None = None, dpi: int = 110) -> Path:
    """Plot top-1 and training loss per epoch of one or more runs, and gate usage for the GaterNets among them.

    One colour per run in every panel; the legend gives each run's final top-1.

    Args:
        runs: Run folders (or published weight folders, which keep their run's ``metrics.jsonl``).
        out: PNG to write (its folder is created).
        split: The split evaluated every epoch: ``'test'`` (``top1``, ...) or ``'val'`` (``val_top1``, ... of a run
            trained with ``val_split``). ``None`` takes ``'val'`` when every run logged validation figures.
        dpi: Resolution of the PNG.

    Returns:
        The PNG written.

    Raises:
        ValueError: A run has no epochs, or did not log the requested split (named, with the split to use).
        ImportError: matplotlib is not installed (the message says how to install it).
    """
    records = [r if isinstance(r, RunRecord) else RunRecord(r) for r in runs]
    rows = {record.name: record.epochs() for record in records}
    empty = [name for name, epochs in rows.items() if not epochs]
    if empty:
        raise ValueError(f'{", ".join(empty)}: no epochs in {RunRecord.METRICS} (has the run finished an epoch?)')
    if split is None:
        split = 'val' if all('val_top1' in epochs[0] for epochs in rows.values()) else 'test'
    if split not in ('test', 'val'):
        raise ValueError(f"split must be 'test' or 'val', got {split!r}")
    lead, split_name = ('val_', 'validation') if split == 'val' else ('', 'test')
    missing = [name for name, epochs in rows.items() if lead + 'top1' not in epochs[0]]
    if missing:
        other = 'test' if split == 'val' else 'val'
        raise ValueError(f'{", ".join(missing)}: no {lead}top1 in {RunRecord.METRICS}; these runs did not evaluate '
                         f'the {split_name} split every epoch (try split={other!r})')
    try:
        import matplotlib

        matplotlib.use('Agg')
        import matplotlib.pyplot as plt
    except ImportError as err:
        raise ImportError("plotting needs matplotlib: pip install 'gaternet_zoo[train]'") from err

    gated = {name: epochs for name, epochs in rows.items() if lead + 'gate_open_fraction' in epochs[0]}
    color = {name: f'C{i}' for i, name in enumerate(rows)}
    fig, axes = plt.subplots(1, 3 if gated else 2, figsize=(16 if gated else 11, 4))
    ax_acc, ax_loss = axes[0], axes[1]
    for name, epochs in rows.items():
        x = [r['epoch'] + 1 for r in epochs]
        ax_acc.plot(x, [r[lead + 'top1'] for r in epochs], color=color[name],
                    label=f'{name} (final {epochs[-1][lead + "top1"]:.2f}%)')
        ax_loss.plot(x, [r['train_loss'] for r in epochs], label=name, color=color[name])
    ax_acc.set(xlabel='epoch', ylabel=f'{split_name} top-1 (%)', title=f'{split_name} accuracy')
    ax_loss.set(xlabel='epoch', ylabel='training loss', title='training loss', yscale='log')
    if gated:
        # Gate usage on the evaluated split after each epoch: whether the gater learns to close filters over time.
        for name, epochs in gated.items():
            axes[2].plot([r['epoch'] + 1 for r in epochs], [r[lead + 'gate_open_fraction'] for r in epochs],
                         label=name, color=color[name])
        axes[2].set(xlabel='epoch', ylabel='mean fraction of open gates', title=f'gate usage ({split_name} split)',
                    ylim=(0, 1.02))
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=dpi)
    plt.close(fig)
    return out
