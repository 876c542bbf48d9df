"""Train a gaternet_zoo model (a GaterNet or a plain backbone) with Hugging Face Accelerate.

The shape is Accelerate's ``examples/complete_cv_example.py``: ``training_function(config, args)`` and ``main()``.
The pieces are the libraries': timm's param groups, optimizer factory, per-update scheduler and ``distribute_bn``;
Accelerate's seedable sampler, ``accumulate``, ``skip_first_batches`` and ``save_state``; run folders, divergence
checks and the GaterNet training options of ``gaternet_zoo.training``.

Usage::

    accelerate launch recipes/train.py                                   # recipes/configs/default.yaml
    accelerate launch recipes/train.py --config recipes/configs/cifar10_gaternet_resnet20.yaml --lr 0.05
    accelerate launch --multi_gpu --num_processes 2 recipes/train.py --cpu   # two CPU processes (gloo)
    python recipes/train.py --output-dir runs/x --resume latest          # continue a killed run exactly

Configuration is layered: built-in defaults < ``recipes/configs/default.yaml`` (or ``--config FILE``; when
resuming, the run's own ``config.yaml``) < command-line flags. The resolved configuration is written to
``<output-dir>/config.yaml``.

Reproducibility contract: data order is a permutation drawn from ``seed + epoch`` (Accelerate's seedable sampler),
augmentation from ``(seed, epoch, batch index)``, the LR and gate warm-up schedules are functions of the optimizer
step, and ``save_state`` stores model, optimizer, EMA, gradient-accumulation counter and RNG states. A run killed at
any moment (even with SIGKILL) and resumed with ``--resume latest`` ends with bit-identical weights to an
uninterrupted run on the same hardware, process count, thread count and software. ``--batch-size`` is the global
batch of one micro-step, split across processes.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import accelerate
import datasets
import torch
import yaml
from accelerate import Accelerator, PartialState
from accelerate.utils import DataLoaderConfiguration, ProjectConfiguration, set_seed
from timm.optim import create_optimizer_v2
from timm.scheduler import create_scheduler_v2
from timm.utils import ModelEmaV3, distribute_bn

import gaternet_zoo
from gaternet_zoo import gate_l1_loss
from gaternet_zoo.data import (
    DataSourceError,
    augmentation_generator,
    build_pipeline,
    load_image_dataset,
    resolve_num_classes,
)
from gaternet_zoo.evaluation import has_gates
from gaternet_zoo.training import (
    CHECKPOINT_STATE,
    GateWarmup,
    RecipeError,
    TrainingDivergedError,
    all_finite,
    append_metrics,
    check_checkpoint_matches,
    check_finite_settings,
    check_world_size,
    checkpoint_number,
    clear_run_artifacts,
    divergence_message,
    evaluation_metrics,
    gater_param_groups,
    grad_norm,
    jsonable,
    list_checkpoints,
    prepare_run_folder,
    quiet_checkpoint_rotation,
    read_config_file,
    resolve_mixed_precision,
    resolve_run_dir,
    set_gate_init_bias,
    truncate_metrics,
    write_json_atomic,
)

RECIPES_DIR = Path(__file__).resolve().parent
DEFAULT_CONFIG = RECIPES_DIR / "configs" / "default.yaml"
# Flags that describe one invocation, not the experiment: they never come from, nor go to, a config file.
CLI_ONLY_KEYS = frozenset({"config", "resume", "overwrite"})
# Keys whose change on resume breaks the bit-identical continuation (warned about, not refused).
_SCHEDULE_KEYS = ("model", "data", "epochs", "batch_size", "lr", "seed", "sched", "warmup_epochs", "grad_accum_steps",
                  "max_train_samples", "val_split", "weight_decay", "momentum", "gate_l1", "label_smoothing",
                  "gate_init_bias", "gate_discrete_prob_start", "gate_discrete_prob_warmup_epochs",
                  "gate_noise_std_start", "gate_noise_warmup_epochs", "gater_lr_scale", "gater_weight_decay")
_FLOAT_KEYS = ("lr", "momentum", "weight_decay", "warmup_epochs", "warmup_factor", "min_lr", "decay_epochs",
               "decay_rate", "label_smoothing", "gate_l1", "clip_grad", "model_ema_decay", "gate_init_bias",
               "gate_discrete_prob_start", "gate_discrete_prob_warmup_epochs", "gate_noise_std_start",
               "gate_noise_warmup_epochs", "gater_lr_scale", "gater_weight_decay")
__all__ = ["CHECKPOINT_STATE", "RecipeError", "build_parser", "clear_run_artifacts", "list_checkpoints", "main",
           "parse_args", "training_function"]


def build_parser() -> argparse.ArgumentParser:
    """Return the argument parser; every option's ``dest`` is also a valid config-file key (except CLI-only ones)."""
    p = argparse.ArgumentParser(description="Train a gaternet_zoo model with Accelerate.")
    p.add_argument("--config", default=None, help="YAML config file (default: recipes/configs/default.yaml)")
    g = p.add_argument_group("model and data")
    g.add_argument("--model", default="gaternet_resnet20", help="zoo model name (create_model)")
    g.add_argument("--data", default="builtin:cifar10-subset", help="data source (load_image_dataset)")
    g.add_argument("--num-classes", type=int, default=None,
                   help="classifier size (default: the data's ClassLabel metadata; required without it)")
    g.add_argument("--image-column", default=None, help="image column (default: auto)")
    g.add_argument("--label-column", default=None, help="label column (default: auto)")
    g.add_argument("--train-split", default="train", help="training split")
    g.add_argument("--eval-split", default="test", help="evaluation (test) split")
    g.add_argument("--val-split", type=int, default=None, metavar="N",
                   help="hold out the LAST N training images as validation, evaluated every epoch instead of the "
                        "eval split (default: none, the eval split is evaluated every epoch)")
    g.add_argument("--test-at-end", action=argparse.BooleanOptionalAction, default=False,
                   help="with --val-split: evaluate the final model on the eval split once, at the end")
    g.add_argument("--max-train-samples", type=int, default=None, help="use the first N training rows")
    g.add_argument("--max-eval-samples", type=int, default=None, help="use the first N evaluation rows")
    g.add_argument("--num-workers", type=int, default=None, help="DataLoader workers (default: the pipeline's)")
    g = p.add_argument_group("optimisation")
    g.add_argument("--epochs", type=int, default=15, help="training epochs")
    g.add_argument("--batch-size", type=int, default=128, help="global batch per micro-step, split over processes")
    g.add_argument("--eval-batch-size", type=int, default=None, help="evaluation batch (default: --batch-size)")
    g.add_argument("--lr", type=float, default=0.1, help="peak learning rate")
    g.add_argument("--momentum", type=float, default=0.9, help="SGD momentum")
    g.add_argument("--nesterov", action=argparse.BooleanOptionalAction, default=True, help="Nesterov momentum")
    g.add_argument("--weight-decay", type=float, default=5e-4, help="applied to weights, not to norms or biases")
    g.add_argument("--sched", choices=("cosine", "step"), default="cosine", help="LR schedule after the warm-up")
    g.add_argument("--warmup-epochs", type=float, default=1.0, help="linear warm-up length (may be fractional)")
    g.add_argument("--warmup-factor", type=float, default=0.1, help="LR factor at the first warm-up step")
    g.add_argument("--min-lr", type=float, default=0.0, help="cosine floor")
    g.add_argument("--decay-epochs", type=float, default=30.0, help="step schedule: epochs between decays")
    g.add_argument("--decay-rate", type=float, default=0.1, help="step schedule: LR factor per decay")
    g.add_argument("--label-smoothing", type=float, default=0.0, help="cross-entropy label smoothing")
    g.add_argument("--clip-grad", type=float, default=None, help="max gradient norm (default: no clipping)")
    g.add_argument("--grad-accum-steps", type=int, default=1, help="micro-steps per optimizer step")
    g.add_argument("--model-ema", action=argparse.BooleanOptionalAction, default=False,
                   help="keep an EMA of the weights; it is evaluated and saved as final/")
    g.add_argument("--model-ema-decay", type=float, default=0.9998, help="EMA decay per optimizer step")
    g.add_argument("--seed", type=int, default=0, help="seed of weights, data order, augmentation and gate noise")
    g = p.add_argument_group("GaterNet options (each default is the paper's behaviour)")
    g.add_argument("--gate-l1", type=float, default=0.0, help="lambda of the L1 gate loss")
    g.add_argument("--gate-init-bias", type=float, default=None,
                   help="initial bias of the gater's last FC, e.g. 3 to start with open gates (default: 0)")
    g.add_argument("--gate-discrete-prob-start", type=float, default=None,
                   help="discrete-gate probability at step 0, ramped to the model's over the warm-up")
    g.add_argument("--gate-discrete-prob-warmup-epochs", type=float, default=0.0,
                   help="epochs of that ramp (per optimizer step; 0: none)")
    g.add_argument("--gate-noise-std-start", type=float, default=None,
                   help="gate-logit noise std at step 0, ramped to the model's over the warm-up")
    g.add_argument("--gate-noise-warmup-epochs", type=float, default=0.0, help="epochs of that ramp (0: none)")
    g.add_argument("--gater-lr-scale", type=float, default=1.0, help="learning-rate factor of the gater")
    g.add_argument("--gater-weight-decay", type=float, default=None,
                   help="weight decay of the gater's weights (default: --weight-decay)")
    g = p.add_argument_group("device")
    g.add_argument("--cpu", action="store_true", default=False, help="train on the CPU even if a GPU is present")
    g.add_argument("--mixed-precision", choices=("auto", "no", "bf16", "fp16"), default=None,
                   help="auto: bf16 autocast where the device computes bf16 natively, else float32 (default: what "
                        "`accelerate launch` or its config says, else no)")
    g.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=True,
                   help="channels-last memory format")
    g.add_argument("--torchcompile", action="store_true", default=False, help="torch.compile via Accelerate")
    g = p.add_argument_group("run folder and checkpoints")
    g.add_argument("--output-dir", default=None, help="default: runs/<model>-<YYYYmmdd-HHMMSS> under the cwd")
    g.add_argument("--resume", default=None, metavar="latest|PATH",
                   help="'latest' (newest complete checkpoint of --output-dir) or a checkpoint/run folder")
    g.add_argument("--overwrite", action="store_true", default=False,
                   help="delete this script's artifacts in a non-empty --output-dir first")
    g.add_argument("--checkpoint-every-steps", type=int, default=None,
                   help="also save a checkpoint every N optimizer steps (one is always saved per epoch)")
    g.add_argument("--keep-checkpoints", type=int, default=3, help="keep the newest K checkpoints")
    g.add_argument("--push-to-hub", default=None, metavar="REPO", help="push final/ to this Hub repository")
    return p


