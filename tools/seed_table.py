"""Write the seed table of docs/results.md: final test top-1 of every training run, per model, with mean and spread.

    python -m tools.seed_table weights/cifar_resnet20.cifar10 docs/results/runs/c10_resnet20_e30_s1 \
        weights/gaternet_resnet20.cifar10 docs/results/runs/c10_gaternet_resnet20_e30_s1 \
        --out docs/results/cifar10_resnet20_seeds.md

Each folder is a finished run's record, read with :class:`gaternet_zoo.training.RunRecord`: its resolved config
names the model, seed and number of epochs, and ``RunRecord.test_top1`` gives the test figure of its final weights.
A run that stopped before its last epoch is refused. The first model named is the baseline the
others' mean is compared with. ``tests/test_weights.py`` regenerates the table and fails if the committed one
differs.
"""
from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

from gaternet_zoo.training import RunRecord
from tools.tables import generated_table, write_table


def final_top1(folder: Path) -> tuple[str, int, float]:
    """``(model, seed, test top-1 of the final weights)`` of a finished run's record folder."""
    record = RunRecord(folder)
    config = record.config()
    return config['model'], int(config['seed']), record.test_top1()


def seed_table(folders: list[Path]) -> str:
    """The markdown table: one row per model, its top-1 per seed, run count, mean, spread and mean difference.

    The spread (max - min) needs two runs: a model with one run shows "–" rather than a spread of 0.
    """
    runs: dict[str, dict[int, float]] = {}
    for folder in folders:
        model, seed, top1 = final_top1(folder)
        if seed in runs.setdefault(model, {}):
            raise ValueError(f'{folder}: a second run of {model} with seed {seed}')
        runs[model][seed] = top1
    seeds = sorted({seed for per_seed in runs.values() for seed in per_seed})
    baseline_mean = statistics.mean(next(iter(runs.values())).values())
    header = (['model'] + [f'seed {s}' for s in seeds]
              + ['runs', 'mean', 'spread (max - min)', 'mean vs first row'])
    lines = ['| ' + ' | '.join(header) + ' |', '|' + '---|' * len(header)]
    for i, (model, per_seed) in enumerate(runs.items()):
        mean = statistics.mean(per_seed.values())
        spread = max(per_seed.values()) - min(per_seed.values())
        cells = [f'`{model}`'] + [f'{per_seed[s]:.2f}' if s in per_seed else '–' for s in seeds]
        cells += [str(len(per_seed)), f'{mean:.2f}', f'{spread:.2f}' if len(per_seed) > 1 else '–',
                  '–' if i == 0 else f'{mean - baseline_mean:+.2f}']
        lines.append('| ' + ' | '.join(cells) + ' |')
    source = ' '.join(str(f) for f in folders)
    return generated_table('tools.seed_table ' + source, lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('folders', nargs='+', type=Path, help='finished runs (metrics.jsonl + resolved config)')
    p.add_argument('--out', type=Path, help='markdown file to write (default: print)')
    args = p.parse_args(argv)
    table = seed_table(args.folders)
    write_table(table, args.out)
    return 0


if __name__ == '__main__':
    sys.exit(main())
