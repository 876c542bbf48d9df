"""Run folders of the training recipe: the one module that writes and reads them.

A run folder holds ``checkpoints/checkpoint_<n>/`` (Accelerate ``save_state`` folders; a checkpoint is complete
once :data:`CHECKPOINT_STATE` is written into it, last), ``final/``, ``logs/``, ``config.yaml``, ``metrics.jsonl``,
``summary.csv`` and ``test_metrics.json``. A published weight folder keeps the record of the run that trained it
(``train_config.yaml``, ``metrics.jsonl``, ``summary.csv``) beside ``eval_test.json``, the evaluation of the
published weights. :class:`RunRecord` writes the recipe's files and reads both kinds of folder, for the recipe, the
demo, the results tables, the screening and the plots.
"""
from __future__ import annotations

import csv
import dataclasses
import json
import os
import shutil
from pathlib import Path
from typing import Any

import yaml
from torch import nn

from .._io import OutputExistsError, check_output_dir

__all__ = [
    'CHECKPOINT_STATE', 'RUN_ARTIFACTS', 'RecipeError', 'RunRecord', 'check_checkpoint_matches',
    'check_new_run_dir', 'checkpoint_number', 'clear_run_artifacts', 'find_checkpoint', 'list_checkpoints',
    'jsonable', 'resolve_run_dir', 'write_json_atomic',
]

#: Written last into a checkpoint folder: its presence marks the checkpoint complete.
CHECKPOINT_STATE = 'training_state.json'
#: What the recipe writes into a run folder (and all that ``--overwrite`` deletes).
RUN_ARTIFACTS = ('checkpoints', 'final', 'logs', 'config.yaml', 'metrics.jsonl', 'summary.csv', 'test_metrics.json')


class RecipeError(ValueError):
    """A configuration, data or run-folder problem; the message says what is wrong and what to do."""


def resolve_run_dir(resume: str, output_dir: str | None) -> Path:
    """The run folder a ``--resume latest|PATH`` value refers to."""
    if resume == 'latest':
        if output_dir is None:
            raise RecipeError('--resume latest needs --output-dir: the run folder whose checkpoints to continue')
        return Path(output_dir)
    path = Path(resume)
    if (path / CHECKPOINT_STATE).is_file() and path.parent.name == 'checkpoints':
        return Path(output_dir) if output_dir else path.parent.parent
    return Path(output_dir) if output_dir else path  # A run folder given as PATH.


def checkpoint_number(path: Path) -> int:
    """``n`` of a ``checkpoint_<n>`` folder, -1 for any other name."""
    try:
        return int(path.name.rsplit('_', 1)[1])
    except (IndexError, ValueError):
        return -1


def list_checkpoints(run_dir: Path) -> list[Path]:
    """``checkpoint_<n>`` folders of a run, oldest first (complete or not)."""
    root = Path(run_dir) / 'checkpoints'
    if not root.is_dir():
        return []
    return sorted((p for p in root.iterdir() if p.is_dir() and checkpoint_number(p) >= 0), key=checkpoint_number)


def find_checkpoint(resume: str, run_dir: Path) -> Path:
    """Resolve ``--resume latest|PATH`` to a complete checkpoint folder.

    Raises:
        RecipeError: No complete checkpoint where it looked (the message says where).
    """
    if resume != 'latest':
        path = Path(resume)
        if (path / CHECKPOINT_STATE).is_file():
            return path
        if not (path / 'checkpoints').is_dir():
            raise RecipeError(
                f'--resume {resume}: not a complete checkpoint folder (no {CHECKPOINT_STATE} in it) and not a run '
                'folder with a checkpoints/ subfolder')
        run_dir = path
    newest = RunRecord(run_dir).newest_checkpoint()
    if newest is None:
        raise RecipeError(
            f"--resume {resume}: no complete checkpoint found; looked for {Path(run_dir) / 'checkpoints'}/"
            f'checkpoint_<n>/{CHECKPOINT_STATE}. Start a new run without --resume (add --overwrite to reuse the '
            'folder).')
    return newest


