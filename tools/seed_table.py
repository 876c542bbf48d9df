"""Write the seed table of docs/results.md: final test top-1 of every training run, per model, with mean and spread.

    python tools/seed_table.py weights/cifar_resnet20.cifar10 docs/results/runs/c10_resnet20_e30_s1 \
        weights/gaternet_resnet20.cifar10 docs/results/runs/c10_gaternet_resnet20_e30_s1 \
        --out docs/results/cifar10_resnet20_seeds.md

Each folder is a finished run's record: ``metrics.jsonl`` (one line per epoch), its test figure (``eval_test.json``,
``test_metrics.json`` of a run with a validation split, else the last epoch's top-1) and its resolved config
(``config.yaml`` of a run, or ``train_config.yaml`` of a published weights folder), which names the model, seed and
number of epochs. A run that stopped before its last epoch is refused. The first model named is the baseline the
others' mean is compared with. ``tests/test_weights.py`` regenerates the table and fails if the committed one
differs.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

import yaml


def run_config(folder: Path) -> dict:
    """The resolved config of a run's record folder: ``config.yaml`` of a run, ``train_config.yaml`` of weights."""
    config_path = next((folder / name for name in ('config.yaml', 'train_config.yaml') if (folder / name).is_file()),
                       None)
    if config_path is None or not (folder / 'metrics.jsonl').is_file():
        raise FileNotFoundError(f'{folder} needs metrics.jsonl and config.yaml (or train_config.yaml)')
    return yaml.safe_load(config_path.read_text())


def last_epoch(folder: Path, config: dict, finish_with: str = '--resume latest') -> dict:
    """The last epoch's line of a run's ``metrics.jsonl``; refuses a run that stopped before its last epoch."""
    epochs = [json.loads(line) for line in (folder / 'metrics.jsonl').read_text().splitlines() if line.strip()]
    last = max(epochs, key=lambda record: record['epoch'])
    if last['epoch'] + 1 != config['epochs']:
        raise ValueError(f'{folder}: the run stopped after epoch {last["epoch"] + 1} of {config["epochs"]}; '
                         f'finish it with {finish_with} before tabulating it')
    return last


def final_top1(folder: Path) -> tuple[str, int, float]:
    """``(model, seed, test top-1 of the final weights)`` of a finished run's record folder.

    For a published weight folder the top-1 is its ``eval_test.json``'s: the published weights evaluated in
    float32, the figure its card and the results table show (a run trained in bf16 logged its epochs' top-1 under
    bf16 autocast, which can differ in the second decimal). A run trained with a validation split logged validation
    figures per epoch; its test figure is the one measured once at the end (``test_metrics.json``).
    """
    config = run_config(folder)
    last = last_epoch(folder, config)
    if (folder / 'eval_test.json').is_file():
        top1 = json.loads((folder / 'eval_test.json').read_text())['top1']
    elif (folder / 'test_metrics.json').is_file():
        top1 = json.loads((folder / 'test_metrics.json').read_text())['test_top1']
    elif 'top1' in last:
        top1 = last['top1']
    else:
        raise ValueError(f'{folder}: trained with a validation split and holds no test figure; evaluate its final '
                         'weights once with `gaternet-zoo eval local-dir:<run>/final --json <record>/eval_test.json`')
    return config['model'], int(config['seed']), float(top1)


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
    return generated_table('tools/seed_table.py ' + source, lines)


def generated_table(command: str, lines: list[str]) -> str:
    """A markdown table headed by the command that regenerates it (which ``tests/test_weights.py`` reruns)."""
    return f'<!-- generated by: python {command} (do not edit) -->\n' + '\n'.join(lines) + '\n'


def write_table(table: str, out: Path | None) -> None:
    """Write a generated markdown table to ``out`` (creating its folder), or print it when ``out`` is ``None``."""
    if out:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(table)
        print(f'wrote {out}')
    else:
        print(table, end='')


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
