"""Turn a finished training run into a publishable Hub folder with a card filled from measured figures.

    python -m tools.publish_weights runs/c10_resnet20_e30_s0 cifar_resnet20.cifar10 --data ../shared/data/cifar10

It loads ``<run>/final`` strictly, evaluates it on the full test split of ``--data`` and on the built-in subset,
measures the latency, reads the training throughput from ``<run>/metrics.jsonl``, records all of that (and the
command line and resolved config of the run) in the model's ``pretrained_cfg``, and saves the folder
(``model.safetensors``, ``config.json``, ``README.md``) with the run's ``config.yaml``, ``metrics.jsonl`` and
``summary.csv`` next to it. It prints the registry entry (sha256) to add to the model file's ``default_cfgs``.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _hardware() -> str:
    model = platform.processor() or platform.machine()
    try:
        for line in Path('/proc/cpuinfo').read_text().splitlines():
            if line.startswith('model name'):
                model = line.split(':', 1)[1].strip()
                break
    except OSError:
        pass
    import torch

    return f'{model}, {os.cpu_count()} cores, {torch.get_num_threads()} torch threads (CPU)'


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('run_dir', type=Path, help='training run folder (holds final/, config.yaml, metrics.jsonl)')
    p.add_argument('name_tag', help='architecture.tag, e.g. gaternet_resnet20.cifar10')
    p.add_argument('--data', required=True, help='data source whose test split is the reported figure')
    p.add_argument('--dataset-id', default='uoft-cs/cifar10', help='Hub dataset id named on the card')
    p.add_argument('--out', type=Path, help='output folder (default: weights/<name_tag>)')
    p.add_argument('--latency-batch-size', type=int, default=1)
    p.add_argument('--command', help='the full command that trained the run (default: from its config.yaml)')
    p.add_argument('--hardware-note', default='', help='appended to the hardware line, e.g. other load at the time')
    p.add_argument('--overwrite', action='store_true', help='replace the output folder if it is not empty')
    p.add_argument('--description', help="the card's opening paragraph (default: the model family's)")
    args = p.parse_args(argv)

    import gaternet_zoo
    from gaternet_zoo._constants import DEFAULT_DATA_SOURCE
    from gaternet_zoo._io import check_output_dir
    from gaternet_zoo.evaluation import evaluate_model, measure_latency
    from gaternet_zoo.hub import config_fingerprint
    from gaternet_zoo.training import RunRecord

    arch, _, tag = args.name_tag.partition('.')
    if not arch or not tag:  # a tag of '' would be written into config.json and never match a registry entry
        p.error(f'name_tag must be architecture.tag (e.g. gaternet_resnet20.cifar10), got {args.name_tag!r}: '
                'published weights are always named by a tag')
    out = args.out or REPO / 'weights' / args.name_tag
    check_output_dir(out, overwrite=args.overwrite, what='the published weight folder', flag='--overwrite')
    run = RunRecord(args.run_dir)
    model = gaternet_zoo.create_model(f'local-dir:{run.final_dir}').eval()
    if model.pretrained_cfg.get('architecture') != arch:
        raise SystemExit(f'{args.run_dir}/final holds {model.pretrained_cfg.get("architecture")}, not {arch}.')

    full, _, model, _ = evaluate_model(model, args.data, collect_class_stats=False)
    subset, _, model, _ = evaluate_model(model, DEFAULT_DATA_SOURCE)
    input_size = tuple(model.pretrained_cfg['input_size'])
    latency = measure_latency(model, args.latency_batch_size, input_size)

    records = run.epochs()
    train_ips = statistics.median(r['train_images_per_sec'] for r in records[1:] or records)
    command = args.command or run.runtime().get('command')

    metrics = dict(top1=full['top1'], top5=full['top5'], eval_samples=full['num_samples'],
                   top1_builtin_subset=subset['top1'], builtin_subset_samples=subset['num_samples'],
                   latency_ms=latency, latency_batch_size=args.latency_batch_size,
                   train_images_per_sec_median=round(train_ips, 1), epochs=len(records))
    cfg = model.pretrained_cfg
    cfg.update(tag=tag, dataset=args.dataset_id, metrics=metrics,
               hardware=_hardware() + (f'; {args.hardware_note}' if args.hardware_note else ''),
               recipe={'command': command, 'resolved config': 'train_config.yaml (in this repository)',
                       'per-epoch metrics': 'metrics.jsonl, summary.csv'})
    if args.description:
        cfg['description'] = args.description
    if 'gate_size' in full:
        metrics['backbone_macs_used'] = full['macs_backbone_used']
        cfg['gate_stats'] = {k: full[k] for k in ('mean_open_fraction', 'always_on', 'always_off',
                                                  'input_dependent', 'gate_size')}
    # Without a sha256 the cfg names no weights yet, so save_pretrained records the tag for these new ones.
    for key in ('file', 'source', 'hf_hub_id', 'sha256'):
        cfg.pop(key, None)

    if out.exists():  # non-empty only with --overwrite (checked before the evaluations)
        shutil.rmtree(out)
    model.save_pretrained(out)
    # The run's record travels with the weights: RunRecord(out) reads it as it reads the run folder.
    shutil.copy(run.path / RunRecord.CONFIG, out / RunRecord.PUBLISHED_CONFIG)
    for name in (RunRecord.METRICS, RunRecord.SUMMARY):
        shutil.copy(run.path / name, out / name)
    (out / RunRecord.EVAL_TEST).write_text(json.dumps(full, indent=2) + '\n')
    (out / 'eval_builtin_subset.json').write_text(json.dumps(subset, indent=2) + '\n')
    config = json.loads((out / 'config.json').read_text())
    sha = config['pretrained_cfg']['sha256']
    print(json.dumps(dict(folder=str(out), top1=full['top1'], top1_builtin_subset=subset['top1'], sha256=sha,
                          latency_ms=latency, train_images_per_sec=train_ips), indent=2))
    print(f"registry: '{args.name_tag}': _cfg(hf_hub_id='gaternet-zoo/{args.name_tag}', revision=..., "
          f"sha256='{sha}', dataset='{args.dataset_id}', config_sha256='{config_fingerprint(config)}'),",
          file=sys.stderr)
    return 0


if __name__ == '__main__':
    sys.exit(main())
