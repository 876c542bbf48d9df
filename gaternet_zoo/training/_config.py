"""The training recipe's settings in one typed place: :class:`TrainConfig`.

Every setting of ``recipes/train.py`` is a field of :class:`TrainConfig` with its type, its built-in default and a
one-line meaning (the field's ``metadata``). From these fields come, with nothing written twice:

* the command line (:func:`build_train_parser`): flags, types, choices, defaults, help text and groups;
* the config-file keys (:func:`read_config_file`: an unknown key is refused naming the close ones);
* the checks (:meth:`TrainConfig.validate`): types, ranges, choices, run once on the resolved settings;
* what a resume must keep (:data:`RESUME_EXACT_KEYS`);
* the run folder's ``config.yaml`` (:meth:`TrainConfig.to_dict`, read back by :meth:`TrainConfig.from_dict`).

Settings resolve as built-in defaults < ``default.yaml`` or ``--config`` (on resume, the run's ``config.yaml``
below it) < flags (:func:`parse_train_args`). The invocation's own flags (``--config``, ``--resume``,
``--overwrite``) describe one command, not the experiment: they are :class:`TrainInvocation`, never in a file.
"""
from __future__ import annotations

import argparse
import dataclasses
import difflib
import os
import sys
import types
import typing
from collections.abc import Collection, Iterator, Mapping, Sequence
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from ._checks import check_finite_settings
from ._gates import GATE_BUDGETS
from ._run_dir import RecipeError, resolve_run_dir

__all__ = [
    'CONFIG_GROUPS', 'DefaultsOnceHelpFormatter', 'RESUME_EXACT_KEYS', 'TrainConfig', 'TrainInvocation',
    'build_train_parser', 'parse_train_args', 'read_config_file', 'setting',
]

# The help's groups, in their order; a field names its group in its metadata.
MODEL_AND_DATA = 'model and data'
OPTIMISATION = 'optimisation'
GATERNET = "GaterNet options (each default is the paper's behaviour)"
DEVICE = 'device'
RUN_FOLDER = 'run folder and checkpoints'
#: The groups of ``recipes/train.py --help``, in order.
CONFIG_GROUPS = (MODEL_AND_DATA, OPTIMISATION, GATERNET, DEVICE, RUN_FOLDER)

# The range checks a numeric field may ask for. The words are the error message's ("lr must be > 0, got 0.0").
_FLOAT_CHECKS = {'>= 0': lambda v: v >= 0, '> 0': lambda v: v > 0, '>= 0 and <= 1': lambda v: 0 <= v <= 1}
_INT_CHECKS = ('positive',)


def setting(default: Any = MISSING, help: str = '', *, group: str | None, default_factory: Any = MISSING,
            metavar: str | None = None, choices: Sequence[Any] | None = None, check: str | None = None,
            flag: bool = True, negatable: bool = True, same_on_resume: bool = True,
            after: str | None = None) -> Any:
    """A :class:`TrainConfig` field: its default and everything the parser, the checks and the resume need.

    Args:
        default: Built-in default (what runs when neither a config file nor a flag sets it).
        help: One line: what the setting means (the flag's help; ``--help`` appends the default unless the line
            says what leaving it unset means, i.e. contains "default").
        group: The ``--help`` group (one of :data:`CONFIG_GROUPS`; ``None``: the top-level options).
        default_factory: For mutable defaults (``model_args``).
        metavar: The flag's value name in ``--help`` (default: the upper-cased name).
        choices: The allowed values (``None`` among them when the field may be unset).
        check: A range: ``'>= 0'``, ``'> 0'`` or ``'>= 0 and <= 1'`` for floats, ``'positive'`` for integers.
        flag: ``False`` for a config-file-only key (``model_args``: a mapping has no flag form).
        negatable: Booleans: ``--x/--no-x`` (``True``) or a plain ``--x`` switch (``False``).
        same_on_resume: A resumed run must use the run's value (it shapes the training); ``False`` for settings a
            resume may change (evaluation, workers, checkpoint frequency, ...). New settings default to ``True``:
            the safe side, a resume refused rather than a silently different run.
        after: :class:`TrainInvocation` only: the :class:`TrainConfig` field this flag follows in ``--help``.

    Returns:
        A ``dataclasses.field``.
    """
    if check is not None and check not in _FLOAT_CHECKS and check not in _INT_CHECKS:
        raise ValueError(f'unknown check {check!r}; one of {[*_FLOAT_CHECKS, *_INT_CHECKS]}')
    metadata = {'help': help, 'group': group, 'metavar': metavar, 'choices': tuple(choices) if choices else None,
                'check': check, 'flag': flag, 'negatable': negatable, 'same_on_resume': same_on_resume,
                'after': after}
    return field(default=default, default_factory=default_factory, metadata=metadata)


