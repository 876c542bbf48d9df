"""Write the decisive table of docs/results.md: per backbone depth, plain vs. gated top-1 over seeds.

    python -m tools.depth_table weights/cifar_resnet20.cifar10 docs/results/runs/c10_resnet20_e30_s1 \
        weights/gaternet_resnet20.cifar10 weights/cifar_resnet56.cifar10 weights/gaternet_resnet56.cifar10 \
        --out docs/results/cifar10_depth_table.md

Each folder is a finished run's record (``metrics.jsonl`` and its resolved config, as for ``tools.seed_table``).
Runs are grouped by backbone: ``cifar_resnetN`` is the plain model of ``gaternet_resnetN``.
Per depth the table gives the mean top-1 of each arm after its last epoch with the seeds behind it and their
spread, the gap (gated mean minus plain mean), the parameters and MACs of both (counted on the models), and,
given with ``--img-per-sec MODEL=N``, each model's training throughput measured side by side in one benchmark run
(``bench/bench_precision.py``; the runs' own logs come from different CPUs and loads). Only runs with the same
number of epochs are compared; a depth that lacks an arm is listed with
"–" there. ``tests/test_weights.py`` regenerates the table and fails if the committed one differs.
"""
from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

from gaternet_zoo.training import RunRecord
from tools.seed_table import final_top1
from tools.tables import generated_table, model_counts, write_table


def _backbone(model: str) -> tuple[str, bool]:
    """``('resnet20', gated?)`` of a zoo model name."""
    for prefix, gated in (('gaternet_', True), ('cifar_', False)):
        if model.startswith(prefix):
            return model[len(prefix):], gated
    raise ValueError(f'{model}: expected a cifar_* (plain) or gaternet_* (gated) model')


def _arm(runs: list[tuple[int, float]]) -> tuple[str, str]:
    if not runs:
        return '–', '–'
    top1 = [t for _, t in runs]
    mean = statistics.mean(top1)
    seeds = ', '.join(str(s) for s, _ in sorted(runs))
    spread = f' (spread {max(top1) - min(top1):.2f})' if len(top1) > 1 else ' (one run)'
    return f'{mean:.2f}{spread}', seeds


def depth_table(folders: list[Path], img_per_sec: dict[str, float] | None = None) -> str:
    """The markdown table, one row per backbone in the order first named.

    Args:
        folders: Finished run records.
        img_per_sec: Training images/s per model name, from one benchmark run (column left out when ``None``).
    """
    groups: dict[str, dict[bool, list[tuple[int, float]]]] = {}
    epochs: dict[str, int] = {}
    for folder in folders:
        model, seed, top1 = final_top1(folder)
        backbone, gated = _backbone(model)
        n_epochs = int(RunRecord(folder).config()['epochs'])
        if epochs.setdefault(backbone, n_epochs) != n_epochs:
            raise ValueError(f'{folder}: {n_epochs} epochs, other {backbone} runs have {epochs[backbone]}; compare '
                             'runs of one schedule')
        arm = groups.setdefault(backbone, {False: [], True: []})[gated]
        if any(s == seed for s, _ in arm):
            raise ValueError(f'{folder}: a second run of {model} with seed {seed}')
        arm.append((seed, top1))
    header = ['backbone', 'epochs', 'plain top-1 (%)', 'plain seeds', 'gated top-1 (%)', 'gated seeds',
              'gap (gated - plain)', 'params plain / gated', 'MACs plain / gated']
    if img_per_sec is not None:
        header.append('train img/s plain / gated')
    lines = ['| ' + ' | '.join(header) + ' |', '|' + '---|' * len(header)]
    for backbone, arms in groups.items():
        plain, gated = _arm(arms[False]), _arm(arms[True])
        gap = '–'
        if arms[False] and arms[True]:
            diff = statistics.mean(t for _, t in arms[True]) - statistics.mean(t for _, t in arms[False])
            gap = f'**{diff:+.2f}**'
        (pp, pm), (gp, gm) = model_counts(f'cifar_{backbone}'), model_counts(f'gaternet_{backbone}')
        cells = [f'ResNet-{backbone[len("resnet"):]}' if backbone.startswith('resnet') else backbone,
                 str(epochs[backbone]), plain[0], plain[1], gated[0], gated[1], gap,
                 f'{pp / 1e6:.2f} M / {gp / 1e6:.2f} M', f'{pm / 1e6:.1f} M / {gm / 1e6:.1f} M']
        if img_per_sec is not None:
            cells.append(' / '.join(f'{img_per_sec[m]:,.0f}' if m in img_per_sec else '–'
                                    for m in (f'cifar_{backbone}', f'gaternet_{backbone}')))
        lines.append('| ' + ' | '.join(cells) + ' |')
    source = ' '.join(str(f) for f in folders)
    if img_per_sec is not None:
        source += ' --img-per-sec ' + ' '.join(f'{m}={v:g}' for m, v in img_per_sec.items())
    return generated_table('tools.depth_table ' + source, lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('folders', nargs='+', type=Path, help='finished runs (metrics.jsonl + resolved config)')
    p.add_argument('--img-per-sec', nargs='+', metavar='MODEL=N',
                   help='training images/s per model, measured side by side in one benchmark run')
    p.add_argument('--out', type=Path, help='markdown file to write (default: print)')
    args = p.parse_args(argv)
    rates = None
    if args.img_per_sec:
        try:
            rates = {m: float(v) for m, v in (item.split('=', 1) for item in args.img_per_sec)}
        except ValueError:
            p.error(f'--img-per-sec takes MODEL=N pairs, e.g. cifar_resnet20=1646; got {args.img_per_sec}')
    table = depth_table(args.folders, rates)
    write_table(table, args.out)
    return 0


if __name__ == '__main__':
    sys.exit(main())
