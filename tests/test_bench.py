"""``bench/run_all.py`` (``make bench``): finds every benchmark, runs each, prints their ratios and failures; and
``bench/bench_clock.py``'s gate patterns and table.

No figure is measured here: the runner is checked on stand-in scripts that print at once, and the clock runs with
the tiniest settings to check the table it writes, not its numbers.
"""
from __future__ import annotations

import ast
import textwrap
from pathlib import Path

import pytest
import torch
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


# ------------------------------------------------------------------------------------------------ bench_clock
def _clock():
    from bench import bench_clock

    return bench_clock


def test_clock_patterns_are_the_issues() -> None:
    import gaternet_zoo as gz

    clock = _clock()
    model = gz.create_model('gaternet_resnet56', branch_gates=True)
    nf = model.num_filter_gates
    gates, label = clock.pattern_gates(model, 'all open')
    assert label == 'all open' and gates.shape == (1, model.gate_size) and bool((gates == 1).all())
    for pattern, share in (('50 % of filters open', 0.5), ('25 % open', 0.25)):
        gates, label = clock.pattern_gates(model, pattern, seed=3)
        assert label == f'{pattern} (random)'
        assert abs(gates[0, :nf].mean().item() - share) < 0.05 and bool((gates[0, nf:] == 1).all())
        assert torch.equal(gates, clock.pattern_gates(model, pattern, seed=3)[0])  # seeded
    gates, label = clock.pattern_gates(model, 'every other branch closed')
    offsets = [s.branch_offset for s in model.gate_sites]
    assert label == 'every other branch closed (13 of 27)' and bool((gates[0, :nf] == 1).all())
    assert gates[0, offsets].tolist() == [1.0, 0.0] * 13 + [1.0]
    # The GaterNet gives the pattern to its backbone through the fixed binariser, whatever the image.
    model.eval().gater.binarizer = clock.FixedGates(gates)
    with torch.no_grad():
        _, used = model(torch.randn(3, 3, 32, 32), return_gates=True)
    assert torch.equal(used, gates.expand(3, -1))

    effnet = gz.create_model('gaternet_efficientnet_b0', branch_gates=True)
    assert clock.pattern_gates(effnet, 'every other branch closed')[1] == (
        'every other branch closed (4 of 9); 7 blocks without shortcut stay open')
    with pytest.raises(ValueError, match='branch_gates=True'):
        clock.pattern_gates(gz.create_model('gaternet_resnet20'), 'every other branch closed')


@pytest.mark.slow  # builds two models and loads the subset: a few seconds
def test_clock_writes_a_table_whose_ratios_are_its_measured_figures(tmp_path: Path) -> None:
    clock = _clock()
    out = tmp_path / 'clock.md'
    argv = ['--models', 'resnet20', '--batch-sizes', '1', '--rounds', '1', '--seconds', '0', '--min-calls', '2',
            '--warmup', '1', '--images', '4', '--threads', '1', '--out', str(out)]
    rows = clock.main(argv)
    text = out.read_text()
    assert text.startswith(f'<!-- generated by: python -m bench.bench_clock {" ".join(argv)} (do not edit) -->\n')
    lines = [line for line in text.splitlines() if line.startswith('|')]
    assert lines[0] == '| ' + ' | '.join(clock.COLUMNS) + ' |'
    assert len(lines) == 2 + len(clock.PATTERNS) == 2 + len(rows)
    cells = [[c.strip() for c in line.strip('|').split('|')] for line in lines[2:]]
    col = {name: i for i, name in enumerate(clock.COLUMNS)}
    assert [c[col['gates']] for c in cells] == [
        'all open', '50 % of filters open (random)', '25 % open (random)', 'every other branch closed (4 of 9)']
    for row, c in zip(rows, cells, strict=True):
        assert row['whole_s'] > 0 and row['plain_s'] > 0 and row['gater_s'] > 0
        assert c[col['GaterNet / plain']] == f'{row["whole_s"] / row["plain_s"]:.2f}x'
        assert c[col['gater / plain']] == f'{row["gater_s"] / row["plain_s"]:.2f}x'
        assert c[col['plain (ms)']] == f'{row["plain_s"] * 1e3:.3f}'
        assert c[col['MACs: GaterNet / plain']] == (
            f'{(row["macs_used"] + row["macs_gater"]) / row["macs_backbone"]:.3f}x')
    # Closing every other branch uses fewer MACs than all open; the gater's share is the same in every row.
    assert rows[3]['macs_used'] < rows[0]['macs_used'] == rows[0]['macs_backbone']
    assert len({c[col['MACs: gater / plain']] for c in cells}) == 1
    clock.check_table(text)

    # The check recomputes each ratio from the measured columns: a ratio that is not theirs fails it.
    i = col['GaterNet / plain']
    wrong = cells[0][:i] + [f'{float(cells[0][i][:-1]) + 0.5:.2f}x'] + cells[0][i + 1:]
    with pytest.raises(AssertionError, match='GaterNet / plain'):
        clock.check_table(text.replace(lines[2], '| ' + ' | '.join(wrong) + ' |'))
    with pytest.raises(AssertionError, match='not one bench_clock takes'):  # a command the bench does not take
        clock.check_table(text.replace('--rounds 1', '--rounds one'))
