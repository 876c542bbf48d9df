"""Tests of ``TrainConfig`` (issue 27): one typed place for every training setting, from which ``recipes/train.py``'s
command line, the config-file keys, the checks and the resume's exact keys are generated. Fast: nothing trains."""

from __future__ import annotations

import argparse
import dataclasses
import typing
from pathlib import Path

import pytest
import yaml

from gaternet_zoo import training as zt
from gaternet_zoo.training import RecipeError, TrainConfig, TrainInvocation, parse_train_args
from gaternet_zoo.training._config import _add_argument, _base_type, flag_name
from recipes import train as train_recipe

TRAIN = Path(train_recipe.__file__)

CONFIG_FIELDS = dataclasses.fields(TrainConfig)
FLAG_FIELDS = [f for f in CONFIG_FIELDS if f.metadata['flag']]
HINTS = typing.get_type_hints(TrainConfig)

# The flags of recipes/train.py before TrainConfig generated them: none may disappear or change its name.
FLAGS_BEFORE = [
    '--config', '--model', '--data', '--init-from', '--init-gater-from', '--num-classes', '--image-column',
    '--label-column', '--train-split', '--eval-split', '--val-split', '--test-at-end', '--no-test-at-end',
    '--max-train-samples', '--max-eval-samples', '--num-workers', '--epochs', '--batch-size', '--eval-batch-size',
    '--lr', '--momentum', '--nesterov', '--no-nesterov', '--weight-decay', '--sched', '--warmup-epochs',
    '--warmup-factor', '--min-lr', '--decay-epochs', '--decay-rate', '--label-smoothing', '--clip-grad',
    '--grad-accum-steps', '--model-ema', '--no-model-ema', '--model-ema-decay', '--seed', '--gate-l1', '--gate-budget',
    '--gate-budget-target', '--gate-budget-weight', '--gate-loss-warmup-epochs', '--gate-init-bias',
    '--gate-discrete-prob-start',
    '--gate-discrete-prob-warmup-epochs', '--gate-noise-std-start', '--gate-noise-warmup-epochs', '--gater-lr-scale',
    '--gater-weight-decay', '--cpu', '--mixed-precision', '--channels-last', '--no-channels-last', '--torchcompile',
    '--output-dir', '--resume', '--overwrite', '--checkpoint-every-steps', '--keep-checkpoints', '--push-to-hub',
]

# The settings a resume had to keep before RESUME_EXACT_KEYS was generated from the fields' same_on_resume.
RESUME_EXACT_BEFORE = {
    'model', 'model_args', 'num_classes', 'data', 'train_split', 'image_column', 'label_column', 'val_split',
    'max_train_samples', 'epochs', 'batch_size', 'grad_accum_steps', 'seed', 'lr', 'momentum', 'nesterov',
    'weight_decay', 'sched', 'warmup_epochs', 'warmup_factor', 'min_lr', 'decay_epochs', 'decay_rate',
    'label_smoothing', 'clip_grad', 'model_ema', 'model_ema_decay', 'gate_l1', 'gate_budget', 'gate_budget_target',
    'gate_budget_weight', 'gate_init_bias', 'gate_discrete_prob_start', 'gate_discrete_prob_warmup_epochs',
    'gate_noise_std_start', 'gate_noise_warmup_epochs', 'gater_lr_scale', 'gater_weight_decay', 'mixed_precision',
    'channels_last', 'torchcompile', 'init_from', 'init_gater_from',
}

# The config.yaml a run folder written before TrainConfig holds (the old dict's keys and order, an int warm-up).
OLD_RUN_CONFIG = """\
model: gaternet_resnet20
data: builtin:cifar10-subset
init_from: null
init_gater_from: null
num_classes: null
image_column: null
label_column: null
train_split: train
eval_split: test
val_split: null
test_at_end: false
max_train_samples: 64
max_eval_samples: null
num_workers: null
epochs: 20
batch_size: 16
eval_batch_size: null
lr: 0.05
momentum: 0.9
nesterov: true
weight_decay: 0.0005
sched: cosine
warmup_epochs: 1
warmup_factor: 0.1
min_lr: 0.0
decay_epochs: 30.0
decay_rate: 0.1
label_smoothing: 0.0
clip_grad: null
grad_accum_steps: 1
model_ema: false
model_ema_decay: 0.9998
seed: 3
gate_l1: 0.0
gate_budget: none
gate_budget_target: 0.5
gate_budget_weight: 5.0
gate_init_bias: null
gate_discrete_prob_start: null
gate_discrete_prob_warmup_epochs: 0.0
gate_noise_std_start: null
gate_noise_warmup_epochs: 0.0
gater_lr_scale: 1.0
gater_weight_decay: null
cpu: false
mixed_precision: null
channels_last: true
torchcompile: false
output_dir: runs/old
checkpoint_every_steps: null
keep_checkpoints: 3
push_to_hub: null
model_args: {}
runtime:
  num_processes: 1
  steps_per_epoch: 4
"""


