"""What a resumed run must agree with, the run folder's lock, and checkpoint files that are damaged or unwritable.

A resumed run continues exactly where its checkpoint stopped, or it does not start: settings that change the
trajectory (batch size, data size, seed, schedule, ...) are refused naming the flag, the checkpoint's position is
checked against this run's steps per epoch, and every file Accelerate would read is checked for truncation first
(Accelerate itself starts a fresh RNG, with only an INFO log line, when a ``random_states`` file does not load).
A run folder holds one training at a time (:func:`acquire_run_lock`).
"""
from __future__ import annotations

import atexit
import errno
import json
import os
import shutil
import socket
import time
import zipfile
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Any

from ._config import RESUME_EXACT_KEYS, TrainConfig
from ._run_dir import CHECKPOINT_STATE, RecipeError, list_checkpoints

__all__ = [
    'LOCK_NAME', 'RESUME_EXACT_KEYS', 'acquire_run_lock', 'check_resume', 'check_run_lock', 'checkpoint_problem',
    'newest_intact_checkpoint', 'release_run_locks', 'save_checkpoint_state',
]

#: The run folder's lock file: JSON with the owner's pid, host and process start time.
LOCK_NAME = 'train.lock'
_held: set[Path] = set()


def _flag(key: str) -> str:
    return 'model_args (a config-file key)' if key == 'model_args' else '--' + key.replace('_', '-')


def _plain(value: Any) -> Any:
    # What the value reads back as from config.yaml (tuples become lists, str subclasses str).
    return json.loads(json.dumps(value, default=str))


def _show(value: Any) -> str:
    if isinstance(value, bool):
        return 'on' if value else 'off'
    return 'unset' if value is None else str(value)


