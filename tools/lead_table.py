"""Write the table docs/results.md leads with: every CIFAR-10 model and schedule, beside the external references.

    python -m tools.lead_table weights/cifar_resnet20.cifar10 docs/results/runs/c10_resnet20_e30_s1 ... \
        --references docs/results/external_references.yaml --out docs/results/cifar10_lead_table.md

Each folder is a finished run's record, as for ``tools.seed_table``. Runs of one model with
the same schedule (epochs, training rows, warm start) form one row: the mean test top-1 of their final weights with
the seeds behind it, the parameters and MACs per 32x32 image counted on the model (a GaterNet's include its gater),
the MACs its gates actually use on the test split (backbone MACs of the open gates plus the whole gater, from the
float32 evaluation ``eval_test.json``; "–" where a run has none), and the external figures for the plain models
with their source, from ``--references`` (a YAML mapping of model name to a list of ``{top1, source}``).
``tests/test_weights.py`` regenerates the table and fails if the committed one differs.
"""
from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import yaml

from gaternet_zoo.training import RunRecord
from tools.seed_table import final_top1
from tools.tables import generated_table, model_counts, write_table

#: Name prefixes of the zoo's GaterNets (``gated_*`` are aliases); every other model is plain.
GATED_PREFIXES = ('gaternet_', 'gated_')


def schedule(config: dict) -> str:
    """How a run was trained, in words: epochs, training rows held out for validation, the weights it began from."""
    text = f'{config["epochs"]} epochs'
    if config.get('val_split'):
        text += f', last {config["val_split"]:,} training images held out'
    if config.get('init_from'):
        text += f', from `{config["init_from"]}`'
    return text


def macs_used(folder: Path) -> float | None:
    """MACs per image the final weights use on the test split (open gates; plain models use all), if measured."""
    record = RunRecord(folder).eval_report()
    if record is None:
        return None
    if 'macs_backbone_used' in record:
        return float(record['macs_backbone_used']) + float(record.get('macs_gater') or 0)
    return float(record['macs_total']) if 'macs_total' in record else None


def _references(path: Path | None) -> dict[str, list[dict]]:
    if path is None:
        return {}
    data = yaml.safe_load(path.read_text()) or {}
    for model, refs in data.items():
        if not isinstance(refs, list) or not all(isinstance(r, dict) and {'top1', 'source'} <= set(r) for r in refs):
            raise ValueError(f'{path}: {model} must map to a list of {{top1, source}} entries')
    return data


def lead_table(folders: list[Path], references: Path | None = None) -> str:
    """The markdown table, one row per (model, schedule) in the order first named.

    Args:
        folders: Finished run records.
        references: YAML file of external reference figures per model.
    """
    refs = _references(references)
    rows: dict[tuple[str, str], list[tuple[int, float, float | None]]] = {}
    for folder in folders:
        model, seed, top1 = final_top1(folder)
        runs = rows.setdefault((model, schedule(RunRecord(folder).config())), [])
        if any(s == seed for s, _, _ in runs):
            raise ValueError(f'{folder}: a second run of {model} with seed {seed} on the same schedule')
        runs.append((seed, top1, macs_used(folder)))
    header = ['model', 'schedule', 'test top-1 (%)', 'seeds', 'params', 'MACs / image (gater included)',
              'MACs used (open gates)', 'external reference (test top-1, source)']
    lines = ['| ' + ' | '.join(header) + ' |', '|' + '---|' * len(header)]
    for (model, sched), runs in rows.items():
        top1 = [t for _, t, _ in runs]
        spread = f' (spread {max(top1) - min(top1):.2f})' if len(top1) > 1 else ''
        params, macs = model_counts(model)
        used = [m for _, _, m in runs if m is not None]
        if not model.startswith(GATED_PREFIXES):  # a plain model has no gates to close: it uses all of its MACs
            used = [macs] * len(runs)
        used_cell = '–' if len(used) < len(runs) else (
            f'{statistics.mean(used) / 1e6:.1f} M ({statistics.mean(used) / macs:.0%})')
        ref_cell = '; '.join(f'{r["top1"]:.2f}: {r["source"]}' for r in refs.get(model, [])) or '–'
        lines.append('| ' + ' | '.join([
            f'`{model}`', sched, f'{statistics.mean(top1):.2f}{spread}', ', '.join(str(s) for s, _, _ in sorted(runs)),
            f'{params / 1e6:.2f} M', f'{macs / 1e6:.1f} M', used_cell, ref_cell]) + ' |')
    source = ' '.join(str(f) for f in folders) + (f' --references {references}' if references else '')
    return generated_table('tools.lead_table ' + source, lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('folders', nargs='+', type=Path, help='finished runs (metrics.jsonl + resolved config)')
    p.add_argument('--references', type=Path, help='YAML: model -> list of {top1, source} external figures')
    p.add_argument('--out', type=Path, help='markdown file to write (default: print)')
    args = p.parse_args(argv)
    write_table(lead_table(args.folders, args.references), args.out)
    return 0


if __name__ == '__main__':
    sys.exit(main())
