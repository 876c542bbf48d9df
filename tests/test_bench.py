"""``bench/run_all.py`` (``make bench``): finds every benchmark, runs each, prints their ratios and failures.

The benchmarks themselves are never timed here: the runner is checked on stand-in scripts that print at once.
"""
from __future__ import annotations

import ast
import textwrap
from pathlib import Path

from hubserver import REPO_ROOT

BENCH = REPO_ROOT / 'bench'


def _run_all():
    from bench import run_all

    return run_all


def test_every_real_benchmark_is_discovered_and_runs_as_a_script() -> None:
    run_all = _run_all()
    found = run_all.discover()
    assert found == sorted(BENCH.glob('bench_*.py')) and {'bench_data.py', 'bench_train.py'} <= {p.name for p in found}
    for path in found:
        tree = ast.parse(path.read_text())
        assert any(isinstance(node, ast.If) and '__main__' in ast.unparse(node.test) for node in tree.body), path


def _script(folder: Path, name: str, body: str) -> None:
    (folder / name).write_text('import sys\n' + textwrap.dedent(body))


def test_runner_prints_each_benchmarks_ratios_and_fails_when_one_fails(tmp_path: Path, capsys) -> None:
    _script(tmp_path, 'bench_alpha.py', '''
        print('warming up')
        print('(1) fast 200 img/s | slow 100 img/s | fast/slow = 2.00x')
        print('args', sys.argv[1:])
    ''')
    _script(tmp_path, 'bench_beta.py', 'print("pipeline: 1,234 images/s")\n')
    _script(tmp_path, 'bench_delta.py', 'print("fp32 400 img/s (1.00x) | bf16 760 img/s (1.90x)")\nprint("done")\n')
    _script(tmp_path, 'bench_gamma.py', 'print("half done")\nsys.exit(3)\n')
    _script(tmp_path, 'helper.py', 'raise SystemExit("not a benchmark: must not run")\n')
    run_all = _run_all()

    assert run_all.main(['--bench-dir', str(tmp_path), '--', '--threads', '1']) == 1
    captured = capsys.readouterr()
    summary = captured.out.split('== ratios\n', 1)[1].splitlines()
    assert [line.split(' (')[0] for line in summary if not line.startswith('  ')] == [
        'bench_alpha.py', 'bench_beta.py', 'bench_delta.py', 'bench_gamma.py']
    assert '  (1) fast 200 img/s | slow 100 img/s | fast/slow = 2.00x' in summary
    assert '  pipeline: 1,234 images/s' in summary  # no ratio: its last line
    assert '  fp32 400 img/s (1.00x) | bf16 760 img/s (1.90x)' in summary and '  done' not in summary
    assert any(line.startswith('bench_gamma.py (') and 'FAILED (exit code 3)' in line for line in summary)
    assert "  args ['--threads', '1']" in captured.out  # arguments after -- reach every benchmark
    assert '1 of 4 benchmarks failed: bench_gamma.py' in captured.err
    assert 'not a benchmark' not in captured.out + captured.err

    assert run_all.main(['--bench-dir', str(tmp_path), '-k', 'beta']) == 0
    assert 'bench_alpha.py' not in capsys.readouterr().out


def test_runner_says_when_it_finds_nothing(tmp_path: Path, capsys) -> None:
    assert _run_all().main(['--bench-dir', str(tmp_path), '-k', 'nothing']) == 2
    assert f"no bench_*.py matching 'nothing' in {tmp_path}" in capsys.readouterr().err