@dataclass(frozen=True)
class TrainConfig:
    """Every setting of a training run (``recipes/train.py``): what a config file or a flag may set.

    Each field's metadata holds its one-line meaning (``help``) and ``--help`` group; ``recipes/README.md``
    describes the settings at length. Build one with :meth:`from_dict` (checked) or :func:`parse_train_args`
    (config files and flags, checked); the constructor itself checks nothing, so that the layers of a resolution
    may hold a value a later layer replaces.
    """

    # --- model and data
    model: str = setting('gaternet_resnet20', 'zoo model name (create_model)', group=MODEL_AND_DATA)
    data: str = setting(
        'builtin:cifar10-subset',
        'data source: a local folder (parquet files named by split, e.g. train-00000-of-00001.parquet and '
        'test-00000-of-00001.parquet, or class folders <dir>/train/<class>/*.png), a Hugging Face Hub dataset id '
        '(uoft-cs/cifar10; downloaded once into the datasets cache), or builtin:cifar10-subset (shipped, no '
        'download)', group=MODEL_AND_DATA)
    init_from: str | None = setting(
        None, "start from a trained model's weights: a zoo tag (cifar_resnet20.cifar10), hf-hub:/local-dir: name, "
              "saved folder or run folder; a plain source fills a GaterNet's backbone (default: fresh "
              "initialisation)", group=MODEL_AND_DATA, metavar='SOURCE')
    init_gater_from: str | None = setting(
        None, "start a GaterNet's gater feature extractor from a trained plain model, e.g. cifar_resnet20.cifar10 "
              "(default: fresh initialisation)", group=MODEL_AND_DATA, metavar='SOURCE')
    num_classes: int | None = setting(
        None, "classifier size (default: the data's ClassLabel metadata; required without it)",
        group=MODEL_AND_DATA, check='positive')
    image_column: str | None = setting(None, 'image column (default: auto)', group=MODEL_AND_DATA)
    label_column: str | None = setting(None, 'label column (default: auto)', group=MODEL_AND_DATA)
    train_split: str = setting('train', 'training split', group=MODEL_AND_DATA)
    eval_split: str = setting('test', 'evaluation (test) split', group=MODEL_AND_DATA, same_on_resume=False)
    val_split: int | None = setting(
        None, 'hold out the LAST N training images as validation, evaluated every epoch instead of the eval split '
              '(default: none, the eval split is evaluated every epoch)', group=MODEL_AND_DATA, metavar='N',
        check='positive')
    test_at_end: bool = setting(
        False, 'with --val-split: evaluate the final model on the eval split once, at the end',
        group=MODEL_AND_DATA, same_on_resume=False)
    max_train_samples: int | None = setting(None, 'use the first N training rows', group=MODEL_AND_DATA,
                                            check='positive')
    max_eval_samples: int | None = setting(None, 'use the first N evaluation rows', group=MODEL_AND_DATA,
                                           check='positive', same_on_resume=False)
    num_workers: int | None = setting(None, "DataLoader workers (default: the pipeline's)", group=MODEL_AND_DATA,
                                      same_on_resume=False)
    # --- optimisation
    epochs: int = setting(15, 'training epochs', group=OPTIMISATION, check='positive')
    batch_size: int = setting(128, 'global batch per micro-step, split over processes', group=OPTIMISATION,
                              check='positive')
    eval_batch_size: int | None = setting(None, 'evaluation batch (default: --batch-size)', group=OPTIMISATION,
                                          check='positive', same_on_resume=False)
    lr: float = setting(0.1, 'peak learning rate', group=OPTIMISATION, check='> 0')
    momentum: float = setting(0.9, 'SGD momentum', group=OPTIMISATION, check='>= 0 and <= 1')
    nesterov: bool = setting(True, 'Nesterov momentum', group=OPTIMISATION)
    weight_decay: float = setting(5e-4, 'applied to weights, not to norms or biases', group=OPTIMISATION,
                                  check='>= 0')
    sched: str = setting('cosine', 'LR schedule after the warm-up', group=OPTIMISATION, choices=('cosine', 'step'))
    warmup_epochs: float = setting(1.0, 'linear warm-up length (may be fractional)', group=OPTIMISATION,
                                   check='>= 0')
    warmup_factor: float = setting(0.1, 'LR factor at the first warm-up step', group=OPTIMISATION, check='>= 0')
    min_lr: float = setting(0.0, 'cosine floor', group=OPTIMISATION, check='>= 0')
    decay_epochs: float = setting(30.0, 'step schedule: epochs between decays', group=OPTIMISATION, check='> 0')
    decay_rate: float = setting(0.1, 'step schedule: LR factor per decay', group=OPTIMISATION, check='>= 0')
    label_smoothing: float = setting(0.0, 'cross-entropy label smoothing', group=OPTIMISATION,
                                     check='>= 0 and <= 1')
    clip_grad: float | None = setting(None, 'max gradient norm (default: no clipping)', group=OPTIMISATION,
                                      check='> 0')
    grad_accum_steps: int = setting(1, 'micro-steps per optimizer step', group=OPTIMISATION, check='positive')
    model_ema: bool = setting(False, 'keep an EMA of the weights; it is evaluated and saved as final/',
                              group=OPTIMISATION)
    model_ema_decay: float = setting(0.9998, 'EMA decay per optimizer step', group=OPTIMISATION,
                                     check='>= 0 and <= 1')
    seed: int = setting(0, 'seed of weights, data order, augmentation and gate noise', group=OPTIMISATION)
    # --- GaterNet options
    gate_l1: float = setting(0.0, 'lambda of the L1 gate loss', group=GATERNET, check='>= 0')
    gate_budget: str = setting(
        'none', "sparsity objective: 'rate' keeps each gated block's open fraction near --gate-budget-target "
                "(ConvNet-AIG), 'macs' the backbone MACs used near that share of the dense backbone's (DGNet), "
                "'model_macs' the same with the gater's MACs counted in full (the whole model's cost)",
        group=GATERNET, choices=GATE_BUDGETS)
    gate_budget_target: float = setting(0.5, 'target fraction of --gate-budget', group=GATERNET,
                                        check='>= 0 and <= 1')
    gate_budget_weight: float = setting(5.0, 'weight of the --gate-budget term', group=GATERNET, check='>= 0')
    gate_loss_warmup_epochs: float = setting(
        0.0, 'epochs over which the gate term (--gate-l1 and the budget) ramps in from 0, per optimizer step '
             '(0: full weight from the start)', group=GATERNET, check='>= 0')
    gate_init_bias: float | None = setting(
        None, "initial bias of the gater's last FC, e.g. 3 to start with open gates (default: 0)", group=GATERNET)
    gate_discrete_prob_start: float | None = setting(
        None, "discrete-gate probability at step 0, ramped to the model's over the warm-up", group=GATERNET,
        check='>= 0 and <= 1')
    gate_discrete_prob_warmup_epochs: float = setting(
        0.0, 'epochs of that ramp (per optimizer step; 0: none)', group=GATERNET, check='>= 0')
    gate_noise_std_start: float | None = setting(
        None, "gate-logit noise std at step 0, ramped to the model's over the warm-up", group=GATERNET,
        check='>= 0')
    gate_noise_warmup_epochs: float = setting(0.0, 'epochs of that ramp (0: none)', group=GATERNET, check='>= 0')
    gater_lr_scale: float = setting(1.0, 'learning-rate factor of the gater', group=GATERNET, check='>= 0')
    gater_weight_decay: float | None = setting(
        None, "weight decay of the gater's weights (default: --weight-decay)", group=GATERNET, check='>= 0')
    # --- device
    cpu: bool = setting(False, 'train on the CPU even if a GPU is present', group=DEVICE, negatable=False,
                        same_on_resume=False)
    mixed_precision: str | None = setting(
        None, 'auto: bf16 autocast where the device computes bf16 natively, else float32 (default: what '
              '`accelerate launch` or its config says, else no)', group=DEVICE, choices=('auto', 'no', 'bf16', 'fp16'))
    channels_last: bool = setting(True, 'channels-last memory format', group=DEVICE)
    torchcompile: bool = setting(False, 'torch.compile via Accelerate', group=DEVICE, negatable=False)
    # --- run folder and checkpoints
    output_dir: str | None = setting(None, 'run folder (default: runs/<model>-<YYYYmmdd-HHMMSS> in the cwd)',
                                     group=RUN_FOLDER, same_on_resume=False)
    checkpoint_every_steps: int | None = setting(
        None, 'also save a checkpoint every N optimizer steps (one is always saved per epoch)', group=RUN_FOLDER,
        check='positive', same_on_resume=False)
    keep_checkpoints: int = setting(3, 'keep the newest K checkpoints', group=RUN_FOLDER, check='positive',
                                    same_on_resume=False)
    push_to_hub: str | None = setting(None, 'push final/ to this Hub repository', group=RUN_FOLDER, metavar='REPO',
                                      same_on_resume=False)
    # --- config-file only (last, as in the config.yaml of earlier runs)
    model_args: dict[str, Any] = setting(
        help='keyword arguments of create_model, e.g. {gate_noise_std: 0.5} (a mapping: config files only)',
        group=MODEL_AND_DATA, default_factory=dict, flag=False)

    @classmethod
    def keys(cls) -> tuple[str, ...]:
        """Every setting's name (a config-file key), in field order."""
        return tuple(f.name for f in fields(cls))

    def to_dict(self) -> dict[str, Any]:
        """The settings as a plain mapping in field order: the keys and values of the run's ``config.yaml``."""
        return {f.name: _copy(getattr(self, f.name)) for f in fields(self)}

    @classmethod
    def from_dict(cls, values: Mapping[str, Any], *, validate: bool = True, where: str = '') -> TrainConfig:
        """Settings from a mapping (a config file's, a run's ``config.yaml``, ``to_dict()``) over the built-in defaults.

        Keys may be written with ``-`` or ``_``; whole numbers are taken for float settings (YAML's ``1``), and
        numbers written as text (PyYAML reads ``5e-4`` as a string) are converted, as the flags' would be.

        Args:
            values: Settings by name; a run's ``runtime`` record is skipped.
            validate: Check the result (:meth:`validate`); ``False`` for a layer that flags may still override.
            where: Where the values come from, for the error of an unknown key (e.g. ``"config file x.yaml"``).

        Raises:
            RecipeError: An unknown or command-line-only key (the close valid keys named), or a bad value.
        """
        known = {f.name: f for f in fields(cls)}
        out = {}
        for key, value in values.items():
            name = _check_key(key, known, where or 'settings')
            if name is not None:
                out[name] = _coerce(value, _hints(cls)[name])
        config = cls(**out)
        if validate:
            config.validate()
        return config

    def validate(self) -> None:
        """Refuse values that would fail later with a less helpful message, or train to a silently wrong result.

        Every field is checked against its type, its choices and its range (from its metadata); NaN and infinite
        numbers are refused (argparse and YAML accept both), in ``model_args`` too.

        Raises:
            RecipeError: Naming the setting and its value.
        """
        hints = _hints(type(self))
        for f in fields(self):
            _check_type(f, getattr(self, f.name), hints[f.name])
        floats = [f.name for f in fields(self) if _base_type(hints[f.name])[0] is float]
        check_finite_settings(self.to_dict(), floats)  # Before anything starts: NaN lr trains to NaN and exits 0.
        check_finite_settings({f'model_args.{k}': v for k, v in self.model_args.items() if isinstance(v, float)})
        for f in fields(self):
            value, check, choices = getattr(self, f.name), f.metadata['check'], f.metadata['choices']
            if value is None:
                continue
            if check == 'positive' and value < 1:
                optional = _base_type(hints[f.name])[1]
                raise RecipeError(f'{f.name} must be a positive integer{" or unset" * optional}, got {value!r}')
            if check in _FLOAT_CHECKS and not _FLOAT_CHECKS[check](value):
                raise RecipeError(f'{f.name} must be {check}, got {value}')
            if choices and value not in choices:
                raise RecipeError(f'{f.name} must be one of {", ".join(map(str, choices))}, got {value!r}')


