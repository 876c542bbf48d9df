"""``pretrained=True`` without the real Hub: the pinned Hub revision, then the Hub cache, then the shipped copy.

The zoo's published weights travel with it: in a source (or ``torch.hub``) checkout as ``weights/<arch>.<tag>/``, in a
wheel as ``gaternet_zoo/weights/<arch>.<tag>/`` (copied by ``setup.py``). Each client below runs in a fresh
interpreter, because huggingface_hub reads ``HF_ENDPOINT`` and ``HF_HOME`` when it is first imported; the Hub is
either the local olah server of ``tests/hubserver.py``, a closed port (connection refused at once) or a server that
accepts connections and never answers (the probe's timeout is what bounds the wait).
"""
from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import textwrap
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from hubserver import REPO_ROOT, LocalHub
from timm.models import get_pretrained_cfg

import gaternet_zoo as gz
from gaternet_zoo._pretrained import get_extra_cfg
from gaternet_zoo.hub import HUB_PROBE_TIMEOUT, SHIP_LIMIT_BYTES, find_shipped_weights, sha256_file

WEIGHTS = REPO_ROOT / 'weights'
WEIGHTS_FILE = 'model.safetensors'
PUBLISHED = sorted(p.name for p in WEIGHTS.iterdir() if (p / 'config.json').is_file())
# What create_model is given for each: a default tag loads by the architecture's name alone, another by its full name.
LOAD_AS = {n: n.partition('.')[0] if get_pretrained_cfg(n.partition('.')[0]).tag == n.partition('.')[2] else n
           for n in PUBLISHED}
# How long a load may take when the Hub cannot serve it: the probe's timeout plus loading a small model.
FALLBACK_BUDGET_S = HUB_PROBE_TIMEOUT + 2.0

# A client prints one JSON line: for each step the error, or the eval logits and what the log said about the source.
_HARNESS = r'''
import json, logging, sys, time
import torch

logging.basicConfig(level=logging.INFO, format='%(levelname)s %(name)s: %(message)s')
ARGS = json.loads(sys.argv[1])
RESULTS = {}
X = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))


class Capture(logging.Handler):
    def __init__(self):
        super().__init__()
        self.lines = []

    def emit(self, record):
        self.lines.append(f'{record.levelname} {record.getMessage()}')


def step(name, fn):
    capture = Capture()
    logging.getLogger('gaternet_zoo').addHandler(capture)
    start = time.monotonic()
    try:
        out = fn()
    except Exception as exc:
        RESULTS[name] = dict(error=type(exc).__name__, message=str(exc), seconds=time.monotonic() - start)
        return
    finally:
        logging.getLogger('gaternet_zoo').removeHandler(capture)
    with torch.no_grad():
        logits = out.eval()(X)
    RESULTS[name] = dict(logits=logits.tolist(), tag=out.pretrained_cfg.get('tag'), log=capture.lines,
                         seconds=time.monotonic() - start)
'''


def run_client(body: str, args: dict[str, Any], env: dict[str, str], cwd: Path | None = None,
               ) -> dict[str, dict[str, Any]]:
    program = _HARNESS + textwrap.dedent(body) + '\nprint("RESULTS:" + json.dumps(RESULTS))\n'
    proc = subprocess.run([sys.executable, '-c', program, json.dumps(args)], env=env, cwd=cwd, capture_output=True,
                          text=True, timeout=300, check=False)
    lines = [line for line in proc.stdout.splitlines() if line.startswith('RESULTS:')]
    assert proc.returncode == 0 and lines, f'client failed (exit {proc.returncode}):\n{proc.stderr[-4000:]}'
    return json.loads(lines[-1][len('RESULTS:'):])


def local_logits(name: str) -> torch.Tensor:
    model = gz.create_model(f'local-dir:{WEIGHTS / name}').eval()
    with torch.no_grad():
        return model(torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0)))


def assert_model(result: dict[str, Any], name: str) -> None:
    assert 'logits' in result, f'{name}: expected a model, got {result}'
    assert torch.equal(torch.tensor(result['logits']), local_logits(name)), name
    assert result['tag'] == name.partition('.')[2]


def log_of(result: dict[str, Any]) -> str:
    return '\n'.join(result['log'])


@pytest.fixture(scope='module')
def closed_port() -> Iterator[int]:
    """A loopback port bound but not listening: every connection is refused at once."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(('127.0.0.1', 0))
        yield sock.getsockname()[1]


@pytest.fixture(scope='module')
def silent_port() -> Iterator[int]:
    """A loopback port that accepts connections (the kernel completes them) and never answers a request."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(('127.0.0.1', 0))
        sock.listen(64)
        yield sock.getsockname()[1]


