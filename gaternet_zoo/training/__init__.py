"""Pieces of the training recipe (``recipes/train.py``) that are not specific to one script.

* the data of a run (``_data``): class count from metadata or a declared ``num_classes`` only, a validation split
  held out of the training data, the test split kept for the end;
* run folders (``_run_dir``): :class:`RunRecord` writes and reads every file of a run (settings, metrics,
  checkpoints, final model, test figure); resume from the newest complete checkpoint, refuse to mix runs, refuse a
  checkpoint of another model in one sentence;
* exact resume (``_resume``): changed settings refused naming the flag, the checkpoint's position and files
  checked before loading, one training per run folder (a lock file), a full disk explained;
* settings checks and precision (``_checks``): non-finite hyper-parameters refused up front, ``mixed_precision:
  auto`` (bf16 autocast where the CPU has native bf16), divergence detection with a message that names the step;
* options beyond the paper (``_gates``): the gater's initial gate-logit bias, warm-ups of the discrete-gate
  probability and of the gate noise, the gater's own learning-rate scale and weight decay (timm param groups);
* warm starts (``_warm_start``): a run's weights, a GaterNet's backbone or its gater's feature extractor taken
  from a trained model (``init_from``, ``init_gater_from``), strictly and sha256-checked;
* the settings (``_config``): :class:`TrainConfig`, every setting with its type, default and meaning, from which
  the command line, the config-file keys, the checks and the resume's exact keys are generated;
* Accelerate plumbing (``_recipe``): process-count checks, the run's ``config.yaml``, evaluation fields, ``final/``.
"""
from ._checks import (
    DIVERGENCE_CAUSES,
    TrainingDivergedError,
    all_finite,
    check_finite_settings,
    cpu_supports_bf16,
    divergence_message,
    grad_norm,
    resolve_mixed_precision,
)
from ._config import (
    CONFIG_GROUPS,
    RESUME_EXACT_KEYS,
    DefaultsOnceHelpFormatter,
    TrainConfig,
    TrainInvocation,
    build_train_parser,
    parse_train_args,
    read_config_file,
    setting,
)
from ._data import TrainingData, load_training_data
from ._gates import (
    GATE_BUDGETS,
    GateObjective,
    GateWarmup,
    gate_settings,
    gater_param_groups,
    param_group_lr,
    set_gate_init_bias,
)
from ._plots import plot_training_curves
from ._recipe import (
    EpochProgress,
    TimeEstimate,
    check_world_size,
    evaluation_metrics,
    metric_fields,
    prepare_run_folder,
    quiet_checkpoint_rotation,
    runtime_record,
    save_trained_model,
)
from ._resume import (
    LOCK_NAME,
    acquire_run_lock,
    check_resume,
    check_run_lock,
    checkpoint_problem,
    newest_intact_checkpoint,
    release_run_locks,
    save_checkpoint_state,
)
from ._run_dir import (
    CHECKPOINT_STATE,
    RUN_ARTIFACTS,
    RecipeError,
    RunRecord,
    check_checkpoint_matches,
    check_new_run_dir,
    checkpoint_number,
    clear_run_artifacts,
    find_checkpoint,
    jsonable,
    list_checkpoints,
    resolve_run_dir,
    write_json_atomic,
)
from ._warm_start import INIT_PARTS, WarmStart, resolve_init_source, warm_start

__all__ = [
    'CONFIG_GROUPS', 'TrainConfig', 'TrainInvocation', 'build_train_parser', 'parse_train_args', 'setting',
    'GATE_BUDGETS', 'GateObjective', 'INIT_PARTS', 'WarmStart', 'resolve_init_source',
    'warm_start',
    'CHECKPOINT_STATE', 'DIVERGENCE_CAUSES', 'DefaultsOnceHelpFormatter', 'EpochProgress', 'GateWarmup',
    'TimeEstimate',
    'RUN_ARTIFACTS', 'RecipeError', 'RunRecord', 'TrainingData', 'TrainingDivergedError', 'all_finite',
    'check_checkpoint_matches', 'check_finite_settings', 'check_new_run_dir', 'check_world_size', 'checkpoint_number',
    'clear_run_artifacts', 'cpu_supports_bf16', 'divergence_message', 'evaluation_metrics', 'find_checkpoint',
    'gate_settings', 'gater_param_groups', 'grad_norm', 'jsonable', 'list_checkpoints', 'load_training_data',
    'metric_fields', 'param_group_lr', 'plot_training_curves', 'prepare_run_folder', 'quiet_checkpoint_rotation',
    'read_config_file', 'resolve_mixed_precision', 'resolve_run_dir', 'runtime_record', 'save_trained_model',
    'set_gate_init_bias', 'write_json_atomic',
    'LOCK_NAME', 'RESUME_EXACT_KEYS', 'acquire_run_lock', 'check_resume', 'check_run_lock', 'checkpoint_problem',
    'newest_intact_checkpoint', 'release_run_locks', 'save_checkpoint_state',
]
