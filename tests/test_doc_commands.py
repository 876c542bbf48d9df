"""Every shell command printed in README.md, docs/*.md and recipes/README.md runs as printed (issue 25).

The fenced ``bash`` blocks are read, continuation lines joined, comments dropped and simple ``for`` loops unrolled.
Each command is then checked by what it runs, without training anything:

* ``gaternet-zoo ...``, ``python -m gaternet_zoo.demo ...``: parsed by the real argument parser;
* ``accelerate launch ... recipes/train.py ...``, ``python recipes/train.py ...``: the launcher's options by
  Accelerate's own parser, the recipe's by ``recipes/train.py``'s ``parse_args`` (config files read, keys and
  values validated, exactly what happens before a run starts);
* ``make TARGET``: the target exists (``make -n``); any other script: its file exists.

A command of a kind the test does not know fails it, so a new snippet gets a check. The cheap commands of the
first-hour pages also run for real, in a subprocess whose ``PATH`` starts with the virtual environment's ``bin``
(what ``source .venv/bin/activate`` does).
"""
from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from hubserver import REPO_ROOT

PAGES = [REPO_ROOT / 'README.md', *sorted((REPO_ROOT / 'docs').glob('*.md')), REPO_ROOT / 'recipes' / 'README.md']
# The pages a new user follows on a fresh clone: every command there must also run there.
FIRST_HOUR = (REPO_ROOT / 'README.md', REPO_ROOT / 'docs' / 'getting-started.md')
ACTIVATE = 'source .venv/bin/activate'
# Shell built-ins and file utilities the snippets use around the zoo's commands.
_SHELL = {'cd', 'mkdir', 'cp', 'source'}


@dataclass(frozen=True)
class Command:
    page: Path
    text: str

    @property
    def argv(self) -> list[str]:
        return shlex.split(self.text)

    def __str__(self) -> str:
        return f'{self.page.relative_to(REPO_ROOT)}: {self.text}'


def _unroll(lines: list[str]) -> list[str]:
    """Expand ``for VAR in A B; do ... done`` (no nesting) into its body once per value."""
    out: list[str] = []
    i = 0
    while i < len(lines):
        loop = re.fullmatch(r'for (\w+) in ([^;]+); do', lines[i])
        if not loop:
            out.append(lines[i])
            i += 1
            continue
        end = lines.index('done', i)
        for value in loop.group(2).split():
            out += [re.sub(r'\$\{?' + loop.group(1) + r'\}?', value, line) for line in lines[i + 1:end]]
        i = end + 1
    return out


def commands(page: Path) -> list[Command]:
    """The shell commands of ``page``'s fenced bash blocks."""
    found = []
    for block in re.findall(r'^```bash\n(.*?)^```', page.read_text(), flags=re.M | re.S):
        joined = re.sub(r'\\\n\s*', ' ', block)
        lines = [re.sub(r'\s+#.*$', '', line).strip() for line in joined.splitlines()]
        lines = [line for line in lines if line and not line.startswith('#')]
        for line in _unroll(lines):
            # `git clone URL && cd DIR`: each part is a command of its own.
            found += [Command(page, part.strip()) for part in line.split('&&')]
    return found


ALL = [c for page in PAGES for c in commands(page)]


def _without_placeholders(argv: list[str]) -> list[str]:
    """``argv`` without what stands for the reader's choice: ``[--revision BRANCH]`` groups, and ``--opt ...``."""
    out: list[str] = []
    in_group = False
    for arg in argv:
        if in_group or arg.startswith('['):
            in_group = not arg.endswith(']')
        elif arg == '...':
            out.pop()  # the option whose value it stands for
        else:
            out.append(arg)
    return out


def _check_train_args(args: list[str]) -> None:
    from recipes import train

    if '--resume' in args:
        # Resuming names a run of the reader's; check everything but the folder it points at.
        cut = args.index('--resume')
        args = args[:cut] + args[cut + 2:]
    train.parse_args(args)