def offline_env(hf_home: Path, endpoint: str) -> dict[str, str]:
    env = LocalHub().client_env(hf_home)  # A hub object that never starts: only its client environment.
    env['HF_ENDPOINT'] = endpoint
    return env


def test_the_checkout_ships_every_published_tag_and_its_sha_is_pinned() -> None:
    assert PUBLISHED, 'no published weight folders'
    for name in PUBLISHED:
        arch, _, tag = name.partition('.')
        path = find_shipped_weights(name)
        assert path == WEIGHTS / name / 'model.safetensors'
        assert sha256_file(path) == get_extra_cfg(arch, tag)['sha256']
    assert find_shipped_weights('gaternet_resnet20.no-such-tag') is None


_NO_HUB = '''
import huggingface_hub
import gaternet_zoo as gz
from gaternet_zoo._pretrained import register_weights

A = ARGS
for name in A['published']:
    step(name, lambda: gz.create_model(A['load_as'][name], pretrained=True))
step('torch_hub', lambda: torch.hub.load(A['repo_root'], 'gaternet_resnet20', source='local', pretrained=True))
# Weights that no source has (as for weights too large to ship in the wheel): a clear error, as quickly.
register_weights('gaternet_resnet56.big', hf_hub_id='gaternet-zoo/gaternet_resnet56.big', revision='v9',
                 sha256='0' * 64)
step('not_shipped', lambda: gz.create_model('gaternet_resnet56.big', pretrained=True))
# A Hub that accepts the connection and never answers (read at call time, so it can change here).
huggingface_hub.constants.ENDPOINT = A['silent']
step('silent_hub', lambda: gz.create_model('gaternet_resnet20', pretrained=True))
'''


@pytest.mark.slow  # issue 25: out of `make test-fast` (seconds of subprocesses or full-size models)
def test_pretrained_true_with_no_reachable_hub_loads_the_shipped_copy_within_seconds(
        tmp_path: Path, closed_port: int, silent_port: int) -> None:
    closed, silent = f'http://127.0.0.1:{closed_port}', f'http://127.0.0.1:{silent_port}'
    results = run_client(_NO_HUB, dict(published=PUBLISHED, load_as=LOAD_AS, repo_root=str(REPO_ROOT), silent=silent),
                         offline_env(tmp_path / 'hf-home', closed), cwd=REPO_ROOT)

    for name in PUBLISHED:
        result = results[name]
        assert_model(result, name)
        # One notice per load: why the Hub was passed over and which copy was loaded, its path relative to the cwd.
        (log,) = result['log']
        assert log.startswith(f'WARNING {name} (') and f'the Hub at {closed} is unreachable' in log, log
        assert 'Connection refused' in log
        assert f'the copy shipped with gaternet_zoo (weights/{name}/model.safetensors)' in log
        assert 'sha256 verified' in log
        assert result['seconds'] < FALLBACK_BUDGET_S, result['seconds']
    assert_model(results['torch_hub'], 'gaternet_resnet20.cifar10')
    assert 'the copy shipped with gaternet_zoo' in log_of(results['torch_hub'])

    missing = results['not_shipped']
    assert missing['error'] == 'HubLoadError', missing
    message = missing['message']
    assert message.startswith(f'No weights for gaternet_resnet56.big: the Hub at {closed} is unreachable')
    assert f'{SHIP_LIMIT_BYTES >> 20} MiB' in message and 'is not in the local Hub cache' in message
    assert '`hf download gaternet-zoo/gaternet_resnet56.big --revision v9 --local-dir DIR`' in message
    assert '`accelerate launch recipes/train.py --model gaternet_resnet56`' in message
    assert missing['seconds'] < FALLBACK_BUDGET_S

    silent_result = results['silent_hub']
    assert_model(silent_result, 'gaternet_resnet20.cifar10')
    assert f'the Hub at {silent} is unreachable' in log_of(silent_result)
    assert HUB_PROBE_TIMEOUT - 0.5 < silent_result['seconds'] < FALLBACK_BUDGET_S, silent_result['seconds']


_THROUGH_A_HUB = '''
import os
import gaternet_zoo as gz

for name in ARGS['published']:
    arch = ARGS['load_as'][name]
    os.environ['GATERNET_ZOO_HUB_ORG'] = ARGS['org']
    step(f'hub:{name}', lambda: gz.create_model(arch, pretrained=True))
    step(f'cache:{name}', lambda: gz.create_model(arch, pretrained=True, local_files_only=True))
    os.environ['GATERNET_ZOO_HUB_ORG'] = ARGS['empty_org']  # The Hub answers, but has no such repository.
    step(f'missing:{name}', lambda: gz.create_model(arch, pretrained=True))
'''