@dataclass(frozen=True)
class TrainInvocation:
    """The flags of one command that are not settings of the run: never read from, nor written to, a config file."""

    config: str | None = setting(None, 'YAML config file (default: recipes/configs/default.yaml)', group=None,
                                 same_on_resume=False)
    resume: str | None = setting(
        None, "'latest' (newest complete checkpoint of --output-dir) or a checkpoint/run folder", group=RUN_FOLDER,
        metavar='latest|PATH', same_on_resume=False, after='output_dir')
    overwrite: bool = setting(False, "delete this script's artifacts in a non-empty --output-dir first",
                              group=RUN_FOLDER, negatable=False, same_on_resume=False, after='output_dir')


#: Settings whose change makes a resumed run differ from an uninterrupted one: refused on ``--resume`` (the fields
#: with ``same_on_resume``). The others (evaluation split and size, workers, checkpoint frequency, how many to
#: keep, ``--push-to-hub``, ...) may change.
RESUME_EXACT_KEYS = tuple(f.name for f in fields(TrainConfig) if f.metadata['same_on_resume'])


class DefaultsOnceHelpFormatter(argparse.HelpFormatter):
    """Each default once: appended to an option's help unless the help already says what leaving it unset means."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ''
        if 'default' in text or action.default in (None, False, argparse.SUPPRESS) or not action.option_strings:
            return text
        return text + ' (default: %(default)s)'


def flag_name(name: str) -> str:
    """The command-line flag of a setting: ``--batch-size`` for ``batch_size``."""
    return '--' + name.replace('_', '-')


def _hints(cls: type) -> dict[str, Any]:
    # The annotations are strings (from __future__ import annotations); resolve them once per class.
    cached = _HINTS.get(cls)
    if cached is None:
        cached = _HINTS[cls] = typing.get_type_hints(cls)
    return cached


_HINTS: dict[type, dict[str, Any]] = {}


def _base_type(hint: Any) -> tuple[Any, bool]:
    """``(T, optional)`` of ``T`` or ``T | None``; ``T`` is a class, or a parametrised generic (``list[int]``)."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if len(args) != 1:
            raise TypeError(f'a setting is of one type, or that type or None; got {hint}')
        return args[0], True
    return hint, False


