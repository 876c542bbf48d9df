"""The published weight folders under weights/: strict loading, sha256, agreement with their cards and the registry.

CI does not retrain. It checks that each folder in ``weights/`` is exactly what the registry pins (sha256), loads
strictly, that its card quotes the figures in its config, and, served through a real Hub server, that
``create_model(name, pretrained=True)`` reproduces the recorded accuracy on the built-in subset.
"""
from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

import gaternet_zoo as gz
from gaternet_zoo._hub import sha256_file
from gaternet_zoo._pretrained import get_extra_cfg

REPO = Path(__file__).resolve().parents[1]
WEIGHTS = REPO / 'weights'
FOLDERS = sorted(p for p in WEIGHTS.iterdir() if (p / 'config.json').is_file()) if WEIGHTS.is_dir() else []
REGISTERED = gz.list_pretrained()


def test_every_registered_tag_has_its_folder_and_every_folder_is_registered() -> None:
    assert sorted(p.name for p in FOLDERS) == sorted(REGISTERED)


@pytest.mark.parametrize('folder', FOLDERS, ids=lambda p: p.name)
def test_folder_matches_registry_and_card(folder: Path) -> None:
    config = json.loads((folder / 'config.json').read_text())
    cfg = config['pretrained_cfg']
    sha = sha256_file(folder / 'model.safetensors')
    assert cfg['sha256'] == sha
    arch, _, tag = folder.name.partition('.')
    assert config['architecture'] == arch and cfg['tag'] == tag
    registered = get_extra_cfg(arch, tag)
    assert registered['sha256'] == sha, 'the registry pins other weights than the folder holds'
    assert registered.get('revision'), 'registry tags must pin a revision'
    timm_cfg = gz.get_pretrained_cfg(folder.name)
    assert timm_cfg.hf_hub_id == f'gaternet-zoo/{folder.name}'

    card = (folder / 'README.md').read_text()
    assert sha in card
    metrics = cfg['metrics']
    row = re.search(r'\| top-1 on [^|]+\(%\) \| ([0-9.]+) \|', card)
    assert row is not None and float(row.group(1)) == pytest.approx(metrics['top1'], abs=0.005)
    assert f'{metrics["latency_ms"]:.2f} at batch {metrics["latency_batch_size"]}' in card
    if 'gate_stats' in cfg:
        assert f'{cfg["gate_stats"]["mean_open_fraction"]:.4f}' in card
    command = cfg['recipe']['command']
    assert command and 'recipes/train.py' in command and command in card
    eval_report = json.loads((folder / 'eval_test.json').read_text())
    assert eval_report['top1'] == metrics['top1'] and eval_report['num_samples'] == 10000

    model = gz.create_model(f'local-dir:{folder}')  # strict, sha256-verified
    assert model.pretrained_cfg['sha256'] == sha


@pytest.mark.hub
@pytest.mark.parametrize('folder', FOLDERS, ids=lambda p: p.name)
def test_pretrained_true_through_a_hub_reproduces_the_recorded_subset_accuracy(folder: Path, local_hub,
                                                                                tmp_path: Path) -> None:
    arch, _, tag = folder.name.partition('.')
    revision = get_extra_cfg(arch, tag)['revision']
    local_hub.publish(f'zoo-weights/{folder.name}', folder, tag=revision)
    expected = json.loads((folder / 'config.json').read_text())['pretrained_cfg']['metrics']['top1_builtin_subset']
    script = (
        'import json, gaternet_zoo as gz\n'
        'from gaternet_zoo.evaluation import evaluate_model\n'
        f'model = gz.create_model({arch!r}, pretrained=True)\n'
        'report = evaluate_model(model, "builtin:cifar10-subset")[0]\n'
        'print(json.dumps(dict(top1=report["top1"], tag=model.pretrained_cfg["tag"])))\n')
    env = local_hub.client_env(tmp_path / 'hf-home')
    env['GATERNET_ZOO_HUB_ORG'] = 'zoo-weights'
    proc = subprocess.run([sys.executable, '-c', script], env=env, capture_output=True, text=True, timeout=600,
                          check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result['tag'] == tag
    assert result['top1'] == pytest.approx(expected, abs=1e-6)