def check(command: Command) -> None:
    """Parse (or otherwise check) one command without running it; raises on a command that would fail at once."""
    argv = _without_placeholders(command.argv)
    program, args = argv[0], argv[1:]
    if program in _SHELL or (program == 'git' and args[:1] == ['clone']):
        return
    if program == 'make':
        target = [a for a in args if '=' not in a][:1] or ['test']
        proc = subprocess.run(['make', '-n', '-o', '.venv/.installed', *target, 'VENV=.venv'], cwd=REPO_ROOT,
                              capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0, f'{command}: {proc.stderr}'
        return
    if program == 'gaternet-zoo':
        from gaternet_zoo.cli import build_parser

        build_parser().parse_args(args)
        return
    if program == 'accelerate':
        from accelerate.commands.launch import launch_command_parser

        assert args[0] == 'launch', command
        script_at = next(i for i, a in enumerate(args) if a.endswith('.py'))
        launch_command_parser().parse_args(args[1:script_at + 1])
        config_file = args[args.index('--config_file') + 1] if '--config_file' in args[:script_at] else None
        assert config_file is None or (REPO_ROOT / config_file).is_file(), command
        assert args[script_at] == 'recipes/train.py', command
        _check_train_args(args[script_at + 1:])
        return
    if program in ('python', '.venv/bin/python'):
        if args[:2] == ['-m', 'gaternet_zoo.demo']:
            from gaternet_zoo import demo

            rest = args[2:]
            demo.build_parser().parse_args(rest[:rest.index('--')] if '--' in rest else rest)
            return
        if args[:1] == ['-m'] and args[1].split('.')[0] in ('tools', 'bench'):
            # The project's experiment scripts run as modules from the repository root.
            assert (REPO_ROOT / (args[1].replace('.', '/') + '.py')).is_file(), command
            return
        assert (REPO_ROOT / args[0]).is_file(), command
        if args[0] == 'recipes/train.py':
            _check_train_args(args[1:])
        return
    if program == 'pip':
        assert args[0] == 'install' and all((REPO_ROOT / a).exists() for a in args[1:] if a.startswith('./')), command
        return
    if program == 'pytest':
        assert all((REPO_ROOT / a).is_file() for a in args if a.startswith('tests/')), command
        return
    raise AssertionError(f'{command}: no check for {program!r}; add one to tests/test_doc_commands.py')


def test_the_pages_print_commands() -> None:
    assert len(ALL) > 40 and all(commands(page) for page in FIRST_HOUR)


@pytest.mark.parametrize('command', ALL, ids=str)
def test_every_printed_command_parses(command: Command, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(REPO_ROOT)
    try:
        check(command)
    except SystemExit as e:  # argparse's way of refusing a command line
        raise AssertionError(f'{command}: refused by its parser (exit {e.code})') from e


def test_the_first_hour_pages_say_once_how_the_commands_find_the_venv() -> None:
    bin_dir = Path(sys.executable).parent
    for page in FIRST_HOUR:
        text = page.read_text()
        needs_venv = [c for c in commands(page) if c.argv[0] in ('gaternet-zoo', 'accelerate', 'python', 'pytest')]
        if not needs_venv:
            continue
        first = text.index(needs_venv[0].text.split(' ')[0] + ' ' + needs_venv[0].text.split(' ')[1])
        assert ACTIVATE in text[:first], f'{page.name}: say `{ACTIVATE}` before the first command that needs it'
        for c in needs_venv:
            assert (bin_dir / c.argv[0]).exists(), f'{c}: {c.argv[0]} is not installed in the virtual environment'


# Commands of the first-hour pages that are cheap enough to run for real here (seconds each).
_RUN_FOR_REAL = ('gaternet-zoo list', 'gaternet-zoo plugins', 'gaternet-zoo info gaternet_resnet20')


@pytest.mark.slow
def test_the_cheap_first_hour_commands_run_with_the_venv_on_path() -> None:
    printed = {c.text for page in FIRST_HOUR for c in commands(page)}
    assert set(_RUN_FOR_REAL) <= printed, 'a command to run here is no longer printed'
    env = {**os.environ, 'PATH': f'{Path(sys.executable).parent}{os.pathsep}{os.environ.get("PATH", "")}',
           'PYTHONPATH': str(REPO_ROOT)}
    for text in _RUN_FOR_REAL:
        proc = subprocess.run(shlex.split(text), cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0 and proc.stdout.strip(), f'{text}: {proc.stderr[-2000:]}'
        assert 'Traceback' not in proc.stderr, f'{text}: {proc.stderr[-2000:]}'


@pytest.mark.slow
def test_make_train_gives_accelerate_every_value_it_would_warn_about() -> None:
    # The command `make train ARGS=--help` runs, with this test's interpreter as the venv's.
    dry = subprocess.run(['make', '-s', '-n', '-o', '.venv/.installed', 'train', 'ARGS=--help'], cwd=REPO_ROOT,
                         capture_output=True, text=True, timeout=60, check=True).stdout
    argv = shlex.split(dry.replace('\\\n', ' '))
    assert argv[:2] == ['.venv/bin/accelerate', 'launch'] and '--quiet' in argv
    argv = [sys.executable, '-m', 'accelerate.commands.launch', *argv[2:]]
    env = {**os.environ, 'PYTHONPATH': str(REPO_ROOT)}
    proc = subprocess.run(argv, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and '(default: 20)' in proc.stdout, proc.stderr[-2000:]
    assert 'were not passed' not in proc.stderr and 'had defaults used instead' not in proc.stderr, proc.stderr
