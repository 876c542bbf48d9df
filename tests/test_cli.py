"""Acceptance tests of the ``gaternet-zoo`` command line (list, info) and of its installed console script."""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import gaternet_zoo as gz
from gaternet_zoo.cli import main
from gaternet_zoo.utils.macs import count_params, gaternet_macs

# One intra-op thread: faster for these tiny tensors, and no OpenMP spin-waiting on a shared 2-core machine.
pytestmark = pytest.mark.usefixtures('one_torch_thread')


def _cifar_resnet20_conv_macs(num_classes: int = 10) -> int:
    """MACs of the convs and the classifier of a CIFAR ResNet-20 at 32x32, counted by hand."""
    macs = 32 * 32 * 16 * 3 * 9  # stem
    in_chs, side = 16, 32
    for stage, width in enumerate((16, 32, 64)):
        for block in range(3):
            if stage > 0 and block == 0:
                side //= 2
                macs += side * side * width * in_chs  # 1x1 projection shortcut
            macs += side * side * width * in_chs * 9 + side * side * width * width * 9
            in_chs = width
    return macs + 64 * num_classes


def _names(out: str) -> list[str]:
    return [line.split()[0] for line in out.splitlines()]


def test_list_prints_every_model_with_its_alias(capsys):
    assert main(['list']) == 0
    lines = capsys.readouterr().out.splitlines()
    assert _names('\n'.join(lines)) == [m for m in gz.list_models() if m != 'gaternet']  # the generic builder
    assert ['gaternet_wrn28_10', 'alias', 'gated_wrn28_10'] in [line.split() for line in lines]
    assert main(['list', 'gated_resnet5*']) == 0
    assert _names(capsys.readouterr().out) == ['gaternet_resnet50', 'gaternet_resnet56']
    assert main(['list', '--backbones']) == 0
    out = capsys.readouterr().out
    assert _names(out) == [m for m in gz.list_models(include_backbones=True) if m != 'gaternet']
    assert 'cifar_resnet32\n' in out  # a plain backbone has no alias (and this one no weights)


def test_list_glob_finds_aliases_and_says_when_nothing_matches(capsys):
    assert main(['list', 'gated*']) == 0
    gated = [name for name in gz.list_models() if name.startswith('gaternet_')]  # `gaternet` itself has no alias
    assert gated and _names(capsys.readouterr().out) == gated
    assert main(['list', 'gated_resnet20.*', '--pretrained']) == 0  # an alias with a weight tag
    assert _names(capsys.readouterr().out) == ['gaternet_resnet20.cifar10', 'gaternet_resnet20.cifar10_macs50']
    assert main(['list', '*resnet20.*', '--pretrained', '--backbones']) == 0
    assert _names(capsys.readouterr().out) == gz.list_pretrained('*resnet20.*') == [
        'cifar_resnet20.cifar10', 'cifar_resnet20.cifar10_e200', 'gaternet_resnet20.cifar10',
        'gaternet_resnet20.cifar10_macs50']
    assert main(['list', 'gated_nothing*']) == 1
    captured = capsys.readouterr()
    assert captured.out == '' and "No zoo model matches 'gated_nothing*'" in captured.err
    assert '`gaternet-zoo list` shows them all' in captured.err


def test_version(capsys):
    with pytest.raises(SystemExit) as info:
        main(['--version'])
    assert info.value.code == 0
    assert capsys.readouterr().out.strip() == f'gaternet-zoo {gz.__version__}'


def _parsers(parser: argparse.ArgumentParser, prefix: str = 'gaternet-zoo'):
    yield prefix, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _parsers(sub, f'{prefix} {name}')


def test_every_flag_is_explained_once_without_machine_paths():
    from gaternet_zoo import demo
    from gaternet_zoo.cli import build_parser

    for prog, parser in [*_parsers(build_parser()), ('demo', demo.build_parser())]:
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                continue
            text = parser._get_formatter()._expand_help(action) if action.help else ''
            assert text and text != argparse.SUPPRESS, f'{prog} {action.option_strings or action.dest}: no help'
            assert not re.search(r'\(default[^)]*\)\s*\(default', text), f'{prog} {action.option_strings}: {text}'
            assert '/work/' not in text and '/home/' not in text, f'{prog} {action.option_strings}: {text}'