def check_resume(checkpoint: Path, config: TrainConfig | Mapping[str, Any], *, steps_per_epoch: int, micro_steps: int,
                 num_processes: int = 1, exact_keys: Collection[str] = RESUME_EXACT_KEYS) -> dict[str, Any]:
    """Refuse a resume that would not continue the run exactly, before anything is loaded.

    Checks, in order: the settings against the run's ``config.yaml`` (a key missing there was written before the
    setting existed and is not compared); the checkpoint's position against this run's steps per epoch; that
    the run still has something to train; and the checkpoint's files (:func:`checkpoint_problem`).

    Args:
        checkpoint: The complete checkpoint folder to resume from.
        config: This invocation's resolved settings (a mapping: as a ``config.yaml`` holds them).
        steps_per_epoch: Optimizer steps per epoch with these settings and this data.
        micro_steps: Batches per epoch.
        num_processes: Processes of this run (each reads its own ``random_states_<i>.pkl``).
        exact_keys: The settings that must equal the run's.

    Returns:
        The checkpoint's ``training_state.json``.

    Raises:
        RecipeError: Naming the flag to change (or the intact checkpoint to resume from) and why.
    """
    import yaml

    checkpoint = Path(checkpoint)
    if isinstance(config, TrainConfig):
        config = config.to_dict()  # Compared key by key with the run's config.yaml, which holds to_dict()'s form.
    run_dir = checkpoint.parent.parent
    record_path = run_dir / 'config.yaml'
    previous: dict[str, Any] = {}
    if record_path.is_file():
        previous = yaml.safe_load(record_path.read_text()) or {}
    changed = [k for k in exact_keys if k in previous and _plain(config.get(k)) != previous[k]]
    if changed:
        listed = '; '.join(f'{_flag(k)} is {_show(_plain(config.get(k)))} but the run used {_show(previous[k])}'
                           for k in changed)
        use = ' '.join(f'{_flag(k)} {_show(previous[k])}' for k in changed if k != 'model_args')
        raise RecipeError(
            f'--resume {checkpoint}: {listed} ({record_path}). A resumed run continues exactly where its checkpoint '
            f'stopped, and the checkpoint counts batches, steps and random draws of the run\'s own settings; with '
            f'others it would train a different run (or nothing) and still report success. Resume with the run\'s '
            f'values (drop the flag{"s" if len(changed) > 1 else ""}' + (f', or pass {use}' if use else '') +
            '), or start a new run in another --output-dir.')
    state = json.loads((checkpoint / CHECKPOINT_STATE).read_text())
    epoch, in_epoch, step = state['epoch'], state['step_in_epoch'], state['global_step']
    accum = int(config.get('grad_accum_steps') or 1)
    expected = epoch * steps_per_epoch + -(-in_epoch // accum)
    runtime = previous.get('runtime') or {}
    if step != expected or in_epoch >= micro_steps:
        recorded = (f' (the run recorded {runtime["train_samples"]} training images and {runtime["steps_per_epoch"]} '
                    f'steps per epoch)') if 'train_samples' in runtime and 'steps_per_epoch' in runtime else ''
        raise RecipeError(
            f'--resume {checkpoint}: the checkpoint was saved at optimizer step {step} (epoch {epoch + 1}, batch '
            f'{in_epoch}), which does not fall where it should with this run\'s {steps_per_epoch} steps per epoch '
            f'({micro_steps} batches){recorded}: the training data changed since the run started. Resume with the '
            f'data the run was started with, or start a new run in another --output-dir.')
    epochs = int(config['epochs'])
    if epoch >= epochs and in_epoch == 0 and (run_dir / 'final' / 'model.safetensors').is_file():
        raise RecipeError(
            f'--resume {checkpoint}: the run is complete (its checkpoint is at the end of epoch {epoch} of {epochs} '
            f'and final/ is written), so there is nothing to train. To train longer, start a new run in another '
            f'--output-dir.')
    saved_world = state.get('num_processes')
    if isinstance(saved_world, int) and num_processes > saved_world:
        raise RecipeError(
            f'--resume {checkpoint}: the checkpoint was written by {saved_world} process(es), but this run has '
            f'{num_processes}: the extra processes have no saved random states, and would start fresh ones. Resume '
            f'with {saved_world} process(es) (accelerate launch --num_processes {saved_world} ...).')
    problem = checkpoint_problem(checkpoint, num_processes)
    if problem:
        intact = newest_intact_checkpoint(run_dir, num_processes, before=checkpoint)
        where = (f'The newest intact checkpoint is {intact}: resume from it with --resume {intact}'
                 if intact else 'No older checkpoint of this run is intact: start the run again with --overwrite')
        raise RecipeError(f'--resume {checkpoint}: the checkpoint is damaged: {problem}. {where} (the training '
                          f'since then is repeated exactly).')
    return state


def checkpoint_problem(checkpoint: Path, num_processes: int = 1) -> str | None:
    """What is wrong with the files of a checkpoint folder (missing or truncated), or ``None``.

    Reads only headers and zip directories, not the tensors: a safetensors file must be as long as its header
    says, a ``torch.save`` file (optimizer, scheduler, RNG and EMA states) a complete zip archive.
    """
    checkpoint = Path(checkpoint)
    rng = [checkpoint / f'random_states_{i}.pkl' for i in range(num_processes)]
    missing = [p.name for p in rng if not p.is_file()]
    if missing:
        return f'{", ".join(missing)} is missing (the random number states the run continues with)'
    for path in sorted(checkpoint.iterdir()):
        if path.suffix == '.safetensors':
            why = _safetensors_problem(path)
        elif path.suffix in ('.bin', '.pkl', '.pt', '.pth'):
            why = _torch_file_problem(path)
        else:
            continue
        if why:
            return f'{path.name} {why}'
    return None


def newest_intact_checkpoint(run_dir: Path, num_processes: int = 1, *, before: Path | None = None) -> Path | None:
    """The newest complete checkpoint of ``run_dir`` (older than ``before``) whose files are intact."""
    from ._run_dir import checkpoint_number

    limit = checkpoint_number(Path(before)) if before is not None else None
    for path in reversed(list_checkpoints(run_dir)):
        if limit is not None and checkpoint_number(path) >= limit:
            continue
        if (path / CHECKPOINT_STATE).is_file() and checkpoint_problem(path, num_processes) is None:
            return path
    return None


def _safetensors_problem(path: Path) -> str | None:
    size = path.stat().st_size
    try:
        with path.open('rb') as f:
            length = int.from_bytes(f.read(8), 'little')
            if length <= 0 or 8 + length > size:
                return f'is truncated ({size} bytes; its header alone needs {8 + length})'
            header = json.loads(f.read(length))
    except (OSError, ValueError) as e:
        return f'is not a readable safetensors file ({e})'
    end = max((v['data_offsets'][1] for k, v in header.items() if k != '__metadata__'), default=0)
    if 8 + length + end > size:
        return f'is truncated ({size} bytes of {8 + length + end})'
    return None


def _torch_file_problem(path: Path) -> str | None:
    try:
        with zipfile.ZipFile(path) as archive:  # torch.save's format; the directory is at the end of the file
            names = archive.namelist()
    except (OSError, zipfile.BadZipFile) as e:
        return f'is truncated or corrupt ({path.stat().st_size} bytes; not a complete torch.save archive: {e})'
    if not names:
        return 'is empty'
    return None


def save_checkpoint_state(accelerator: Any, run_dir: Path) -> None:
    """``accelerator.save_state()``, with a disk that fills up turned into an error that says what to do.

    The half-written checkpoint folder (which has no ``training_state.json``, so resume ignores it) is removed to
    give the space back; the newest complete checkpoint is untouched.

    Raises:
        RecipeError: No space left (or over quota) while writing; names the file, the intact checkpoint and the
            command to resume.
    """
    before = {p.name for p in list_checkpoints(run_dir)}
    try:
        accelerator.save_state()
    except (OSError, RuntimeError) as e:
        if not _is_disk_full(e):
            raise
        new = [p for p in list_checkpoints(run_dir) if p.name not in before and not (p / CHECKPOINT_STATE).is_file()]
        partial = new[-1] if new else None
        files = sorted(p for p in partial.iterdir()) if partial is not None and partial.is_dir() else []
        last = f'{files[-1].name} (the last file written)' if files else 'its first file'
        intact = newest_intact_checkpoint(run_dir, getattr(accelerator, 'num_processes', 1))
        if partial is not None:
            shutil.rmtree(partial, ignore_errors=True)
        kept = (f'The previous checkpoint {intact} is intact; after freeing space, resume with `--output-dir '
                f'{run_dir} --resume latest` (it continues exactly from there).' if intact else
                'No complete checkpoint of this run remains (the oldest was rotated out before the save; raise '
                '--keep-checkpoints next time); after freeing space start the run again with --overwrite.')
        raise RecipeError(
            f'the disk is full: writing checkpoint {partial or "(new)"} failed at {last} ({e}). The incomplete '
            f'folder was removed. {kept}') from e


def _is_disk_full(error: BaseException) -> bool:
    if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    text = str(error)  # torch.save and safetensors report it as a RuntimeError carrying the OS message
    return any(s in text for s in ('No space left on device', 'StorageFull', 'Disk quota exceeded'))


def _start_time(pid: int) -> str | None:
    try:  # field 22 of /proc/<pid>/stat: start time in clock ticks since boot (tells a reused pid apart)
        return Path(f'/proc/{pid}/stat').read_text().rsplit(')', 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def _lock_owner(run_dir: Path) -> dict[str, Any] | None:
    """The live owner of the run folder's lock, or ``None`` (no lock, this process's own, or stale)."""
    path = Path(run_dir) / LOCK_NAME
    try:
        owner = json.loads(path.read_text())
        pid = int(owner['pid'])
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError):
        return None  # unreadable: a lock written half-way by a killed process
    if owner.get('host') != socket.gethostname():
        return owner  # cannot be checked from here: only the user can tell whether it still runs
    if pid == os.getpid() or not _alive(pid):
        return None
    started = owner.get('started')
    if started is not None and _start_time(pid) not in (None, started):
        return None  # the pid was reused by another program
    return owner


def check_run_lock(run_dir: Path) -> None:
    """Refuse a run folder another live training holds (see :func:`acquire_run_lock`)."""
    owner = _lock_owner(run_dir)
    if owner is None:
        return
    since = time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(owner.get('time', 0)))
    other_host = owner.get('host') != socket.gethostname()
    raise RecipeError(
        f'{run_dir} is in use by another training (pid {owner["pid"]} on {owner.get("host")}, since {since}; lock '
        f'file {Path(run_dir) / LOCK_NAME}). Two trainings in one folder would mix their checkpoints, config and '
        f'final model. Wait for it to end, or choose another --output-dir' + (
            '; if that training no longer runs (it was on another machine, so this one cannot tell), delete the '
            'lock file.' if other_host else '.'))


