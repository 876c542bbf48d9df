"""Plot test top-1, training loss and (GaterNets) gate usage per epoch of runs from their ``metrics.jsonl``.

    python tools/plot_training_curves.py weights/cifar_resnet20.cifar10 weights/gaternet_resnet20.cifar10 \
        --out docs/img/cifar10_resnet20_curves.png

``--split val`` plots the validation figures of runs trained with ``val_split`` (``val_top1``, ...) instead.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('runs', nargs='+', type=Path, help='folders holding metrics.jsonl')
    p.add_argument('--out', type=Path, required=True, help='PNG to write')
    p.add_argument('--split', choices=('test', 'val'), default='test',
                   help='the evaluated split to plot: test (evaluated every epoch) or val (runs with val_split)')
    args = p.parse_args(argv)

    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    lead, split = ('val_', 'validation') if args.split == 'val' else ('', 'test')
    runs = {run.name: [json.loads(line) for line in (run / 'metrics.jsonl').read_text().splitlines()
                       if line.strip()] for run in args.runs}
    missing = [name for name, rows in runs.items() if lead + 'top1' not in rows[0]]
    if missing:
        p.error(f'{", ".join(missing)}: no {lead}top1 in metrics.jsonl (is --split {args.split} the split they '
                'evaluated every epoch?)')
    gated = {name: rows for name, rows in runs.items() if lead + 'gate_open_fraction' in rows[0]}
    color = {name: f'C{i}' for i, name in enumerate(runs)}  # one colour per run in every panel
    fig, axes = plt.subplots(1, 3 if gated else 2, figsize=(16 if gated else 11, 4))
    ax_acc, ax_loss = axes[0], axes[1]
    for name, rows in runs.items():
        epochs = [r['epoch'] + 1 for r in rows]
        ax_acc.plot(epochs, [r[lead + 'top1'] for r in rows], label=f'{name} (final {rows[-1][lead + "top1"]:.2f}%)',
                    color=color[name])
        ax_loss.plot(epochs, [r['train_loss'] for r in rows], label=name, color=color[name])
    ax_acc.set(xlabel='epoch', ylabel=f'{split} top-1 (%)', title=f'{split} accuracy')
    ax_loss.set(xlabel='epoch', ylabel='training loss', title='training loss', yscale='log')
    if gated:
        # Gate usage on the evaluated split after each epoch: whether the gater learns to close filters over time.
        for name, rows in gated.items():
            axes[2].plot([r['epoch'] + 1 for r in rows], [r[lead + 'gate_open_fraction'] for r in rows], label=name,
                         color=color[name])
        axes[2].set(xlabel='epoch', ylabel='mean fraction of open gates', title=f'gate usage ({split} split)',
                    ylim=(0, 1.02))
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=110)
    print(f'wrote {args.out}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
