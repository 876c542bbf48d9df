"""Tests of ``gaternet_zoo.training`` (the recipe's library half) and ``gaternet_zoo.data.labels``: fast, no runs."""

from __future__ import annotations

import sys
from pathlib import Path

import datasets
import pytest
import torch
from safetensors.torch import load_file, save_file

import gaternet_zoo
from gaternet_zoo import training
from gaternet_zoo.data import DataSourceError, ImageDataSource, resolve_num_classes
from gaternet_zoo.training import GateWarmup, RecipeError
from recipes import train

TRAIN = Path(train.__file__)


# -------------------------------------------------------------------------------------------- non-finite settings


@pytest.mark.parametrize("flag,value", [("--lr", "nan"), ("--lr", "inf"), ("--momentum", "nan"),
                                        ("--weight-decay", "inf"), ("--gate-l1", "nan"), ("--clip-grad", "inf"),
                                        ("--gater-lr-scale", "nan"), ("--gate-init-bias", "-inf")])
def test_non_finite_settings_refused_before_anything_starts(flag: str, value: str) -> None:
    key = flag[2:].replace("-", "_")
    with pytest.raises(RecipeError, match=rf"{key} must be a finite number, got {value}; set it"):
        train.parse_args([f"{flag}={value}"])


def test_non_finite_setting_in_a_config_file(tmp_path: Path) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text("lr: .nan\n")  # YAML's NaN
    with pytest.raises(RecipeError, match="lr must be a finite number"):
        train.parse_args(["--config", str(cfg)])


def test_non_finite_model_args_refused(tmp_path: Path) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text("model_args:\n  gate_noise_std: .nan\n")
    with pytest.raises(RecipeError, match="model_args.gate_noise_std must be a finite number"):
        train.parse_args(["--config", str(cfg)])


def test_divergence_message_names_step_epoch_and_cause() -> None:
    msg = training.divergence_message("the loss is not finite", step=7, epoch=2, num_epochs=5, batch=3, lr=0.4,
                                      inputs_finite=True, last_checkpoint="runs/x/checkpoints/checkpoint_1")
    assert "optimizer step 7 (epoch 2/5, batch 3)" in msg and "learning rate (now 0.4)" in msg
    assert "runs/x/checkpoints/checkpoint_1" in msg and "No final/ model was written" in msg
    msg = training.divergence_message("the loss is not finite", step=1, epoch=1, num_epochs=1, batch=0, lr=0.1,
                                      inputs_finite=False, last_checkpoint=None)
    assert "input images hold NaN" in msg and "No checkpoint had been saved yet" in msg


def test_all_finite_and_grad_norm() -> None:
    net = torch.nn.Linear(3, 2)
    assert training.all_finite(net)
    net(torch.ones(1, 3)).sum().backward()
    assert torch.isfinite(training.grad_norm(net.parameters()))
    net.weight.grad[0, 0] = float("nan")
    assert not torch.isfinite(training.grad_norm(net.parameters()))
    with torch.no_grad():
        net.bias[0] = float("inf")
    assert not training.all_finite(net)


# ------------------------------------------------------------------------------------------------------ precision


