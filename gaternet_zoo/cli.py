"""The ``gaternet-zoo`` command line: list, plugins, info, convert-official, push, prune, eval and analyze.

Errors the zoo raises on purpose (bad names, files, data, weights) print one line that says what to do; anything
else is a bug and keeps its traceback.
"""
from __future__ import annotations

import argparse
import fnmatch
import json
import logging
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

# Nothing here imports torch or timm at module level: `gaternet-zoo --help` and `--version` answer without them
# (gaternet_zoo._cli_fast); each command imports what it needs when it runs.
from . import recipes_cli
from .version import __version__

__all__ = ['main', 'COMMANDS', 'build_parser']

#: Sub-command name -> (register(subparsers) function); other modules add theirs here.
COMMANDS: dict[str, Callable[[argparse._SubParsersAction], None]] = {}
_PACKAGE_DIR = Path(__file__).resolve().parent


def command(name: str) -> Callable:
    def deco(fn: Callable[[argparse._SubParsersAction], None]) -> Callable:
        COMMANDS[name] = fn
        return fn
    return deco


#: The generic GaterNet entry point (``create_model("gaternet", backbone=...)``, which ``gate()`` calls): a
#: builder for any supported backbone rather than a model of its own, so ``list`` names it in its help, not as a row.
GENERIC_MODEL = 'gaternet'


@command('list')
def _add_list(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        'list', help='list the zoo models (name, its gated_ alias, the weight tags it has)',
        description='List the zoo models: each name, its gated_ alias and, after "weights:", the tags with published '
                    'weights, the default first (create_model("NAME", pretrained=True) loads the default, '
                    'create_model("NAME.TAG", pretrained=True) any; like timm.list_models(pretrained=True)). '
                    f'"{GENERIC_MODEL}" itself is not listed: it is the generic builder behind '
                    'gaternet_zoo.gate(backbone, ...), for any backbone of `gaternet-zoo plugins`.')
    p.add_argument('filter', nargs='?', default='',
                   help='shell-style wildcard matched against names and aliases, e.g. "gated*" or "*resnet56*"')
    p.add_argument('--pretrained', action='store_true', help='only name.tag entries with published weights')
    p.add_argument('--backbones', action='store_true', help='also list the plain CIFAR backbones')
    p.add_argument('--plugins', action='store_true', help='list the gating plugins instead')

    def run(args: argparse.Namespace) -> int:
        import gaternet_zoo as gz
        from gaternet_zoo._registry import ALIAS_PREFIX, CANONICAL_PREFIX

        if args.plugins:
            for name in gz.list_plugins():
                print(f'{name}: {gz.get_plugin(name).description}')
            return 0
        from timm.models import get_pretrained_cfg

        tagged = gz.list_models(pretrained=True, include_backbones=args.backbones)
        weights: dict[str, list[str]] = {}
        for name in tagged:
            arch, _, tag = name.partition('.')
            weights.setdefault(arch, []).append(tag)
        for arch, tags in weights.items():
            # The tag `pretrained=True` loads comes first and says so (the others stay loadable as NAME.TAG).
            default = get_pretrained_cfg(arch).tag
            if default in tags:
                tags.remove(default)
                tags.insert(0, f'{default} (default)')
        rows = []
        for name in tagged if args.pretrained else gz.list_models(include_backbones=args.backbones):
            if name == GENERIC_MODEL:
                continue
            alias = ALIAS_PREFIX + name[len(CANONICAL_PREFIX):] if name.startswith(CANONICAL_PREFIX) else ''
            if not args.filter or fnmatch.fnmatchcase(name, args.filter) or \
                    (alias and fnmatch.fnmatchcase(alias, args.filter)):
                rows.append((name, alias))
        if not rows:
            print(f'No zoo model matches {args.filter!r}' + ('' if args.backbones else
                  ' (add --backbones for the plain CIFAR backbones)') + '; `gaternet-zoo list` shows them all.',
                  file=sys.stderr)
            return 1
        name_width = max(len(name) for name, _ in rows)
        alias_width = max(len(alias) for _, alias in rows)
        for name, alias in rows:
            columns = [f'{name:<{name_width}}']
            if alias_width:
                columns.append(f'alias {alias:<{alias_width}}' if alias else ' ' * (alias_width + 6))
            if not args.pretrained and name in weights:
                columns.append('weights: ' + ', '.join(weights[name]))
            print('  '.join(columns).rstrip())
        return 0
    p.set_defaults(func=run)