def check_checkpoint_matches(checkpoint: Path, model: nn.Module, model_name: str) -> None:
    """Refuse a checkpoint whose weights are not those of ``model`` before ``load_state`` lists every key.

    Reads only the names and shapes of the checkpoint's ``model.safetensors`` (Accelerate's first model file).

    Raises:
        RecipeError: One sentence naming both models and the first differing tensor.
    """
    from safetensors import safe_open

    path = Path(checkpoint) / 'model.safetensors'
    if not path.is_file():
        return  # A .bin checkpoint (safe_serialization off): load_state reports problems itself.
    try:
        with safe_open(str(path), framework='pt') as f:
            saved = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}  # noqa: SIM118 (safe_open is no dict)
    except Exception:  # A damaged file: check_resume names it, and the newest intact checkpoint.
        return
    wanted = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    if saved == wanted:
        return
    if {_strip_legacy_prefix(k): v for k, v in saved.items()} == wanted:
        _migrate_legacy_checkpoint(path)
        return
    missing = sorted(wanted.keys() - saved.keys())
    unexpected = sorted(saved.keys() - wanted.keys())
    reshaped = sorted(k for k in wanted.keys() & saved.keys() if wanted[k] != saved[k])
    example = (f'e.g. {missing[0]!r} is missing' if missing else f'e.g. {unexpected[0]!r} is unexpected'
               if unexpected else f'e.g. {reshaped[0]!r} has shape {saved[reshaped[0]]}, not {wanted[reshaped[0]]}')
    recorded = _recorded_model(Path(checkpoint))
    origin = f' (a {recorded!r} run)' if recorded else ''
    raise RecipeError(
        f'--resume {checkpoint}: this checkpoint{origin} holds weights of another model than {model_name!r} '
        f'({len(missing) + len(unexpected) + len(reshaped)} tensors differ, {example}); resume with the settings of '
        'the run that wrote it (drop --model/--config/--num-classes/model_args overrides) or start a new run.')


def _strip_legacy_prefix(key: str) -> str:
    # Until the recipe called GaterNet.forward(x, return_gates=True), it trained a wrapper holding the model as
    # ``net`` (``module.net.`` under DDP); the optimizer, RNG and EMA states of those checkpoints are unchanged.
    for old, new in (('net.', ''), ('module.net.', 'module.')):
        if key.startswith(old):
            return new + key[len(old):]
    return key


def _migrate_legacy_checkpoint(path: Path) -> None:
    """Rename the weights of an older recipe's checkpoint in place (atomically) so that ``load_state`` takes them."""
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    with safe_open(str(path), framework='pt') as f:
        metadata = f.metadata()
    tensors = {_strip_legacy_prefix(k): v for k, v in load_file(str(path)).items()}
    tmp = path.with_name(path.name + '.tmp')
    save_file(tensors, str(tmp), metadata=metadata)
    os.replace(tmp, path)
    print(f'{path}: renamed the weights of an older recipe version\'s checkpoint (no "net." wrapper any more)')


def _recorded_model(checkpoint: Path) -> str | None:
    record = RunRecord(checkpoint.parent.parent)
    try:
        return record.config().get('model') if record.has_config() else None
    except (yaml.YAMLError, ValueError):
        return None


def check_new_run_dir(out: Path, *, resuming: bool, overwrite: bool) -> None:
    """Refuse to mix a new run into a folder that already holds files (:func:`gaternet_zoo._io.check_output_dir`).

    Raises:
        RecipeError: The folder is not empty (the message offers ``--resume latest``, ``--overwrite`` or another
            folder), is a file, or cannot be written.
    """
    if resuming:
        return
    try:
        check_output_dir(out, overwrite=overwrite, what='a new run', hint=(
            'Pass --resume latest to continue that run, --overwrite to delete its artifacts and start again, or '
            'choose another --output-dir.'))
    except (OutputExistsError, NotADirectoryError, PermissionError) as err:
        raise RecipeError(f'--output-dir: {err}') from err


def clear_run_artifacts(out: Path) -> None:
    """``--overwrite``: delete only what the recipe writes, so a mistyped path cannot wipe unrelated files."""
    for name in RUN_ARTIFACTS:
        target = Path(out) / name
        if target.is_dir():
            shutil.rmtree(target)
        elif target.exists():
            target.unlink()