def _changed() -> TrainConfig:
    """A config whose every flag-settable field differs from the built-in default."""
    return TrainConfig.from_dict({
        'model': 'cifar_resnet20', 'data': 'some/dataset', 'init_from': 'cifar_resnet20.cifar10',
        'init_gater_from': 'cifar_resnet20.cifar10', 'num_classes': 10, 'image_column': 'img', 'label_column': 'y',
        'train_split': 'tr', 'eval_split': 'va', 'val_split': 50, 'test_at_end': True, 'max_train_samples': 100,
        'max_eval_samples': 20, 'num_workers': 2, 'epochs': 3, 'batch_size': 32, 'eval_batch_size': 64, 'lr': 0.02,
        'momentum': 0.8, 'nesterov': False, 'weight_decay': 1e-4, 'sched': 'step', 'warmup_epochs': 0.5,
        'warmup_factor': 0.2, 'min_lr': 1e-5, 'decay_epochs': 2.0, 'decay_rate': 0.5, 'label_smoothing': 0.1,
        'clip_grad': 5.0, 'grad_accum_steps': 2, 'model_ema': True, 'model_ema_decay': 0.99, 'seed': 7,
        'gate_l1': 0.01, 'gate_budget': 'rate', 'gate_budget_target': 0.4, 'gate_budget_weight': 2.0,
        'gate_loss_warmup_epochs': 3.0, 'gate_init_bias': -3.0, 'gate_discrete_prob_start': 0.0,
        'gate_discrete_prob_warmup_epochs': 1.5,
        'gate_noise_std_start': 0.2, 'gate_noise_warmup_epochs': 2.5, 'gater_lr_scale': 0.1,
        'gater_weight_decay': 1e-3, 'cpu': True, 'mixed_precision': 'bf16', 'channels_last': False,
        'torchcompile': True, 'output_dir': 'runs/x', 'checkpoint_every_steps': 10, 'keep_checkpoints': 1,
        'push_to_hub': 'org/name'})


def _argv(config: TrainConfig) -> list[str]:
    """The flags that set ``config`` (every flag field that is not unset)."""
    argv = []
    for f in FLAG_FIELDS:
        value = getattr(config, f.name)
        if isinstance(value, bool):
            argv += [flag_name(f.name)] if value else ([] if not f.metadata['negatable'] else
                                                       ['--no-' + flag_name(f.name)[2:]])
        elif value is not None:
            argv += [flag_name(f.name), str(value)]
    return argv


# ------------------------------------------------------------------------------------------------- the fields


def test_every_field_has_a_help_line_a_group_and_a_type_with_a_flag_form() -> None:
    for f in CONFIG_FIELDS:
        assert f.metadata['help'] and '\n' not in f.metadata['help'], f.name
        assert f.metadata['group'] in zt.CONFIG_GROUPS, f.name
        base, _ = _base_type(HINTS[f.name])
        assert (typing.get_origin(base) or base) in (str, int, float, bool, dict, list), f.name
    assert [f.name for f in CONFIG_FIELDS if not f.metadata['flag']] == ['model_args']  # config-file only
    TrainConfig().validate()  # the built-in defaults are valid


def test_resume_exact_keys_come_from_the_fields_and_are_those_of_before() -> None:
    # Settings added since then that shape the training, so a resume keeps them too.
    assert set(zt.RESUME_EXACT_KEYS) == RESUME_EXACT_BEFORE | {'gate_loss_warmup_epochs'}
    assert zt.RESUME_EXACT_KEYS == tuple(f.name for f in CONFIG_FIELDS if f.metadata['same_on_resume'])


