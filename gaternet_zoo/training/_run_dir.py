"""Run folders of the training recipe: checkpoints, resume, metric files.

A run folder holds ``checkpoints/checkpoint_<n>/`` (Accelerate ``save_state`` folders; a checkpoint is complete
once :data:`CHECKPOINT_STATE` is written into it, last), ``final/``, ``logs/``, ``config.yaml``, ``metrics.jsonl``,
``summary.csv`` and ``test_metrics.json``.
"""
from __future__ import annotations

import csv
import json
import os
import shutil
from pathlib import Path
from typing import Any

from torch import nn

__all__ = [
    'CHECKPOINT_STATE', 'RUN_ARTIFACTS', 'RecipeError', 'append_metrics', 'check_checkpoint_matches',
    'check_output_dir', 'checkpoint_number', 'clear_run_artifacts', 'find_checkpoint', 'list_checkpoints',
    'resolve_run_dir', 'truncate_metrics', 'write_json_atomic',
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
    complete = [p for p in list_checkpoints(run_dir) if (p / CHECKPOINT_STATE).is_file()]
    if not complete:
        raise RecipeError(
            f"--resume {resume}: no complete checkpoint found; looked for {Path(run_dir) / 'checkpoints'}/"
            f'checkpoint_<n>/{CHECKPOINT_STATE}. Start a new run without --resume (add --overwrite to reuse the '
            'folder).')
    return complete[-1]


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
    config = checkpoint.parent.parent / 'config.yaml'
    if not config.is_file():
        return None
    import yaml

    try:
        return (yaml.safe_load(config.read_text()) or {}).get('model')
    except yaml.YAMLError:
        return None


def check_output_dir(out: Path, *, resuming: bool, overwrite: bool) -> None:
    """Refuse to mix a new run into a folder that already holds files."""
    if resuming or overwrite or not out.exists():
        return
    if not out.is_dir():
        raise RecipeError(f'--output-dir {out} exists and is not a folder')
    entries = sorted(p.name for p in out.iterdir())
    if entries:
        shown = ', '.join(entries[:6]) + (', ...' if len(entries) > 6 else '')
        raise RecipeError(
            f'--output-dir {out} is not empty ({shown}). Pass --resume latest to continue that run, --overwrite to '
            'delete its artifacts and start again, or choose another --output-dir.')


def clear_run_artifacts(out: Path) -> None:
    """``--overwrite``: delete only what the recipe writes, so a mistyped path cannot wipe unrelated files."""
    for name in RUN_ARTIFACTS:
        target = Path(out) / name
        if target.is_dir():
            shutil.rmtree(target)
        elif target.exists():
            target.unlink()


def write_json_atomic(path: Path, payload: dict[str, Any]) -> None:
    """Write JSON through a temporary file and a rename, so a kill never leaves a half-written file."""
    tmp = path.with_name(path.name + '.tmp')
    tmp.write_text(json.dumps(payload, indent=2, sort_keys=True) + '\n')
    os.replace(tmp, path)


def truncate_metrics(out: Path, start_epoch: int) -> None:
    """On resume, drop metric rows of epochs that will be trained again (a kill can land after they were logged)."""
    jsonl = out / 'metrics.jsonl'
    if jsonl.is_file():
        kept = [line for line in jsonl.read_text().splitlines() if line and json.loads(line)['epoch'] < start_epoch]
        jsonl.write_text(''.join(line + '\n' for line in kept))
    summary = out / 'summary.csv'
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


def append_metrics(out: Path, record: dict[str, Any]) -> None:
    """Append one epoch to ``metrics.jsonl`` (everything) and ``summary.csv`` (scalars, timm's file)."""
    with (out / 'metrics.jsonl').open('a') as f:
        f.write(json.dumps(record, sort_keys=True) + '\n')
    scalars = {k: v for k, v in record.items() if isinstance(v, (int, float, str, bool)) or v is None}
    path = out / 'summary.csv'
    new = not path.is_file()
    with path.open('a', newline='') as f:
        writer = csv.DictWriter(f, fieldnames=list(scalars.keys()))
        if new:
            writer.writeheader()
        writer.writerow(scalars)