def test_mixed_precision_auto(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("gaternet_zoo.training._checks.cpu_supports_bf16", lambda: True)
    assert training.resolve_mixed_precision("auto", cpu=True)[0] == "bf16"
    monkeypatch.setattr("gaternet_zoo.training._checks.cpu_supports_bf16", lambda: False)
    mode, note = training.resolve_mixed_precision("auto", cpu=True)
    assert mode == "no" and "float32" in note and "no native bf16" in note
    assert training.resolve_mixed_precision("fp16", cpu=True) == ("fp16", None)
    assert training.resolve_mixed_precision(None, cpu=True) == (None, None)  # accelerate launch decides


def test_cpu_bf16_detection_reads_torch_capabilities() -> None:
    caps = torch.cpu.get_capabilities() if hasattr(torch.cpu, "get_capabilities") else None
    if caps is None:
        pytest.skip("this torch has no torch.cpu.get_capabilities")
    assert training.cpu_supports_bf16() == bool(caps.get("avx512_bf16") or caps.get("amx_bf16")
                                                 or caps.get("sve_bf16") or caps.get("bf16"))


def test_cifar_configs_default_to_auto_precision() -> None:
    configs = sorted((TRAIN.parent / "configs").glob("cifar*.yaml"))
    assert configs
    for path in configs:
        config, _ = train.parse_args(["--config", str(path)])
        assert config.mixed_precision == "auto", path.name
        assert config.channels_last, path.name


# ------------------------------------------------------------------------------------------------- gate options


def _open_fraction(model: torch.nn.Module) -> float:
    torch.manual_seed(0)
    with torch.no_grad():
        return float(model.eval().forward_gates(torch.randn(16, 3, 32, 32)).mean())


@pytest.mark.slow  # issue 25: out of `make test-fast` (seconds of subprocesses or full-size models)
def test_gate_init_bias_opens_the_gates() -> None:
    torch.manual_seed(0)
    model = gaternet_zoo.create_model("gaternet_resnet20")
    default = _open_fraction(model)
    training.set_gate_init_bias(model, 4.0)
    assert torch.all(model.gater.fc2.bias == 4.0)
    assert _open_fraction(model) > 0.99 > default
    training.set_gate_init_bias(model, -4.0)
    assert _open_fraction(model) < 0.01
    with pytest.raises(RecipeError, match="gate_init_bias applies to GaterNets only"):
        training.set_gate_init_bias(gaternet_zoo.create_model("cifar_resnet20"), 3.0)


def test_gate_warmup_schedule() -> None:
    model = gaternet_zoo.create_model("gaternet_resnet20", gate_discrete_prob=0.5, gate_noise_std=1.0)
    assert GateWarmup.for_model(model) is None  # The paper: no ramp.
    warmup = GateWarmup.for_model(model, discrete_prob_start=0.0, discrete_prob_steps=10, noise_std_start=0.2,
                                  noise_steps=4)
    assert [warmup.values(s)["gate_discrete_prob"] for s in (0, 5, 10, 50)] == pytest.approx([0.0, 0.25, 0.5, 0.5])
    assert [warmup.values(s)["gate_noise_std"] for s in (0, 2, 4, 9)] == pytest.approx([0.2, 0.6, 1.0, 1.0])
    warmup.apply(model, 5)
    binarizer = model.gater.binarizer
    assert binarizer.discrete_prob == pytest.approx(0.25) and binarizer.noise_std == pytest.approx(1.0)
    with pytest.raises(RecipeError, match="applies to GaterNets only"):
        GateWarmup.for_model(gaternet_zoo.create_model("cifar_resnet20"), noise_std_start=0.0, noise_steps=3)


def test_gater_lr_scale_and_weight_decay_groups() -> None:
    config, _ = train.parse_args(["--lr", "0.2", "--warmup-epochs", "0", "--gater-lr-scale", "0.1",
                                  "--gater-weight-decay", "1e-3", "--weight-decay", "5e-4"])
    model = gaternet_zoo.create_model("gaternet_resnet20")
    optimizer, scheduler = train.build_optimizer(config, model, 10)
    scheduler.step_update(0)
    gater = [g for g in optimizer.param_groups if g.get("name") == "gater"]
    rest = [g for g in optimizer.param_groups if g.get("name") != "gater"]
    gater_params = {id(p) for p in model.gater.parameters()}
    assert {id(p) for g in gater for p in g["params"]} == gater_params
    assert not gater_params & {id(p) for g in rest for p in g["params"]}
    assert [g["lr"] for g in gater] == pytest.approx([0.02, 0.02]) and rest[0]["lr"] == pytest.approx(0.2)
    assert sorted(g["weight_decay"] for g in gater) == [0.0, 1e-3]
    assert sorted(g["weight_decay"] for g in rest) == [0.0, 5e-4]
    # The paper's setting: two groups, the gater inside them (the layout of earlier checkpoints).
    config, _ = train.parse_args([])
    assert len(train.build_optimizer(config, model, 10)[0].param_groups) == 2
    with pytest.raises(RecipeError, match="GaterNets only"):
        training.gater_param_groups(gaternet_zoo.create_model("cifar_resnet20"), 5e-4, gater_lr_scale=0.5)


@pytest.mark.slow  # issue 25: out of `make test-fast` (seconds of subprocesses or full-size models)
def test_return_gates_goes_through_forward() -> None:
    model = gaternet_zoo.create_model("gaternet_resnet20").eval()
    x = torch.randn(2, 3, 32, 32)
    logits, gates = model(x, return_gates=True)
    want_logits, want_gates = model.forward_with_gates(x)
    assert torch.equal(logits, want_logits) and torch.equal(gates, want_gates)
    # With gates given, those are the gates returned (and used).
    ones = torch.ones_like(gates)
    logits, returned = model(x, gates=ones, return_gates=True)
    assert torch.equal(returned, ones) and torch.equal(logits, model(x, gates=ones))


# ---------------------------------------------------------------------------------------------------- class count


def _source(labels: list[int], class_label: bool, eval_labels: list[int] | None = None) -> ImageDataSource:
    feature = datasets.ClassLabel(num_classes=3) if class_label else datasets.Value("int64")

    def ds(values: list[int]) -> datasets.Dataset:
        return datasets.Dataset.from_dict({"label": values}, features=datasets.Features({"label": feature}))

    return ImageDataSource(train=ds(labels), eval=ds(eval_labels or [0]), image_column="img", label_column="label",
                           num_classes=max(labels) + 1, class_names=(), description="the test data")


def test_class_count_never_inferred_from_a_stray_label() -> None:
    stray = _source([0, 1, 2, 99, 1], class_label=False)
    with pytest.raises(DataSourceError, match=r"plain integer labels .* largest label is 99\); set num_classes"):
        resolve_num_classes(stray, None)
    with pytest.raises(DataSourceError, match=r"label outside num_classes=3 in the train split of the test data: "
                                              r"row 3 has label 99 \(1 such row\(s\): rows 3\)"):
        resolve_num_classes(stray, 3)
    assert resolve_num_classes(_source([0, 1, 2], class_label=False), 3) == 3
    assert resolve_num_classes(_source([0, 1, 2], class_label=True), None) == 3  # ClassLabel metadata
    with pytest.raises(DataSourceError, match="num_classes is 2 but the test data has 3 classes"):
        resolve_num_classes(_source([0, 1], class_label=True), 2)
    many = _source([0] + [7] * 8, class_label=False, eval_labels=[5])
    with pytest.raises(DataSourceError, match=r"row 1 has label 7 \(8 such row\(s\): rows 1, 2, 3, 4, 5, 6, 7, 8\)"):
        resolve_num_classes(many, 4)
    with pytest.raises(DataSourceError, match=r"in the eval split .* row 0 has label 5"):
        resolve_num_classes(_source([0], class_label=False, eval_labels=[5]), 4)


# -------------------------------------------------------------------------------------------------- checkpoints


def _checkpoint(folder: Path, tensors: dict[str, torch.Tensor]) -> Path:
    folder.mkdir(parents=True)
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(folder / "model.safetensors"))
    return folder