def acquire_run_lock(run_dir: Path) -> Path:
    """Take the run folder's lock for this process (released at exit, or by :func:`release_run_locks`).

    The lock holds the owner's pid, host and process start time. A lock whose process is gone (killed, crashed)
    or whose pid now belongs to another program is stale and taken over; a live owner's is refused.

    Raises:
        RecipeError: Another live training holds the folder.
    """
    run_dir = Path(run_dir)
    path = run_dir / LOCK_NAME
    payload = json.dumps({'pid': os.getpid(), 'host': socket.gethostname(), 'started': _start_time(os.getpid()),
                          'time': time.time()})
    for _ in range(2):
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            check_run_lock(run_dir)  # a live owner: refused
            path.unlink(missing_ok=True)  # stale or our own: taken over
            continue
        with os.fdopen(fd, 'w') as f:
            f.write(payload)
        if not _held:
            atexit.register(release_run_locks)
        _held.add(path)
        return path
    check_run_lock(run_dir)  # another process took it between our two attempts
    raise RecipeError(f'could not take the lock {path}; retry')


def release_run_locks() -> None:
    """Remove the locks this process holds (those still naming it as the owner)."""
    for path in list(_held):
        try:
            if json.loads(path.read_text()).get('pid') == os.getpid():
                path.unlink()
        except (OSError, ValueError):
            pass
        _held.discard(path)
