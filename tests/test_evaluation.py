"""Tests of gaternet_zoo.evaluation, the eval/analyze sub-commands, gaternet_zoo.analysis and gaternet_zoo.demo."""
from __future__ import annotations

import json
import math
import os
import re
import textwrap
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from gaternet_zoo import GateSite
from gaternet_zoo.cli import main as cli_main
from gaternet_zoo.evaluation import EvalResult, evaluate, measure_latency

# ------------------------------------------------------------------------------------------------ rigged models

# Six classes, four samples: a top-1 hit, a top-5-only hit (rank 5), a miss at rank 6, and a top-1 hit.
LOGITS = torch.tensor([[5., 4., 3., 2., 1., 0.],
                       [5., 4., 3., 2., 1., 0.],
                       [5., 4., 3., 2., 1., 0.],
                       [0., 1., 2., 3., 4., 5.]])
LABELS = torch.tensor([0, 4, 5, 5])

# Five samples, two gate sites (2 + 3 gates): gate 0 always on, 1 always off, 2 fires 3/5, 3 always on, 4 fires 1/5.
GATES = torch.tensor([[1., 0., 1., 1., 0.],
                      [1., 0., 0., 1., 0.],
                      [1., 0., 1., 1., 1.],
                      [1., 0., 0., 1., 0.],
                      [1., 0., 1., 1., 0.]])
GATE_LABELS = torch.tensor([0, 1, 0, 2, 1])
SITES = (GateSite('a', 2, 0, 'a.conv'), GateSite('b', 3, 2, 'b.conv'))


