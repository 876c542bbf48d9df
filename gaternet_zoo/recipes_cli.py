"""``gaternet-zoo eval``, ``analyze`` and ``prune``: sub-commands that need the training stack.

``gaternet_zoo.cli`` registers them from here. ``recipes/eval.py`` runs the same code through
:func:`eval_main`, so ``python recipes/eval.py ...`` and ``accelerate launch recipes/eval.py ...`` accept the same
arguments as ``gaternet-zoo eval``.
"""
from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from ._constants import DEFAULT_DATA_SOURCE

__all__ = [
    'COMMANDS', 'add_analyze_arguments', 'add_eval_arguments', 'add_prune_arguments', 'analyze_main', 'eval_main',
    'run_analyze', 'run_eval', 'run_prune',
]

_ERRORS = (KeyError, ValueError, OSError, RuntimeError, TypeError)


#: Why ``prune`` and ``analyze`` default to the training split: choosing the filters to remove (or reading the gates)
#: on the test split would tune the result to the very images it is measured on afterwards.
_CALIBRATION_SPLIT_HELP = ('split to read the gates from (default: %(default)s; calibrating on the test split would '
                           'tune the result to the images it is then measured on)')


def _add_common(p: argparse.ArgumentParser, split: str = 'test', split_help: str = 'split to evaluate') -> None:
    p.add_argument('model', help='model name, name.tag, cifar_resnet20 (plain backbone), hf-hub:org/repo or '
                                 'local-dir:/path')
    p.add_argument('--data', default=DEFAULT_DATA_SOURCE,
                   help=f'data source: {DEFAULT_DATA_SOURCE}, a folder of parquet files or of images in class '
                        f'folders, or a Hub dataset id such as uoft-cs/cifar10 (default: {DEFAULT_DATA_SOURCE})')
    p.add_argument('--split', default=split, help=split_help + ('' if '%(default)' in split_help else
                                                                 ' (default: %(default)s)'))
    p.add_argument('--batch-size', type=int, default=128, help='batch size per process (default: 128)')
    p.add_argument('--max-samples', type=int, default=None, help='evaluate only the first N rows of the split')
    p.add_argument('--num-classes', type=int, default=None, metavar='N',
                   help="the data's number of classes, for labels without ClassLabel metadata (must equal the "
                        "model's)")
    p.add_argument('--cpu', action='store_true', default=False,
                   help='run on the CPU even if a GPU is present (always the case without CUDA)')