def jsonable(value: Any) -> Any:
    """``value`` with plain ``dict``/``list``/``int``/``float``/``str`` only (what YAML and JSON can represent)."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, (int, float)):
        return type(value)(value) if type(value) in (int, float) else float(value)
    return str(value)  # Also plain-izes str subclasses such as torch's TorchVersion, which YAML cannot represent.


def write_json_atomic(path: Path, payload: dict[str, Any]) -> None:
    """Write JSON through a temporary file and a rename, so a kill never leaves a half-written file."""
    tmp = path.with_name(path.name + '.tmp')
    tmp.write_text(json.dumps(payload, indent=2, sort_keys=True) + '\n')
    os.replace(tmp, path)


@dataclasses.dataclass(frozen=True)
class RunRecord:
    """A run folder, or the record of a run committed beside its published weights: its files, written and read.

    Every file a run leaves is named here once; the recipe writes through it, and the demo, the results tables,
    the screening and the plots read through it. Reading never changes the folder.

    Args:
        path: The run folder (``recipes/train.py --output-dir``), a published weight folder
            (``weights/<architecture>.<tag>``) or a committed run record (``docs/results/runs/<run>``).
    """

    CONFIG = 'config.yaml'
    #: The run's ``config.yaml`` as a published weight folder keeps it (``config.json`` is the model's).
    PUBLISHED_CONFIG = 'train_config.yaml'
    METRICS = 'metrics.jsonl'
    SUMMARY = 'summary.csv'
    TEST_METRICS = 'test_metrics.json'
    #: The float32 evaluation of published weights on the full test split (``tools/publish_weights.py``).
    EVAL_TEST = 'eval_test.json'
    FINAL = 'final'

    path: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, 'path', Path(self.path))  # a str or os.PathLike given, a Path kept

    @property
    def name(self) -> str:
        """The folder's name (a run's name, or ``<architecture>.<tag>`` of published weights)."""
        return self.path.name

    @property
    def final_dir(self) -> Path:
        """``final/``: the trained model, saved with ``save_pretrained`` (load it as ``local-dir:<run>/final``)."""
        return self.path / self.FINAL

    # --- reading ---------------------------------------------------------------------------------------------
    def config_path(self) -> Path | None:
        """The resolved settings file: ``config.yaml`` of a run, ``train_config.yaml`` of published weights."""
        return next((self.path / n for n in (self.CONFIG, self.PUBLISHED_CONFIG) if (self.path / n).is_file()), None)

    def has_config(self) -> bool:
        """Whether the folder holds its resolved settings."""
        return self.config_path() is not None

    def config(self) -> dict[str, Any]:
        """The run's resolved settings (and its ``runtime`` record).

        Raises:
            FileNotFoundError: The folder holds neither ``config.yaml`` nor ``train_config.yaml``.
            ValueError: The file is not a YAML mapping.
        """
        path = self.config_path()
        if path is None:
            raise FileNotFoundError(f'{self.path} holds no {self.CONFIG} (nor {self.PUBLISHED_CONFIG}): not the '
                                    'folder of a run of recipes/train.py')
        loaded = yaml.safe_load(path.read_text()) or {}
        if not isinstance(loaded, dict):
            raise ValueError(f'{path} does not hold a mapping of settings')
        return loaded

    def runtime(self) -> dict[str, Any]:
        """What the run actually used (``runtime`` of its config; empty for a folder without one)."""
        return dict((self.config().get('runtime') or {}) if self.has_config() else {})

    def warm_starts(self) -> list[dict[str, Any]]:
        """The warm starts recorded when the run first started (``runtime.warm_starts``; runs before them have none)."""
        return list(self.runtime().get('warm_starts') or [])

    def epochs(self) -> list[dict[str, Any]]:
        """Every logged epoch of ``metrics.jsonl``, in order (empty before the first epoch ends)."""
        path = self.path / self.METRICS
        if not path.is_file():
            return []
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]

    def last_epoch(self, *, finish_with: str = '--resume latest') -> dict[str, Any]:
        """The last epoch of a finished run.

        Args:
            finish_with: How to finish the run, for the message of a run that stopped early.

        Raises:
            FileNotFoundError: No config or no ``metrics.jsonl``.
            ValueError: The run stopped before its last epoch.
        """
        config = self.config()
        epochs = self.epochs()
        if not epochs:
            raise FileNotFoundError(f'{self.path} needs {self.METRICS} and {self.CONFIG} (or {self.PUBLISHED_CONFIG})')
        last = max(epochs, key=lambda record: record['epoch'])
        if last['epoch'] + 1 != config['epochs']:
            raise ValueError(f'{self.path}: the run stopped after epoch {last["epoch"] + 1} of {config["epochs"]}; '
                             f'finish it with {finish_with} before tabulating it')
        return last

    def eval_report(self) -> dict[str, Any] | None:
        """``eval_test.json`` of published weights (top-1, MACs used, gate counts), if the folder has one."""
        path = self.path / self.EVAL_TEST
        return json.loads(path.read_text()) if path.is_file() else None

    def test_metrics(self) -> dict[str, Any] | None:
        """``test_metrics.json``: the test split measured once at the end of a run with a validation split."""
        path = self.path / self.TEST_METRICS
        return json.loads(path.read_text()) if path.is_file() else None

    def test_top1(self) -> float:
        """The test top-1 of the run's final weights.

        For published weights it is ``eval_test.json``'s, measured in float32 (the figure their card shows; a run
        trained in bf16 logged its epochs under autocast, which can differ in the second decimal). A run with a
        validation split logged validation figures per epoch and measured the test split once at the end
        (``test_metrics.json``); any other run evaluated the test split after every epoch, the last one counts.

        Raises:
            ValueError: The run stopped early, or trained with a validation split and holds no test figure.
        """
        last = self.last_epoch()
        report, test = self.eval_report(), self.test_metrics()
        if report is not None:
            return float(report['top1'])
        if test is not None:
            return float(test['test_top1'])
        if 'top1' in last:
            return float(last['top1'])
        raise ValueError(f'{self.path}: trained with a validation split and holds no test figure; evaluate its '
                         'final weights once with `gaternet-zoo eval local-dir:<run>/final --json '
                         f'<record>/{self.EVAL_TEST}`')

    def checkpoints(self) -> list[Path]:
        """``checkpoint_<n>`` folders, oldest first (complete or not)."""
        return list_checkpoints(self.path)

    def newest_checkpoint(self) -> Path | None:
        """The newest complete checkpoint (its :data:`CHECKPOINT_STATE` written), or ``None``."""
        complete = [p for p in self.checkpoints() if (p / CHECKPOINT_STATE).is_file()]
        return complete[-1] if complete else None

    # --- writing (the recipe, main process) -------------------------------------------------------------------
    def write_config(self, config: Any, runtime: dict[str, Any]) -> None:
        """Write ``config.yaml``: the settings (a :class:`TrainConfig` or a mapping) and their ``runtime`` record.

        ``TrainConfig.from_dict`` reads the file back (its ``runtime`` skipped); a resume reads it as its lowest
        config layer. A resumed run rewrites it only after :func:`check_resume` refused any change of a setting that
        shapes the training, so the file always describes the run that produced the checkpoints.
        """
        settings = config.to_dict() if hasattr(config, 'to_dict') else dict(config)
        (self.path / self.CONFIG).write_text(
            yaml.safe_dump({**jsonable(settings), 'runtime': jsonable(runtime)}, sort_keys=False))

    def append_epoch(self, record: dict[str, Any]) -> None:
        """Append one epoch to ``metrics.jsonl`` (everything) and ``summary.csv`` (scalars, timm's file)."""
        with (self.path / self.METRICS).open('a') as f:
            f.write(json.dumps(record, sort_keys=True) + '\n')
        scalars = {k: v for k, v in record.items() if isinstance(v, (int, float, str, bool)) or v is None}
        path = self.path / self.SUMMARY
        new = not path.is_file()
        with path.open('a', newline='') as f:
            writer = csv.DictWriter(f, fieldnames=list(scalars.keys()))
            if new:
                writer.writeheader()
            writer.writerow(scalars)

    def truncate_epochs(self, start_epoch: int) -> None:
        """On resume, drop the rows of epochs that will be trained again (a kill can land after they were logged)."""
        jsonl = self.path / self.METRICS
        if jsonl.is_file():
            kept = [line for line in jsonl.read_text().splitlines()
                    if line and json.loads(line)['epoch'] < start_epoch]
            jsonl.write_text(''.join(line + '\n' for line in kept))
        summary = self.path / self.SUMMARY
        if summary.is_file():
            with summary.open(newline='') as f:
                rows = list(csv.DictReader(f))
            fields = list(rows[0].keys()) if rows else []
            if not fields:
                summary.unlink()
                return
            with summary.open('w', newline='') as f:
                writer = csv.DictWriter(f, fieldnames=fields)
                writer.writeheader()
                writer.writerows(r for r in rows if int(r['epoch']) < start_epoch)

    def write_test_metrics(self, metrics: dict[str, Any]) -> None:
        """Write ``test_metrics.json`` (atomically): the test split, measured once at the end."""
        write_json_atomic(self.path / self.TEST_METRICS, metrics)