def _config_keys(parser: argparse.ArgumentParser) -> list[str]:
    keys = [a.dest for a in parser._actions if a.dest != "help" and a.dest not in CLI_ONLY_KEYS]
    return sorted(keys + ["model_args"])  # model_args (a dict of create_model kwargs) is config-file only


def parse_args(argv: Sequence[str] | None = None) -> tuple[dict[str, Any], argparse.Namespace]:
    """Resolve ``(config, args)``: every config key, and the invocation's CLI-only flags (timm's two-stage parse)."""
    parser = build_parser()
    valid = _config_keys(parser)
    pre, _ = parser.parse_known_args(argv)
    layers: list[dict[str, Any]] = []
    if pre.resume is not None:
        run_dir = resolve_run_dir(pre.resume, pre.output_dir)
        if (run_dir / "config.yaml").is_file():
            layers.append(read_config_file(run_dir / "config.yaml", valid, cli_only=CLI_ONLY_KEYS))
    if pre.config is not None:
        layers.append(read_config_file(pre.config, valid, cli_only=CLI_ONLY_KEYS))
    elif not layers and DEFAULT_CONFIG.is_file():
        layers.append(read_config_file(DEFAULT_CONFIG, valid, cli_only=CLI_ONLY_KEYS))
    file_cfg = {k: v for layer in layers for k, v in layer.items()}
    model_args = file_cfg.pop("model_args", None) or {}
    parser.set_defaults(**file_cfg)
    args = parser.parse_args(argv)  # Flags on the command line beat the files.
    config = {k: v for k, v in vars(args).items() if k not in CLI_ONLY_KEYS}
    config["model_args"] = dict(model_args)
    validate_config(config)
    return config, argparse.Namespace(**{k: getattr(args, k) for k in CLI_ONLY_KEYS})