def test_a_field_asks_only_for_known_checks() -> None:
    with pytest.raises(ValueError, match="unknown check '>0'"):
        zt.setting(1.0, 'x', group=None, check='>0')


# ------------------------------------------------------------------------------------ the generated command line


def test_flags_are_the_ones_of_before() -> None:
    parser = train_recipe.build_parser()
    flags = [s for a in parser._actions for s in a.option_strings if s.startswith('--') and s != '--help']
    assert flags == FLAGS_BEFORE


def test_help_is_generated_from_the_fields() -> None:
    parser = zt.build_train_parser()
    actions = {a.dest: a for a in parser._actions}
    title = {a.dest: g.title for g in parser._action_groups for a in g._group_actions}
    invocation = dataclasses.fields(TrainInvocation)
    assert set(actions) - {'help'} == {f.name for f in [*FLAG_FIELDS, *invocation]}
    for f in [*FLAG_FIELDS, *invocation]:
        action, meta = actions[f.name], f.metadata
        hint = (HINTS if f in FLAG_FIELDS else typing.get_type_hints(TrainInvocation))[f.name]
        base, _ = _base_type(hint)
        assert action.option_strings[0] == flag_name(f.name)
        assert action.help == meta['help'] and action.default == f.default, f.name
        assert title[f.name] == (meta['group'] or parser._optionals.title), f.name
        if base is bool:
            negatable = isinstance(action, argparse.BooleanOptionalAction)
            assert negatable == meta['negatable'] and (negatable or action.nargs == 0), f.name
        else:
            assert action.type is base and action.metavar == meta['metavar'], f.name
            assert tuple(action.choices or ()) == tuple(c for c in meta['choices'] or () if c is not None), f.name
    text = ' '.join(parser.format_help().split())
    for f in CONFIG_FIELDS:  # model_args (no flag) is listed in the epilog
        assert ' '.join(f.metadata['help'].split()) in text, f.name


def test_help_shows_the_config_files_defaults(tmp_path: Path) -> None:
    parser = zt.build_train_parser(TrainConfig.from_dict({'lr': 0.3, 'epochs': 9}))
    actions = {a.dest: a for a in parser._actions}
    assert (actions['lr'].default, actions['epochs'].default, actions['seed'].default) == (0.3, 9, 0)
    assert '--lr LR peak learning rate (default: 0.3)' in ' '.join(parser.format_help().split())


def test_the_parser_generator_knows_lists_and_refuses_what_it_cannot_parse() -> None:
    @dataclasses.dataclass
    class Toy:
        milestones: list[int] = zt.setting(default_factory=list, help='epochs', group=None)
        names: set[str] = zt.setting(default_factory=set, help='names', group=None)

    hints = typing.get_type_hints(Toy)
    milestones, names = dataclasses.fields(Toy)
    parser = argparse.ArgumentParser()
    _add_argument(parser, milestones, hints['milestones'], [])
    assert parser.parse_args(['--milestones', '3', '6']).milestones == [3, 6]
    with pytest.raises(TypeError, match='no flag form'):
        _add_argument(parser, names, hints['names'], set())


# --------------------------------------------------------------------------------------------- the round trips


def test_dict_round_trip() -> None:
    config = _changed()
    assert TrainConfig.from_dict(config.to_dict()) == config
    assert list(config.to_dict()) == list(TrainConfig.keys())
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.lr = 1.0  # type: ignore[misc]
    config = TrainConfig.from_dict({'model_args': {'gate_noise_std': 0.5}})
    config.to_dict()['model_args']['gate_noise_std'] = 2.0  # a copy: the config stays as it was made
    assert config.model_args == {'gate_noise_std': 0.5}


def test_yaml_round_trip_through_the_run_folder(tmp_path: Path) -> None:
    config = dataclasses.replace(_changed(), model_args={'gate_noise_std': 0.5})
    record = zt.RunRecord(tmp_path)
    record.write_config(config, {'num_processes': 1, 'command': 'train.py'})
    written = record.config()
    assert written['runtime']['num_processes'] == 1  # the record of the run, kept next to the settings
    assert TrainConfig.from_dict(written) == config  # runtime skipped
    assert TrainConfig.from_dict(zt.read_config_file(tmp_path / 'config.yaml')) == config


def test_cli_round_trip() -> None:
    config = _changed()
    parsed, invocation = parse_train_args(_argv(config))
    assert parsed == config and invocation == TrainInvocation()
    assert parse_train_args(_argv(TrainConfig()))[0] == TrainConfig()


