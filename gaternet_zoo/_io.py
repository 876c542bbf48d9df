"""Output folders and files of the zoo's writers (``convert-official``, ``publish``, ``eval --json``, ``analyze``).

Writers never overwrite a non-empty folder unless asked to (``--overwrite``), and an output that cannot be written
fails before any work starts, with one sentence that names the path, the reason and the fix, instead of a raw
``FileNotFoundError`` or ``PermissionError`` after minutes of evaluation.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

__all__ = ['OutputExistsError', 'check_output_dir', 'prepare_output_dir', 'check_output_file', 'current_umask',
           'display_path', 'give_umask_mode']


class OutputExistsError(FileExistsError):
    """The output folder already holds files and overwriting was not asked for."""


def _nearest_existing(path: Path) -> Path:
    for parent in (path, *path.parents):
        if parent.exists():
            return parent
    return Path('.')


def _check_creatable(path: Path, what: str) -> None:
    """Check that ``path`` (a folder to be) can be created or written: its nearest existing ancestor is a writable
    folder."""
    base = _nearest_existing(path)
    if not base.is_dir():
        raise NotADirectoryError(f'Cannot write {what} to {path}: {base} is a file, not a folder. Choose another path.')
    if not os.access(base, os.W_OK | os.X_OK):
        raise PermissionError(
            f'Cannot write {what} to {path}: {base} is not writable by this user. Choose a folder you can write to.')


def check_output_dir(path: str | os.PathLike, *, overwrite: bool = False, what: str = 'the output',
                     flag: str = '--overwrite', hint: str | None = None) -> Path:
    """Check, before any work, that ``path`` can receive ``what``: new or empty (or ``overwrite``) and writable.

    Args:
        path: Output folder.
        overwrite: Accept a non-empty folder (its files may be replaced).
        what: What is written, for the messages (``"the converted model"``).
        flag: The option that allows overwriting, named in the message (``overwrite=True`` for Python callers).
        hint: What to do about a non-empty folder, when more than ``flag`` applies (default: choose another
            folder or pass ``flag``).

    Returns:
        ``path`` as a ``Path``.

    Raises:
        OutputExistsError: ``path`` is a non-empty folder and ``overwrite`` is false.
        NotADirectoryError, PermissionError: ``path`` (or a parent) is a file, or not writable.
    """
    path = Path(path).expanduser()
    if path.exists() and not path.is_dir():
        raise NotADirectoryError(f'Cannot write {what} to {path}: it is a file, not a folder. Choose a folder path.')
    if path.is_dir():
        entries = sorted(p.name for p in path.iterdir())
        if entries and not overwrite:
            shown = ', '.join(entries[:5]) + (f', ... ({len(entries)} entries)' if len(entries) > 5 else '')
            raise OutputExistsError(
                f'{path} is not empty (it holds {shown}): writing {what} there would overwrite files. '
                + (hint or f'Choose a new or empty folder, or pass {flag} to replace them.'))
    _check_creatable(path, what)
    return path


def prepare_output_dir(path: str | os.PathLike, *, overwrite: bool = False, what: str = 'the output',
                       flag: str = '--overwrite') -> Path:
    """:func:`check_output_dir`, then create the folder (and its parents); returns it."""
    path = check_output_dir(path, overwrite=overwrite, what=what, flag=flag)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise type(e)(f'Cannot create {path} for {what}: {e.strerror or e}. Choose a folder you can write '
                               f'to.') from e
    return path


#: An existing file larger than this is not an earlier JSON report, whatever it holds (not read to find out).
_MAX_REPORT_BYTES = 64 << 20


def check_output_file(path: str | os.PathLike, *, what: str = 'the output', replaces_json_only: bool = False) -> Path:
    """Check, before any work, that the file ``path`` can be written (its parents can be created); returns it.

    Args:
        path: The file to write.
        what: What is written, for the messages.
        replaces_json_only: An existing file may be replaced only if it holds JSON (an earlier report): a mistyped
            path must not overwrite a script, a config or weights.

    Raises:
        IsADirectoryError: ``path`` is a folder.
        FileExistsError: With ``replaces_json_only``, ``path`` holds something other than JSON.
        NotADirectoryError, PermissionError: A parent is a file, or not writable.
    """
    path = Path(path).expanduser()
    if path.is_dir():
        raise IsADirectoryError(
            f'Cannot write {what} to {path}: it is a folder. Name a file, e.g. {path / "report.json"}.')
    if path.exists():
        if not os.access(path, os.W_OK):
            raise PermissionError(f'Cannot write {what} to {path}: the file is not writable.')
        if replaces_json_only and path.stat().st_size and not _holds_json(path):
            raise FileExistsError(
                f'Not writing {what} to {path}: that file exists and is not a JSON report (it holds something else, '
                f'which would be lost). Name a new file, or move that one away first.')
        return path
    _check_creatable(path.parent, what)
    return path


def _holds_json(path: Path) -> bool:
    if path.stat().st_size > _MAX_REPORT_BYTES:
        return False
    try:
        json.loads(path.read_bytes())
    except (ValueError, UnicodeDecodeError):
        return False
    return True


def current_umask() -> int:
    """The process's file-mode creation mask, read without changing it where the OS allows.

    Linux reports it in ``/proc/self/status``; elsewhere it is read the only portable way, by setting and restoring
    it (which another thread creating a file at that instant could notice).
    """
    try:
        for line in Path('/proc/self/status').read_text().splitlines():
            if line.startswith('Umask:'):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def give_umask_mode(path: str | os.PathLike) -> None:
    """Give the file ``path`` the mode a plain ``open(path, 'w')`` would have: ``0o666`` less the umask.

    safetensors writes through a private temporary file (mode 0600) renamed into place, so a saved model would
    otherwise be unreadable to the group that shares its folder, unlike every other file the zoo writes.
    """
    os.chmod(path, 0o666 & ~current_umask())


def display_path(path: str | os.PathLike) -> str:
    """``path`` as a message shows it: relative to the working directory when inside it, else under ``~``."""
    path = Path(path)
    try:
        resolved = path.resolve()
    except OSError:
        return str(path)
    for base, prefix in ((Path.cwd(), ''), (Path.home(), '~')):
        try:
            relative = resolved.relative_to(base.resolve())
        except (ValueError, OSError, RuntimeError):
            continue
        return str(Path(prefix) / relative) if prefix else str(relative)
    return str(resolved)