def validate_config(config: dict[str, Any]) -> None:
    """Reject values that would fail later with a less helpful message, or train to a silently wrong result."""
    for key in ("epochs", "batch_size", "grad_accum_steps", "keep_checkpoints"):
        if not isinstance(config[key], int) or config[key] < 1:
            raise RecipeError(f"{key} must be a positive integer, got {config[key]!r}")
    for key in ("max_train_samples", "max_eval_samples", "checkpoint_every_steps", "eval_batch_size", "num_classes",
                "val_split"):
        if config[key] is not None and (not isinstance(config[key], int) or config[key] < 1):
            raise RecipeError(f"{key} must be a positive integer or unset, got {config[key]!r}")
    check_finite_settings(config, _FLOAT_KEYS)  # NaN/inf (argparse and YAML accept both) before anything starts.
    ranges = {"lr": (0, None, False), "momentum": (0, 1, True), "label_smoothing": (0, 1, True),
              "model_ema_decay": (0, 1, True), "gate_discrete_prob_start": (0, 1, True), "clip_grad": (0, None, False)}
    for key, (low, high, closed) in ranges.items():
        value = config[key]
        if value is not None and (value < low or (value == low and not closed) or (high is not None and value > high)):
            raise RecipeError(f"{key} must be {'>=' if closed else '>'} {low}" + (f" and <= {high}" if high else "")
                              + f", got {value}")
    for key in ("weight_decay", "gate_l1", "warmup_epochs", "warmup_factor", "min_lr", "gater_lr_scale",
                "gater_weight_decay", "gate_noise_std_start", "gate_discrete_prob_warmup_epochs",
                "gate_noise_warmup_epochs"):
        if config[key] is not None and config[key] < 0:
            raise RecipeError(f"{key} must be >= 0, got {config[key]}")
    if config["sched"] not in ("cosine", "step"):
        raise RecipeError(f"sched must be 'cosine' or 'step', got {config['sched']!r}")
    if config["mixed_precision"] not in (None, "auto", "no", "bf16", "fp16"):
        raise RecipeError(f"mixed_precision must be auto, no, bf16 or fp16, got {config['mixed_precision']!r}")