def add_eval_arguments(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add the ``eval`` arguments to ``p``; returns ``p``."""
    _add_common(p)
    p.add_argument('--json', type=Path, default=None, metavar='OUT', help='also write the report as JSON to OUT')
    return p


def add_analyze_arguments(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add the ``analyze`` arguments to ``p``; returns ``p``."""
    _add_common(p, 'train', _CALIBRATION_SPLIT_HELP)
    p.add_argument('--out', type=Path, required=True, help='folder for the PNG figures and gate_stats.json')
    return p


def run_eval(args: argparse.Namespace) -> int:
    """Evaluate ``args.model`` on ``args.data`` and print (and optionally save) the report."""
    from ._io import check_output_file
    from .evaluation import default_accelerator, evaluate_model, format_report, write_json

    if args.json is not None:  # before the evaluation, not after it
        check_output_file(args.json, what='the JSON report (--json)', replaces_json_only=True)
    accelerator = default_accelerator(args.cpu)
    report, _, _, _ = evaluate_model(args.model, args.data, split=args.split, batch_size=args.batch_size,
                                     max_samples=args.max_samples, accelerator=accelerator,
                                     num_classes=args.num_classes)
    if accelerator.is_main_process:
        print(format_report(report))
        if args.json is not None:
            print(f'report written to {write_json(report, args.json)}')
    return 0


def run_analyze(args: argparse.Namespace) -> int:
    """Evaluate a GaterNet and write the gate analysis figures and ``gate_stats.json`` to ``args.out``."""
    from ._io import check_output_dir
    from .analysis import analyze
    from .evaluation import default_accelerator, format_report

    # Figures in an existing folder are replaced (re-running an analysis is normal); it must be writable, though.
    check_output_dir(args.out, overwrite=True, what='the analysis figures (--out)')
    accelerator = default_accelerator(args.cpu)
    report, paths = analyze(args.model, args.data, args.out, split=args.split, batch_size=args.batch_size,
                            max_samples=args.max_samples, accelerator=accelerator, num_classes=args.num_classes)
    if accelerator.is_main_process:
        print(format_report(report))
        for kind, path in paths.items():
            print(f'{kind:<10} {path}')
    return 0


def add_prune_arguments(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add the ``prune`` arguments to ``p``; returns ``p``."""
    _add_common(p, 'train', _CALIBRATION_SPLIT_HELP.replace('read the gates from', 'calibrate the pruning on'))
    p.add_argument('--out', type=Path, required=True, help='folder for the pruned model (Hub format)')
    p.add_argument('--overwrite', action='store_true', default=False, help='replace the files of a non-empty --out')
    p.add_argument('--round-to', type=int, default=None, metavar='N',
                   help='keep a multiple of N filters per block (e.g. 8: CPU conv kernels are vectorised over 8 or 16 '
                        'channels); the extra kept filters stay gated (zeroed with --static), so the logits do not '
                        'change (default: 1; with --static, a model pruned already keeps its own, and a model whose '
                        'gating plugin cannot prune takes none)')
    p.add_argument('--static', action='store_true', default=False,
                   help='export a plain backbone without the gater (export_static): needs every gate that is kept to '
                        'be constant (always open or always closed) on the calibration data; refused, naming the '
                        'input-dependent gates, otherwise')
    p.add_argument('--input-dependent', choices=('refuse', 'open', 'majority'), default=None,
                   help='with --static: what to do with input-dependent gates: refuse (default; the only choice that '
                        'keeps the outputs), open (keep their filters always open) or majority (fix each at its more '
                        'frequent state); open and majority change what the model computes')
    return p


def run_prune(args: argparse.Namespace) -> int:
    """Remove the filters whose gates never open over ``args.data``; save the pruned model to ``args.out``."""
    from ._io import check_output_dir
    from ._prune import check_round_to, prune_gaternet
    from .evaluation import default_accelerator, evaluate_model, format_report

    if args.round_to is not None:
        check_round_to(args.round_to)  # before the calibration, not after it
    static = getattr(args, 'static', False)
    input_dependent = getattr(args, 'input_dependent', None)
    if input_dependent is not None and not static:
        raise ValueError('--input-dependent applies to a static export: add --static')
    check_output_dir(args.out, overwrite=args.overwrite, what='the pruned model (--out)')
    accelerator = default_accelerator(args.cpu)
    report, result, model, data = evaluate_model(args.model, args.data, split=args.split, batch_size=args.batch_size,
                                                 max_samples=args.max_samples, accelerator=accelerator,
                                                 num_classes=args.num_classes)
    if result.gate_stats is None:
        raise ValueError(f'{args.model} has no gates: pruning removes filters whose gates never open, so it needs a '
                         'GaterNet')
    calibration = f'{data.description}, split {args.split!r}, {result.num_samples} images'
    if static:
        return _save_static(args, model, result.gate_stats, calibration, report, accelerator, input_dependent)
    pruned = prune_gaternet(model, result.gate_stats, calibration=calibration, round_to=args.round_to or 1)
    if accelerator.is_main_process:
        print(format_report(report))
        pruning = pruned.pretrained_cfg['pruning']
        pruned.save_pretrained(args.out)
        print(f'pruned {pruning["filters_removed"]} of {pruning["filters_gated"]} gated filters in '
              f'{pruning["sites_pruned"]} blocks; saved to {args.out} (load with create_model("local-dir:{args.out}"))')
    return 0


def _save_static(args: argparse.Namespace, model, stats, calibration: str, report: dict, accelerator,
                 input_dependent: str | None) -> int:
    """``prune --static``: export the backbone without the gater (refused where gates are input-dependent)."""
    from ._model_card import static_export_summary
    from ._static import export_static
    from .evaluation import format_report

    static = export_static(model, stats, calibration=calibration, source=args.model, round_to=args.round_to,
                           input_dependent=input_dependent or 'refuse')
    if accelerator.is_main_process:
        print(format_report(report))
        static.save_pretrained(args.out)
        print(f'static export: {static_export_summary(static.pretrained_cfg["static_export"])}; no gater; saved to '
              f'{args.out} (load with create_model("local-dir:{args.out}"))')
    return 0


def _add_prune(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser('prune', help='remove the filters whose gates never open over a calibration set and save '
                                     'the smaller GaterNet (or, with --static, the backbone without the gater)')
    add_prune_arguments(p)
    p.set_defaults(func=run_prune)


def _add_eval(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser('eval', help='top-1/top-5, params, MACs and gate statistics of a model on a data set')
    add_eval_arguments(p)
    p.set_defaults(func=run_eval)


def _add_analyze(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser('analyze', help='gate analysis figures (per-block open fraction, firing histogram, '
                                       'class x gate heat map) of a GaterNet')
    add_analyze_arguments(p)
    p.set_defaults(func=run_analyze)


#: Sub-command name -> register(subparsers) function, for ``gaternet_zoo.cli``.
COMMANDS: dict[str, Callable[[argparse._SubParsersAction], None]] = {
    'eval': _add_eval, 'analyze': _add_analyze, 'prune': _add_prune}


def _standalone(prog: str, add: Callable[[argparse.ArgumentParser], argparse.ArgumentParser],
                run: Callable[[argparse.Namespace], int], argv: Sequence[str] | None) -> int:
    parser = add(argparse.ArgumentParser(prog=prog))
    args = parser.parse_args(argv)
    try:
        return run(args)
    except _ERRORS as e:
        message = e.args[0] if isinstance(e, KeyError) and e.args else e
        print(f'{prog}: error: {message}', file=sys.stderr)
        return 2


def eval_main(argv: Sequence[str] | None = None, prog: str = 'eval.py') -> int:
    """``gaternet-zoo eval`` as a standalone script (``recipes/eval.py``); returns the exit code."""
    return _standalone(prog, add_eval_arguments, run_eval, argv)


def analyze_main(argv: Sequence[str] | None = None, prog: str = 'analyze') -> int:
    """``gaternet-zoo analyze`` as a standalone entry point; returns the exit code."""
    return _standalone(prog, add_analyze_arguments, run_analyze, argv)
