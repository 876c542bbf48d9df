"""Write the plain-vs-gated results table of docs/results.md from published weight folders.

    python -m tools.results_table weights/cifar_resnet20.cifar10 weights/gaternet_resnet20.cifar10 \
        --out docs/results/cifar10_resnet20_table.md

Every figure comes from the folders themselves: ``eval_test.json`` (the evaluation of the published weights on
the full test split: top-1/top-5, params, MACs, gate counts) and ``config.json`` (training throughput, latency,
epochs). The first folder is the baseline the others are compared with. ``tests/test_weights.py`` regenerates
the table and fails if the committed one differs, so docs and weights cannot drift apart.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from gaternet_zoo.training import RunRecord
from tools.tables import generated_table, write_table


def _millions(value: float | None) -> str:
    return '–' if value is None else f'{value / 1e6:.2f} M'


def _row_report(folder: Path) -> dict:
    report = RunRecord(folder).eval_report()
    if report is None:
        raise FileNotFoundError(f'{folder} holds no {RunRecord.EVAL_TEST}: publish it with tools.publish_weights')
    return report


def _row(folder: Path, baseline_top1: float | None) -> list[str]:
    report = _row_report(folder)
    cfg = json.loads((folder / 'config.json').read_text())['pretrained_cfg']
    metrics = cfg['metrics']
    gated = 'gate_size' in report
    backbone_macs = report['macs_backbone'] if gated else report['macs']
    delta = '' if baseline_top1 is None else f' ({report["top1"] - baseline_top1:+.2f})'
    used = report.get('macs_backbone_used')
    return [
        f'`{folder.name}`',
        f'{report["top1"]:.2f}{delta}',
        f'{report["top5"]:.2f}',
        _millions(report['params']),
        _millions(backbone_macs),
        _millions(report.get('macs_gater')),
        '–' if used is None else f'{used / 1e6:.2f} M ({100.0 * used / backbone_macs:.1f} %)',
        '–' if not gated else f'{100.0 * report["mean_open_fraction"]:.1f} % of {report["gate_size"]}',
        '–' if not gated else f'{report["always_on"]} / {report["always_off"]} / {report["input_dependent"]}',
        f'{metrics["train_images_per_sec_median"]:.0f}',
        f'{metrics["latency_ms"]:.2f}',
        str(metrics['epochs']),
    ]


HEADER = ['weights', 'top-1 (%)', 'top-5 (%)', 'params', 'backbone MACs', 'gater MACs',
          'backbone MACs used', 'gates open (mean)', 'always on / off / input-dep.', 'train img/s',
          'latency (ms, batch 1)', 'epochs']


def results_table(folders: list[Path]) -> str:
    """The markdown table, one row per folder; top-1 differences are against the first folder."""
    baseline = _row_report(folders[0])['top1']
    rows = [_row(folder, None if i == 0 else baseline) for i, folder in enumerate(folders)]
    lines = ['| ' + ' | '.join(HEADER) + ' |', '|' + '---|' * len(HEADER)]
    lines += ['| ' + ' | '.join(row) + ' |' for row in rows]
    source = ' '.join(str(f) for f in folders)
    return generated_table('tools.results_table ' + source, lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('folders', nargs='+', type=Path, help='weight folders; the first is the baseline')
    p.add_argument('--out', type=Path, help='markdown file to write (default: print)')
    args = p.parse_args(argv)
    table = results_table(args.folders)
    write_table(table, args.out)
    return 0


if __name__ == '__main__':
    sys.exit(main())
