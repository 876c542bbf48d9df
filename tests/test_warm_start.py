"""Warm starts (``init_from``, ``init_gater_from``): what is loaded where, the errors, and the recipe's record.

Sources are tiny saved models in ``tmp_path`` (``save_pretrained`` folders and a run folder's ``final/``), so no
Hub and no published weights are needed; the published tags go through the same ``create_model`` path.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

import gaternet_zoo
import gaternet_zoo.training as zt
from gaternet_zoo.hub import sha256_file

REPO = Path(__file__).resolve().parents[1]
TRAIN = REPO / "recipes" / "train.py"


def _saved(tmp_path: Path, name: str, **kwargs) -> Path:
    """A freshly initialised model saved with ``save_pretrained``: a stand-in for trained weights."""
    torch.manual_seed(hash(name) % 1000)
    model = gaternet_zoo.create_model(name, **kwargs)
    with torch.no_grad():  # Non-default norm statistics, so that a missed buffer would show.
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.1, 0.1)
                module.running_var.uniform_(0.5, 1.5)
    folder = tmp_path / name
    model.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def plain20(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _saved(tmp_path_factory.mktemp("sources"), "cifar_resnet20")


def _same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_plain_source_fills_backbone_and_gater(plain20: Path) -> None:
    source = gaternet_zoo.create_model(f"local-dir:{plain20}").eval()
    net = gaternet_zoo.create_model("gaternet_resnet20")
    fc1_before = net.gater.fc1.weight.clone()
    backbone = zt.warm_start(net, str(plain20))
    gater = zt.warm_start(net, f"local-dir:{plain20}", part="gater")
    assert (backbone.target, gater.target) == ("backbone", "gater.encoder")
    assert backbone.resolved == f"local-dir:{plain20}" and backbone.kept_fresh == ()
    assert backbone.sha256 == sha256_file(plain20 / "model.safetensors")
    assert _same(net.backbone.state_dict(), source.state_dict())
    encoder_source = {k: v for k, v in source.state_dict().items() if not k.startswith("fc.")}
    assert _same(net.gater.encoder.state_dict(), encoder_source)
    assert torch.equal(net.gater.fc1.weight, fc1_before)  # the gater's head is not part of the extractor


def test_open_gates_make_the_warm_started_gaternet_the_plain_model(plain20: Path) -> None:
    source = gaternet_zoo.create_model(f"local-dir:{plain20}").eval()
    net = gaternet_zoo.create_model("gaternet_resnet20")
    zt.warm_start(net, str(plain20))
    zt.set_gate_init_bias(net, 100.0)  # every gate logit far above the threshold: every gate open
    net.eval()
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        logits, gates = net(x, return_gates=True)
        expected = source(x)
    assert bool((gates == 1).all())
    torch.testing.assert_close(logits, expected, rtol=0, atol=1e-5)


def test_run_folder_resolves_to_its_final_model(plain20: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    (run / "final").mkdir(parents=True)
    for item in plain20.iterdir():
        (run / "final" / item.name).write_bytes(item.read_bytes())
    assert zt.resolve_init_source(str(run)) == f"local-dir:{run / 'final'}"
    assert zt.resolve_init_source("cifar_resnet20.cifar10") == "cifar_resnet20.cifar10"
    plain = gaternet_zoo.create_model("cifar_resnet20")
    assert zt.warm_start(plain, str(run)).target == "model"
    assert _same(plain.state_dict(), gaternet_zoo.create_model(f"local-dir:{plain20}").state_dict())


def test_other_class_count_keeps_a_fresh_classifier(plain20: Path) -> None:
    net = gaternet_zoo.create_model("gaternet_resnet20", num_classes=100)
    fresh = net.backbone.fc.weight.clone()
    done = zt.warm_start(net, str(plain20))
    assert done.kept_fresh == ("fc.weight", "fc.bias")
    assert "left fresh: fc.weight, fc.bias" in done.describe()
    assert torch.equal(net.backbone.fc.weight, fresh)


def test_gaternet_source_fills_a_gaternet_whole(tmp_path: Path) -> None:
    folder = _saved(tmp_path, "gaternet_resnet20")
    net = gaternet_zoo.create_model("gaternet_resnet20")
    assert zt.warm_start(net, str(folder)).target == "model"
    assert _same(net.state_dict(), gaternet_zoo.create_model(f"local-dir:{folder}").state_dict())


@pytest.mark.parametrize("target, source, part, message", [
    ("gaternet_resnet56", "cifar_resnet20", "model",
     r"do not fit the backbone: \d+ missing keys: stage1\.block4.*same architecture.*nothing was loaded"),
    ("gaternet_resnet56", "cifar_resnet56", "gater", r"do not fit the gater feature extractor: .*unexpected keys"),
    ("cifar_resnet20", "gaternet_resnet20", "model", r"is a GaterNet and this model is a plain backbone"),
    ("gaternet_resnet20", "gaternet_resnet20", "gater", r"init_gater_from needs a plain model"),
    ("cifar_resnet20", "cifar_resnet20", "gater", r"init_gater_from applies to GaterNets only"),
])
def test_mismatched_sources_are_refused(tmp_path: Path, target: str, source: str, part: str, message: str) -> None:
    net = gaternet_zoo.create_model(target)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    with pytest.raises(zt.RecipeError, match=message):
        zt.warm_start(net, str(_saved(tmp_path, source)), part=part)
    assert _same(net.state_dict(), before)  # nothing half-loaded


def test_unknown_and_weightless_sources_say_what_to_do(tmp_path: Path) -> None:
    net = gaternet_zoo.create_model("gaternet_resnet20")
    with pytest.raises(zt.RecipeError, match=r"cannot warm-start from 'cifar_resnet21': .*Did you mean"):
        zt.warm_start(net, "cifar_resnet21")
    with pytest.raises(zt.RecipeError, match=r"cifar_resnet110 has no pretrained weights"):
        zt.warm_start(net, "cifar_resnet110")
    (tmp_path / "empty").mkdir()
    with pytest.raises(zt.RecipeError, match=r"holds no saved model .* and no run's final/"):
        zt.warm_start(net, str(tmp_path / "empty"))


def test_source_with_other_preprocessing_is_refused(tmp_path: Path) -> None:
    model = gaternet_zoo.create_model("cifar_resnet20")
    model.pretrained_cfg = {**model.pretrained_cfg, "mean": (0.5, 0.5, 0.5), "std": (0.5, 0.5, 0.5)}
    model.save_pretrained(tmp_path / "other_norm")
    with pytest.raises(zt.RecipeError, match=r"trained with input mean \(0\.5, 0\.5, 0\.5\).*same preprocessing"):
        zt.warm_start(gaternet_zoo.create_model("gaternet_resnet20"), str(tmp_path / "other_norm"))


@pytest.mark.slow
def test_recipe_records_the_warm_start_and_keeps_it_on_resume(plain20: Path, tmp_path: Path) -> None:
    out = tmp_path / "warm"
    common = [sys.executable, str(TRAIN), "--cpu", "--epochs", "1", "--batch-size", "32", "--max-train-samples",
              "64", "--max-eval-samples", "32", "--output-dir", str(out)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}

    def run(*args: str) -> subprocess.CompletedProcess:
        proc = subprocess.run([*common, *args], capture_output=True, text=True, cwd=REPO, env=env, timeout=600)
        assert proc.returncode == 0, proc.stderr[-3000:]
        return proc

    first = run("--model", "gaternet_resnet20", "--init-from", str(plain20), "--init-gater-from", str(plain20),
                "--gate-init-bias", "3")
    assert "warm start: backbone initialised from local-dir:" in first.stdout
    assert "warm start: gater.encoder initialised from local-dir:" in first.stdout
    recorded = yaml.safe_load((out / "config.yaml").read_text())
    assert recorded["init_from"] == str(plain20)
    assert [w["target"] for w in recorded["runtime"]["warm_starts"]] == ["backbone", "gater.encoder"]
    card = (out / "final" / "README.md").read_text()
    assert "warm_start" in card and "backbone initialised from local-dir:" in card
    # Killed before final/ was written, then resumed: the sources are not loaded again and their record stays.
    shutil.rmtree(out / "final")
    second = run("--resume", "latest")
    assert "warm start:" not in second.stdout
    again = yaml.safe_load((out / "config.yaml").read_text())
    assert again["runtime"]["warm_starts"] == recorded["runtime"]["warm_starts"]
    assert "backbone initialised from local-dir:" in (out / "final" / "README.md").read_text()


@pytest.mark.parametrize("path", sorted((REPO / "recipes" / "configs").glob("*_warm*.yaml")), ids=lambda p: p.name)
def test_shipped_warm_start_configs_name_published_weights(path: Path) -> None:
    config = yaml.safe_load(path.read_text())
    published = set(gaternet_zoo.list_models(pretrained=True, include_backbones=True))
    sources = [config[k] for k in ("init_from", "init_gater_from") if k in config]
    assert sources and all(source in published for source in sources), (sources, path.name)
    if config["model"].startswith("gaternet_"):  # the GaterNet and its control start from the same backbone
        control = yaml.safe_load(path.with_name(path.name.replace("gaternet_", "").replace("_warm", "_warm_control"))
                                 .read_text())
        assert control["init_from"] == config["init_from"]
        assert {k: v for k, v in control.items() if k not in ("model", "init_from")} == {
            k: v for k, v in config.items() if k not in ("model", "init_from", "init_gater_from", "gate_init_bias",
                                                         "gate_l1")}
