"""Time loading the published models: ``create_model("local-dir:weights/<tag>")`` and ``pretrained=True``.

Loading verifies the sha256 of the weights and the fingerprint of their config (docs/checks.md); this measures what
that costs. Each case is loaded ``--repeats`` times in one process after ``--warmup`` loads, and the median is
printed. ``--compare CHECKOUT`` runs the same cases with another checkout's ``gaternet_zoo`` (e.g. an older commit
unpacked with ``git archive``), one process after the other, alternating, and prints the ratio.

    python -m bench.bench_load
    python -m bench.bench_load --compare /tmp/gaternet_zoo-main --rounds 3
"""
from __future__ import annotations

import argparse
import functools
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _cases(root: Path) -> list[str]:
    folders = sorted(p.name for p in (root / 'weights').iterdir() if (p / 'model.safetensors').is_file())
    return [f'local-dir:{root / "weights" / name}' for name in folders] + ['gaternet_resnet20@pretrained']


def _measure(cases: list[str], repeats: int, warmup: int, clock: str = 'wall') -> dict[str, float]:
    import logging

    import gaternet_zoo

    logging.getLogger('gaternet_zoo').setLevel(logging.ERROR)
    # CPU time of this process: on a machine shared with other jobs, wall time mostly measures the waiting.
    now = time.process_time if clock == 'cpu' else time.perf_counter
    out = {}
    for case in cases:
        name, _, how = case.partition('@')
        load = functools.partial(gaternet_zoo.create_model, name, pretrained=how == 'pretrained')
        for _ in range(warmup):
            load()
        times = []
        for _ in range(repeats):
            start = now()
            load()
            times.append(now() - start)
        out[case] = statistics.median(times)
    return out


def _run(checkout: Path, args: argparse.Namespace) -> dict[str, float]:
    env = {**os.environ, 'PYTHONPATH': str(checkout), 'HF_HUB_OFFLINE': '1', 'OMP_NUM_THREADS': str(args.threads)}
    cmd = [sys.executable, __file__, '--child', '--repeats', str(args.repeats), '--warmup', str(args.warmup),
           '--threads', str(args.threads), '--clock', args.clock]
    proc = subprocess.run(cmd, env=env, cwd=checkout, capture_output=True, text=True, check=True)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--repeats', type=int, default=30, help='timed loads per case (default: 30)')
    p.add_argument('--warmup', type=int, default=3, help='untimed loads first (default: 3)')
    p.add_argument('--threads', type=int, default=1, help='torch threads (default: 1)')
    p.add_argument('--clock', choices=('wall', 'cpu'), default='wall',
                   help="'cpu': this process's CPU time, for a machine shared with other jobs (default: wall)")
    p.add_argument('--rounds', type=int, default=1, help='with --compare: alternating rounds, medians pooled')
    p.add_argument('--compare', type=Path, help='another checkout to time the same cases with')
    p.add_argument('--child', action='store_true', help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        import torch

        torch.set_num_threads(args.threads)
        root = Path.cwd()
        print(json.dumps({k.replace(str(root) + '/', ''): v for k, v in
                          _measure(_cases(root), args.repeats, args.warmup, args.clock).items()}))
        return 0
    if args.compare is None:
        for case, seconds in _run(REPO, args).items():
            print(f'{case}: {seconds * 1e3:.1f} ms (median of {args.repeats})')
        return 0
    this: dict[str, list[float]] = {}
    other: dict[str, list[float]] = {}
    for _ in range(args.rounds):
        for checkout, store in ((args.compare, other), (REPO, this)):
            for case, seconds in _run(checkout, args).items():
                store.setdefault(case, []).append(seconds)
    for case in this:
        a, b = statistics.median(this[case]), statistics.median(other.get(case, [float('nan')]))
        print(f'{case}: this {a * 1e3:.1f} ms | {args.compare.name} {b * 1e3:.1f} ms | this/other = {a / b:.2f}x')
    return 0


if __name__ == '__main__':
    sys.exit(main())
