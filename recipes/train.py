"""Train a gaternet_zoo model (a GaterNet or a plain backbone) with Hugging Face Accelerate.

The shape follows Accelerate's ``examples/complete_cv_example.py`` (``training_function(config, args)`` plus
``main()``), with the two defects of those examples fixed: ``--resume latest`` really finds the newest checkpoint,
and gradient accumulation goes through ``accelerator.accumulate``.

Usage::

    accelerate launch recipes/train.py                                   # recipes/configs/default.yaml
    accelerate launch recipes/train.py --config recipes/configs/cifar10_gaternet_resnet20.yaml --lr 0.05
    accelerate launch --multi_gpu --num_processes 2 recipes/train.py --cpu   # two CPU processes (gloo)
    python recipes/train.py --output-dir runs/x --resume latest          # continue a killed run exactly

Configuration is layered: built-in defaults < ``recipes/configs/default.yaml`` (or ``--config FILE``; when
resuming, the run's own ``config.yaml``) < command-line flags. The resolved configuration is written to
``<output-dir>/config.yaml``.

Reproducibility contract: data order is a permutation drawn from ``seed + epoch``, augmentation from
``(seed, epoch, batch index)``, the LR schedule is a function of the optimizer step, and ``save_state`` stores
model, optimizer, scheduler, EMA, gradient-accumulation counter and RNG states. A run killed at any moment (even
with SIGKILL) and resumed with ``--resume latest`` therefore ends with bit-identical weights to an uninterrupted
run on the same hardware, process count, thread count and software. ``--batch-size`` is the global batch of one
micro-step and is split across processes, so the data each step sees does not depend on the process count either.
"""

from __future__ import annotations

import argparse
import csv
import datetime
import json
import logging
import math
import os
import shlex
import shutil
import sys
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
import yaml
from torch import nn

RECIPES_DIR = Path(__file__).resolve().parent
DEFAULT_CONFIG = RECIPES_DIR / "configs" / "default.yaml"
CHECKPOINT_STATE = "training_state.json"  # Written last into a checkpoint folder: its presence marks it complete.
RUN_ARTIFACTS = ("checkpoints", "final", "logs", "config.yaml", "metrics.jsonl", "summary.csv")
# Flags that describe one invocation, not the experiment: they never come from, nor go to, a config file.
CLI_ONLY_KEYS = frozenset({"config", "resume", "overwrite"})
# Keys a config file may carry that are not settings (written by this script into config.yaml for the record).
IGNORED_CONFIG_KEYS = frozenset({"runtime"})
# Keys whose change on resume breaks the bit-identical continuation (warned about, not refused).
_SCHEDULE_KEYS = ("model", "data", "epochs", "batch_size", "lr", "seed", "sched", "warmup_epochs", "grad_accum_steps",
                  "max_train_samples", "weight_decay", "momentum", "gate_l1", "label_smoothing")


class RecipeError(ValueError):
    """A configuration or run-folder problem; the message says what is wrong and what to do."""


# ------------------------------------------------------------------------------------------------------------------
# Configuration
# ------------------------------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    """Return the argument parser; every option's ``dest`` is also a valid config-file key (except CLI-only ones)."""
    p = argparse.ArgumentParser(
        description="Train a gaternet_zoo model with Accelerate.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--config", default=None, help="YAML config file (default: recipes/configs/default.yaml)")

    g = p.add_argument_group("model and data")
    g.add_argument("--model", default="gaternet_resnet20", help="zoo model name (create_model)")
    g.add_argument("--data", default="builtin:cifar10-subset", help="data source (load_image_dataset)")
    g.add_argument("--num-classes", type=int, default=None, help="classifier size (default: from the data)")
    g.add_argument("--image-column", default=None, help="image column (default: auto)")
    g.add_argument("--label-column", default=None, help="label column (default: auto)")
    g.add_argument("--train-split", default="train")
    g.add_argument("--eval-split", default="test")
    g.add_argument("--max-train-samples", type=int, default=None, help="use the first N training rows")
    g.add_argument("--max-eval-samples", type=int, default=None, help="use the first N evaluation rows")
    g.add_argument("--num-workers", type=int, default=None, help="DataLoader workers (default: the pipeline's)")

    g = p.add_argument_group("optimisation")
    g.add_argument("--epochs", type=int, default=15)
    g.add_argument("--batch-size", type=int, default=128, help="global batch per micro-step, split over processes")
    g.add_argument("--eval-batch-size", type=int, default=None, help="default: --batch-size")
    g.add_argument("--lr", type=float, default=0.1, help="peak learning rate")
    g.add_argument("--momentum", type=float, default=0.9)
    g.add_argument("--nesterov", action=argparse.BooleanOptionalAction, default=True)
    g.add_argument("--weight-decay", type=float, default=5e-4, help="applied to weights, not to norms or biases")
    g.add_argument("--sched", choices=("cosine", "step"), default="cosine")
    g.add_argument("--warmup-epochs", type=float, default=1.0, help="linear warm-up length (may be fractional)")
    g.add_argument("--warmup-factor", type=float, default=0.1, help="LR factor at the first warm-up step")
    g.add_argument("--min-lr", type=float, default=0.0, help="cosine floor")
    g.add_argument("--decay-epochs", type=float, default=30.0, help="step schedule: epochs between decays")
    g.add_argument("--decay-rate", type=float, default=0.1, help="step schedule: LR factor per decay")
    g.add_argument("--label-smoothing", type=float, default=0.0)
    g.add_argument("--gate-l1", type=float, default=0.0, help="lambda of the L1 gate loss (GaterNets only)")
    g.add_argument("--clip-grad", type=float, default=None, help="max gradient norm (default: no clipping)")
    g.add_argument("--grad-accum-steps", type=int, default=1)
    g.add_argument("--model-ema", action=argparse.BooleanOptionalAction, default=False,
                   help="keep an EMA of the weights; it is evaluated and saved as final/")
    g.add_argument("--model-ema-decay", type=float, default=0.9998)
    g.add_argument("--seed", type=int, default=0)

    g = p.add_argument_group("device")
    g.add_argument("--cpu", action="store_true", default=False, help="train on the CPU even if a GPU is present")
    g.add_argument("--mixed-precision", choices=("no", "bf16", "fp16"), default=None,
                   help="default: what `accelerate launch`/its config says, else no")
    g.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=True)
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


