"""Train a gaternet_zoo model (a GaterNet or a plain backbone) with Hugging Face Accelerate.

The shape of Accelerate's ``examples/complete_cv_example.py`` (``training_function(config, args)``, ``main()``),
built from the libraries' parts: timm's param groups, optimizer, per-update scheduler and ``distribute_bn``;
Accelerate's seedable sampler, ``accumulate``, ``skip_first_batches`` and ``save_state``; ``gaternet_zoo.training``
for run folders, divergence checks and the GaterNet options. ``recipes/README.md`` describes every setting.

    accelerate launch recipes/train.py                                   # recipes/configs/default.yaml
    accelerate launch recipes/train.py --config recipes/configs/cifar10_gaternet_resnet20.yaml --lr 0.05
    python recipes/train.py --output-dir runs/x --resume latest          # continue a killed run exactly

Settings: built-in defaults < ``default.yaml`` or ``--config`` (below it, a resumed run's ``config.yaml``) < flags,
all of them fields of ``gaternet_zoo.training.TrainConfig``, from which ``--help`` is generated.
Data order comes from ``seed + epoch``, augmentation from ``(seed, epoch, batch)``, the LR and gate warm-ups from
the optimizer step, and ``save_state`` keeps everything else: a run killed at any moment and resumed with
``--resume latest`` ends bit-identical to an uninterrupted one (same hardware, process and thread count).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator, PartialState
from accelerate.utils import DataLoaderConfiguration, ProjectConfiguration, set_seed
from timm.optim import create_optimizer_v2
from timm.scheduler import create_scheduler_v2
from timm.utils import ModelEmaV3, distribute_bn

import gaternet_zoo
import gaternet_zoo.training as zt
from gaternet_zoo.data import DataSourceError, augmentation_generator
from gaternet_zoo.evaluation import has_gates
from gaternet_zoo.training import CHECKPOINT_STATE, RecipeError, TrainConfig, TrainInvocation

DEFAULT_CONFIG = Path(__file__).resolve().parent / "configs" / "default.yaml"
# Flags that describe one invocation, not the experiment: they never come from, nor go to, a config file.
CLI_ONLY_KEYS = frozenset(f.name for f in dataclasses.fields(TrainInvocation))
__all__ = ["CHECKPOINT_STATE", "RecipeError", "build_parser", "main", "parse_args", "training_function"]


def build_parser(defaults: TrainConfig | None = None) -> argparse.ArgumentParser:
    """The command line, generated from ``TrainConfig``'s fields (``gaternet_zoo.training.build_train_parser``)."""
    return zt.build_train_parser(defaults)


def parse_args(argv: Sequence[str] | None = None) -> tuple[TrainConfig, TrainInvocation]:
    """Resolve ``(config, args)``: the checked settings and the invocation's CLI-only flags (timm's two-stage parse)."""
    return zt.parse_train_args(argv, default_config=DEFAULT_CONFIG)


def build_optimizer(config: TrainConfig, net: torch.nn.Module, steps_per_epoch: int):
    """SGD over timm's param groups (the gater's own when asked) and timm's scheduler, stepped per update."""
    no_decay = net.no_weight_decay() if hasattr(net, "no_weight_decay") else ()
    groups = zt.gater_param_groups(net, config.weight_decay, gater_lr_scale=config.gater_lr_scale,
                                   gater_weight_decay=config.gater_weight_decay, no_weight_decay_list=no_decay)
    nesterov = bool(config.nesterov) and config.momentum > 0
    optimizer = create_optimizer_v2(groups, opt="sgd" if nesterov else "momentum", lr=config.lr,
                                    weight_decay=config.weight_decay, momentum=config.momentum)
    total = steps_per_epoch * config.epochs
    warmup = min(round(config.warmup_epochs * steps_per_epoch), total - 1) / steps_per_epoch
    cosine = config.sched == "cosine"  # Cosine after the warm-up (prefix); step decay counts from step 0.
    scheduler, _ = create_scheduler_v2(
        optimizer, sched=config.sched, num_epochs=config.epochs - warmup if cosine else config.epochs,
        decay_epochs=config.decay_epochs, decay_rate=config.decay_rate, min_lr=config.min_lr,
        warmup_lr=config.lr * config.warmup_factor, warmup_epochs=warmup, warmup_prefix=cosine,
        step_on_epochs=False, updates_per_epoch=steps_per_epoch)
    return optimizer, scheduler