@pytest.mark.hub
def test_a_hub_wins_then_its_cache_then_the_shipped_copy(local_hub: LocalHub, tmp_path: Path) -> None:
    for name in PUBLISHED:
        arch, _, tag = name.partition('.')
        local_hub.publish(f'zoo-shipped/{name}', WEIGHTS / name, tag=get_extra_cfg(arch, tag)['revision'])
    env = local_hub.client_env(tmp_path / 'hf-home')
    results = run_client(_THROUGH_A_HUB, dict(published=PUBLISHED, load_as=LOAD_AS, org='zoo-shipped',
                                                 empty_org='zoo-nothing'), env)

    for name in PUBLISHED:
        revision = get_extra_cfg(*name.split('.'))['revision']
        hub, cache, missing = (results[f'{kind}:{name}'] for kind in ('hub', 'cache', 'missing'))
        for result in (hub, cache, missing):
            assert_model(result, name)
        assert f'the Hub ({local_hub.endpoint}, zoo-shipped/{name}@{revision})' in log_of(hub)
        assert 'WARNING' not in log_of(hub)
        assert f'the local Hub cache (zoo-shipped/{name}@{revision})' in log_of(cache)
        (log,) = missing['log']
        assert log.startswith(f'WARNING {name} (zoo-nothing/{name}@{revision}): not loaded from the Hub (Could not '
                              f"find 'model.safetensors' in Hub repository 'zoo-nothing/{name}@{revision}'"), log
        assert 'the copy shipped with gaternet_zoo' in log


@pytest.mark.slow  # issue 25: out of `make test-fast` (seconds of subprocesses or full-size models)
def test_the_wheel_ships_the_small_weights_and_loads_them_with_no_hub(tmp_path: Path, closed_port: int) -> None:
    # Build from a copy of what an sdist holds, so that the build leaves nothing in the checkout.
    source = tmp_path / 'source'
    for name in ('gaternet_zoo', 'weights'):
        shutil.copytree(REPO_ROOT / name, source / name, ignore=shutil.ignore_patterns('__pycache__'))
    for name in ('pyproject.toml', 'setup.py', 'MANIFEST.in', 'README.md'):
        shutil.copy(REPO_ROOT / name, source / name)
    build = subprocess.run(
        [sys.executable, '-m', 'pip', 'wheel', '--no-deps', '--no-build-isolation', '-q', '-w', str(tmp_path / 'dist'),
         str(source)], capture_output=True, text=True, timeout=300, check=False)
    assert build.returncode == 0, build.stderr[-3000:]
    (wheel,) = (tmp_path / 'dist').glob('gaternet_zoo-*.whl')
    site = tmp_path / 'site'
    with zipfile.ZipFile(wheel) as archive:
        shipped = sorted(n for n in archive.namelist() if n.startswith('gaternet_zoo/weights/'))
        archive.extractall(site)
    small = [n for n in PUBLISHED if (WEIGHTS / n / 'model.safetensors').stat().st_size <= SHIP_LIMIT_BYTES]
    assert small, 'no published weights are small enough to ship'
    assert shipped == sorted(f'gaternet_zoo/weights/{n}/{f}' for n in small for f in ('config.json',
                                                                                        'model.safetensors'))
    for name in small:
        assert sha256_file(site / 'gaternet_zoo' / 'weights' / name / 'model.safetensors') == \
            sha256_file(WEIGHTS / name / 'model.safetensors')

    env = offline_env(tmp_path / 'hf-home', f'http://127.0.0.1:{closed_port}')
    env['PYTHONPATH'] = str(site)  # The installed wheel, not this checkout (the client runs outside it too).
    body = '''
    import gaternet_zoo as gz
    assert gz.__file__.startswith(ARGS['site']), gz.__file__
    for name in ARGS['small']:
        step(name, lambda: gz.create_model(ARGS['load_as'][name], pretrained=True))
    '''
    results = run_client(body, dict(small=small, load_as=LOAD_AS, site=str(site)), env, cwd=tmp_path)
    for name in small:
        assert_model(results[name], name)
        # Paths are shown relative to the working directory (the client runs in tmp_path).
        shown = Path('site') / 'gaternet_zoo' / 'weights' / name / WEIGHTS_FILE
        assert f'the copy shipped with gaternet_zoo ({shown})' in log_of(results[name])