@command('plugins')
def _add_plugins(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser('plugins', help='list the gating plugins with the number of timm models each covers')
    p.add_argument('plugin', nargs='?', help='list the timm models this plugin covers instead')
    p.add_argument('--json', action='store_true', help='print JSON')

    def run(args: argparse.Namespace) -> int:
        import gaternet_zoo as gz

        if args.plugin:
            models = gz.get_plugin(args.plugin).supported_models()
            print(json.dumps(models, indent=2) if args.json else '\n'.join(models))
            return 0
        rows = [dict(plugin=name, models=len(gz.get_plugin(name).supported_models()),
                     description=gz.get_plugin(name).description) for name in gz.list_plugins()]
        if args.json:
            print(json.dumps(rows, indent=2))
            return 0
        width = max(len(r['plugin']) for r in rows)
        print(f'{"plugin":<{width}}  {"models":>6}  covers')
        for r in rows:
            print(f'{r["plugin"]:<{width}}  {r["models"]:>6}  {r["description"]}')
        print(f'{"total":<{width}}  {sum(r["models"] for r in rows):>6}')
        return 0
    p.set_defaults(func=run)


@command('info')
def _add_info(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser('info', help='parameters, gate count and MACs of a model')
    p.add_argument('model', help='model name, name.tag, hf-hub:org/repo or local-dir:/path')
    p.add_argument('--input-size', type=int, nargs=3, metavar=('C', 'H', 'W'), help='override the input size')
    p.add_argument('--json', action='store_true', help='print JSON')

    def run(args: argparse.Namespace) -> int:
        import gaternet_zoo as gz
        from gaternet_zoo.evaluation import has_gates
        from gaternet_zoo.utils.macs import count_macs, count_params, gaternet_macs

        model = gz.create_model(args.model).eval()
        input_size = tuple(args.input_size or model.pretrained_cfg.get('input_size', (3, 224, 224)))
        if args.input_size:
            _check_input_size(model, input_size, '--input-size')
        info: dict = dict(model=args.model, architecture=model.pretrained_cfg.get('architecture'),
                          input_size=list(input_size), num_classes=model.num_classes, params=count_params(model))
        if has_gates(model):
            macs = gaternet_macs(model, input_size)
            info.update(backbone=model.backbone_name, gater=model.gater_name, plugin=model.plugin_name,
                        gate_size=model.gate_size, gate_sites=len(model.gate_sites),
                        params_backbone=count_params(model.backbone), params_gater=count_params(model.gater),
                        macs_backbone=macs['backbone'], macs_gater=macs['gater'], macs_total=macs['total'])
        else:
            import torch
            info['macs'] = count_macs(model, torch.zeros(1, *input_size))[0]
        if args.json:
            print(json.dumps(info, indent=2))
        else:
            width = max(len(k) for k in info)
            for key, value in info.items():
                shown = f'{value:,}' if isinstance(value, int) and not isinstance(value, bool) else value
                print(f'{key:<{width}}  {shown}')
        return 0
    p.set_defaults(func=run)


@command('convert-official')
def _add_convert(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser('convert-official', help='convert a released GaterNet .pth checkpoint to Hub format')
    p.add_argument('checkpoint', type=Path, help='ResNet-20-Gated.pth or ResNet-56-Gated.pth')
    p.add_argument('output_dir', type=Path, help='folder to write model.safetensors, config.json, README.md')
    p.add_argument('--overwrite', action='store_true', help='write into a non-empty output folder, replacing files')

    def run(args: argparse.Namespace) -> int:
        import gaternet_zoo as gz
        from gaternet_zoo._io import check_output_dir

        check_output_dir(args.output_dir, overwrite=args.overwrite, what='the converted model')
        model = gz.load_official_checkpoint(args.checkpoint)
        model.pretrained_cfg['tag'] = 'official_c10'
        model.save_pretrained(args.output_dir)
        print(f'{model.pretrained_cfg["architecture"]}: {model.gate_size} gates -> {args.output_dir}')
        return 0
    p.set_defaults(func=run)


@command('push')
def _add_push(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser('push', help='validate a saved model folder and upload it to the Hub in one commit')
    p.add_argument('folder', type=Path, help='folder written by save_pretrained')
    p.add_argument('repo_id', help='target Hub repository, org/name')
    p.add_argument('--revision', help='branch to commit to (default: main)')
    p.add_argument('--private', action='store_true', help='create the repository as private')
    p.add_argument('--create-pr', action='store_true', help='open a pull request instead of committing')
    p.add_argument('--commit-message', default='Upload GaterNet weights (gaternet_zoo)',
                   help='message of the upload commit (default: %(default)s)')
    p.add_argument('--tag', help='create this git tag on the upload commit (the revision the registry pins)')

    def run(args: argparse.Namespace) -> int:
        from gaternet_zoo._publish import push_folder, validate_folder

        report = validate_folder(args.folder)
        print(report)
        url = push_folder(args.folder, args.repo_id, revision=args.revision, private=args.private,
                          create_pr=args.create_pr, commit_message=args.commit_message, tag=args.tag)
        print(f'uploaded: {url}')
        return 0
    p.set_defaults(func=run)


def _check_input_size(model, input_size: tuple[int, ...], option: str) -> None:
    """Refuse an input size the model cannot take (channels, minimum side) before any forward pass."""
    from gaternet_zoo import _validation

    modules = (model.backbone, model.gater.encoder) if hasattr(model, 'gater') else (model,)
    in_chans = getattr(model, 'in_chans', None) or input_size[0]
    try:
        _validation.check_input_size(model, input_size, min_side=_validation.min_input_side(*modules),
                                     in_chans=in_chans, owner=type(model).__name__)
    except ValueError as e:
        raise ValueError(f'{option} {" ".join(str(v) for v in input_size)}: {e}') from e


COMMANDS.update(recipes_cli.COMMANDS)


def build_parser() -> argparse.ArgumentParser:
    """The ``gaternet-zoo`` argument parser with every registered sub-command."""
    parser = argparse.ArgumentParser(prog='gaternet-zoo', description='GaterNet model zoo')
    parser.add_argument('--version', action='version', version=f'gaternet-zoo {__version__}')
    sub = parser.add_subparsers(dest='command', required=True, metavar='COMMAND')
    for register in COMMANDS.values():
        register(sub)
    return parser


def is_user_error(error: BaseException) -> bool:
    """Whether ``error`` is one the zoo raises on purpose, with a message that says the fix.

    That is an exception class of gaternet_zoo's own (``UnknownModelError``, ``HubLoadError``, ...), an ``OSError``
    (a file, folder or the network), or a ``ValueError``/``RuntimeError`` raised by gaternet_zoo's code. A
    ``TypeError``, ``ImportError``, ``KeyError`` or anything raised inside another library is a bug, not a message.
    """
    if type(error).__module__.split('.')[0] == __package__ or isinstance(error, OSError):
        return True
    if not isinstance(error, (ValueError, RuntimeError)):
        return False
    tb = error.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    return tb is not None and Path(tb.tb_frame.f_code.co_filename).resolve().is_relative_to(_PACKAGE_DIR)


def _show_zoo_log() -> None:
    # The zoo's INFO lines say where weights came from (Hub, cache or shipped copy); a command shows them on stderr
    # unless the caller has set up logging itself.
    logger = logging.getLogger(__package__)
    if not logger.handlers and not logging.getLogger().handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter('%(message)s'))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code (a user error prints one clear line, exit code 2)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    _show_zoo_log()
    try:
        code = args.func(args)
        sys.stdout.flush()  # Here, not at exit: a closed pipe must be met inside the handler below.
        return code
    except BrokenPipeError:
        # The reader stopped early (`gaternet-zoo list | head`): stop quietly, as the shell's own tools do. Python
        # would flush stdout again at exit and fail again, so point it at /dev/null first (Python's signal docs).
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 128 + 13  # what a tool killed by SIGPIPE reports
    except Exception as e:
        if not is_user_error(e):
            raise
        message = e.args[0] if isinstance(e, KeyError) and e.args else e
        print(f'gaternet-zoo {args.command}: error: {message}', file=sys.stderr)
        return 2


if __name__ == '__main__':
    # Under `python -m gaternet_zoo.cli` this file runs as __main__; commands register on the package module.
    from gaternet_zoo.cli import main as package_main

    sys.exit(package_main())