def _coerce(value: Any, hint: Any) -> Any:
    """The value as its field's type where that is unambiguous; anything else is left for :meth:`validate`."""
    base, _ = _base_type(hint)
    if isinstance(value, bool) or value is None:
        return value
    if base is float and isinstance(value, int):
        return float(value)
    if base in (int, float) and isinstance(value, str):
        try:  # What argparse does with a string default: PyYAML reads 5e-4 (no dot) as text.
            return base(value)
        except ValueError:
            return value
    return value


def _check_type(f: dataclasses.Field, value: Any, hint: Any) -> None:
    name, (base, optional) = f.name, _base_type(hint)
    if value is None:
        if not optional:
            raise RecipeError(f'{name} must be set, got null')
        return
    origin = typing.get_origin(base) or base
    if origin is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise RecipeError(f'{name} must be a number, got {value!r}')
    elif origin is int:
        if isinstance(value, bool) or not isinstance(value, int):
            positive = f.metadata['check'] == 'positive'  # The words of the range check's message.
            raise RecipeError(f'{name} must be {"a positive" if positive else "an"} integer'
                              f'{" or unset" * (optional and positive)}, got {value!r}')
    elif origin is bool:
        if not isinstance(value, bool):
            raise RecipeError(f'{name} must be true or false, got {value!r}')
    elif origin is str:
        if not isinstance(value, str):
            raise RecipeError(f'{name} must be a string, got {value!r}')
    elif origin is dict:
        if not isinstance(value, dict):
            raise RecipeError(f'{name} must be a mapping of create_model keyword arguments, got {value!r}')
    elif origin is list:
        if not isinstance(value, (list, tuple)):
            raise RecipeError(f'{name} must be a list, got {value!r}')