def read_config_file(path: str | os.PathLike, valid_keys: Sequence[str]) -> dict[str, Any]:
    """Read a YAML config and check its keys.

    Args:
        path: YAML file; keys are option names with ``_`` or ``-`` (``batch_size`` or ``batch-size``).
        valid_keys: Accepted keys.

    Returns:
        The settings, keyed by option ``dest``.

    Raises:
        RecipeError: Missing or malformed file, or a key that is not a setting (named, with the valid ones).
    """
    path = Path(path)
    if not path.is_file():
        raise RecipeError(f"config file {path} does not exist")
    try:
        loaded = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise RecipeError(f"config file {path} is not valid YAML: {err}") from err
    if not isinstance(loaded, dict):
        raise RecipeError(f"config file {path} must hold a mapping of settings, got {type(loaded).__name__}")
    out = {}
    for key, value in loaded.items():
        dest = str(key).replace("-", "_")
        if dest in IGNORED_CONFIG_KEYS:
            continue
        if dest in CLI_ONLY_KEYS:
            raise RecipeError(f"config file {path}: {key!r} is a command-line-only flag, not a config key")
        if dest not in valid_keys:
            raise RecipeError(
                f"config file {path}: unknown key {key!r}. Valid keys: {', '.join(valid_keys)}")
        out[dest] = value
    if "model_args" in out and not isinstance(out["model_args"], (dict, type(None))):
        raise RecipeError(f"config file {path}: model_args must be a mapping of create_model keyword arguments")
    return out


def parse_args(argv: Sequence[str] | None = None) -> tuple[dict[str, Any], argparse.Namespace]:
    """Resolve ``(config, args)``: hyperparameters (every config key) and the invocation's CLI-only flags.

    Layering, lowest first: built-in defaults, then ``default.yaml`` or ``--config`` (a resumed run's own
    ``config.yaml`` sits below ``--config``), then flags given on the command line.
    """
    parser = build_parser()
    valid = _config_keys(parser)
    # Stage 1 (timm's two-stage parse): only what decides which files to read.
    pre, _ = parser.parse_known_args(argv)
    layers: list[dict[str, Any]] = []
    if pre.resume is not None:
        run_dir = resolve_run_dir(pre.resume, pre.output_dir)
        if (run_dir / "config.yaml").is_file():
            layers.append(read_config_file(run_dir / "config.yaml", valid))
    if pre.config is not None:
        layers.append(read_config_file(pre.config, valid))
    elif not layers and DEFAULT_CONFIG.is_file():
        layers.append(read_config_file(DEFAULT_CONFIG, valid))
    file_cfg: dict[str, Any] = {}
    for layer in layers:
        file_cfg.update(layer)
    model_args = file_cfg.pop("model_args", None) or {}
    parser.set_defaults(**file_cfg)
    args = parser.parse_args(argv)  # Stage 2: flags on the command line beat the files.
    config = {k: v for k, v in vars(args).items() if k not in CLI_ONLY_KEYS}
    config["model_args"] = dict(model_args)
    cli = argparse.Namespace(**{k: getattr(args, k) for k in CLI_ONLY_KEYS})
    validate_config(config)
    return config, cli


def validate_config(config: dict[str, Any]) -> None:
    """Reject values that would fail later with a less helpful message."""
    positive = ("epochs", "batch_size", "grad_accum_steps", "keep_checkpoints")
    for key in positive:
        if not isinstance(config[key], int) or config[key] < 1:
            raise RecipeError(f"{key} must be a positive integer, got {config[key]!r}")
    for key in ("max_train_samples", "max_eval_samples", "checkpoint_every_steps", "eval_batch_size", "num_classes"):
        if config[key] is not None and (not isinstance(config[key], int) or config[key] < 1):
            raise RecipeError(f"{key} must be a positive integer or unset, got {config[key]!r}")
    if config["lr"] <= 0:
        raise RecipeError(f"lr must be positive, got {config['lr']}")
    if not 0 <= config["label_smoothing"] < 1:
        raise RecipeError(f"label_smoothing must be in [0, 1), got {config['label_smoothing']}")
    if config["gate_l1"] < 0:
        raise RecipeError(f"gate_l1 must be >= 0, got {config['gate_l1']}")
    if config["sched"] not in ("cosine", "step"):
        raise RecipeError(f"sched must be 'cosine' or 'step', got {config['sched']!r}")
    if config["mixed_precision"] not in (None, "no", "bf16", "fp16"):
        raise RecipeError(f"mixed_precision must be no, bf16 or fp16, got {config['mixed_precision']!r}")


# ------------------------------------------------------------------------------------------------------------------
# Run folder and checkpoints
# ------------------------------------------------------------------------------------------------------------------