def load_data(config: dict[str, Any], model: torch.nn.Module) -> dict[str, Any]:
    """Load the data, hold out ``val_split``, check the class count and labels, build the pipeline and datasets.

    Returns:
        ``source``, ``pipeline``, ``num_classes``, ``train``, ``eval`` (evaluated every epoch), ``eval_name``
        (``"validation"`` or the eval split's name) and ``test`` (the eval split for the end, or ``None``).
    """
    source = load_image_dataset(
        config["data"], split_train=config["train_split"], split_eval=config["eval_split"],
        image_column=config["image_column"], label_column=config["label_column"])
    if source.eval is None:
        raise RecipeError(f"{source.description} has no evaluation split; set eval_split")
    num_classes = resolve_num_classes(source, config["num_classes"])  # Every row of every split, before any cut.
    test, n = None, config["val_split"]
    if n:
        if n >= len(source.train):
            raise RecipeError(f"val_split {n} leaves no training images of the {len(source.train)}; lower it")
        total = len(source.train)
        test = source.eval
        source = replace(source, train=source.train.select(range(total - n)),
                         eval=source.train.select(range(total - n, total)))
    if config["max_train_samples"]:
        source = replace(source, train=source.train.select(range(min(config["max_train_samples"], len(source.train)))))
    if config["max_eval_samples"]:
        cut = config["max_eval_samples"]
        source = replace(source, eval=source.eval.select(range(min(cut, len(source.eval)))))
        test = test.select(range(min(cut, len(test)))) if test is not None else None
    n_eval = len(source.eval)
    if test is not None and config["test_at_end"]:
        # One pipeline (one decode pass, one normalisation) for validation and test rows; split again below.
        source = replace(source, eval=datasets.concatenate_datasets([source.eval, test]))
    pipeline = build_pipeline(source, model=model, channels_last=config["channels_last"])
    evaluation, test_ds = pipeline.eval_dataset, None
    if test is not None and config["test_at_end"]:
        evaluation = torch.utils.data.Subset(pipeline.eval_dataset, range(n_eval))
        test_ds = torch.utils.data.Subset(pipeline.eval_dataset, range(n_eval, len(source.eval)))
    return {"source": source, "pipeline": pipeline, "num_classes": num_classes, "train": pipeline.train_dataset,
            "eval": evaluation, "eval_name": "validation" if n else config["eval_split"], "test": test_ds}


def build_optimizer(config: dict[str, Any], net: torch.nn.Module, steps_per_epoch: int):
    """SGD over timm's param groups (the gater's own when asked) and timm's scheduler, stepped per update."""
    no_decay = net.no_weight_decay() if hasattr(net, "no_weight_decay") else ()
    groups = gater_param_groups(net, config["weight_decay"], gater_lr_scale=config["gater_lr_scale"],
                                gater_weight_decay=config["gater_weight_decay"], no_weight_decay_list=no_decay)
    nesterov = bool(config["nesterov"]) and config["momentum"] > 0
    optimizer = create_optimizer_v2(groups, opt="sgd" if nesterov else "momentum", lr=config["lr"],
                                    weight_decay=config["weight_decay"], momentum=config["momentum"])
    total = steps_per_epoch * config["epochs"]
    warmup = min(round(config["warmup_epochs"] * steps_per_epoch), total - 1) / steps_per_epoch
    cosine = config["sched"] == "cosine"  # Cosine after the warm-up (prefix); step decay counts from step 0.
    scheduler, _ = create_scheduler_v2(
        optimizer, sched=config["sched"], num_epochs=config["epochs"] - warmup if cosine else config["epochs"],
        decay_epochs=config["decay_epochs"], decay_rate=config["decay_rate"], min_lr=config["min_lr"],
        warmup_lr=config["lr"] * config["warmup_factor"], warmup_epochs=warmup, warmup_prefix=cosine,
        step_on_epochs=False, updates_per_epoch=steps_per_epoch)
    return optimizer, scheduler