def test_resume_from_another_models_checkpoint_is_one_sentence(tmp_path: Path) -> None:
    other = gaternet_zoo.create_model("cifar_resnet20").state_dict()
    folder = _checkpoint(tmp_path / "run" / "checkpoints" / "checkpoint_0", other)
    (tmp_path / "run" / "config.yaml").write_text("model: cifar_resnet20\n")
    model = gaternet_zoo.create_model("gaternet_resnet20")
    with pytest.raises(RecipeError) as err:
        training.check_checkpoint_matches(folder, model, "gaternet_resnet20")
    message = str(err.value)
    assert "(a 'cifar_resnet20' run) holds weights of another model than 'gaternet_resnet20'" in message
    assert "\n" not in message and len(message) < 500, message
    training.check_checkpoint_matches(folder, gaternet_zoo.create_model("cifar_resnet20"), "cifar_resnet20")


def test_checkpoint_of_the_older_recipe_is_migrated(tmp_path: Path) -> None:
    """Checkpoints written before TrainingModule was removed hold the weights under ``net.``: they still resume."""
    model = gaternet_zoo.create_model("cifar_resnet20")
    state = model.state_dict()
    folder = _checkpoint(tmp_path / "checkpoint_3", {"net." + k: v for k, v in state.items()})
    training.check_checkpoint_matches(folder, model, "cifar_resnet20")
    migrated = load_file(str(folder / "model.safetensors"))
    assert migrated.keys() == state.keys() and all(torch.equal(migrated[k], state[k]) for k in state)