def resolve_run_dir(resume: str, output_dir: str | None) -> Path:
    """The run folder a ``--resume`` value refers to."""
    if resume == "latest":
        if output_dir is None:
            raise RecipeError("--resume latest needs --output-dir: the run folder whose checkpoints to continue")
        return Path(output_dir)
    path = Path(resume)
    if (path / CHECKPOINT_STATE).is_file() and path.parent.name == "checkpoints":
        return Path(output_dir) if output_dir else path.parent.parent
    if output_dir:
        return Path(output_dir)
    return path  # A run folder given as PATH.


def _checkpoint_number(path: Path) -> int:
    try:
        return int(path.name.rsplit("_", 1)[1])
    except (IndexError, ValueError):
        return -1


def list_checkpoints(run_dir: Path) -> list[Path]:
    """``checkpoint_<n>`` folders of a run, oldest first (complete or not)."""
    root = run_dir / "checkpoints"
    if not root.is_dir():
        return []
    return sorted((p for p in root.iterdir() if p.is_dir() and _checkpoint_number(p) >= 0), key=_checkpoint_number)


def find_checkpoint(resume: str, run_dir: Path) -> Path:
    """Resolve ``--resume latest|PATH`` to a complete checkpoint folder.

    Raises:
        RecipeError: No complete checkpoint where it looked (the message says where).
    """
    if resume != "latest":
        path = Path(resume)
        if (path / CHECKPOINT_STATE).is_file():
            return path
        if not (path / "checkpoints").is_dir():
            raise RecipeError(
                f"--resume {resume}: not a complete checkpoint folder (no {CHECKPOINT_STATE} in it) and not a run "
                "folder with a checkpoints/ subfolder")
        run_dir = path
    complete = [p for p in list_checkpoints(run_dir) if (p / CHECKPOINT_STATE).is_file()]
    if not complete:
        raise RecipeError(
            f"--resume {resume}: no complete checkpoint found; looked for {run_dir / 'checkpoints'}/checkpoint_<n>/"
            f"{CHECKPOINT_STATE}. Start a new run without --resume (add --overwrite to reuse the folder).")
    return complete[-1]


def check_output_dir(out: Path, *, resuming: bool, overwrite: bool) -> None:
    """Refuse to mix a new run into a folder that already holds files."""
    if resuming or overwrite or not out.exists():
        return
    if not out.is_dir():
        raise RecipeError(f"--output-dir {out} exists and is not a folder")
    entries = sorted(p.name for p in out.iterdir())
    if entries:
        shown = ", ".join(entries[:6]) + (", ..." if len(entries) > 6 else "")
        raise RecipeError(
            f"--output-dir {out} is not empty ({shown}). Pass --resume latest to continue that run, --overwrite to "
            "delete its artifacts and start again, or choose another --output-dir.")


def clear_run_artifacts(out: Path) -> None:
    """``--overwrite``: delete only what this script writes, so a mistyped path cannot wipe unrelated files."""
    for name in RUN_ARTIFACTS:
        target = out / name
        if target.is_dir():
            shutil.rmtree(target)
        elif target.exists():
            target.unlink()