def training_function(config: TrainConfig, args: TrainInvocation) -> dict[str, Any]:
    """Train, evaluate every epoch, checkpoint, and save ``final/``; returns the last epoch's metrics."""
    zt.check_world_size(None)
    use_cpu = bool(config.cpu) or not torch.cuda.is_available()
    out, checkpoint = zt.prepare_run_folder(config.output_dir, args.resume, args.overwrite, config.model,
                                            PartialState(cpu=use_cpu))
    config = dataclasses.replace(config, output_dir=str(out))  # The folder chosen, for config.yaml and final/.
    run_record = zt.RunRecord(out)  # Every file of the run folder is written (and read) through it.
    precision, precision_note = zt.resolve_mixed_precision(config.mixed_precision, cpu=use_cpu)
    accelerator = Accelerator(
        cpu=use_cpu, mixed_precision=precision, gradient_accumulation_steps=config.grad_accum_steps,
        # split_batches: --batch-size is the global batch. The seedable sampler draws the order from seed + epoch.
        dataloader_config=DataLoaderConfiguration(split_batches=True, use_seedable_sampler=True,
                                                  data_seed=config.seed),
        dynamo_backend="inductor" if config.torchcompile else None, log_with=["tensorboard"],
        project_config=ProjectConfiguration(project_dir=str(out), logging_dir=str(out / "logs"),
                                            automatic_checkpoint_naming=True, total_limit=config.keep_checkpoints))
    zt.check_world_size(accelerator.num_processes)
    zt.quiet_checkpoint_rotation()
    if precision_note:
        accelerator.print(precision_note)
    world, eval_batch = accelerator.num_processes, config.eval_batch_size or config.batch_size
    for key, value in (("batch_size", config.batch_size), ("eval_batch_size", eval_batch)):
        if value % world:
            raise RecipeError(f"{key} {value} must be divisible by the {world} processes")

    set_seed(config.seed)  # Before the model: the seed decides the initialisation (as Accelerate's examples).
    net = gaternet_zoo.create_model(config.model, num_classes=config.num_classes, **config.model_args)
    with accelerator.main_process_first():  # The first process fills the datasets cache, the others read it.
        data = zt.load_training_data(
            config.data, model=net, train_split=config.train_split, eval_split=config.eval_split,
            image_column=config.image_column, label_column=config.label_column,
            num_classes=config.num_classes, val_split=config.val_split, test_at_end=config.test_at_end,
            max_train_samples=config.max_train_samples, max_eval_samples=config.max_eval_samples,
            channels_last=config.channels_last)
    pipeline, num_classes, gated = data.pipeline, data.num_classes, has_gates(net)
    if net.num_classes != num_classes:
        net.reset_classifier(num_classes)
    # Warm starts fill the fresh model before the gate bias, the device move and the optimizer; a resumed run takes
    # its weights from the checkpoint, and keeps the record of the warm starts of its first start.
    if checkpoint is None:
        warm_starts = [zt.warm_start(net, source, part=part).record()
                       for source, part in ((config.init_from, "model"), (config.init_gater_from, "gater")) if source]
        for warm in warm_starts:
            accelerator.print(f"warm start: {warm['description']}")
    else:
        warm_starts = run_record.warm_starts()
    if config.gate_init_bias is not None:
        zt.set_gate_init_bias(net, config.gate_init_bias)
    net = net.to(accelerator.device)  # On its device and memory format before the optimizer is built.
    if config.channels_last:
        net = net.to(memory_format=torch.channels_last)
    ema = ModelEmaV3(net, decay=config.model_ema_decay) if config.model_ema else None

    train_dl, eval_dls, loader_generator = build_dataloaders(config, data, eval_batch)
    micro_steps = len(train_dl)
    steps_per_epoch = -(-micro_steps // config.grad_accum_steps)
    gate_objective = zt.GateObjective(net, config.gate_l1, config.gate_budget, config.gate_budget_target,
                                      config.gate_budget_weight,
                                      warmup_steps=round(config.gate_loss_warmup_epochs * steps_per_epoch))
    optimizer, scheduler = build_optimizer(config, net, steps_per_epoch)
    warmup = zt.GateWarmup.for_model(
        net, discrete_prob_start=config.gate_discrete_prob_start, noise_std_start=config.gate_noise_std_start,
        discrete_prob_steps=round(config.gate_discrete_prob_warmup_epochs * steps_per_epoch),
        noise_steps=round(config.gate_noise_warmup_epochs * steps_per_epoch))
    model, optimizer, train_dl, *eval_dls = accelerator.prepare(net, optimizer, train_dl, *eval_dls)
    if ema is not None:
        accelerator.register_for_checkpointing(ema)
    # The global RNG drives the gater's training noise: one stream per process from here on, or the two halves of a
    # batch would share their noise (every process was seeded alike so that the initial weights agree).
    set_seed(config.seed, device_specific=True)
    criterion = torch.nn.CrossEntropyLoss(label_smoothing=config.label_smoothing)

    start_epoch, skip_batches, global_step, carried = 0, 0, 0, {}
    if checkpoint is not None:
        zt.check_checkpoint_matches(checkpoint, model, config.model)
        zt.check_resume(checkpoint, config, steps_per_epoch=steps_per_epoch, micro_steps=micro_steps,
                        num_processes=world)
        accelerator.load_state(str(checkpoint))
        saved = json.loads((checkpoint / CHECKPOINT_STATE).read_text())
        start_epoch, skip_batches, global_step = saved["epoch"], saved["step_in_epoch"], saved["global_step"]
        carried = saved.get("epoch_sums", {})
        numbers = [zt.checkpoint_number(p) for p in zt.list_checkpoints(out)]
        accelerator.project_configuration.iteration = max(numbers + [zt.checkpoint_number(checkpoint)]) + 1
        accelerator.print(f"resumed from {checkpoint}: epoch {start_epoch}, batch {skip_batches}, step {global_step}")
    scheduler.step_update(global_step)
    runtime = zt.runtime_record(accelerator, data, checkpoint=checkpoint, steps_per_epoch=steps_per_epoch,
                                warm_starts=warm_starts)
    if accelerator.is_main_process:
        run_record.write_config(config, runtime)  # check_resume refused any change
        if checkpoint is not None:
            run_record.truncate_epochs(start_epoch)
    accelerator.init_trackers("train", config={k: v if isinstance(v, (int, float, str, bool)) else str(v)
                                               for k, v in {**config.to_dict(), "num_processes": world}.items()})

    def train_input(pixels: torch.Tensor, epoch: int, index: int) -> torch.Tensor:
        if pipeline.kind != "tensor":
            return pipeline.prepare_batch(pixels, train=True)
        # Crops and flips of the whole global batch, this process's slice kept: the same for any process count.
        offsets, flips = pipeline.augment.sample(config.batch_size,
                                                 augmentation_generator(config.seed, epoch, index))
        local = slice(accelerator.process_index * len(pixels), (accelerator.process_index + 1) * len(pixels))
        return pipeline.normalize(pipeline.augment.apply(pixels, offsets[local], flips[local]))

    def evaluate(module: torch.nn.Module, dl) -> dict[str, Any]:
        if world > 1:
            distribute_bn(module, world, reduce=False)  # Rank 0's BatchNorm statistics: the model that is saved.
        return zt.evaluation_metrics(module, dl, accelerator, num_classes=num_classes, prepare_batch=lambda b: (
            pipeline.prepare_batch(b["pixel_values"], train=False), b["label"]))

    def save_checkpoint(epoch: int, step_in_epoch: int, sums: dict[str, float]) -> None:
        if not zt.all_finite(net):  # Never a checkpoint (or final/) of non-finite weights: the last good one stays.
            raise diverged("the weights are not finite", None, *((epoch, step_in_epoch) if step_in_epoch
                                                                  else (epoch - 1, micro_steps)))
        zt.save_checkpoint_state(accelerator, out)  # A full disk: an error naming the file and the intact checkpoint.
        accelerator.wait_for_everyone()  # Every process has written its RNG state before the folder is marked.
        if accelerator.is_main_process:
            zt.write_json_atomic(max(zt.list_checkpoints(out), key=zt.checkpoint_number) / CHECKPOINT_STATE, {
                "epoch": epoch, "step_in_epoch": step_in_epoch, "global_step": global_step, "epoch_sums": sums,
                "num_processes": world, "saved_at": time.time()})
        accelerator.wait_for_everyone()

    def diverged(what: str, x: torch.Tensor | None, epoch: int, index: int) -> zt.TrainingDivergedError:
        good = [p for p in zt.list_checkpoints(out) if (p / CHECKPOINT_STATE).is_file()]
        return zt.TrainingDivergedError(zt.divergence_message(
            what, step=global_step + 1, epoch=epoch + 1, num_epochs=config.epochs, batch=index,
            lr=optimizer.param_groups[0]["lr"], inputs_finite=None if x is None else bool(torch.isfinite(x).all()),
            last_checkpoint=str(good[-1]) if good else None))

    split, every, record = ("val_" if config.val_split else ""), config.checkpoint_every_steps, {}
    check_grads = accelerator.mixed_precision != "fp16"  # fp16's loss scaler skips inf gradients by design.
    final_net = ema.module if ema is not None else net
    clock = zt.TimeEstimate(accelerator, config.epochs - start_epoch, micro_steps, skip_batches)
    for epoch in range(start_epoch, config.epochs):
        model.train()
        train_dl.set_epoch(epoch)
        loader_generator.manual_seed(config.seed + epoch)  # Worker seeds of this epoch, same after a resume.
        first = skip_batches if epoch == start_epoch else 0
        loader = accelerator.skip_first_batches(train_dl, first) if first else train_dl
        if first:
            loader.set_epoch(epoch)
        sums = dict(carried) if first else {"loss": 0.0, "ce": 0.0, "gate": 0.0, "batches": 0.0}
        running = torch.zeros(4, dtype=torch.float64, device=accelerator.device)  # loss, ce, gate, non-finite
        t0, progress = time.perf_counter(), zt.EpochProgress(accelerator, micro_steps, first,
                                                              f"epoch {epoch + 1}/{config.epochs}")
        for index, batch in enumerate(loader, start=first):
            if warmup is not None:
                warmup.apply(net, global_step)
            x = train_input(batch["pixel_values"], epoch, index)
            with accelerator.accumulate(model):
                logits, gates = model(x, return_gates=True) if gated else (model(x), None)
                ce = criterion(logits.float(), batch["label"])
                gate_term = gate_objective(gates, global_step) if gate_objective.active else ce.new_zeros(())
                loss = ce + gate_term if gate_objective.active else ce
                accelerator.backward(loss)
                running += torch.stack([loss.detach(), ce.detach(), gate_term.detach(),
                                        (~torch.isfinite(loss.detach())).to(loss.dtype)]).double()
                if accelerator.sync_gradients:
                    norm = accelerator.clip_grad_norm_(model.parameters(), config.clip_grad) \
                        if config.clip_grad else zt.grad_norm(model.parameters())
                    bad = torch.stack([running[3].float(), (~torch.isfinite(norm.float())).float() * check_grads])
                    if bool((accelerator.reduce(bad, "sum") if world > 1 else bad).any()):
                        what = "the loss" if bad[0] else f"the gradient norm ({float(norm)})"
                        raise diverged(f"{what} is not finite", x, epoch, index)
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
            progress.step(loss)
            clock.step()
            if accelerator.sync_gradients:
                global_step += 1
                scheduler.step_update(global_step)
                if ema is not None:
                    ema.update(net, step=global_step)
                if every and global_step % every == 0 and index + 1 < micro_steps:
                    save_checkpoint(epoch, index + 1, _merge_sums(sums, running, index + 1 - first))
        progress.close()
        train_time = time.perf_counter() - t0
        sums = _merge_sums(sums, running, micro_steps - first)
        # Mean over processes of each process's mean loss (they saw equal shares of every batch).
        means = accelerator.reduce(torch.tensor([sums["loss"], sums["ce"], sums["gate"]], dtype=torch.float64,
                                                device=accelerator.device) / max(sums["batches"], 1.0), "mean")
        metrics = evaluate(net, eval_dls[0])
        final_metrics = evaluate(ema.module, eval_dls[0]) if ema is not None else metrics
        record = {"epoch": epoch, "global_step": global_step, "lr": zt.param_group_lr(optimizer),
                  "train_loss": float(means[0]), "train_ce": float(means[1]), "train_gate_loss": float(means[2]),
                  "train_images_per_sec": (micro_steps - first) * config.batch_size / train_time,
                  "epoch_train_seconds": train_time, "num_processes": world, **zt.gate_settings(net, optimizer),
                  **zt.metric_fields(metrics, split), **gate_objective.epoch_fields(metrics, split),
                  **({"gate_loss_scale": gate_objective.scale(global_step)} if gate_objective.warmup_steps else {}),
                  **(zt.metric_fields(final_metrics, split, ema=True) if ema is not None else {})}
        if accelerator.is_main_process:
            run_record.append_epoch(record)
        accelerator.log({k: v for k, v in record.items() if isinstance(v, (int, float)) and k != "epoch"},
                        step=global_step)
        accelerator.print(f"epoch {epoch + 1}/{config.epochs}: loss {record['train_loss']:.4f}  {data.eval_name} "
                          f"top1 {metrics['top1']:.2f}  top5 {metrics['top5']:.2f}  "
                          f"{record['train_images_per_sec']:.0f} img/s" + (
                              f"  open gates {metrics['gate_open_fraction']:.3f}" if gated else "") +
                          f"  ({clock.epoch_done()})", flush=True)
        save_checkpoint(epoch + 1, 0, {})

    if not record:  # Resumed from the last epoch's checkpoint (killed before final/): measure again to save it.
        final_metrics = evaluate(final_net, eval_dls[0])
        record = {"epoch": start_epoch - 1, "train_images_per_sec": None}
    if not zt.all_finite(final_net):
        raise RecipeError(f"the trained weights hold NaN or infinite values; no final/ was written to {out}. "
                          "Lower --lr or check the data, and start again.")
    test = evaluate(final_net, eval_dls[1]) if data.test is not None else None
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        save_final(config, data, final_net, test if test is not None else final_metrics, test is not None,
                   record["train_images_per_sec"], runtime)
        accelerator.print(f"saved {out / 'final'}")
    accelerator.wait_for_everyone()
    accelerator.end_training()
    return {**record, **(zt.metric_fields(test, "test_") if test is not None else {})}


def save_final(config: TrainConfig, data: zt.TrainingData, net: torch.nn.Module, measured: dict[str, Any],
               on_test: bool, images_per_sec: float | None, runtime: dict[str, Any]) -> None:
    """Write ``final/`` (and ``test_metrics.json``): the weights with the figures measured on them."""
    run_record, pipeline = zt.RunRecord(config.output_dir), data.pipeline
    if on_test:
        run_record.write_test_metrics(zt.metric_fields(measured, "test_"))
    zt.save_trained_model(
        net, run_record.final_dir, num_classes=data.num_classes, label_names=data.label_names,
        metrics={**{k: measured[k] for k in ("top1", "top5", "eval_loss", "eval_samples")},
                 "eval_split": config.eval_split if on_test else data.eval_name, "epochs": config.epochs,
                 "train_images_per_sec": images_per_sec, "num_processes": runtime["num_processes"]},
        gate_stats=measured["_gate_stats"], push_to_hub=config.push_to_hub,
        dataset=config.data if isinstance(config.data, str) else data.source.description,
        mean_std=(pipeline.normalize.mean, pipeline.normalize.std) if pipeline.kind == "tensor" else None,
        recipe={"command": runtime["command"], "config": str((run_record.path / run_record.CONFIG).resolve()),
                **({"warm_start": "; ".join(w["description"] for w in runtime["warm_starts"])}
                   if runtime["warm_starts"] else {})})


def build_dataloaders(config: TrainConfig, data: zt.TrainingData, eval_batch: int):
    """Training loader (shuffled by Accelerate's seedable sampler once prepared), evaluation loaders, generator."""
    # Explicit generators keep the DataLoaders from drawing (worker) seeds out of the global RNG.
    workers = data.pipeline.num_workers if config.num_workers is None else config.num_workers
    generator = torch.Generator().manual_seed(config.seed)
    train_dl = torch.utils.data.DataLoader(data.train, batch_size=config.batch_size, shuffle=True, drop_last=True,
                                           num_workers=workers, persistent_workers=workers > 0, generator=generator)
    eval_dls = [torch.utils.data.DataLoader(ds, batch_size=eval_batch, num_workers=workers,
                                            generator=torch.Generator().manual_seed(config.seed))
                for ds in (data.eval, data.test) if ds is not None]
    if len(train_dl) == 0:
        raise RecipeError(f"{len(data.train)} training images make no full batch of {config.batch_size}; "
                          "lower batch_size or raise max_train_samples")
    return train_dl, eval_dls, generator


def _merge_sums(base: dict[str, float], running: torch.Tensor, batches: int) -> dict[str, float]:
    return {"loss": base["loss"] + float(running[0]), "ce": base["ce"] + float(running[1]),
            "gate": base["gate"] + float(running[2]), "batches": base["batches"] + batches}


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Parse the command line and train; returns the last epoch's metrics."""
    config, args = parse_args(argv)
    try:
        return training_function(config, args)
    finally:
        zt.release_run_locks()  # The run folder's lock (atexit would release it too, but only at the end).


if __name__ == "__main__":
    try:
        main()
    except (RecipeError, DataSourceError) as err:  # Complete messages: no traceback needed.
        print(f"train.py: error: {err}", file=sys.stderr)
        sys.exit(2)