def test_epoch_progress_only_on_a_terminal(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    class Main:
        is_main_process = True

    monkeypatch.setattr(sys.stderr, "isatty", lambda: False)
    quiet = training.EpochProgress(Main(), total=4, initial=1, desc="epoch 1/2")
    quiet.step(torch.tensor(1.0))
    quiet.close()
    assert quiet.bar is None and capsys.readouterr().err == ""
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    shown = training.EpochProgress(Main(), total=4, initial=1, desc="epoch 1/2")
    shown.step(torch.tensor(2.5))
    assert shown.bar.n == 2 and shown.bar.postfix == "loss=2.500"
    shown.close()


# ------------------------------------------------------------------------------------------------ gate objective


@pytest.mark.slow  # issue 25: out of `make test-fast` (seconds of subprocesses or full-size models)
def test_gate_objective_combines_l1_and_budget() -> None:
    torch.manual_seed(0)
    net = gaternet_zoo.create_model("gaternet_resnet20")
    gates = (torch.rand(3, net.gate_size) > 0.3).float()
    none = training.GateObjective(net)
    assert not none.active
    l1 = training.GateObjective(net, l1=0.5)
    assert l1(gates).item() == pytest.approx(gaternet_zoo.gate_l1_loss(gates, 0.5).item())
    rate = training.GateObjective(net, budget="rate", target=0.4, weight=2.0)
    assert rate(gates).item() == pytest.approx(
        gaternet_zoo.gate_target_rate_loss(gates, 0.4, net.gate_sites, 2.0).item())
    macs = training.GateObjective(net, l1=0.1, budget="macs", target=0.5, weight=5.0)
    expected = gaternet_zoo.gate_l1_loss(gates, 0.1) + gaternet_zoo.MacBudgetLoss(net, 0.5, 5.0)(gates)
    assert macs(gates).item() == pytest.approx(expected.item())
    # The logged MAC share: every block fully open uses the dense backbone; half open saves half the gated convs'
    # MACs; a block whose gates were all closed for some samples saves its whole branch for those.
    assert macs.macs_used_fraction({s.name: 1.0 for s in net.gate_sites}) == pytest.approx(1.0)
    counts = gaternet_zoo.utils.gaternet_macs(net)
    half = macs.macs_used_fraction({s.name: 0.5 for s in net.gate_sites})
    assert half == pytest.approx(1.0 - 0.5 * sum(counts["gated_conv_macs"].values()) / counts["backbone"])
    first = net.gate_sites[0].name
    skipped = macs.macs_used_fraction({s.name: 0.5 for s in net.gate_sites}, {first: 0.25})
    assert skipped == pytest.approx(half - 0.25 * counts["skippable_branch_macs"][first] / counts["backbone"])


def test_gate_objective_ramps_its_weight_in_over_the_warm_up() -> None:
    net = gaternet_zoo.create_model("gaternet_resnet20")
    gates = (torch.rand(4, net.gate_size, generator=torch.Generator().manual_seed(0)) > 0.4).float()
    full = training.GateObjective(net, l1=0.3, budget="rate", target=0.2, weight=2.0)(gates).item()
    assert full > 0
    ramped = training.GateObjective(net, l1=0.3, budget="rate", target=0.2, weight=2.0, warmup_steps=10)
    assert [ramped.scale(s) for s in (0, 5, 10, 11)] == [0.0, 0.5, 1.0, 1.0]
    assert ramped(gates, 0).item() == 0.0
    assert ramped(gates, 4).item() == pytest.approx(0.4 * full)
    assert ramped(gates, 10).item() == pytest.approx(full)
    assert ramped(gates).item() == pytest.approx(full)  # no step: full weight
    # Without a warm-up (the paper) every step has the full term.
    assert training.GateObjective(net, l1=0.3, budget="rate", target=0.2, weight=2.0)(gates, 0).item() == \
        pytest.approx(full)
    with pytest.raises(RecipeError, match="warm-up must be >= 0"):
        training.GateObjective(net, l1=0.3, warmup_steps=-1)


def test_gate_objective_refuses_plain_models_and_unknown_budgets() -> None:
    with pytest.raises(RecipeError, match="GaterNets only"):
        training.GateObjective(gaternet_zoo.create_model("cifar_resnet20"), budget="macs")
    with pytest.raises(RecipeError, match="gate_budget must be one of"):
        training.GateObjective(gaternet_zoo.create_model("gaternet_resnet20"), budget="flops")