def test_an_old_run_folders_config_yaml_loads_and_resumes(tmp_path: Path) -> None:
    run = tmp_path / 'run'
    run.mkdir()
    (run / 'config.yaml').write_text(OLD_RUN_CONFIG)
    old = yaml.safe_load(OLD_RUN_CONFIG)
    config = TrainConfig.from_dict(old)
    assert (config.seed, config.batch_size, config.warmup_epochs) == (3, 16, 1.0)
    # A resume reads it as its lowest layer, and its written form compares equal to the old file's values.
    resumed, invocation = parse_train_args(['--output-dir', str(run), '--resume', 'latest'])
    assert resumed == dataclasses.replace(config, output_dir=str(run)) and invocation.resume == 'latest'
    assert {k: v for k, v in resumed.to_dict().items() if k in zt.RESUME_EXACT_KEYS and k in old} == \
        {k: old[k] for k in zt.RESUME_EXACT_KEYS if k in old}
    # A setting added after the run was written resumes at its default, which is the behaviour the run had.
    added = [k for k in zt.RESUME_EXACT_KEYS if k not in old]
    assert added == ['gate_loss_warmup_epochs']
    assert all(getattr(resumed, k) == getattr(TrainConfig(), k) for k in added)


# -------------------------------------------------------------------------------------------------- precedence


def test_precedence_defaults_files_flags(tmp_path: Path) -> None:
    default = tmp_path / 'default.yaml'
    default.write_text('lr: 0.2\nepochs: 4\nseed: 5\n')
    other = tmp_path / 'other.yaml'
    other.write_text('lr: 0.3\nbatch-size: 32\n')
    assert parse_train_args([])[0] == TrainConfig()  # no file: the built-in defaults
    config = parse_train_args([], default_config=default)[0]
    assert (config.lr, config.epochs, config.seed, config.batch_size) == (0.2, 4, 5, 128)
    config = parse_train_args(['--config', str(other)], default_config=default)[0]  # --config replaces default
    assert (config.lr, config.epochs, config.batch_size) == (0.3, 15, 32)
    config = parse_train_args(['--config', str(other), '--lr', '0.4'], default_config=default)[0]
    assert (config.lr, config.batch_size) == (0.4, 32)


def test_precedence_on_resume(tmp_path: Path) -> None:
    run = tmp_path / 'run'
    run.mkdir()
    (run / 'config.yaml').write_text(OLD_RUN_CONFIG)
    default = tmp_path / 'default.yaml'
    default.write_text('lr: 0.2\n')
    other = tmp_path / 'other.yaml'
    other.write_text('epochs: 30\n')
    resume = ['--output-dir', str(run), '--resume', 'latest']
    config = parse_train_args(resume, default_config=default)[0]  # the run's file, not default.yaml
    assert (config.lr, config.epochs, config.seed) == (0.05, 20, 3)
    config = parse_train_args([*resume, '--config', str(other), '--seed', '4'], default_config=default)[0]
    assert (config.lr, config.epochs, config.seed) == (0.05, 30, 4)  # run < --config < flags


def test_the_recipes_parse_args_is_parse_train_args_with_default_yaml() -> None:
    config, args = train_recipe.parse_args([])
    assert config == TrainConfig.from_dict(zt.read_config_file(TRAIN.parent / 'configs' / 'default.yaml'))
    assert (args.config, args.resume, args.overwrite) == (None, None, False)


# -------------------------------------------------------------------------------------------------- validation