def _copy(value: Any) -> Any:
    # A mutable value (model_args) is copied, so that a caller's edit cannot reach into a frozen config.
    if isinstance(value, dict):
        return {k: _copy(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_copy(v) for v in value]
    return value


def _check_key(key: Any, known: Mapping[str, Any], where: str) -> str | None:
    """The field name of a config key (``-`` or ``_``), ``None`` for a skipped record; refuses any other key."""
    name = str(key).replace('-', '_')
    if name == 'runtime':  # What a run records about itself in its config.yaml: not a setting.
        return None
    if name in {f.name for f in fields(TrainInvocation)}:
        raise RecipeError(f'{where}: {key!r} is a command-line-only flag, not a config key')
    if name not in known:
        close = difflib.get_close_matches(name, list(known), n=3, cutoff=0.6)
        hint = f' (did you mean {" or ".join(repr(c) for c in close)}?)' if close else ''
        raise RecipeError(f'{where}: unknown key {key!r}{hint}. Valid keys: {", ".join(sorted(known))}')
    return name


def read_config_file(path: str | os.PathLike, valid_keys: Collection[str] | None = None, *,
                     cli_only: Collection[str] | None = None,
                     ignored: Collection[str] = ('runtime',)) -> dict[str, Any]:
    """Read a YAML config of settings (keys written with ``_`` or ``-``) and check its keys (not yet its values).

    Args:
        path: YAML file holding a mapping.
        valid_keys: Accepted keys (``dest`` spelling); default: :class:`TrainConfig`'s fields.
        cli_only: Keys that are command-line flags only (refused with that reason); default:
            :class:`TrainInvocation`'s fields.
        ignored: Keys skipped silently (records a run writes into its own ``config.yaml``).

    Returns:
        The settings keyed by ``dest``.

    Raises:
        RecipeError: Missing or malformed file, or a key that is not a setting (named, with the close and the valid
            ones).
    """
    path = Path(path)
    if not path.is_file():
        raise RecipeError(f'config file {path} does not exist')
    try:
        loaded = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise RecipeError(f'config file {path} is not valid YAML: {err}') from err
    if not isinstance(loaded, dict):
        raise RecipeError(f'config file {path} must hold a mapping of settings, got {type(loaded).__name__}')
    valid = TrainConfig.keys() if valid_keys is None else tuple(valid_keys)
    cli = {f.name for f in fields(TrainInvocation)} if cli_only is None else set(cli_only)
    out = {}
    for key, value in loaded.items():
        dest = str(key).replace('-', '_')
        if dest in ignored:
            continue
        if dest in cli:
            raise RecipeError(f'config file {path}: {key!r} is a command-line-only flag, not a config key')
        out[_check_key(key, dict.fromkeys(valid), f'config file {path}')] = value
    if not isinstance(out.get('model_args') or {}, dict):
        raise RecipeError(f'config file {path}: model_args must be a mapping of create_model keyword arguments')
    return out


def _entries() -> Iterator[tuple[dataclasses.Field, Any]]:
    """The parser's fields in ``--help`` order: each invocation flag at its place among the settings."""
    invocation = fields(TrainInvocation)
    yield from ((f, TrainInvocation) for f in invocation if f.metadata['after'] is None)
    for f in fields(TrainConfig):
        yield f, TrainConfig
        yield from ((g, TrainInvocation) for g in invocation if g.metadata['after'] == f.name)


def _add_argument(group: Any, f: dataclasses.Field, hint: Any, default: Any) -> None:
    """One flag from one field: the flag's form follows the field's type."""
    meta, (base, _) = f.metadata, _base_type(hint)
    kwargs: dict[str, Any] = {'default': default, 'help': meta['help'], 'dest': f.name}
    if base is bool:
        kwargs['action'] = argparse.BooleanOptionalAction if meta['negatable'] else 'store_true'
    elif typing.get_origin(base) is list:  # --x A B C (no setting is a list yet; the form is ready for one)
        kwargs.update(nargs='*', type=typing.get_args(base)[0], metavar=meta['metavar'])
    elif base in (str, int, float):
        kwargs.update(type=base, metavar=meta['metavar'])
        if meta['choices']:
            kwargs['choices'] = tuple(c for c in meta['choices'] if c is not None)
    else:
        raise TypeError(f'setting {f.name}: no flag form for {hint}; give it flag=False (config files only) or '
                        'teach _add_argument the type')
    group.add_argument(flag_name(f.name), **{k: v for k, v in kwargs.items() if v is not None or k == 'default'})


def build_train_parser(defaults: TrainConfig | None = None, *, prog: str | None = None) -> argparse.ArgumentParser:
    """The command line of ``recipes/train.py``, generated from :class:`TrainConfig` and :class:`TrainInvocation`.

    Args:
        defaults: The defaults to show and to apply (the config files' values over the built-in ones); ``None``:
            the built-in defaults.
        prog: Program name in the usage line (default: the script's).

    Returns:
        A parser whose every ``dest`` is a field name; the config-file-only keys are listed in the epilog.
    """
    defaults = TrainConfig() if defaults is None else defaults
    file_only = [f for f in fields(TrainConfig) if not f.metadata['flag']]
    parser = argparse.ArgumentParser(
        prog=prog, description='Train a gaternet_zoo model with Accelerate.', formatter_class=DefaultsOnceHelpFormatter,
        epilog='The defaults shown are the ones that run: the built-in defaults, overridden by '
               'recipes/configs/default.yaml, or by the file of --config FILE when it is given (`--config FILE '
               "--help` shows that file's). Flags override both. Config-file keys without a flag: " +
               '; '.join(f'{f.name}: {f.metadata["help"]}' for f in file_only) +
               '. recipes/README.md describes every setting.')
    groups: dict[str | None, Any] = {None: parser}
    for f, cls in _entries():
        if not f.metadata['flag']:
            continue
        group = f.metadata['group']
        if group not in groups:
            groups[group] = parser.add_argument_group(group)
        default = getattr(defaults, f.name) if cls is TrainConfig else f.default
        _add_argument(groups[group], f, _hints(cls)[f.name], default)
    return parser


def parse_train_args(argv: Sequence[str] | None = None, *,
                     default_config: str | os.PathLike | None = None) -> tuple[TrainConfig, TrainInvocation]:
    """Resolve a command line into its settings, read and checked once, and the invocation's own flags.

    Precedence (timm's two-stage parse): built-in defaults < ``default_config`` or ``--config FILE`` (on
    ``--resume``, the run's ``config.yaml`` below ``--config``) < flags. ``--help`` waits for the second stage,
    so that it shows the defaults the config files set: what really runs.

    Args:
        argv: Arguments (default: ``sys.argv[1:]``).
        default_config: The config file read when neither ``--config`` nor a resumed run gives one.

    Raises:
        RecipeError: An unreadable config file, an unknown key, a value out of its type or range.
        SystemExit: ``--help``, or a flag argparse refuses (unknown flag, a value not of its type or choices).
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    pre, _ = build_train_parser().parse_known_args([a for a in argv if a not in ('-h', '--help')])
    layers: list[dict[str, Any]] = []
    if pre.resume is not None:
        run_dir = resolve_run_dir(pre.resume, pre.output_dir)
        if (run_dir / 'config.yaml').is_file():
            layers.append(read_config_file(run_dir / 'config.yaml'))
    if pre.config is not None:
        layers.append(read_config_file(pre.config))
    elif not layers and default_config is not None and Path(default_config).is_file():
        layers.append(read_config_file(default_config))
    defaults = TrainConfig.from_dict({k: v for layer in layers for k, v in layer.items()}, validate=False)
    args = build_train_parser(defaults).parse_args(argv)  # Flags on the command line beat the files.
    config = dataclasses.replace(defaults, **{f.name: getattr(args, f.name) for f in fields(TrainConfig)
                                              if f.metadata['flag']})
    config.validate()
    return config, TrainInvocation(**{f.name: getattr(args, f.name) for f in fields(TrainInvocation)})

