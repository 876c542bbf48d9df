"""Tests that the local olah Hub (tests/hubserver.py) serves real huggingface_hub clients over HTTP.

Each client runs in a subprocess, because huggingface_hub reads ``HF_ENDPOINT`` and ``HF_HOME`` at import time.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from hubserver import OLAH_VENV_ENV_VAR, OLAH_VERSION, LocalHub, ensure_olah_venv

# Downloads each request in a JSON list and prints, per request, either the file's bytes (hex) and resolved commit
# (taken from the snapshot path) or the exception class name.
_CLIENT = r"""
import json, sys
from pathlib import Path
from huggingface_hub import hf_hub_download

results = []
for req in json.loads(sys.argv[1]):
    try:
        path = Path(hf_hub_download(**req))
    except Exception as exc:  # noqa: BLE001 - reported to the test
        results.append({"error": type(exc).__name__, "bases": [c.__name__ for c in type(exc).__mro__]})
    else:
        results.append({"data": path.read_bytes().hex(), "commit": path.parent.name})
print(json.dumps(results))
"""

NOT_FOUND_ERRORS = {"RepositoryNotFoundError", "EntryNotFoundError", "RevisionNotFoundError"}


def download(env: dict[str, str], requests: list[dict[str, str]]) -> list[dict[str, object]]:
    """Run ``hf_hub_download`` for each request in a fresh interpreter with ``env``; return one result per request."""
    proc = subprocess.run(
        [sys.executable, "-c", _CLIENT, json.dumps(requests)],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def make_folder(path: Path, config: dict[str, object], weights: bytes) -> Path:
    """Write a tiny model folder (config.json + a binary weights file), as push_to_hub would upload it."""
    path.mkdir(parents=True)
    (path / "config.json").write_text(json.dumps(config))
    (path / "model.safetensors").write_bytes(weights)
    return path


def expect(data: bytes, commit: str) -> dict[str, object]:
    return {"data": data.hex(), "commit": commit}


@pytest.mark.hub
def test_download_main(local_hub: LocalHub, tmp_path: Path) -> None:
    weights = bytes(range(256)) * 4
    folder = make_folder(tmp_path / "v1", {"arch": "gaternet_tiny", "width": 8}, weights)
    sha = local_hub.publish("gaternet-test/basic", folder)

    results = download(
        local_hub.client_env(tmp_path / "hf-home"),
        [
            {"repo_id": "gaternet-test/basic", "filename": "config.json"},
            {"repo_id": "gaternet-test/basic", "filename": "model.safetensors"},
        ],
    )

    assert results == [expect((folder / "config.json").read_bytes(), sha), expect(weights, sha)]


@pytest.mark.hub
def test_revisions_sha_tag_and_main(local_hub: LocalHub, tmp_path: Path) -> None:
    repo = "gaternet-test/revisions"
    old = make_folder(tmp_path / "v1", {"version": 1}, b"\x00old-weights\xff")
    old_sha = local_hub.publish(repo, old, tag="v1.0")
    new = make_folder(tmp_path / "v2", {"version": 2}, b"\x01new-weights\xfe" * 3)
    (new / "extra.txt").write_text("only in v2")
    new_sha = local_hub.publish(repo, new)
    assert old_sha != new_sha and len(old_sha) == len(new_sha) == 40

    results = download(
        local_hub.client_env(tmp_path / "hf-home"),
        [
            {"repo_id": repo, "filename": "config.json"},
            {"repo_id": repo, "filename": "model.safetensors"},
            {"repo_id": repo, "filename": "config.json", "revision": old_sha},
            {"repo_id": repo, "filename": "model.safetensors", "revision": old_sha},
            {"repo_id": repo, "filename": "model.safetensors", "revision": "v1.0"},
            {"repo_id": repo, "filename": "extra.txt", "revision": new_sha},
            {"repo_id": repo, "filename": "extra.txt", "revision": "v1.0"},
        ],
    )

    old_config, new_config = (old / "config.json").read_bytes(), (new / "config.json").read_bytes()
    assert results[0] == expect(new_config, new_sha)
    assert results[1] == expect((new / "model.safetensors").read_bytes(), new_sha)
    assert results[2] == expect(old_config, old_sha)
    assert results[3] == expect((old / "model.safetensors").read_bytes(), old_sha)
    assert results[4] == expect((old / "model.safetensors").read_bytes(), old_sha)
    assert results[5] == expect(b"only in v2", new_sha)
    assert results[6]["error"] in NOT_FOUND_ERRORS  # Deleted files are gone from later commits only.


@pytest.mark.hub
def test_offline_mode_reads_the_filled_cache(local_hub: LocalHub, tmp_path: Path) -> None:
    repo = "gaternet-test/offline"
    folder = make_folder(tmp_path / "v1", {"offline": True}, b"\x02" * 64)
    sha = local_hub.publish(repo, folder, tag="stable")
    hf_home = tmp_path / "hf-home"
    requests = [
        {"repo_id": repo, "filename": "config.json"},
        {"repo_id": repo, "filename": "model.safetensors", "revision": "stable"},
    ]
    expected = [expect((folder / "config.json").read_bytes(), sha), expect(b"\x02" * 64, sha)]
    assert download(local_hub.client_env(hf_home), requests) == expected

    # Point the offline client at a closed port: any network use would fail, so a pass proves it read the cache.
    offline_env = local_hub.client_env(hf_home, offline=True)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        offline_env["HF_ENDPOINT"] = f"http://127.0.0.1:{sock.getsockname()[1]}"
    assert offline_env["HF_HUB_OFFLINE"] == "1"
    assert download(offline_env, requests) == expected
    # And a file never downloaded is not invented from the cache.
    missing = download(offline_env, [{"repo_id": repo, "filename": "never-fetched.bin"}])
    assert missing[0]["error"] == "LocalEntryNotFoundError"


@pytest.mark.hub
def test_missing_repo_file_and_revision_raise_not_found(local_hub: LocalHub, tmp_path: Path) -> None:
    repo = "gaternet-test/missing"
    local_hub.publish(repo, make_folder(tmp_path / "v1", {}, b"w"))

    results = download(
        local_hub.client_env(tmp_path / "hf-home"),
        [
            {"repo_id": "gaternet-test/no-such-repo", "filename": "config.json"},
            {"repo_id": repo, "filename": "no-such-file.json"},
            {"repo_id": repo, "filename": "config.json", "revision": "no-such-branch"},
        ],
    )

    for result in results:
        assert result.get("error") in NOT_FOUND_ERRORS, result
    # The real Hub and olah both answer a missing repository with RepositoryNotFoundError.
    assert results[0]["error"] == "RepositoryNotFoundError"


@pytest.mark.hub
def test_publish_writes_a_git_repo_per_model(local_hub: LocalHub, tmp_path: Path) -> None:
    folder = make_folder(tmp_path / "v1", {"a": 1}, b"w")
    (folder / "sub").mkdir()
    (folder / "sub" / "nested.txt").write_text("nested")
    (folder / ".git").mkdir()  # A stray .git in the folder must not be published.
    (folder / ".git" / "HEAD").write_text("junk")
    sha = local_hub.publish("gaternet-test/layout", folder, branch="dev", tag="t1")

    repo = local_hub.mirrors_dir / "models" / "gaternet-test" / "layout"
    assert local_hub.repo_dir("gaternet-test/layout") == repo

    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True, check=True).stdout.strip()

    assert git("rev-parse", "refs/heads/dev") == sha
    assert git("rev-parse", "t1^{commit}") == sha
    assert sorted(git("ls-tree", "-r", "--name-only", sha).splitlines()) == [
        "config.json",
        "model.safetensors",
        "sub/nested.txt",
    ]
    with pytest.raises(ValueError, match="org/name"):
        local_hub.repo_dir("no-slash")


@pytest.mark.hub
def test_hub_lifecycle_port_and_cleanup() -> None:
    with LocalHub() as hub:
        assert hub.endpoint == f"http://127.0.0.1:{hub.port}"
        workdir = hub.workdir
        assert (hub.mirrors_dir / "models").is_dir()
        with pytest.raises(urllib.error.HTTPError):  # Up: answers HTTP (an error status for an unknown repo).
            urllib.request.urlopen(f"{hub.endpoint}/api/models/none/none/revision/main", timeout=5)
        assert "GET /api/models/none/none/revision/main" in hub.log_tail()
    assert not workdir.exists()
    with pytest.raises(urllib.error.URLError) as info:  # Down: nothing listens on the port any more.
        urllib.request.urlopen(f"{hub.endpoint}/api/models/none/none/revision/main", timeout=5)
    assert not isinstance(info.value, urllib.error.HTTPError)


def test_ensure_olah_venv_is_a_no_op_when_installed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    venv = tmp_path / "olah-venv"
    cli = venv / ("Scripts" if os.name == "nt" else "bin") / "olah-cli"
    cli.parent.mkdir(parents=True)
    cli.write_text("#!/bin/sh\n")
    (venv / ".gaternet-olah-version").write_text(OLAH_VERSION + "\n")
    monkeypatch.setenv(OLAH_VENV_ENV_VAR, str(venv))

    assert ensure_olah_venv() == cli  # Found through the env var; no pip run (it would fail in this fake venv).
    assert ensure_olah_venv(venv) == cli
    assert sorted(p.name for p in venv.iterdir()) == [".gaternet-olah-version", "bin"]


def test_start_failure_reports_olah_output(tmp_path: Path) -> None:
    fake_cli = tmp_path / "olah-cli"
    fake_cli.write_text("#!/bin/sh\necho 'boom: cannot start' >&2\nexit 3\n")
    fake_cli.chmod(0o755)
    hub = LocalHub(fake_cli, startup_timeout=5)

    with pytest.raises(RuntimeError, match=r"(?s)exited with code 3.*boom: cannot start"):
        hub.start()
    assert not hub.workdir.exists()  # Cleaned up after the failed start.
