"""What a new user meets in the first hour (issue 25): fast help, quiet pipes, honest listings and defaults, failures
that say the way out at once, and nothing deleted or hidden behind their back."""
from __future__ import annotations

import logging
import os
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from hubserver import REPO_ROOT
from huggingface_hub import constants

import gaternet_zoo as gz
from gaternet_zoo._cli_fast import asks_only_for_help
from gaternet_zoo._io import display_path
from gaternet_zoo.cli import main as cli_main
from gaternet_zoo.hub import _files

pytestmark = pytest.mark.usefixtures('one_torch_thread')


@pytest.fixture
def closed_endpoint(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """``HF_ENDPOINT`` on a loopback port that refuses every connection (the Hub unreachable, at once)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(('127.0.0.1', 0))
        endpoint = f'http://127.0.0.1:{sock.getsockname()[1]}'
        monkeypatch.setattr(constants, 'ENDPOINT', endpoint)
        monkeypatch.setattr(constants, 'HF_HUB_OFFLINE', False)
        monkeypatch.setattr(_files, '_unreachable_since', {})
        yield endpoint


# --- gaternet-zoo --help / --version ---------------------------------------------------------------------------

def test_only_the_console_scripts_help_and_version_skip_the_models() -> None:
    for argv in (['gaternet-zoo', '--help'], ['gaternet-zoo', '-h'], ['gaternet-zoo', '--version'],
                 ['/venv/bin/gaternet-zoo', 'list', '--help'], ['gaternet-zoo', 'prune', '-h']):
        assert asks_only_for_help(argv), argv
    for argv in (['gaternet-zoo'], ['gaternet-zoo', 'list'], ['gaternet-zoo', 'list', '--version'],
                 ['gaternet-zoo', 'push', 'out', '--help', 'x'], ['gaternet-zoo', '--help', 'list', 'x'],
                 ['train.py', '--help'], ['-c', '--version'], []):
        assert not asks_only_for_help(argv), argv


_HELP_CLIENT = '''
import sys
sys.argv = ['gaternet-zoo', *sys.argv[1:]]  # what the installed console script sees
try:
    from gaternet_zoo.cli import main
    main()
finally:
    print('TORCH_IMPORTED', 'torch' in sys.modules, 'timm' in sys.modules, file=sys.stderr)
'''


@pytest.mark.parametrize('args', [['--version'], ['--help'], ['list', '--help']])
def test_help_and_version_answer_without_importing_torch_or_timm(args: list[str]) -> None:
    proc = subprocess.run([sys.executable, '-c', _HELP_CLIENT, *args], capture_output=True, text=True, timeout=120,
                          cwd=REPO_ROOT, env={**os.environ, 'PYTHONPATH': str(REPO_ROOT)})
    assert proc.returncode == 0, proc.stderr
    assert 'TORCH_IMPORTED False False' in proc.stderr
    assert (f'gaternet-zoo {gz.__version__}' if args == ['--version'] else 'usage: gaternet-zoo') in proc.stdout


# --- gaternet-zoo list ------------------------------------------------------------------------------------------

def test_list_marks_the_models_with_weights_and_has_no_generic_row(capsys: pytest.CaptureFixture) -> None:
    assert cli_main(['list']) == 0
    rows = {line.split()[0]: line for line in capsys.readouterr().out.splitlines()}
    assert 'gaternet' not in rows and set(rows) == set(gz.list_models()) - {'gaternet'}
    tagged: dict[str, list[str]] = {}
    for name in gz.list_models(pretrained=True):
        arch, _, tag = name.partition('.')
        tagged.setdefault(arch, []).append(tag)
    assert tagged, 'the zoo publishes weights'
    for name, line in rows.items():
        if name not in tagged:
            assert 'weights:' not in line
            continue
        # The tag pretrained=True loads comes first, marked; the others follow.
        default = gz.create_model(name, pretrained=False).pretrained_cfg['tag']
        shown = line.split('weights: ', 1)[1].split(', ')
        assert shown[0] == f'{default} (default)'
        assert sorted([default, *shown[1:]]) == sorted(tagged[name])
    assert cli_main(['list', '--backbones', 'cifar_resnet2*']) == 0
    # Two weight sets: the 200-epoch default and the 30-epoch weights, loadable by tag.
    assert capsys.readouterr().out.splitlines()[0].split() == [
        'cifar_resnet20', 'weights:', 'cifar10_e200', '(default),', 'cifar10']


def test_list_into_a_closed_pipe_ends_quietly(capsys: pytest.CaptureFixture) -> None:
    read, write = os.pipe()
    os.close(read)  # the reader is gone, as after `gaternet-zoo list | head -1`
    with capsys.disabled(), open(write, 'w') as closed:
        saved, sys.stdout = sys.stdout, closed
        try:
            code = cli_main(['list'])
        finally:
            sys.stdout = saved
    assert code == 141  # what a tool killed by SIGPIPE reports, and no BrokenPipeError traceback


# --- loading weights ----------------------------------------------------------------------------------------------

def test_the_weight_notice_is_one_line_with_a_short_path(closed_endpoint: str, caplog: pytest.LogCaptureFixture,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(REPO_ROOT)
    with caplog.at_level(logging.INFO, logger='gaternet_zoo'):
        gz.create_model('gaternet_resnet20', pretrained=True)
    (record,) = [r for r in caplog.records if r.name.startswith('gaternet_zoo')]
    message = record.getMessage()
    assert record.levelno == logging.WARNING and f'the Hub at {closed_endpoint} is unreachable' in message
    assert '(weights/gaternet_resnet20.cifar10/model.safetensors)' in message and str(REPO_ROOT) not in message
    assert message.endswith('(sha256 verified).')


def test_display_path_is_relative_inside_the_cwd_and_under_home_otherwise(tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert display_path(tmp_path / 'a' / 'b.txt') == str(Path('a') / 'b.txt')
    monkeypatch.setenv('HOME', str(tmp_path / 'home'))
    (tmp_path / 'elsewhere').mkdir()
    monkeypatch.chdir(tmp_path / 'elsewhere')
    assert display_path(tmp_path / 'home' / 'x') == str(Path('~') / 'x')
    assert display_path(tmp_path / 'a') == str(tmp_path / 'a')


@pytest.mark.parametrize('umask,mode', [(0o022, 0o644), (0o002, 0o664), (0o077, 0o600)])
def test_saved_weights_get_the_mode_the_umask_gives(umask: int, mode: int, tmp_path: Path) -> None:
    model = gz.create_model('gaternet_resnet20')
    before = os.umask(umask)
    try:
        model.save_pretrained(tmp_path / 'saved')
    finally:
        os.umask(before)
    for name in ('model.safetensors', 'config.json'):
        assert stat.S_IMODE((tmp_path / 'saved' / name).stat().st_mode) == mode, name


def test_pretrained_backbone_with_no_hub_fails_at_once_with_the_way_out(closed_endpoint: str, tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(constants, 'HF_HUB_CACHE', str(tmp_path / 'empty-cache'))
    start = time.monotonic()
    with pytest.raises(gz.HubLoadError) as info:
        gz.gate('resnet18', pretrained_backbone=True)
    seconds = time.monotonic() - start
    message = str(info.value)
    assert message.startswith("No pretrained weights for 'resnet18' (timm's timm/resnet18.")
    assert f'the Hub at {closed_endpoint} is unreachable' in message
    assert 'HF_HUB_OFFLINE=1' in message and "backbone_args=dict(pretrained_cfg_overlay=dict(file=" in message
    # huggingface_hub's retries took 46 s here; a generous bound that no retry loop fits in.
    assert seconds < 15, seconds
    monkeypatch.setattr(constants, 'HF_HUB_OFFLINE', True)
    with pytest.raises(gz.HubLoadError, match=r'offline mode is on \(HF_HUB_OFFLINE=1\).*gater_args=dict\('):
        gz.gate('resnet18', gater='mobilenetv3_small_100', pretrained_backbone=False, pretrained_gater=True)


def test_cached_timm_weights_load_from_the_cache_when_the_hub_is_unreachable(closed_endpoint: str,
                                                                            tmp_path: Path) -> None:
    import timm

    cfg = timm.models.get_pretrained_cfg('resnet18')
    repo, commit = cfg.hf_hub_id, 'a' * 40
    snapshot = tmp_path / 'cache' / f'models--{repo.replace("/", "--")}' / 'snapshots' / commit
    snapshot.mkdir(parents=True)
    (snapshot / 'model.safetensors').write_bytes(b'stand-in')
    (tmp_path / 'cache' / f'models--{repo.replace("/", "--")}' / 'refs').mkdir()
    (tmp_path / 'cache' / f'models--{repo.replace("/", "--")}' / 'refs' / 'main').write_text(commit)
    args = _files.timm_pretrained_args('resnet18', dict(pretrained=True, cache_dir=str(tmp_path / 'cache'),
                                                      pretrained_cfg_overlay=dict(num_classes=10)))
    assert args['pretrained_cfg_overlay'] == dict(num_classes=10, file=str(snapshot / 'model.safetensors'))
    untouched = dict(pretrained=False)
    assert _files.timm_pretrained_args('resnet18', untouched) is untouched


# --- data ---------------------------------------------------------------------------------------------------------

def test_an_unreachable_hub_dataset_fails_at_once_with_the_way_out(closed_endpoint: str,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    import datasets

    from gaternet_zoo.data import DataSourceError, load_image_dataset

    monkeypatch.setattr(datasets.config, 'HF_HUB_OFFLINE', False)
    start = time.monotonic()
    with pytest.raises(DataSourceError) as info:
        load_image_dataset('uoft-cs/cifar10')
    assert time.monotonic() - start < 15  # datasets retried for 48 s
    message = str(info.value)
    assert message.startswith(f"could not load 'uoft-cs/cifar10': the Hugging Face Hub at {closed_endpoint} is "
                              'unreachable')
    assert 'HF_HUB_OFFLINE=1' in message and 'local folder' in message and 'builtin:cifar10-subset' in message


@pytest.mark.slow
def test_train_with_an_unreachable_dataset_prints_one_message_and_no_traceback(tmp_path: Path) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as closed:
        closed.bind(('127.0.0.1', 0))
        env = {**os.environ, 'HF_ENDPOINT': f'http://127.0.0.1:{closed.getsockname()[1]}',
               'PYTHONPATH': str(REPO_ROOT)}
        env.pop('HF_HUB_OFFLINE', None)
        # What `make train ARGS="--data uoft-cs/cifar10"` runs.
        cmd = [sys.executable, '-m', 'accelerate.commands.launch', '--config_file',
               'recipes/accelerate/default.yaml', '--num_cpu_threads_per_process', '1', '--quiet', 'recipes/train.py',
               '--data', 'uoft-cs/cifar10', '--output-dir', str(tmp_path / 'run')]
        proc = subprocess.run(cmd, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0
    assert proc.stderr.count("train.py: error: could not load 'uoft-cs/cifar10'") == 1, proc.stderr
    assert 'Traceback' not in proc.stderr and 'were not passed' not in proc.stderr, proc.stderr


# --- prune, analyze, eval of a pruned model ---------------------------------------------------------------------

def test_prune_and_analyze_calibrate_on_the_training_split_by_default() -> None:
    from gaternet_zoo.cli import build_parser

    parser = build_parser()
    assert parser.parse_args(['prune', 'm', '--out', 'o']).split == 'train'
    assert parser.parse_args(['analyze', 'm', '--out', 'o']).split == 'train'
    assert parser.parse_args(['eval', 'm']).split == 'test'


def test_eval_of_a_pruned_model_counts_only_the_gates_that_still_have_a_filter() -> None:
    from gaternet_zoo import GateStatistics, prune_gaternet
    from gaternet_zoo.evaluation import evaluate_model, format_report, kept_gate_mask

    torch.manual_seed(0)
    model = gz.create_model('gaternet_resnet20').eval()
    with torch.no_grad():
        model.gater.fc2.bias[::3] = -50.0  # every third gate closed for any input
    stats = GateStatistics(model.gate_sites)
    with torch.no_grad():
        stats.update(model.forward_gates(torch.randn(16, 3, 32, 32)))
    pruned = prune_gaternet(model, stats)
    removed = pruned.pretrained_cfg['pruning']['filters_removed']
    assert removed >= model.gate_size // 3
    assert kept_gate_mask(model) is None and int((~kept_gate_mask(pruned)).sum()) == removed

    report = evaluate_model(pruned, max_samples=32, batch_size=32)[0]
    assert report['gates_pruned'] == removed
    assert report['always_on'] + report['always_off'] + report['input_dependent'] == model.gate_size - removed
    text = format_report(report)
    assert f'of {model.gate_size - removed:,} gates over 9 sites ({removed:,} more pruned with their filters)' in text


# --- recipes/train.py --help -----------------------------------------------------------------------------------------

def test_train_help_shows_the_defaults_that_run_and_what_data_takes(capsys: pytest.CaptureFixture) -> None:
    from recipes import train

    with pytest.raises(SystemExit):
        train.parse_args(['--help'])
    options = ' '.join(capsys.readouterr().out.split()).split(' options: ', 1)[1]

    def help_of(option: str) -> str:
        return options.split(f'{option} ', 1)[1].split(' --', 1)[0]

    config, _ = train.parse_args([])
    assert (config.epochs, config.batch_size, config.lr) == (20, 64, 0.05)  # recipes/configs/default.yaml
    assert help_of('--epochs EPOCHS').endswith('(default: 20)')
    assert help_of('--batch-size BATCH_SIZE').endswith('(default: 64)')
    assert help_of('--lr LR').endswith('(default: 0.05)')
    assert 'a local folder' in help_of('--data DATA')


# --- the demo ---------------------------------------------------------------------------------------------------------

def test_the_demo_keeps_an_earlier_run_or_refuses_to_replace_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                               capsys: pytest.CaptureFixture) -> None:
    from gaternet_zoo import demo

    monkeypatch.chdir(tmp_path)
    assert demo.choose_run_folder(None) == demo.DEFAULT_OUT  # free: used as it is
    (demo.DEFAULT_OUT / 'final').mkdir(parents=True)
    (demo.DEFAULT_OUT / 'config.yaml').write_text('model: x\n')
    chosen = demo.choose_run_folder(None)
    assert chosen == Path('runs/demo-2') and 'runs/demo holds an earlier run, which is kept' in capsys.readouterr().out
    (chosen / 'config.yaml').parent.mkdir(parents=True)
    (chosen / 'config.yaml').write_text('model: x\n')
    assert demo.choose_run_folder(None) == Path('runs/demo-3')
    assert demo.choose_run_folder(None, overwrite=True) == demo.DEFAULT_OUT
    with pytest.raises(FileExistsError, match='runs/demo holds an earlier run .*Pass --overwrite to replace it'):
        demo.choose_run_folder(Path('runs/demo'))
    assert demo.choose_run_folder(Path('runs/demo'), train_args=['--resume', 'latest']) == demo.DEFAULT_OUT
    recipe = REPO_ROOT / 'recipes' / 'train.py'
    assert '--overwrite' not in demo.train_command(recipe, demo.DEFAULT_OUT)
    assert '--overwrite' in demo.train_command(recipe, demo.DEFAULT_OUT, overwrite=True)
    # Through main: an explicit --out holding a run is refused before anything is trained.
    assert demo.main(['--out', 'runs/demo', '--recipe', str(recipe)]) == 2
    assert 'Pass --overwrite to replace it' in capsys.readouterr().err


class _Printer:
    is_main_process = True

    def __init__(self) -> None:
        self.lines: list[tuple[str, dict]] = []

    def print(self, line: str, **kwargs) -> None:
        self.lines.append((line, kwargs))


def test_the_time_estimate_comes_once_after_the_measured_batches_and_is_flushed() -> None:
    from gaternet_zoo.training import TimeEstimate

    printer = _Printer()
    clock = TimeEstimate(printer, epochs=2, steps_per_epoch=20, skip=3, measure=5)
    said = [clock.step() for _ in range(20)]
    assert [i for i, line in enumerate(said) if line] == [7]  # batch 8: 3 skipped, then 5 measured
    ((line, kwargs),) = printer.lines
    assert line.startswith('estimated training time: about ') and 'for 40 batches' in line
    assert 'over batches 4-8' in line and kwargs == dict(flush=True)
    assert ' elapsed, about ' in clock.epoch_done() and clock.epoch_done().endswith('about 0 s left')


def test_the_demo_runs_the_recipe_unbuffered() -> None:
    from gaternet_zoo import demo

    # The recipe's lines (the estimate first) reach a pipe or a file as they are printed.
    assert demo._QUIET_ENV['PYTHONUNBUFFERED'] == '1'


# --- docs match the code -------------------------------------------------------------------------------------------

def test_the_docs_index_names_every_model_and_plugin_family() -> None:
    index = (REPO_ROOT / 'docs' / 'index.md').read_text()
    models = [m for m in gz.list_models() if m != 'gaternet']
    missing = [m for m in models if f'`{m}`' not in index]
    assert not missing, f'docs/index.md does not name {missing}'
    assert f'{len(models)} GaterNets' in index
    # The built-in plugins only: a test may have installed the example plugin of docs/write-a-plugin.md.
    built_in = [p for p in gz.list_plugins() if type(gz.get_plugin(p)).__module__.startswith('gaternet_zoo.')]
    covered = sum(len(gz.get_plugin(p).supported_models()) for p in built_in)
    assert f'{covered} timm models' in index
    for family in ('ResNet', 'ResNetV2', 'ConvNeXt', 'EfficientNet', 'RegNet', 'DenseNet'):
        assert family in index, family
    assert len(built_in) == 7, 'a new plugin family: name it in docs/index.md, then update this count'


def test_demo_help_and_text_agree_on_the_run_folder() -> None:
    from gaternet_zoo import demo

    parser = demo.build_parser()
    help_text = ' '.join(parser.format_help().split())
    assert 'runs/demo-2' in help_text and '--overwrite' in help_text
    readme = ' '.join((REPO_ROOT / 'README.md').read_text().split())
    assert 'runs/demo-2' in readme and 'never deletes a run' in readme


def test_the_readme_says_what_make_test_leaves_behind() -> None:
    readme = ' '.join((REPO_ROOT / 'README.md').read_text().split())
    assert '.venv-olah' in readme and '~/.cache/huggingface' in readme and '142 MB' in readme
    assert 'make test-fast' in readme
