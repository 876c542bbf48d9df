"""A real, local Hugging Face Hub server for tests: olah serving plain git repositories on loopback.

huggingface.co cannot be reached from the test machines, and mocking the client would not test the real HTTP path.
Instead this module runs `olah <https://pypi.org/project/olah/>`_ in offline mode, which serves local git
repositories found under ``<mirrors>/models/<org>/<name>`` as Hub model repositories over the Hub's HTTP API.

olah pins its own versions of huggingface_hub, fastapi and friends, so it lives in a dedicated virtual environment
(see :func:`ensure_olah_venv`), never in the project's one.

Typical use::

    with LocalHub() as hub:
        sha = hub.publish("org/model", folder, tag="v1.0")
        env = hub.client_env(tmp_path / "hf-home")
        subprocess.run([sys.executable, "-c", "..."], env=env, check=True)

huggingface_hub reads ``HF_ENDPOINT`` and ``HF_HOME`` when it is first imported, so a client must either get that
environment before its first import (a subprocess, as above) or be configured at the very top of a conftest.

Known limits of olah 0.5.4 (as the Hub stand-in): no write API (``create_repo``/``upload_folder`` answer 405),
``model_info`` needs an explicit revision, ``list_repo_commits`` is unsupported, a missing file or branch surfaces
as ``RepositoryNotFoundError`` (the real Hub raises ``EntryNotFoundError``/``RevisionNotFoundError``), and an unknown
40-character sha makes olah answer 500 only after long client retries, so never request one.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from typing import Self

OLAH_VERSION = "0.5.4"
"""The olah release installed by :func:`ensure_olah_venv` (the one these helpers were verified against)."""

OLAH_VENV_ENV_VAR = "GATERNET_OLAH_VENV"
"""Environment variable that overrides where the olah virtual environment lives."""

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OLAH_VENV = REPO_ROOT / ".venv-olah"

_STAMP_NAME = ".gaternet-olah-version"
_READY_PATH = "/api/models/none/none/revision/main"
_GIT_IDENTITY = {"user.name": "gaternet-zoo tests", "user.email": "tests@gaternet-zoo.invalid"}
# Variables that would make a client talk to something other than the local hub, or not at all.
_CLIENT_ENV_DROP_PREFIXES = ("HF_", "HUGGINGFACE_")


def _venv_bin(venv: Path) -> Path:
    return venv / ("Scripts" if os.name == "nt" else "bin")


def ensure_olah_venv(path: Path | None = None) -> Path:
    """Create (if needed) a dedicated virtual environment holding olah, and return its ``olah-cli``.

    The environment is made with ``<current interpreter> -m venv`` (inside the project venv this builds on the base
    interpreter, not on the project venv) and filled with ``pip install olah==OLAH_VERSION``. A stamp file records a
    finished install, so a second call only checks two files. A file lock keeps concurrent callers from installing
    into the same directory at once.

    Args:
        path: Where the virtual environment lives. Defaults to ``$GATERNET_OLAH_VENV`` if set, else
            ``<repo>/.venv-olah``.

    Returns:
        The path of the environment's ``olah-cli`` executable.

    Raises:
        RuntimeError: If creating the environment or installing olah fails; the message carries pip's output tail.
    """
    venv = Path(path or os.environ.get(OLAH_VENV_ENV_VAR) or DEFAULT_OLAH_VENV).expanduser().resolve()
    cli = _venv_bin(venv) / "olah-cli"
    stamp = venv / _STAMP_NAME
    if _olah_installed(cli, stamp):
        return cli

    venv.mkdir(parents=True, exist_ok=True)
    with (venv / ".gaternet-olah.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if _olah_installed(cli, stamp):  # Another process finished while we waited.
            return cli
        stamp.unlink(missing_ok=True)
        _run_or_raise([sys.executable, "-m", "venv", str(venv)], "creating the olah virtualenv")
        _run_or_raise(
            [
                str(_venv_bin(venv) / "python"),
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
                f"olah=={OLAH_VERSION}",
            ],
            f"installing olah=={OLAH_VERSION}",
        )
        if not cli.is_file():
            raise RuntimeError(f"olah=={OLAH_VERSION} installed, but {cli} does not exist")
        stamp.write_text(OLAH_VERSION + "\n")
    return cli


def _olah_installed(cli: Path, stamp: Path) -> bool:
    return cli.is_file() and stamp.is_file() and stamp.read_text().strip() == OLAH_VERSION


def _run_or_raise(cmd: list[str], what: str) -> None:
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).splitlines()[-30:])
        raise RuntimeError(f"{what} failed (exit {proc.returncode}): {' '.join(cmd)}\n{tail}")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class LocalHub:
    """An olah server on 127.0.0.1 serving local git repositories as Hub model repositories.

    Use it as a context manager (or call :meth:`start` and :meth:`stop`). Everything it writes lives in one
    temporary directory that is removed on exit. New repositories and commits made with :meth:`publish` are served
    right away, without a restart.

    Attributes:
        endpoint: Base URL for ``HF_ENDPOINT``, e.g. ``http://127.0.0.1:43121``; set once started.
        mirrors_dir: The olah mirrors root; model repositories are git repositories at ``models/<org>/<name>``.
        workdir: The temporary directory holding config, logs, cache and mirrors.
    """

    def __init__(self, olah_cli: Path | None = None, *, startup_timeout: float = 30.0) -> None:
        """Prepare a server; nothing runs until :meth:`start` or ``__enter__``.

        Args:
            olah_cli: The ``olah-cli`` to run. Defaults to the one from :func:`ensure_olah_venv` (created if missing).
            startup_timeout: Seconds to wait for the server to answer HTTP before giving up.
        """
        self._olah_cli = olah_cli
        self._startup_timeout = startup_timeout
        self._proc: subprocess.Popen[bytes] | None = None
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self.endpoint = ""
        self.port = 0
        self.workdir = Path()
        self.mirrors_dir = Path()

    def __enter__(self) -> Self:
        """Start the server (see :meth:`start`) and return this hub."""
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Stop the server and remove its temporary directory (see :meth:`stop`)."""
        self.stop()

    def start(self) -> Self:
        """Start olah on a free loopback port and wait until it answers HTTP.

        Returns:
            This hub, started.

        Raises:
            RuntimeError: If olah exits or does not answer within ``startup_timeout``; the message ends with the tail
                of its logs.
        """
        if self._proc is not None:
            raise RuntimeError("LocalHub is already running")
        cli = self._olah_cli or ensure_olah_venv()
        self._tmp = tempfile.TemporaryDirectory(prefix="gaternet-localhub-")
        self.workdir = Path(self._tmp.name)
        self.mirrors_dir = self.workdir / "mirrors"
        (self.mirrors_dir / "models").mkdir(parents=True)
        (self.workdir / "logs").mkdir()
        try:
            # The free port may be taken between probing and binding; a fresh port usually fixes that.
            for attempt in range(3):
                self.port = _free_port()
                self.endpoint = f"http://127.0.0.1:{self.port}"
                self._spawn(cli)
                try:
                    self._wait_ready()
                    return self
                except RuntimeError:
                    exited = self._proc is not None and self._proc.poll() is not None
                    self._terminate()
                    if not exited or attempt == 2:
                        raise
        except BaseException:
            self.stop()
            raise
        raise AssertionError("unreachable")

    def stop(self) -> None:
        """Stop the server (if running) and remove its temporary directory. Safe to call more than once."""
        self._terminate()
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def _spawn(self, cli: Path) -> None:
        config = self.workdir / "olah.toml"
        config.write_text(
            "\n".join(
                [
                    "[basic]",
                    'host = "127.0.0.1"',
                    f"port = {self.port}",
                    f'repos-path = "{self.workdir / "repos"}"',
                    'mirror-scheme = "http"',
                    f'mirror-netloc = "127.0.0.1:{self.port}"',
                    f'mirror-lfs-netloc = "127.0.0.1:{self.port}"',
                    f'mirrors-path = ["{self.mirrors_dir}"]',
                    "",
                    "[accessibility]",
                    "offline = true",
                    "",
                ]
            )
        )
        with (self.workdir / "olah.out").open("ab") as out:
            self._proc = subprocess.Popen(
                [str(cli), "-c", str(config), "--log-path", str(self.workdir / "logs")],
                cwd=self.workdir,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
            )

    def _wait_ready(self) -> None:
        # Any HTTP status (olah answers 4xx for the dummy repo) means the server is up. "/" answers 500: not used.
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        deadline = time.monotonic() + self._startup_timeout
        while time.monotonic() < deadline:
            assert self._proc is not None
            if self._proc.poll() is not None:
                raise RuntimeError(
                    f"olah exited with code {self._proc.returncode} before answering on {self.endpoint}\n"
                    + self.log_tail()
                )
            try:
                with opener.open(self.endpoint + _READY_PATH, timeout=2):
                    return
            except urllib.error.HTTPError:
                return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError(
            f"olah did not answer on {self.endpoint} within {self._startup_timeout:.0f} s\n" + self.log_tail()
        )

    def _terminate(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)

    def log_tail(self, lines: int = 40) -> str:
        """Return the last lines of olah's console output, for error messages.

        The console output (stdout and stderr) is a superset of olah's log file and also holds start-up tracebacks;
        the files under ``--log-path`` are used only if it is empty.

        Args:
            lines: How many lines to keep.

        Returns:
            The tail, headed by its file name; empty if nothing was logged.
        """
        logs = self.workdir / "logs"
        candidates = [self.workdir / "olah.out", *(sorted(logs.rglob("*")) if logs.is_dir() else [])]
        for file in candidates:
            if file.is_file() and file.stat().st_size:
                tail = file.read_text(errors="replace").splitlines()[-lines:]
                return f"--- {file.name} (last {len(tail)} lines) ---\n" + "\n".join(tail)
        return ""

    def repo_dir(self, repo_id: str) -> Path:
        """Return the git repository path that serves model ``repo_id`` (``org/name``)."""
        org, sep, name = repo_id.partition("/")
        if not sep or not org or not name or "/" in name or ".." in (org, name):
            raise ValueError(f"repo_id must look like 'org/name', got {repo_id!r}")
        return self.mirrors_dir / "models" / org / name

    def publish(self, repo_id: str, folder: Path, *, branch: str = "main", tag: str | None = None) -> str:
        """Publish ``folder`` as the new state of model ``repo_id``, the way ``push_to_hub`` would upload it.

        The first call creates a git repository; later calls add a commit on ``branch`` whose tree is exactly the
        folder's contents (files missing from the folder are deleted), so older commits stay reachable by sha or tag.
        A ``.git`` directory inside ``folder`` is skipped. Every call makes a new commit, even if nothing changed.

        Args:
            repo_id: Model repository id, ``org/name``.
            folder: The folder whose contents become the repository tree.
            branch: The branch to commit to; created from the current head if missing.
            tag: If given, a lightweight tag set (or moved) to the new commit.

        Returns:
            The new commit's full 40-character sha.
        """
        folder = Path(folder)
        if not folder.is_dir():
            raise NotADirectoryError(folder)
        repo = self.repo_dir(repo_id)
        if not (repo / ".git").is_dir():
            repo.mkdir(parents=True, exist_ok=True)
            _git(repo, "init", "--quiet")
            _git(repo, "symbolic-ref", "HEAD", f"refs/heads/{branch}")
            for key, value in _GIT_IDENTITY.items():
                _git(repo, "config", key, value)
            _git(repo, "config", "commit.gpgsign", "false")
            _git(repo, "config", "tag.gpgsign", "false")
        elif _git(repo, "symbolic-ref", "--short", "HEAD") != branch:
            exists = _git(repo, "branch", "--list", branch) != ""
            _git(repo, "checkout", "--quiet", *([] if exists else ["-b"]), branch)

        # Empty the tree (tracked and untracked), then copy the folder in.
        for child in repo.iterdir():
            if child.name == ".git":
                continue
            if child.is_dir() and not child.is_symlink():
                shutil.rmtree(child)
            else:
                child.unlink()
        shutil.copytree(folder, repo, dirs_exist_ok=True, ignore=shutil.ignore_patterns(".git"))
        _git(repo, "add", "--all", "--force", ".")
        _git(repo, "commit", "--quiet", "--allow-empty", "--no-verify", "-m", f"Publish {repo_id} from {folder.name}")
        if tag is not None:
            _git(repo, "tag", "--force", tag)
        return _git(repo, "rev-parse", "HEAD")

    def client_env(self, hf_home: Path, *, offline: bool = False) -> dict[str, str]:
        """Return an environment for a huggingface_hub client process that talks only to this hub.

        Starts from ``os.environ``, drops every ``HF_*``/``HUGGINGFACE_*`` variable (tokens, cache paths, offline
        flags of the caller), then sets ``HF_ENDPOINT``, ``HF_HOME``, disables telemetry and bypasses proxies for
        loopback.

        Args:
            hf_home: The client's ``HF_HOME`` (cache and token location).
            offline: If true, also set ``HF_HUB_OFFLINE=1``.

        Returns:
            A fresh environment mapping, for ``subprocess.run(..., env=...)``.
        """
        env = {k: v for k, v in os.environ.items() if not k.upper().startswith(_CLIENT_ENV_DROP_PREFIXES)}
        no_proxy = ",".join(filter(None, [env.get("NO_PROXY", ""), "127.0.0.1,localhost"]))
        env.update(
            HF_ENDPOINT=self.endpoint,
            HF_HOME=str(hf_home),
            HF_HUB_DISABLE_TELEMETRY="1",
            HF_HUB_DISABLE_IMPLICIT_TOKEN="1",
            NO_PROXY=no_proxy,
            no_proxy=no_proxy,
        )
        if offline:
            env["HF_HUB_OFFLINE"] = "1"
        return env


def _git(repo: Path, *args: str) -> str:
    """Run ``git`` in ``repo`` with no user or system config, and return its stripped stdout."""
    env = {**os.environ, "GIT_CONFIG_NOSYSTEM": "1", "GIT_CONFIG_GLOBAL": os.devnull, "GIT_TERMINAL_PROMPT": "0"}
    proc = subprocess.run(["git", *args], cwd=repo, env=env, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"git {' '.join(args)} failed in {repo} (exit {proc.returncode}):\n{proc.stderr.strip()}")
    return proc.stdout.strip()


@pytest.fixture(scope="session")
def local_hub() -> Iterator[LocalHub]:
    """Yield a started :class:`LocalHub` shared by the whole test session; stopped and cleaned up at the end."""
    with LocalHub() as hub:
        yield hub
