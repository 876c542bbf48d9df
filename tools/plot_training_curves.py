"""Plot test top-1 and training loss per epoch of several runs from their ``metrics.jsonl`` (docs/results.md).

    python tools/plot_training_curves.py weights/cifar_resnet20.cifar10 weights/gaternet_resnet20.cifar10 \
        --out docs/img/cifar10_resnet20_curves.png
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
    args = p.parse_args(argv)

    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    fig, (ax_acc, ax_loss) = plt.subplots(1, 2, figsize=(11, 4))
    for run in args.runs:
        rows = [json.loads(line) for line in (run / 'metrics.jsonl').read_text().splitlines() if line.strip()]
        epochs = [r['epoch'] + 1 for r in rows]
        label = run.name
        ax_acc.plot(epochs, [r['top1'] for r in rows], label=f'{label} (final {rows[-1]["top1"]:.2f}%)')
        ax_loss.plot(epochs, [r['train_loss'] for r in rows], label=label)
    ax_acc.set(xlabel='epoch', ylabel='test top-1 (%)', title='CIFAR-10 test accuracy')
    ax_loss.set(xlabel='epoch', ylabel='training loss', title='training loss', yscale='log')
    for ax in (ax_acc, ax_loss):
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=110)
    print(f'wrote {args.out}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