def write_json_atomic(path: Path, payload: dict[str, Any]) -> None:
    """Write JSON through a temporary file and a rename, so a kill never leaves a half-written file."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(payload, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)


def truncate_metrics(out: Path, start_epoch: int) -> None:
    """On resume, drop metric rows of epochs that will be trained again (a kill can land after they were logged)."""
    jsonl = out / "metrics.jsonl"
    if jsonl.is_file():
        kept = [line for line in jsonl.read_text().splitlines() if line and json.loads(line)["epoch"] < start_epoch]
        jsonl.write_text("".join(line + "\n" for line in kept))
    summary = out / "summary.csv"
    if summary.is_file():
        with summary.open(newline="") as f:
            rows = list(csv.DictReader(f))
        fields = list(rows[0].keys()) if rows else []
        kept_rows = [r for r in rows if int(r["epoch"]) < start_epoch]
        if fields:
            with summary.open("w", newline="") as f:
                writer = csv.DictWriter(f, fieldnames=fields)
                writer.writeheader()
                writer.writerows(kept_rows)
        else:
            summary.unlink()


def append_metrics(out: Path, record: dict[str, Any]) -> None:
    """Append one epoch to ``metrics.jsonl`` (everything) and ``summary.csv`` (scalars, timm's file)."""
    with (out / "metrics.jsonl").open("a") as f:
        f.write(json.dumps(record, sort_keys=True) + "\n")
    scalars = {k: v for k, v in record.items() if isinstance(v, (int, float, str, bool)) or v is None}
    path = out / "summary.csv"
    new = not path.is_file()
    with path.open("a", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(scalars.keys()))
        if new:
            writer.writeheader()
        writer.writerow(scalars)


# ------------------------------------------------------------------------------------------------------------------
# Training pieces
# ------------------------------------------------------------------------------------------------------------------


class EpochShuffleSampler(torch.utils.data.Sampler):
    """Shuffles ``range(num_samples)`` with ``torch.Generator().manual_seed(seed + epoch)``.

    The order depends only on ``(seed, epoch)``: a resumed run re-creates it without any saved state, and it never
    touches the global RNG (whose state must match between an interrupted and an uninterrupted run).

    Args:
        num_samples: Dataset length.
        seed: Run seed.
    """

    def __init__(self, num_samples: int, seed: int) -> None:
        self.num_samples = num_samples
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Select the permutation of ``epoch`` (Accelerate's loaders call this too)."""
        self.epoch = epoch

    def __iter__(self):
        order = torch.Generator().manual_seed(self.seed + self.epoch)
        yield from torch.randperm(self.num_samples, generator=order).tolist()

    def __len__(self) -> int:
        return self.num_samples


class TrainingModule(nn.Module):
    """Wraps a zoo model so ``forward`` returns ``(logits, gates)``; ``gates`` is ``None`` for plain backbones.

    The wrapper exists so that DDP and ``torch.compile`` see the gated forward as the module's ``forward`` (calling
    ``model.module.forward_with_gates`` would bypass DDP's gradient synchronisation).

    Args:
        net: A GaterNet (with ``forward_with_gates``) or any classifier.
    """

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net
        self.gated = hasattr(net, "forward_with_gates")

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        if self.gated:
            return self.net.forward_with_gates(x)
        return self.net(x), None


class LRSchedule:
    """LR factor as a function of the optimizer step: linear warm-up, then cosine or step decay.

    A class rather than a lambda so ``LambdaLR.state_dict`` can record it; the factor depends only on the step, so
    a resumed run continues the same curve.

    Args:
        total_steps: Optimizer steps of the whole run.
        steps_per_epoch: Optimizer steps per epoch.
        warmup_epochs: Warm-up length in epochs.
        warmup_factor: Factor at step 0 of the warm-up.
        sched: ``"cosine"`` or ``"step"``.
        min_factor: Cosine floor as a fraction of the peak LR.
        decay_epochs: Step schedule: epochs between decays.
        decay_rate: Step schedule: factor per decay.
    """

    def __init__(self, total_steps: int, steps_per_epoch: int, warmup_epochs: float, warmup_factor: float,
                 sched: str, min_factor: float, decay_epochs: float, decay_rate: float) -> None:
        self.total_steps = total_steps
        self.steps_per_epoch = steps_per_epoch
        self.warmup_steps = min(int(round(warmup_epochs * steps_per_epoch)), max(total_steps - 1, 0))
        self.warmup_factor = warmup_factor
        self.sched = sched
        self.min_factor = min_factor
        self.decay_steps = max(1, int(round(decay_epochs * steps_per_epoch)))
        self.decay_rate = decay_rate

    def __call__(self, step: int) -> float:
        if step < self.warmup_steps:
            return self.warmup_factor + (1.0 - self.warmup_factor) * step / self.warmup_steps
        if self.sched == "step":
            return self.decay_rate ** (step // self.decay_steps)
        span = max(1, self.total_steps - self.warmup_steps)
        progress = min(1.0, (step - self.warmup_steps) / span)
        return self.min_factor + (1.0 - self.min_factor) * 0.5 * (1.0 + math.cos(math.pi * progress))


def param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Two groups: weights with decay; norms and biases (1-D tensors) without (timm's ``param_groups_weight_decay``)."""
    decay, no_decay = [], []
    for _, param in model.named_parameters():
        if not param.requires_grad:
            continue
        (no_decay if param.ndim <= 1 else decay).append(param)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def broadcast_buffers(module: nn.Module, num_processes: int) -> None:
    """Copy rank 0's buffers (BatchNorm running stats) to every process.

    Each process updated its running statistics on its own half of the last batch; without this, processes would
    evaluate slightly different models, and none of them the one that is saved (rank 0's).
    """
    if num_processes > 1 and torch.distributed.is_available() and torch.distributed.is_initialized():
        for buf in module.buffers():
            torch.distributed.broadcast(buf.data, src=0)


def gate_summary(stats: Any) -> dict[str, Any] | None:
    """JSON-ready gate statistics, or ``None`` for plain backbones."""
    if stats is None:
        return None
    if isinstance(stats, dict):
        return stats
    return stats.summary()


def run_evaluation(net: nn.Module, dataloader, accelerator, *, prepare_batch, num_classes: int) -> dict[str, Any]:
    """Evaluate with ``gaternet_zoo.evaluation.evaluate`` and flatten the result into metric fields.

    Args:
        net: The zoo model itself (not DDP-wrapped: evaluation needs no gradient synchronisation).
        dataloader: Prepared evaluation loader; ``gather_for_metrics`` inside ``evaluate`` drops its padding.
        accelerator: The run's accelerator.
        prepare_batch: ``batch -> (images, labels)``.
        num_classes: Number of classes.

    Returns:
        ``top1``, ``top5`` (percent), ``eval_loss``, ``eval_samples``, ``eval_images_per_sec`` and, for GaterNets,
        the gate figures; ``_gate_stats`` holds the full gate summary (``None`` for plain backbones).
    """
    from gaternet_zoo.evaluation import evaluate

    result = evaluate(net, dataloader, accelerator, prepare_batch=prepare_batch, num_classes=num_classes)
    out = {"top1": result.top1, "top5": result.top5, "eval_loss": result.loss, "eval_samples": result.num_samples,
           "eval_images_per_sec": result.images_per_second}
    gates = gate_summary(result.gate_stats)
    if gates is not None:
        out.update({
            "gate_open_fraction": gates["mean_open_fraction"],
            "gates_always_on": gates["always_on"],
            "gates_always_off": gates["always_off"],
            "gates_input_dependent": gates["input_dependent"],
            "gate_open_fraction_per_block": gates["per_site_open_fraction"],
        })
    out["_gate_stats"] = gates
    return out


# ------------------------------------------------------------------------------------------------------------------
# Data
# ------------------------------------------------------------------------------------------------------------------


def load_data(config: dict[str, Any], model: nn.Module):
    """Load the source, cut it to ``max_*_samples``, check the labels and build the input pipeline."""
    from gaternet_zoo.data import build_pipeline, load_image_dataset

    source = load_image_dataset(
        config["data"], split_train=config["train_split"], split_eval=config["eval_split"],
        image_column=config["image_column"], label_column=config["label_column"])
    if source.eval is None:
        raise RecipeError(f"{source.description} has no evaluation split; set eval_split")
    if config["max_train_samples"]:
        source = replace(source, train=source.train.select(range(min(config["max_train_samples"], len(source.train)))))
    if config["max_eval_samples"]:
        source = replace(source, eval=source.eval.select(range(min(config["max_eval_samples"], len(source.eval)))))
    pipeline = build_pipeline(source, model=model, channels_last=config["channels_last"])
    return source, pipeline


def check_labels(pipeline, num_classes: int, description: str) -> None:
    """Every label must index the classifier: report the first offending row instead of a CUDA assert later."""
    for split, ds in (("train", pipeline.train_dataset), ("eval", pipeline.eval_dataset)):
        labels = getattr(ds, "labels", None)
        if labels is None:
            continue
        bad = ((labels < 0) | (labels >= num_classes)).nonzero().flatten()
        if len(bad):
            row = int(bad[0])
            raise RecipeError(
                f"label outside num_classes={num_classes} in the {split} split of {description}: row {row} has label "
                f"{int(labels[row])} ({len(bad)} such row(s)); labels must be in [0, {num_classes}). Set "
                "num_classes to the number of classes of the data, or fix the labels.")


# ------------------------------------------------------------------------------------------------------------------
# Training
# ------------------------------------------------------------------------------------------------------------------


def _check_world_size_env(num_processes: int | None) -> None:
    """Fail loudly when the environment asks for several processes but this run is not one of them."""
    world = int(os.environ.get("WORLD_SIZE", "1") or 1)
    hint = ("On CPU use `accelerate launch --multi_gpu --num_processes 2 recipes/train.py --cpu` for a real "
            "2-process (gloo) run; note that `accelerate launch --cpu --num_processes 2` starts only ONE process.")
    if world > 1 and num_processes is None and "RANK" not in os.environ and "LOCAL_RANK" not in os.environ:
        raise RecipeError(
            f"WORLD_SIZE={world} is set, but this process was not started by a distributed launcher (no RANK or "
            f"LOCAL_RANK): it would train alone while believing it is one of {world}. {hint} Otherwise unset "
            "WORLD_SIZE.")
    if world > 1 and num_processes == 1:
        raise RecipeError(
            f"WORLD_SIZE={world} is set, but Accelerate runs this training in a single process "
            f"(accelerator.num_processes == 1). {hint}")


class _DropRotationNotice(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "checkpoints to make room for new checkpoint" not in str(record.msg)  # Msg may carry "[RANK 0] ".


def _quiet_checkpoint_rotation() -> None:
    """Silence Accelerate's warning on every routine deletion that ``--keep-checkpoints`` asked for."""
    logger = logging.getLogger("accelerate.accelerator")
    if not any(isinstance(f, _DropRotationNotice) for f in logger.filters):
        logger.addFilter(_DropRotationNotice())


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, (int, float)):
        return type(value)(value) if type(value) in (int, float) else float(value)
    return str(value)  # Also plain-izes str subclasses such as torch's TorchVersion, which YAML cannot represent.


def training_function(config: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    """Train, evaluate every epoch, checkpoint, and save ``final/``.

    Args:
        config: Resolved settings (every config key; see ``build_parser``).
        args: CLI-only flags: ``resume``, ``overwrite`` (and ``config``, already applied).

    Returns:
        The last epoch's metric record (on every process).
    """
    from accelerate import Accelerator, PartialState
    from accelerate.utils import DataLoaderConfiguration, ProjectConfiguration, broadcast_object_list, set_seed

    import gaternet_zoo
    from gaternet_zoo import gate_l1_loss

    _check_world_size_env(None)
    use_cpu = bool(config["cpu"]) or not torch.cuda.is_available()
    resuming = args.resume is not None
    out: Path | None = None
    if resuming:
        out = resolve_run_dir(args.resume, config["output_dir"])
    elif config["output_dir"]:
        out = Path(config["output_dir"])
    # Folder checks come before any distributed or Accelerate state exists, so a mistake costs nothing to report.
    if out is not None:
        check_output_dir(out, resuming=resuming, overwrite=args.overwrite)
    checkpoint = find_checkpoint(args.resume, out) if resuming else None

    state = PartialState(cpu=use_cpu)
    if out is None:
        # The default folder name holds a timestamp: take rank 0's so all processes write to the same folder.
        stamp = [datetime.datetime.now().strftime("%Y%m%d-%H%M%S")]
        if state.num_processes > 1:
            broadcast_object_list(stamp, from_process=0)
        out = Path("runs") / f"{config['model'].replace('/', '_').replace(':', '_')}-{stamp[0]}"
        check_output_dir(out, resuming=False, overwrite=args.overwrite)
    config["output_dir"] = str(out)
    state.wait_for_everyone()  # Every process has checked the folder before the main one writes into it.

    accelerator = Accelerator(
        cpu=use_cpu,
        mixed_precision=config["mixed_precision"],
        gradient_accumulation_steps=config["grad_accum_steps"],
        # --batch-size is the global batch: the same data per step at any process count. (The old `split_batches=`
        # constructor argument is silently ignored by Accelerate 1.x; only the DataLoaderConfiguration works.)
        dataloader_config=DataLoaderConfiguration(split_batches=True),
        dynamo_backend="inductor" if config["torchcompile"] else None,
        log_with=["tensorboard"],
        project_config=ProjectConfiguration(
            project_dir=str(out), logging_dir=str(out / "logs"), automatic_checkpoint_naming=True,
            total_limit=config["keep_checkpoints"]),
    )
    _check_world_size_env(accelerator.num_processes)
    _quiet_checkpoint_rotation()
    world = accelerator.num_processes
    if config["batch_size"] % world:
        raise RecipeError(f"batch_size {config['batch_size']} must be divisible by the {world} processes")
    eval_batch = config["eval_batch_size"] or config["batch_size"]
    if eval_batch % world:
        raise RecipeError(f"eval_batch_size {eval_batch} must be divisible by the {world} processes")

    if accelerator.is_main_process:
        if args.overwrite and not resuming:
            clear_run_artifacts(out)
        out.mkdir(parents=True, exist_ok=True)
        if resuming:
            # Folders without the completion marker are saves the killed run never finished: remove them. Complete
            # checkpoints are kept even when newer than the one resumed from (never lose work).
            for stale in list_checkpoints(out):
                if not (stale / CHECKPOINT_STATE).is_file() and stale != checkpoint:
                    shutil.rmtree(stale)
    accelerator.wait_for_everyone()

    # Seed before building the model so the seed decides the initialisation (as the Accelerate examples do).
    set_seed(config["seed"])
    net = gaternet_zoo.create_model(config["model"], num_classes=config["num_classes"], **config["model_args"])
    with accelerator.main_process_first():  # The first process fills the datasets cache, the others read it.
        source, pipeline = load_data(config, net)
    num_classes = config["num_classes"] or source.num_classes
    if net.num_classes != num_classes:
        net.reset_classifier(num_classes)
    check_labels(pipeline, num_classes, source.description)
    if source.num_classes > num_classes:
        raise RecipeError(
            f"{source.description} has {source.num_classes} classes (labels up to {source.num_classes - 1}) but "
            f"num_classes is {num_classes}; set num_classes to at least {source.num_classes}")

    # Order matters: model on its device and memory format before the optimizer is built.
    net = net.to(accelerator.device)
    if config["channels_last"]:
        net = net.to(memory_format=torch.channels_last)
    module = TrainingModule(net)
    ema = None
    if config["model_ema"]:
        from timm.utils import ModelEmaV3

        ema = ModelEmaV3(net, decay=config["model_ema_decay"])

    sampler = EpochShuffleSampler(len(pipeline.train_dataset), config["seed"])
    workers = pipeline.num_workers if config["num_workers"] is None else config["num_workers"]
    # Explicit generators keep the DataLoaders from drawing worker seeds out of the global RNG.
    loader_generator = torch.Generator().manual_seed(config["seed"])
    train_dl = torch.utils.data.DataLoader(
        pipeline.train_dataset, batch_size=config["batch_size"], sampler=sampler, drop_last=True,
        num_workers=workers, persistent_workers=workers > 0, generator=loader_generator)
    eval_dl = torch.utils.data.DataLoader(
        pipeline.eval_dataset, batch_size=eval_batch, shuffle=False, num_workers=workers,
        generator=torch.Generator().manual_seed(config["seed"]))
    if len(train_dl) == 0:
        raise RecipeError(
            f"{len(pipeline.train_dataset)} training images make no full batch of {config['batch_size']}; lower "
            "batch_size or raise max_train_samples")
    micro_steps = len(train_dl)
    steps_per_epoch = math.ceil(micro_steps / config["grad_accum_steps"])
    total_steps = steps_per_epoch * config["epochs"]

    optimizer = torch.optim.SGD(
        param_groups(module, config["weight_decay"]), lr=config["lr"], momentum=config["momentum"],
        nesterov=bool(config["nesterov"]) and config["momentum"] > 0)
    schedule = LRSchedule(total_steps, steps_per_epoch, config["warmup_epochs"], config["warmup_factor"],
                          config["sched"], config["min_lr"] / config["lr"], config["decay_epochs"],
                          config["decay_rate"])
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
    model, optimizer, train_dl, eval_dl, scheduler = accelerator.prepare(
        module, optimizer, train_dl, eval_dl, scheduler)
    if ema is not None:
        accelerator.register_for_checkpointing(ema)
    # The global RNG drives the gater's training noise. Every process was seeded alike so that the initial weights
    # agree; from here on each process gets its own stream, or the two halves of a batch would share their noise.
    set_seed(config["seed"], device_specific=True)
    criterion = nn.CrossEntropyLoss(label_smoothing=config["label_smoothing"])

    start_epoch, skip_batches, global_step = 0, 0, 0
    carried: dict[str, float] = {}
    if checkpoint is not None:
        accelerator.load_state(str(checkpoint))
        saved = json.loads((checkpoint / CHECKPOINT_STATE).read_text())
        start_epoch, skip_batches, global_step = saved["epoch"], saved["step_in_epoch"], saved["global_step"]
        carried = saved.get("epoch_sums", {})
        numbers = [_checkpoint_number(p) for p in list_checkpoints(out)]
        accelerator.project_configuration.iteration = max(numbers + [_checkpoint_number(checkpoint)]) + 1
        accelerator.print(f"resumed from {checkpoint}: epoch {start_epoch}, batch {skip_batches}, step {global_step}")

    runtime = {
        "num_processes": world,
        "distributed_type": str(accelerator.distributed_type),
        "mixed_precision": accelerator.mixed_precision,
        "device": str(accelerator.device),
        "train_samples": len(pipeline.train_dataset),
        "eval_samples": len(pipeline.eval_dataset),
        "num_classes": num_classes,
        "pipeline": pipeline.kind,
        "steps_per_epoch": steps_per_epoch,
        "data_description": source.description,
        "command": " ".join(shlex.quote(a) for a in sys.argv),
        "versions": {"torch": torch.__version__, "gaternet_zoo": gaternet_zoo.__version__,
                     "accelerate": __import__("accelerate").__version__},
    }
    if checkpoint is not None:
        runtime["resumed_from"] = str(checkpoint)
    if accelerator.is_main_process:
        old = out / "config.yaml"
        if resuming and old.is_file():
            previous = yaml.safe_load(old.read_text()) or {}
            changed = [k for k in _SCHEDULE_KEYS if k in previous and previous[k] != config[k]]
            if changed:
                accelerator.print(f"warning: resuming with changed {changed}; the run will not match an "
                                  "uninterrupted one")
        resolved = {k: _jsonable(v) for k, v in config.items()}
        resolved["runtime"] = _jsonable(runtime)
        (out / "config.yaml").write_text(yaml.safe_dump(resolved, sort_keys=False))
        if resuming:
            truncate_metrics(out, start_epoch)
    hparams = {k: v if isinstance(v, (int, float, str, bool)) else str(v) for k, v in config.items()}
    hparams["num_processes"] = world
    accelerator.init_trackers("train", config=hparams)

    augment = pipeline.augment
    rank, local_batch = accelerator.process_index, config["batch_size"] // world

    def train_input(pixels: torch.Tensor, epoch: int, index: int) -> torch.Tensor:
        if pipeline.kind != "tensor":
            return pipeline.prepare_batch(pixels, train=True)
        from gaternet_zoo.data import augmentation_generator

        # Draw the crops and flips of the whole global batch and keep this process's slice: each image gets the
        # same augmentation whatever the number of processes.
        offsets, flips = augment.sample(config["batch_size"], augmentation_generator(config["seed"], epoch, index))
        sl = slice(rank * local_batch, (rank + 1) * local_batch)
        return pipeline.normalize(augment.apply(pixels, offsets[sl], flips[sl]))

    def eval_input(batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        return pipeline.prepare_batch(batch["pixel_values"], train=False), batch["label"]

    def save_checkpoint(epoch: int, step_in_epoch: int, sums: dict[str, float]) -> None:
        accelerator.save_state()
        accelerator.wait_for_everyone()  # Every process has written its RNG state before the folder is marked.
        if accelerator.is_main_process:
            folder = max(list_checkpoints(out), key=_checkpoint_number)
            write_json_atomic(folder / CHECKPOINT_STATE, {
                "epoch": epoch, "step_in_epoch": step_in_epoch, "global_step": global_step,
                "epoch_sums": sums, "num_processes": world, "saved_at": time.time()})
        accelerator.wait_for_everyone()

    every = config["checkpoint_every_steps"]
    record: dict[str, Any] = {}
    for epoch in range(start_epoch, config["epochs"]):
        model.train()
        sampler.set_epoch(epoch)
        train_dl.set_epoch(epoch)
        loader_generator.manual_seed(config["seed"] + epoch)  # Worker seeds of this epoch, same after a resume.
        first = skip_batches if epoch == start_epoch else 0
        loader = accelerator.skip_first_batches(train_dl, first) if first else train_dl
        if first:
            loader.set_epoch(epoch)
        sums = {"loss": 0.0, "ce": 0.0, "gate": 0.0, "batches": 0.0}
        if epoch == start_epoch and first:
            sums.update(carried)
        loss_sum = torch.zeros((), dtype=torch.float64, device=accelerator.device)
        ce_sum = torch.zeros_like(loss_sum)
        gate_sum = torch.zeros_like(loss_sum)
        batches = 0
        t0 = time.perf_counter()
        progress = _progress(accelerator, micro_steps, first, f"epoch {epoch + 1}/{config['epochs']}")
        for index, batch in enumerate(loader, start=first):
            x = train_input(batch["pixel_values"], epoch, index)
            with accelerator.accumulate(model):
                logits, gates = model(x)
                ce = criterion(logits.float(), batch["label"])
                gate_term = gate_l1_loss(gates.float(), config["gate_l1"]) if gates is not None else ce.new_zeros(())
                loss = ce + gate_term if config["gate_l1"] > 0 and gates is not None else ce
                accelerator.backward(loss)
                if accelerator.sync_gradients and config["clip_grad"]:
                    accelerator.clip_grad_norm_(model.parameters(), config["clip_grad"])
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
            loss_sum += loss.detach().double()
            ce_sum += ce.detach().double()
            gate_sum += gate_term.detach().double()
            batches += 1
            if progress is not None:
                progress.update(1)
                progress.set_postfix(loss=f"{loss.item():.3f}", refresh=False)
            if accelerator.sync_gradients:
                global_step += 1
                if ema is not None:
                    ema.update(accelerator.unwrap_model(model).net, step=global_step)
                if every and global_step % every == 0 and index + 1 < micro_steps:
                    mid = _merge_sums(sums, loss_sum, ce_sum, gate_sum, batches)
                    save_checkpoint(epoch, index + 1, mid)
        if progress is not None:
            progress.close()
        train_time = time.perf_counter() - t0
        sums = _merge_sums(sums, loss_sum, ce_sum, gate_sum, batches)
        # Mean over processes of each process's mean loss (they saw equal shares of every batch).
        means = accelerator.reduce(
            torch.tensor([sums["loss"], sums["ce"], sums["gate"]], dtype=torch.float64, device=accelerator.device)
            / max(sums["batches"], 1.0), reduction="mean")

        unwrapped = accelerator.unwrap_model(model).net
        broadcast_buffers(unwrapped, world)
        metrics = run_evaluation(unwrapped, eval_dl, accelerator, prepare_batch=eval_input, num_classes=num_classes)
        if ema is not None:
            broadcast_buffers(ema, world)
            ema_metrics = run_evaluation(ema.module, eval_dl, accelerator, prepare_batch=eval_input,
                                         num_classes=num_classes)
            metrics.update({f"ema_{k}": v for k, v in ema_metrics.items() if not k.startswith("_")})
            metrics["_ema_gate_stats"] = ema_metrics["_gate_stats"]
        record = {
            "epoch": epoch,
            "global_step": global_step,
            "lr": scheduler.get_last_lr()[0],
            "train_loss": float(means[0]),
            "train_ce": float(means[1]),
            "train_gate_l1": float(means[2]),
            "train_images_per_sec": batches * config["batch_size"] / train_time if train_time > 0 else None,
            "epoch_train_seconds": train_time,
            "num_processes": world,
            **{k: v for k, v in metrics.items() if not k.startswith("_")},
        }
        if accelerator.is_main_process:
            append_metrics(out, record)
        accelerator.log({k: v for k, v in record.items() if isinstance(v, (int, float)) and k != "epoch"},
                        step=global_step)
        accelerator.print(
            f"epoch {epoch + 1}/{config['epochs']}: loss {record['train_loss']:.4f}  top1 {record['top1']:.2f}  "
            f"top5 {record['top5']:.2f}  {record['train_images_per_sec'] or 0:.0f} img/s"
            + (f"  open gates {record['gate_open_fraction']:.3f}" if "gate_open_fraction" in record else ""))
        save_checkpoint(epoch + 1, 0, {})
        record["_gate_stats"] = metrics["_ema_gate_stats"] if ema is not None else metrics["_gate_stats"]

    if not record:
        # Resumed from the last epoch's checkpoint (killed before final/ was written): measure again to save it.
        unwrapped = accelerator.unwrap_model(model).net
        evaluated = ema.module if ema is not None else unwrapped
        broadcast_buffers(evaluated, world)
        metrics = run_evaluation(evaluated, eval_dl, accelerator, prepare_batch=eval_input, num_classes=num_classes)
        prefix = "ema_" if ema is not None else ""
        record = {"epoch": start_epoch - 1, "global_step": global_step, "train_images_per_sec": None,
                  "num_processes": world, **{prefix + k: v for k, v in metrics.items() if not k.startswith("_")},
                  "_gate_stats": metrics["_gate_stats"]}

    accelerator.wait_for_everyone()
    final_net = ema.module if ema is not None else accelerator.unwrap_model(model).net
    if accelerator.is_main_process:
        prefix = "ema_" if ema is not None else ""
        cfg = dict(final_net.pretrained_cfg or {})
        # These are new weights, not those of the tag the model was built from (or fine-tuned from).
        cfg["tag"] = None
        for key in ("sha256", "revision", "hf_hub_id", "file", "source"):
            cfg.pop(key, None)
        cfg["num_classes"] = num_classes
        cfg["label_names"] = list(source.class_names)
        if pipeline.kind == "tensor":
            cfg["mean"], cfg["std"] = pipeline.normalize.mean, pipeline.normalize.std
        cfg["metrics"] = {
            "top1": record[f"{prefix}top1"], "top5": record[f"{prefix}top5"], "eval_loss": record[f"{prefix}eval_loss"],
            "eval_samples": record[f"{prefix}eval_samples"], "epochs": config["epochs"],
            "train_images_per_sec": record["train_images_per_sec"], "num_processes": world,
        }
        if record.get("_gate_stats") is not None:
            cfg["gate_stats"] = _jsonable(record["_gate_stats"])
        cfg["dataset"] = config["data"] if isinstance(config["data"], str) else source.description
        cfg["recipe"] = {"command": runtime["command"], "config": str((out / "config.yaml").resolve())}
        final_net.pretrained_cfg = cfg
        final_net.save_pretrained(out / "final")
        if config["push_to_hub"]:
            final_net.push_to_hub(config["push_to_hub"], commit_message="Add model trained with recipes/train.py")
        accelerator.print(f"saved {out / 'final'}")
    accelerator.wait_for_everyone()
    accelerator.end_training()
    return {k: v for k, v in record.items() if not k.startswith("_")}


def _merge_sums(base: dict[str, float], loss: torch.Tensor, ce: torch.Tensor, gate: torch.Tensor,
                batches: int) -> dict[str, float]:
    return {"loss": base["loss"] + float(loss), "ce": base["ce"] + float(ce), "gate": base["gate"] + float(gate),
            "batches": base["batches"] + batches}


def _progress(accelerator, total: int, initial: int, desc: str):
    """A tqdm bar on the main process when stderr is a terminal, else ``None``."""
    if not accelerator.is_main_process or not sys.stderr.isatty():
        return None
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return None
    return tqdm(total=total, initial=initial, desc=desc, dynamic_ncols=True, leave=False)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Parse the command line and train; returns the last epoch's metrics."""
    config, args = parse_args(argv)
    return training_function(config, args)


if __name__ == "__main__":
    try:
        main()
    except RecipeError as err:
        print(f"train.py: error: {err}", file=sys.stderr)
        sys.exit(2)
    except ValueError as err:
        from gaternet_zoo.data import DataSourceError

        if not isinstance(err, DataSourceError):
            raise
        print(f"train.py: error: {err}", file=sys.stderr)  # A data-source message is complete without a traceback.
        sys.exit(2)
