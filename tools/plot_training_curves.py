"""Plot top-1, training loss and (GaterNets) gate usage per epoch of runs, from their ``metrics.jsonl``.

    python -m tools.plot_training_curves weights/cifar_resnet20.cifar10 weights/gaternet_resnet20.cifar10 \
        --out docs/img/cifar10_resnet20_curves.png

``--split val`` plots the validation figures of runs trained with ``val_split`` (``val_top1``, ...) instead. The
figure is :func:`gaternet_zoo.training.plot_training_curves`'s (the demo draws the same one for its run).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from gaternet_zoo.training import plot_training_curves


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('runs', nargs='+', type=Path, help='folders holding metrics.jsonl')
    p.add_argument('--out', type=Path, required=True, help='PNG to write')
    p.add_argument('--split', choices=('test', 'val'), default='test',
                   help='the evaluated split to plot: test (evaluated every epoch) or val (runs with val_split)')
    args = p.parse_args(argv)
    try:
        out = plot_training_curves(args.runs, args.out, split=args.split)
    except (ValueError, ImportError) as err:
        p.error(str(err))
    print(f'wrote {out}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