def training_function(config: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    """Train, evaluate every epoch, checkpoint, and save ``final/``; returns the last epoch's metrics."""
    check_world_size(None)
    use_cpu = bool(config["cpu"]) or not torch.cuda.is_available()
    out, checkpoint = prepare_run_folder(config["output_dir"], args.resume, args.overwrite, config["model"],
                                         PartialState(cpu=use_cpu))
    config["output_dir"] = str(out)
    precision, precision_note = resolve_mixed_precision(config["mixed_precision"], cpu=use_cpu)
    accelerator = Accelerator(
        cpu=use_cpu, mixed_precision=precision, gradient_accumulation_steps=config["grad_accum_steps"],
        # split_batches: --batch-size is the global batch. The seedable sampler draws the order from seed + epoch.
        dataloader_config=DataLoaderConfiguration(split_batches=True, use_seedable_sampler=True,
                                                  data_seed=config["seed"]),
        dynamo_backend="inductor" if config["torchcompile"] else None, log_with=["tensorboard"],
        project_config=ProjectConfiguration(project_dir=str(out), logging_dir=str(out / "logs"),
                                            automatic_checkpoint_naming=True, total_limit=config["keep_checkpoints"]))
    check_world_size(accelerator.num_processes)
    quiet_checkpoint_rotation()
    if precision_note:
        accelerator.print(precision_note)
    world, eval_batch = accelerator.num_processes, config["eval_batch_size"] or config["batch_size"]
    for key, value in (("batch_size", config["batch_size"]), ("eval_batch_size", eval_batch)):
        if value % world:
            raise RecipeError(f"{key} {value} must be divisible by the {world} processes")

    set_seed(config["seed"])  # Before the model: the seed decides the initialisation (as Accelerate's examples).
    net = gaternet_zoo.create_model(config["model"], num_classes=config["num_classes"], **config["model_args"])
    with accelerator.main_process_first():  # The first process fills the datasets cache, the others read it.
        data = load_data(config, net)
    pipeline, num_classes, gated = data["pipeline"], data["num_classes"], has_gates(net)
    if net.num_classes != num_classes:
        net.reset_classifier(num_classes)
    if config["gate_init_bias"] is not None:
        set_gate_init_bias(net, config["gate_init_bias"])
    net = net.to(accelerator.device)  # On its device and memory format before the optimizer is built.
    if config["channels_last"]:
        net = net.to(memory_format=torch.channels_last)
    ema = None
    if config["model_ema"]:
        ema = ModelEmaV3(net, decay=config["model_ema_decay"])

    # Explicit generators keep the DataLoaders from drawing (worker) seeds out of the global RNG.
    workers = pipeline.num_workers if config["num_workers"] is None else config["num_workers"]
    loader_generator = torch.Generator().manual_seed(config["seed"])
    train_dl = torch.utils.data.DataLoader(data["train"], batch_size=config["batch_size"], shuffle=True,
                                           drop_last=True, num_workers=workers, persistent_workers=workers > 0,
                                           generator=loader_generator)
    eval_dls = [torch.utils.data.DataLoader(ds, batch_size=eval_batch, num_workers=workers,
                                            generator=torch.Generator().manual_seed(config["seed"]))
                for ds in (data["eval"], data["test"]) if ds is not None]
    if len(train_dl) == 0:
        raise RecipeError(f"{len(data['train'])} training images make no full batch of {config['batch_size']}; "
                          "lower batch_size or raise max_train_samples")
    micro_steps = len(train_dl)
    steps_per_epoch = -(-micro_steps // config["grad_accum_steps"])
    optimizer, scheduler = build_optimizer(config, net, steps_per_epoch)
    warmup = GateWarmup.for_model(
        net, discrete_prob_start=config["gate_discrete_prob_start"], noise_std_start=config["gate_noise_std_start"],
        discrete_prob_steps=round(config["gate_discrete_prob_warmup_epochs"] * steps_per_epoch),
        noise_steps=round(config["gate_noise_warmup_epochs"] * steps_per_epoch))
    model, optimizer, train_dl, *eval_dls = accelerator.prepare(net, optimizer, train_dl, *eval_dls)
    if ema is not None:
        accelerator.register_for_checkpointing(ema)
    # The global RNG drives the gater's training noise: one stream per process from here on, or the two halves of a
    # batch would share their noise (every process was seeded alike so that the initial weights agree).
    set_seed(config["seed"], device_specific=True)
    criterion = torch.nn.CrossEntropyLoss(label_smoothing=config["label_smoothing"])

    start_epoch, skip_batches, global_step, carried = 0, 0, 0, {}
    if checkpoint is not None:
        check_checkpoint_matches(checkpoint, model, config["model"])
        accelerator.load_state(str(checkpoint))
        saved = yaml.safe_load((checkpoint / CHECKPOINT_STATE).read_text())
        start_epoch, skip_batches, global_step = saved["epoch"], saved["step_in_epoch"], saved["global_step"]
        carried = saved.get("epoch_sums", {})
        numbers = [checkpoint_number(p) for p in list_checkpoints(out)]
        accelerator.project_configuration.iteration = max(numbers + [checkpoint_number(checkpoint)]) + 1
        accelerator.print(f"resumed from {checkpoint}: epoch {start_epoch}, batch {skip_batches}, step {global_step}")
    scheduler.step_update(global_step)
    runtime = _record_run(config, accelerator, out, data, checkpoint, start_epoch, steps_per_epoch)

    def train_input(pixels: torch.Tensor, epoch: int, index: int) -> torch.Tensor:
        if pipeline.kind != "tensor":
            return pipeline.prepare_batch(pixels, train=True)
        # Crops and flips of the whole global batch, this process's slice kept: the same for any process count.
        offsets, flips = pipeline.augment.sample(config["batch_size"],
                                                 augmentation_generator(config["seed"], epoch, index))
        local = slice(accelerator.process_index * len(pixels), (accelerator.process_index + 1) * len(pixels))
        return pipeline.normalize(pipeline.augment.apply(pixels, offsets[local], flips[local]))

    def eval_input(batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        return pipeline.prepare_batch(batch["pixel_values"], train=False), batch["label"]

    def evaluate(module, dl, prefix: str) -> dict[str, Any]:
        if world > 1:
            distribute_bn(module, world, reduce=False)  # Rank 0's BatchNorm statistics: the model that is saved.
        return evaluation_metrics(module, dl, accelerator, prepare_batch=eval_input, num_classes=num_classes,
                              prefix=prefix)

    def save_checkpoint(epoch: int, step_in_epoch: int, sums: dict[str, float]) -> None:
        if not all_finite(net):  # Never a checkpoint (or final/) of non-finite weights: the last good one stays.
            raise diverged("the weights are not finite", None, *((epoch, step_in_epoch) if step_in_epoch
                                                                  else (epoch - 1, micro_steps)))
        accelerator.save_state()
        accelerator.wait_for_everyone()  # Every process has written its RNG state before the folder is marked.
        if accelerator.is_main_process:
            write_json_atomic(max(list_checkpoints(out), key=checkpoint_number) / CHECKPOINT_STATE, {
                "epoch": epoch, "step_in_epoch": step_in_epoch, "global_step": global_step, "epoch_sums": sums,
                "num_processes": world, "saved_at": time.time()})
        accelerator.wait_for_everyone()

    def diverged(what: str, x: torch.Tensor | None, epoch: int, index: int) -> TrainingDivergedError:
        good = [p for p in list_checkpoints(out) if (p / CHECKPOINT_STATE).is_file()]
        return TrainingDivergedError(divergence_message(
            what, step=global_step + 1, epoch=epoch + 1, num_epochs=config["epochs"], batch=index,
            lr=optimizer.param_groups[0]["lr"], inputs_finite=None if x is None else bool(torch.isfinite(x).all()),
            last_checkpoint=str(good[-1]) if good else None))

    prefix, every, record = ("val_" if config["val_split"] else ""), config["checkpoint_every_steps"], {}
    check_grads = accelerator.mixed_precision != "fp16"  # fp16's loss scaler skips inf gradients by design.
    for epoch in range(start_epoch, config["epochs"]):
        model.train()
        train_dl.set_epoch(epoch)
        loader_generator.manual_seed(config["seed"] + epoch)  # Worker seeds of this epoch, same after a resume.
        first = skip_batches if epoch == start_epoch else 0
        loader = accelerator.skip_first_batches(train_dl, first) if first else train_dl
        if first:
            loader.set_epoch(epoch)
        sums = dict(carried) if first else {"loss": 0.0, "ce": 0.0, "gate": 0.0, "batches": 0.0}
        running = torch.zeros(4, dtype=torch.float64, device=accelerator.device)  # loss, ce, gate, non-finite
        t0 = time.perf_counter()
        for index, batch in enumerate(loader, start=first):
            if warmup is not None:
                warmup.apply(net, global_step)
            x = train_input(batch["pixel_values"], epoch, index)
            with accelerator.accumulate(model):
                logits, gates = model(x, return_gates=True) if gated else (model(x), None)
                ce = criterion(logits.float(), batch["label"])
                gate_term = gate_l1_term(gates, config["gate_l1"], ce)
                loss = ce + gate_term if config["gate_l1"] > 0 and gates is not None else ce
                accelerator.backward(loss)
                running += torch.stack([loss.detach(), ce.detach(), gate_term.detach(),
                                        (~torch.isfinite(loss.detach())).to(loss.dtype)]).double()
                if accelerator.sync_gradients:
                    norm = accelerator.clip_grad_norm_(model.parameters(), config["clip_grad"]) \
                        if config["clip_grad"] else grad_norm(model.parameters())
                    bad = torch.stack([running[3].float(), (~torch.isfinite(norm.float())).float() * check_grads])
                    if bool((accelerator.reduce(bad, "sum") if world > 1 else bad).any()):
                        what = "the loss" if bad[0] else f"the gradient norm ({float(norm)})"
                        raise diverged(f"{what} is not finite", x, epoch, index)
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
            if accelerator.sync_gradients:
                global_step += 1
                scheduler.step_update(global_step)
                if ema is not None:
                    ema.update(net, step=global_step)
                if every and global_step % every == 0 and index + 1 < micro_steps:
                    save_checkpoint(epoch, index + 1, _merge_sums(sums, running, index + 1 - first))
        train_time = time.perf_counter() - t0
        sums = _merge_sums(sums, running, micro_steps - first)
        # Mean over processes of each process's mean loss (they saw equal shares of every batch).
        means = accelerator.reduce(torch.tensor([sums["loss"], sums["ce"], sums["gate"]], dtype=torch.float64,
                                                device=accelerator.device) / max(sums["batches"], 1.0), "mean")
        metrics = evaluate(net, eval_dls[0], prefix)
        if ema is not None:
            ema_metrics = evaluate(ema.module, eval_dls[0], prefix)
            metrics.update({f"ema_{k}": v for k, v in ema_metrics.items()})
        record = {"epoch": epoch, "global_step": global_step, "lr": _base_lr(optimizer),
                  "train_loss": float(means[0]), "train_ce": float(means[1]), "train_gate_l1": float(means[2]),
                  "train_images_per_sec": (micro_steps - first) * config["batch_size"] / train_time or None,
                  "epoch_train_seconds": train_time, "num_processes": world,
                  **(_gate_settings(net, optimizer) if gated else {}),
                  **{k: v for k, v in metrics.items() if not k.startswith(("_", "ema__"))}}
        if accelerator.is_main_process:
            append_metrics(out, record)
        accelerator.log({k: v for k, v in record.items() if isinstance(v, (int, float)) and k != "epoch"},
                        step=global_step)
        accelerator.print(
            f"epoch {epoch + 1}/{config['epochs']}: loss {record['train_loss']:.4f}  {data['eval_name']} top1 "
            f"{record[prefix + 'top1']:.2f}  top5 {record[prefix + 'top5']:.2f}  "
            f"{record['train_images_per_sec'] or 0:.0f} img/s" + (
                f"  open gates {record[prefix + 'gate_open_fraction']:.3f}" if gated else ""))
        save_checkpoint(epoch + 1, 0, {})
        record["_gate_stats"] = metrics["ema__gate_stats" if ema is not None else "_gate_stats"]

    final_net = ema.module if ema is not None else net
    if not record:  # Resumed from the last epoch's checkpoint (killed before final/): measure again to save it.
        metrics = evaluate(final_net, eval_dls[0], prefix)
        record = {"epoch": start_epoch - 1, "global_step": global_step, "train_images_per_sec": None,
                  **{("ema_" if ema is not None else "") + k: v for k, v in metrics.items() if k[0] != "_"},
                  "_gate_stats": metrics["_gate_stats"]}
    if not all_finite(final_net):
        raise RecipeError(f"the trained weights hold NaN or infinite values; no final/ was written to {out}. "
                          "Lower --lr or check the data, and start again.")
    test = evaluate(final_net, eval_dls[1], "test_") if data["test"] is not None else None
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        save_final(final_net, config, data, record, test, runtime, out, ("ema_" if ema is not None else "") + prefix)
    accelerator.wait_for_everyone()
    accelerator.end_training()
    return {k: v for k, v in {**record, **(test or {})}.items() if not k.startswith("_")}


def gate_l1_term(gates: torch.Tensor | None, weight: float, like: torch.Tensor) -> torch.Tensor:
    """The paper's L1 gate loss in float32, or a zero for plain backbones."""
    return gate_l1_loss(gates.float(), weight) if gates is not None else like.new_zeros(())


def _merge_sums(base: dict[str, float], running: torch.Tensor, batches: int) -> dict[str, float]:
    return {"loss": base["loss"] + float(running[0]), "ce": base["ce"] + float(running[1]),
            "gate": base["gate"] + float(running[2]), "batches": base["batches"] + batches}


def _base_lr(optimizer) -> float:
    return next(g["lr"] for g in optimizer.param_groups if g.get("name") != "gater")


def _gate_settings(net, optimizer) -> dict[str, float]:
    """The gate options in force at the end of the epoch (warm-up values, the gater's learning rate)."""
    binarizer = net.gater.binarizer
    out = {"gate_discrete_prob": float(binarizer.discrete_prob), "gate_noise_std": float(binarizer.noise_std)}
    gater = [g["lr"] for g in optimizer.param_groups if g.get("name") == "gater"]
    out["gater_lr"] = gater[0] if gater else _base_lr(optimizer)
    return out


def _record_run(config, accelerator, out: Path, data, checkpoint, start_epoch: int, steps_per_epoch: int) -> dict:
    """Write ``config.yaml`` with its ``runtime`` section, drop metric rows to be redone, start the trackers."""
    runtime = {
        "num_processes": accelerator.num_processes, "distributed_type": str(accelerator.distributed_type),
        "mixed_precision": accelerator.mixed_precision, "device": str(accelerator.device),
        "train_samples": len(data["train"]), "eval_samples": len(data["eval"]), "eval_split": data["eval_name"],
        "test_samples": len(data["test"]) if data["test"] is not None else None,
        "num_classes": data["num_classes"], "pipeline": data["pipeline"].kind, "steps_per_epoch": steps_per_epoch,
        "data_description": data["source"].description, "command": " ".join(shlex.quote(a) for a in sys.argv),
        "versions": {"torch": torch.__version__, "gaternet_zoo": gaternet_zoo.__version__,
                     "accelerate": accelerate.__version__}}
    if checkpoint is not None:
        runtime["resumed_from"] = str(checkpoint)
    if accelerator.is_main_process:
        old = out / "config.yaml"
        if checkpoint is not None and old.is_file():
            previous = yaml.safe_load(old.read_text()) or {}
            changed = [k for k in _SCHEDULE_KEYS if k in previous and previous[k] != config[k]]
            if changed:
                accelerator.print(f"warning: resuming with changed {changed}; the run will not match an "
                                  "uninterrupted one")
        old.write_text(yaml.safe_dump({**jsonable(config), "runtime": jsonable(runtime)}, sort_keys=False))
        if checkpoint is not None:
            truncate_metrics(out, start_epoch)
    hparams = {k: v if isinstance(v, (int, float, str, bool)) else str(v) for k, v in config.items()}
    accelerator.init_trackers("train", config={**hparams, "num_processes": accelerator.num_processes})
    return runtime


def save_final(net, config, data, record, test, runtime, out: Path, prefix: str) -> None:
    """Save ``final/`` (and push it): the weights with a config that says what they are and how they measured."""
    # New weights, not those of the tag the model was built (or fine-tuned) from: no tag. save_pretrained publishes
    # only the input and provenance fields that describe these weights (no hf_hub_id, file or old sha256).
    cfg = {**(net.pretrained_cfg or {}), "tag": None}
    source, pipeline = data["source"], data["pipeline"]
    cfg["num_classes"] = data["num_classes"]
    cfg["label_names"] = list(source.class_names) if len(source.class_names) == data["num_classes"] else \
        [str(i) for i in range(data["num_classes"])]
    if pipeline.kind == "tensor":
        cfg["mean"], cfg["std"] = pipeline.normalize.mean, pipeline.normalize.std
    measured, key = (test, "test_") if test is not None else (record, prefix)
    cfg["metrics"] = {
        "top1": measured[f"{key}top1"], "top5": measured[f"{key}top5"],
        "eval_loss": measured[f"{key}loss" if key.endswith(("val_", "test_")) else f"{key}eval_loss"],
        "eval_samples": measured[f"{key}samples" if key.endswith(("val_", "test_")) else f"{key}eval_samples"],
        "eval_split": config["eval_split"] if test is not None else data["eval_name"], "epochs": config["epochs"],
        "train_images_per_sec": record["train_images_per_sec"], "num_processes": runtime["num_processes"]}
    if record.get("_gate_stats") is not None:
        cfg["gate_stats"] = jsonable(record["_gate_stats"])
    cfg["dataset"] = config["data"] if isinstance(config["data"], str) else source.description
    cfg["recipe"] = {"command": runtime["command"], "config": str((out / "config.yaml").resolve())}
    if test is not None:
        write_json_atomic(out / "test_metrics.json", {k: v for k, v in test.items() if not k.startswith("_")})
    net.pretrained_cfg = cfg
    net.save_pretrained(out / "final")
    if config["push_to_hub"]:
        net.push_to_hub(config["push_to_hub"], commit_message="Add model trained with recipes/train.py")
    print(f"saved {out / 'final'}")


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Parse the command line and train; returns the last epoch's metrics."""
    config, args = parse_args(argv)
    return training_function(config, args)


if __name__ == "__main__":
    try:
        main()
    except (RecipeError, DataSourceError) as err:  # Complete messages: no traceback needed.
        print(f"train.py: error: {err}", file=sys.stderr)
        sys.exit(2)
