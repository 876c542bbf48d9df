"""Run every benchmark in ``bench/`` (each ``bench_*.py``, in name order) and print their ratios at the end.

``make bench`` runs this. Benchmarks are found, not listed: a new ``bench/bench_<topic>.py`` that runs as a script
is picked up. Each runs in its own interpreter, one after the other (they time themselves, so they must not share
the cores), with its output shown as it comes. The summary repeats every ratio line of each benchmark (a figure
like ``= 1.23x`` or ``(1.23x)``), or its last line when it prints none, and says which benchmarks failed.

Usage::

    python -m bench.run_all                      # every benchmark, default settings
    python -m bench.run_all -k train             # only benchmarks whose file name contains "train"
    python -m bench.run_all -- --threads 1       # arguments after -- go to every benchmark
"""
from __future__ import annotations

import argparse
import re
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
# "loader/step = 12.3x", "bf16 757 img/s (1.90x)": the figures a benchmark is run for.
RATIO = re.compile(r'(?:=\s*|\()[-+]?\d+(?:\.\d+)?x\b')


@dataclass
class Result:
    """What one benchmark printed and how it ended."""

    path: Path
    returncode: int
    seconds: float
    lines: list[str] = field(default_factory=list)

    @property
    def summary(self) -> list[str]:
        ratios = [line for line in self.lines if RATIO.search(line)]
        last = [line for line in self.lines if line.strip()][-1:]
        return ratios or last


def discover(bench_dir: Path = BENCH_DIR, keyword: str | None = None) -> list[Path]:
    """The ``bench_*.py`` scripts of ``bench_dir`` in name order (only those whose name holds ``keyword``)."""
    found = sorted(bench_dir.glob('bench_*.py'))
    return [p for p in found if keyword is None or keyword in p.name]


def run(path: Path, args: Sequence[str] = ()) -> Result:
    """Run one benchmark script, echoing its output, and return what it printed."""
    start = time.monotonic()
    lines = []
    # The project's benchmarks run as modules of the bench package from the repository root (they import each
    # other as bench.*); a script elsewhere runs as a file.
    command = [sys.executable, '-m', f'bench.{path.stem}'] if path.parent == BENCH_DIR else [sys.executable, str(path)]
    with subprocess.Popen([*command, *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1,
                          cwd=BENCH_DIR.parent) as proc:
        assert proc.stdout is not None
        for line in proc.stdout:
            print(f'  {line}', end='', flush=True)
            lines.append(line.rstrip('\n'))
    return Result(path, proc.returncode, time.monotonic() - start, lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmarks; returns 0 when all succeeded, 1 when any failed, 2 when none was found."""
    argv = list(sys.argv[1:] if argv is None else argv)
    passed: list[str] = []
    if '--' in argv:
        cut = argv.index('--')
        argv, passed = argv[:cut], argv[cut + 1:]
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     epilog='Arguments after "--" are passed to every benchmark.')
    parser.add_argument('-k', dest='keyword', default=None,
                        help='run only the benchmarks whose file name contains this text (default: all)')
    parser.add_argument('--bench-dir', type=Path, default=BENCH_DIR,
                        help='folder holding the bench_*.py scripts (default: the one of this script)')
    args = parser.parse_args(argv)

    scripts = discover(args.bench_dir, args.keyword)
    if not scripts:
        print(f'no bench_*.py{f" matching {args.keyword!r}" if args.keyword else ""} in {args.bench_dir}',
              file=sys.stderr)
        return 2
    results = []
    for i, path in enumerate(scripts, 1):
        print(f'\n== [{i}/{len(scripts)}] {path.name} {" ".join(passed)}'.rstrip(), flush=True)
        results.append(run(path, passed))

    print('\n== ratios')
    for result in results:
        status = 'ok' if result.returncode == 0 else f'FAILED (exit code {result.returncode})'
        print(f'{result.path.name} ({result.seconds:.0f} s, {status})')
        for line in result.summary:
            print(f'  {line.strip()}')
    failed = [r.path.name for r in results if r.returncode != 0]
    if failed:
        print(f'\n{len(failed)} of {len(results)} benchmarks failed: {", ".join(failed)}', file=sys.stderr)
        return 1
    return 0


if __name__ == '__main__':
    sys.exit(main())