def test_unexpected_exceptions_keep_their_traceback(monkeypatch, capsys):
    from gaternet_zoo import cli

    def broken(*args, **kwargs):
        raise TypeError('a bug, not a user error')

    monkeypatch.setattr(gz, 'create_model', broken)
    with pytest.raises(TypeError, match='a bug, not a user error'):
        cli.main(['info', 'gaternet_resnet20'])

    def not_found(*args, **kwargs):
        raise gz.HubLoadError('no such folder: say so in one line')

    monkeypatch.setattr(gz, 'create_model', not_found)
    assert cli.main(['info', 'gaternet_resnet20']) == 2
    assert capsys.readouterr().err == 'gaternet-zoo info: error: no such folder: say so in one line\n'
    assert cli.is_user_error(ValueError('raised here, in a test, not by the zoo')) is False


def test_list_plugins(capsys):
    assert main(['list', '--plugins']) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split(':', 1)[0] for line in lines] == gz.list_plugins()
    assert any(line.startswith('timm_resnet: ') and 'resnext' in line for line in lines)
    assert any(line.startswith('native: ') and 'cifar_resnet20' in line for line in lines)


def test_info_resnet20(capsys):
    assert main(['info', 'gaternet_resnet20', '--json']) == 0
    info = json.loads(capsys.readouterr().out)
    model = gz.create_model('gaternet_resnet20')
    macs = gaternet_macs(model)
    assert info['architecture'] == 'gaternet_resnet20' and info['input_size'] == [3, 32, 32]
    assert info['gate_size'] == 336 and info['gate_sites'] == 9 and info['plugin'] == 'native'
    assert info['params'] == count_params(model) == info['params_backbone'] + info['params_gater']
    assert info['params_backbone'] == count_params(model.backbone)
    assert info['macs_backbone'] == macs['backbone'] and info['macs_gater'] == macs['gater']
    assert info['macs_total'] == info['macs_backbone'] + info['macs_gater']
    # ResNet-20 at 32x32 is about 41 M MACs; the count is exact for its convs and classifier.
    assert 35e6 < info['macs_backbone'] < 50e6
    assert info['macs_backbone'] == _cifar_resnet20_conv_macs()
    # The gater is a ResNet-20 without its classifier plus the 64 -> 8 -> 336 bottleneck MLP.
    assert info['macs_gater'] == _cifar_resnet20_conv_macs() - 64 * 10 + 64 * 8 + 8 * 336


def test_info_text_output(capsys):
    assert main(['info', 'gaternet_resnet20']) == 0
    rows = dict(line.split(None, 1) for line in capsys.readouterr().out.splitlines())
    assert rows['gate_size'].strip() == '336'
    assert int(rows['params'].replace(',', '')) == count_params(gz.create_model('gaternet_resnet20'))
    assert int(rows['macs_backbone'].replace(',', '')) == _cifar_resnet20_conv_macs()
    assert 'macs_gater' in rows


def test_info_unknown_model(capsys):
    assert main(['info', 'gaternet_resnet2']) == 2
    captured = capsys.readouterr()
    assert captured.out == ''
    assert captured.err.startswith('gaternet-zoo info: error: Unknown model')
    assert 'gaternet_resnet20' in captured.err and '`gaternet-zoo list`' in captured.err
    assert len(captured.err.strip().splitlines()) == 1  # one clear line, no traceback


def test_no_command_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as info:
        main([])
    assert info.value.code == 2
    assert 'usage: gaternet-zoo' in capsys.readouterr().err


@pytest.mark.slow  # issue 25: out of `make test-fast` (seconds of subprocesses or full-size models)
def test_console_script_is_installed():
    script = Path(sys.executable).parent / 'gaternet-zoo'
    if not script.exists():
        found = shutil.which('gaternet-zoo')
        assert found, 'the gaternet-zoo console script is not installed'
        script = Path(found)
    result = subprocess.run([str(script), 'list'], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert _names(result.stdout) == [m for m in gz.list_models() if m != 'gaternet']