class FixedLogits(nn.Module):
    """Returns row ``i`` of a fixed logit table for input ``i`` (inputs are sample indices)."""

    def __init__(self, logits: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer('table', logits)
        self.dummy = nn.Parameter(torch.zeros(1))

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        return self.table[idx.long()] + 0 * self.dummy


class FixedGates(FixedLogits):
    """A gated model with hand-made gates: ``forward_with_gates(idx) -> (logits, gates)``."""

    def __init__(self, gates: torch.Tensor, num_classes: int = 3) -> None:
        super().__init__(torch.zeros(gates.shape[0], num_classes))
        self.register_buffer('gates', gates)
        self.gate_sites = SITES

    def forward_with_gates(self, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self(idx), self.gates[idx.long()]


def _loader(labels: torch.Tensor, batch_size: int) -> DataLoader:
    return DataLoader(TensorDataset(torch.arange(len(labels)), labels), batch_size=batch_size)


def _identity(batch: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    return batch[0], batch[1]


# ------------------------------------------------------------------------------------------------ evaluate()

def test_evaluate_topk_and_loss_match_hand_computation() -> None:
    model = FixedLogits(LOGITS).train()
    result = evaluate(model, _loader(LABELS, 3), prepare_batch=_identity, num_classes=6)
    assert isinstance(result, EvalResult)
    assert result.num_samples == 4
    assert result.top1 == pytest.approx(50.0)
    assert result.top5 == pytest.approx(75.0)
    assert result.loss == pytest.approx(F.cross_entropy(LOGITS, LABELS).item(), rel=1e-6)
    assert result.gate_stats is None  # No forward_with_gates: a plain backbone.
    assert result.images_per_second > 0
    assert model.training  # The previous mode is restored.
    assert result.to_dict()['gates'] is None

    first = evaluate(model, _loader(LABELS, 2), prepare_batch=_identity, num_classes=6, max_batches=1)
    assert (first.num_samples, first.top1, first.top5) == (2, 50.0, 100.0)


def test_evaluate_top5_with_fewer_than_five_classes_is_top_k_all() -> None:
    logits = torch.tensor([[0., 1., 2.], [2., 1., 0.]])
    result = evaluate(FixedLogits(logits), _loader(torch.tensor([0, 2]), 2), prepare_batch=_identity, num_classes=3)
    assert (result.top1, result.top5) == (0.0, 100.0)


def test_evaluate_gate_statistics_with_accelerator_match_hand_made_gates() -> None:
    from accelerate import Accelerator

    accelerator = Accelerator(cpu=True)
    model = FixedGates(GATES)
    loader = accelerator.prepare(_loader(GATE_LABELS, 2))  # 2 + 2 + 1: gather_for_metrics must keep all 5.
    result = evaluate(model, loader, accelerator, prepare_batch=_identity, num_classes=3, collect_class_stats=True)
    stats = result.gate_stats
    assert result.num_samples == stats.count == 5
    assert stats.counts() == dict(always_on=2, always_off=1, input_dependent=2)
    assert torch.allclose(stats.firing_rate, torch.tensor([1., 0., .6, 1., .2]))
    assert stats.per_site_open_fraction() == pytest.approx(dict(a=0.5, b=(0.6 + 1.0 + 0.2) / 3))
    assert stats.mean_open_fraction == pytest.approx(14 / 25)
    expected = torch.tensor([[1., 0., 1., 1., .5], [1., 0., .5, 1., 0.], [1., 0., 0., 1., 0.]])
    assert torch.allclose(stats.class_gate_matrix(), expected)
    assert result.to_dict()['gates']['always_on'] == 2


def test_evaluate_rejects_out_of_range_labels_and_empty_loaders() -> None:
    with pytest.raises(ValueError, match='labels must be in'):
        evaluate(FixedLogits(LOGITS), _loader(LABELS, 4), prepare_batch=_identity, num_classes=5)
    with pytest.raises(ValueError, match='no samples'):
        evaluate(FixedLogits(LOGITS), _loader(LABELS, 4), prepare_batch=_identity, num_classes=6, max_batches=0)


def test_measure_latency_is_positive_and_restores_mode() -> None:
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten()).train()
    ms = measure_latency(model, 2, (3, 8, 8), 3)
    assert ms > 0 and math.isfinite(ms)
    assert model.training


# ------------------------------------------------------------------------------------------------ CLI and analysis

@pytest.mark.slow  # issue 25: out of `make test-fast` (seconds of subprocesses or full-size models)
def test_eval_cli_prints_metrics_and_writes_json(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / 'eval.json'
    code = cli_main(['eval', 'gaternet_resnet20', '--data', 'builtin:cifar10-subset', '--max-samples', '64',
                     '--batch-size', '32', '--json', str(out)])
    printed = capsys.readouterr().out
    assert code == 0
    for key in ('top-1', 'top-5', 'params', 'MACs backbone', 'MACs gater', 'MACs backbone used', 'gates open',
                'gates always on', 'gates always off', 'gates input-dep.', 'images/s'):
        assert key in printed, key
    report = json.loads(out.read_text())
    assert report['num_samples'] == 64
    assert 0.0 <= report['top1'] <= report['top5'] <= 100.0
    assert report['always_on'] + report['always_off'] + report['input_dependent'] == report['gate_size'] == 336
    assert 0 < report['macs_backbone_used'] <= report['macs_backbone']
    assert report['params'] == report['params_backbone'] + report['params_gater']


def test_eval_script_entry_point_on_a_plain_backbone(capsys: pytest.CaptureFixture) -> None:
    from gaternet_zoo.recipes_cli import eval_main

    assert eval_main(['cifar_resnet20', '--max-samples', '16', '--batch-size', '16']) == 0
    printed = capsys.readouterr().out
    assert 'plain backbone, no gates' in printed and 'top-1' in printed
    assert eval_main(['cifar_resnet20', '--data', '/nonexistent/data']) == 2
    assert 'does not exist' in capsys.readouterr().err


def _check_png(path: Path) -> None:
    from PIL import Image

    assert path.stat().st_size > 5_000, path
    with Image.open(path) as image:
        image.load()
        rgb = image.convert('RGB')
        assert rgb.width > 300 and rgb.height > 200
        assert any(low != high for low, high in rgb.getextrema()), f'{path} is a single colour'
        assert len(rgb.getcolors(maxcolors=1 << 20) or range(1 << 20)) > 10


@pytest.mark.slow  # issue 25: out of `make test-fast` (seconds each on 2 busy cores)
def test_analyze_writes_three_figures_and_json(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / 'analysis'
    assert cli_main(['analyze', 'gaternet_resnet20', '--data', 'builtin:cifar10-subset', '--out', str(out),
                     '--max-samples', '64', '--batch-size', '32']) == 0
    assert 'gate_stats.json' in capsys.readouterr().out
    for name in ('site_open_fraction.png', 'gate_firing_histogram.png', 'class_gate_heatmap.png'):
        _check_png(out / name)
    stats = json.loads((out / 'gate_stats.json').read_text())
    assert stats['summary']['samples'] == 64
    assert len(stats['firing_rate']) == 336 and len(stats['sites']) == 9
    assert len(stats['class_gate_matrix']) == 10 and len(stats['class_gate_matrix'][0]) == 336
    assert stats['class_names'][0] == 'airplane'
    counts = sum(stats['summary'][k] for k in ('always_on', 'always_off', 'input_dependent'))
    assert counts == 336


def test_analyze_refuses_a_plain_backbone(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / 'none'
    assert cli_main(['analyze', 'cifar_resnet20', '--out', str(out)]) == 2
    err = capsys.readouterr().err
    assert 'plain backbone' in err and 'no gate statistics' in err
    assert not out.exists()


# ------------------------------------------------------------------------------------------------ demo

@pytest.mark.slow  # issue 25: out of `make test-fast` (seconds each on 2 busy cores)
def test_demo_one_batch_prints_per_block_statistics(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from gaternet_zoo import demo

    missing = tmp_path / 'no_train.py'
    assert demo.main(['--recipe', str(missing), '--batch-size', '16']) == 0  # auto mode falls back
    printed = capsys.readouterr().out
    assert 'no training_function' in printed
    assert 'stage3.block3' in printed and 'input-dep' in printed and 'mean open fraction' in printed


@pytest.mark.slow  # issue 25: out of `make test-fast` (seconds of subprocesses or full-size models)
def test_demo_train_mode_evaluates_and_analyses_the_final_model(tmp_path: Path,
                                                                capsys: pytest.CaptureFixture) -> None:
    from gaternet_zoo import demo

    recipe = tmp_path / 'train.py'
    recipe.write_text(textwrap.dedent('''
        import argparse
        from pathlib import Path

        import gaternet_zoo


        def training_function(config, args):
            model = gaternet_zoo.create_model('gaternet_resnet20')
            model.save_pretrained(Path(args.output_dir) / 'final')


        if __name__ == '__main__':
            parser = argparse.ArgumentParser()
            parser.add_argument('--output-dir')
            parser.add_argument('--overwrite', action='store_true')
            training_function({}, parser.parse_args())
    '''))
    assert demo.has_training_function(recipe) and not demo.has_training_function(tmp_path / 'missing.py')
    run = tmp_path / 'run'
    cmd = demo.train_command(recipe, run, ['--epochs', '1'])
    assert cmd[1:3] == ['-m', 'accelerate.commands.launch'] and '--overwrite' not in cmd
    assert cmd[cmd.index('--num_cpu_threads_per_process') + 1] == str(os.cpu_count() or 1)
    # Every setting accelerate would otherwise warn about ("had defaults used instead") is given.
    for flag, value in (('--num_processes', '1'), ('--num_machines', '1'), ('--mixed_precision', 'no'),
                        ('--dynamo_backend', 'no')):
        assert cmd[cmd.index(flag) + 1] == value
    assert demo.train_command(recipe, run, threads=1)[cmd.index('--num_cpu_threads_per_process') + 1] == '1'
    assert cmd[cmd.index(str(recipe)):] == [str(recipe), '--output-dir', str(run), '--epochs', '1']
    assert demo.main(['--recipe', str(recipe), '--out', str(run), '--launcher', 'python', '--max-samples', '32',
                      '--batch-size', '32']) == 0
    printed = capsys.readouterr().out
    assert f'local-dir:{run / "final"}' in printed and 'top-1' in printed
    assert re.search(r'elapsed [0-9.]+ s \(training [0-9.]+ s\); everything is in ', printed)
    assert 'no training curve' in printed  # this stand-in recipe writes no metrics.jsonl
    assert 'expected top-1' not in printed  # not the default recipe: no range to compare with
    for name in ('site_open_fraction.png', 'gate_firing_histogram.png', 'class_gate_heatmap.png', 'gate_stats.json'):
        assert (run / 'analysis' / name).is_file()
    # A re-run keeps the run, unless asked to replace it (tests/test_first_hour.py has the folder choice).
    assert '--overwrite' not in demo.train_command(recipe, run)
    assert '--overwrite' in demo.train_command(recipe, run, overwrite=True)


def test_demo_plots_the_training_curve_and_compares_with_the_expected_range(tmp_path: Path,
                                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    from gaternet_zoo import demo

    rows = [dict(epoch=e, top1=20.0 + 10 * e, train_loss=2.0 - 0.3 * e, gate_open_fraction=0.5) for e in range(3)]
    (tmp_path / 'metrics.jsonl').write_text(''.join(json.dumps(r) + '\n' for r in rows))
    path = demo.plot_training_curve(tmp_path)
    assert path == tmp_path / 'training_curve.png' and path.read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'
    assert demo.plot_training_curve(tmp_path / 'empty') is None

    low, high = demo.EXPECTED_TOP1
    assert 0 < low <= high < 100, 'the expected range of the default run is measured, not a placeholder'
    assert 'within the range' in demo._expected_line((low + high) / 2)
    assert 'OUTSIDE the range' in demo._expected_line(low - 5)
    assert demo._is_default_run(demo.default_recipe(), ['--seed', '2'])
    assert not demo._is_default_run(demo.default_recipe(), ['--epochs', '1'])


@pytest.mark.slow  # issue 25: out of `make test-fast` (seconds of subprocesses or full-size models)
def test_eval_of_a_registry_tag_uses_its_published_weights(capsys: pytest.CaptureFixture,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    import socket

    from huggingface_hub import constants

    with socket.socket() as closed:  # No Hub: the weights come from the copy in weights/, sha256-verified.
        closed.bind(('127.0.0.1', 0))
        monkeypatch.setattr(constants, 'ENDPOINT', f'http://127.0.0.1:{closed.getsockname()[1]}')
        assert cli_main(['eval', 'gaternet_resnet20.cifar10', '--json', os.devnull]) == 0
    top1 = float(re.search(r'^top-1\s+([0-9.]+) %', capsys.readouterr().out, flags=re.M).group(1))
    config = Path(__file__).resolve().parents[1] / 'weights' / 'gaternet_resnet20.cifar10' / 'config.json'
    assert top1 == pytest.approx(json.loads(config.read_text())['pretrained_cfg']['metrics']['top1_builtin_subset'])