@pytest.mark.parametrize('argv, yaml_text, message', [
    (['--epochs', '0'], None, 'epochs must be a positive integer, got 0'),
    (['--val-split', '0'], None, 'val_split must be a positive integer or unset, got 0'),
    (['--lr', '0'], None, 'lr must be > 0, got 0.0'),
    (['--momentum', '1.5'], None, 'momentum must be >= 0 and <= 1, got 1.5'),
    (['--weight-decay', '-1'], None, 'weight_decay must be >= 0, got -1.0'),
    (['--clip-grad', 'inf'], None, 'clip_grad must be a finite number, got inf; set it to a real value'),
    ([], 'epochs: 2.5', 'epochs must be a positive integer, got 2.5'),
    ([], 'seed: 1.5', 'seed must be an integer, got 1.5'),
    ([], 'sched: linear', "sched must be one of cosine, step, got 'linear'"),
    ([], 'mixed_precision: fp8', "mixed_precision must be one of auto, no, bf16, fp16, got 'fp8'"),
    ([], 'gate_budget: flops', "gate_budget must be one of none, rate, macs, model_macs, got 'flops'"),
    ([], 'nesterov: 1', 'nesterov must be true or false, got 1'),
    ([], 'model: 5', 'model must be a string, got 5'),
    ([], 'lr: .nan', 'lr must be a finite number, got nan'),
    ([], 'model_args:\n  gate_noise_std: .inf', 'model_args.gate_noise_std must be a finite number, got inf'),
    ([], 'model_args: [1]', 'model_args must be a mapping of create_model keyword arguments'),
], ids=lambda v: v if isinstance(v, str) and len(v) < 25 else None)
def test_validation_errors_name_the_setting(tmp_path: Path, argv: list[str], yaml_text: str | None,
                                            message: str) -> None:
    if yaml_text is not None:
        (tmp_path / 'c.yaml').write_text(yaml_text + '\n')
        argv = ['--config', str(tmp_path / 'c.yaml'), *argv]
    with pytest.raises(RecipeError) as err:
        parse_train_args(argv)
    assert message in str(err.value)


def test_validation_runs_on_the_resolved_settings_only(tmp_path: Path) -> None:
    (tmp_path / 'c.yaml').write_text('lr: .nan\nweight_decay: 5e-4\n')  # PyYAML reads 5e-4 as text
    config = parse_train_args(['--config', str(tmp_path / 'c.yaml'), '--lr', '0.1'])[0]  # the flag replaces NaN
    assert (config.lr, config.weight_decay) == (0.1, 5e-4)
    with pytest.raises(RecipeError, match='model must be set, got null'):
        TrainConfig.from_dict({'model': None})
    TrainConfig.from_dict({'model': None}, validate=False)  # a layer that later ones may complete


@pytest.mark.parametrize('key, close', [('modle', "'model'"), ('batch_sise', "'batch_size'"),
                                        ('gate-budget-targt', "'gate_budget_target'")])
def test_unknown_keys_are_refused_naming_the_close_ones(tmp_path: Path, key: str, close: str) -> None:
    (tmp_path / 'c.yaml').write_text(f'{key}: 1\n')
    with pytest.raises(RecipeError, match=rf"unknown key '{key}' \(did you mean {close}.*\)\. Valid keys: .*\bmodel\b"):
        parse_train_args(['--config', str(tmp_path / 'c.yaml')])
    with pytest.raises(RecipeError, match=rf"settings: unknown key '{key}' \(did you mean {close}"):
        TrainConfig.from_dict({key: 1})


def test_command_line_only_keys_are_refused_in_files(tmp_path: Path) -> None:
    for key in ('resume', 'overwrite', 'config'):
        (tmp_path / 'c.yaml').write_text(f'{key}: x\n')
        with pytest.raises(RecipeError, match=f"'{key}' is a command-line-only flag, not a config key"):
            parse_train_args(['--config', str(tmp_path / 'c.yaml')])


def test_check_resume_takes_the_config(tmp_path: Path) -> None:
    import json

    run = tmp_path / 'run'
    checkpoint = run / 'checkpoints' / 'checkpoint_0'
    checkpoint.mkdir(parents=True)
    (run / 'config.yaml').write_text(OLD_RUN_CONFIG)
    (checkpoint / zt.CHECKPOINT_STATE).write_text(json.dumps({'epoch': 0, 'step_in_epoch': 1, 'global_step': 1}))
    (checkpoint / 'random_states_0.pkl').write_bytes(b'')  # present (its content is checked only by suffix .pkl)
    config = TrainConfig.from_dict(yaml.safe_load(OLD_RUN_CONFIG))
    with pytest.raises(RecipeError, match=r'--seed is 4 but the run used 3'):
        zt.check_resume(checkpoint, dataclasses.replace(config, seed=4), steps_per_epoch=4, micro_steps=4)
    with pytest.raises(RecipeError, match=r'random_states_0\.pkl is truncated or corrupt'):  # past the settings
        zt.check_resume(checkpoint, config, steps_per_epoch=4, micro_steps=4)
