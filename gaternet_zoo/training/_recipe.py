"""Recipe plumbing around Accelerate: process checks, the run folder and its record, evaluation fields, final/."""
from __future__ import annotations

import datetime
import logging
import os
import shlex
import shutil
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import accelerate
import torch
from torch import nn

from ..version import __version__
from ._resume import acquire_run_lock, check_run_lock
from ._run_dir import (
    CHECKPOINT_STATE,
    RecipeError,
    check_new_run_dir,
    clear_run_artifacts,
    find_checkpoint,
    jsonable,
    list_checkpoints,
    resolve_run_dir,
)

__all__ = [
    'EpochProgress', 'TimeEstimate', 'check_world_size', 'evaluation_metrics', 'metric_fields', 'prepare_run_folder',
    'quiet_checkpoint_rotation', 'runtime_record', 'save_trained_model',
]


def check_world_size(num_processes: int | None, script: str = 'recipes/train.py') -> None:
    """Fail loudly when the environment asks for several processes but this run is not one of them.

    Args:
        num_processes: ``accelerator.num_processes``, or ``None`` before the Accelerator exists.
        script: The training script, for the suggested command.
    """
    world = int(os.environ.get('WORLD_SIZE', '1') or 1)
    hint = (f'On CPU use `accelerate launch --multi_gpu --num_processes 2 {script} --cpu` for a real 2-process '
            '(gloo) run; note that `accelerate launch --cpu --num_processes 2` starts only ONE process.')
    if world > 1 and num_processes is None and 'RANK' not in os.environ and 'LOCAL_RANK' not in os.environ:
        raise RecipeError(
            f'WORLD_SIZE={world} is set, but this process was not started by a distributed launcher (no RANK or '
            f'LOCAL_RANK): it would train alone while believing it is one of {world}. {hint} Otherwise unset '
            'WORLD_SIZE.')
    if world > 1 and num_processes == 1:
        raise RecipeError(f'WORLD_SIZE={world} is set, but Accelerate runs this training in a single process '
                          f'(accelerator.num_processes == 1). {hint}')


class _DropRotationNotice(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return 'checkpoints to make room for new checkpoint' not in str(record.msg)  # Msg may carry "[RANK 0] ".


def quiet_checkpoint_rotation() -> None:
    """Silence Accelerate's warning on every routine deletion that ``total_limit`` asked for."""
    logger = logging.getLogger('accelerate.accelerator')
    if not any(isinstance(f, _DropRotationNotice) for f in logger.filters):
        logger.addFilter(_DropRotationNotice())


def runtime_record(accelerator: Any, data: Any, *, checkpoint: Path | None, steps_per_epoch: int,
                   warm_starts: Sequence[dict[str, Any]] = ()) -> dict[str, Any]:
    """What a run actually used (processes, precision, data sizes, command, versions), for its ``config.yaml``.

    Args:
        accelerator: The run's ``Accelerator``.
        data: The run's :class:`TrainingData`.
        checkpoint: The checkpoint it resumed from, or ``None``.
        steps_per_epoch: Optimizer steps per epoch.
        warm_starts: ``WarmStart.record()`` of each warm start of the run (made when the run first started).
    """
    return {
        'num_processes': accelerator.num_processes, 'distributed_type': str(accelerator.distributed_type),
        'device': str(accelerator.device), 'mixed_precision': accelerator.mixed_precision,
        'train_samples': len(data.train), 'eval_samples': len(data.eval), 'eval_split': data.eval_name,
        'test_samples': len(data.test) if data.test is not None else None, 'num_classes': data.num_classes,
        'pipeline': data.pipeline.kind, 'steps_per_epoch': steps_per_epoch,
        'data_description': data.source.description, 'command': ' '.join(shlex.quote(a) for a in sys.argv),
        'resumed_from': str(checkpoint) if checkpoint else None, 'warm_starts': list(warm_starts),
        'versions': {'torch': torch.__version__, 'gaternet_zoo': __version__, 'accelerate': accelerate.__version__}}


def prepare_run_folder(output_dir: str | None, resume: str | None, overwrite: bool, name: str,
                       state: Any) -> tuple[Path, Path | None]:
    """Check (or name) the run folder, take its lock and find the checkpoint to resume, before any work is done.

    Args:
        output_dir: ``--output-dir`` or ``None`` for ``runs/<name>-<YYYYmmdd-HHMMSS>`` (rank 0's time).
        resume: ``--resume latest|PATH`` or ``None``.
        overwrite: ``--overwrite``: delete the recipe's artifacts of a previous run first.
        name: Model name, for the default folder name.
        state: Accelerate's ``PartialState``.

    Returns:
        The run folder (created) and the complete checkpoint to resume from, or ``None``.
    """
    from accelerate.utils import broadcast_object_list

    resuming = resume is not None
    out = resolve_run_dir(resume, output_dir) if resuming else (Path(output_dir) if output_dir else None)
    if out is None:  # The default name holds a timestamp: take rank 0's so all processes share one folder.
        stamp = [datetime.datetime.now().strftime('%Y%m%d-%H%M%S')]
        if state.num_processes > 1:
            broadcast_object_list(stamp, from_process=0)
        out = Path('runs') / f"{name.replace('/', '_').replace(':', '_')}-{stamp[0]}"
    check_run_lock(out)  # Another live training in this folder: refused (by every process, before the lock is taken).
    check_new_run_dir(out, resuming=resuming, overwrite=overwrite)
    checkpoint = find_checkpoint(resume, out) if resuming else None
    state.wait_for_everyone()  # Every process has checked the folder before the main one writes into it.
    if state.is_main_process:
        if overwrite and not resuming:
            clear_run_artifacts(out)
        out.mkdir(parents=True, exist_ok=True)
        acquire_run_lock(out)
        # Folders without the completion marker are saves a killed run never finished. Complete checkpoints are
        # kept even when newer than the one resumed from (never lose work).
        for stale in list_checkpoints(out) if resuming else []:
            if not (stale / CHECKPOINT_STATE).is_file() and stale != checkpoint:
                shutil.rmtree(stale)
    state.wait_for_everyone()
    return out, checkpoint


class EpochProgress:
    """A tqdm bar over an epoch's batches, on the main process when stderr is a terminal; otherwise it does nothing.

    Args:
        accelerator: The run's ``Accelerator``.
        total: Batches in the epoch.
        initial: Batches already done (a resumed epoch).
        desc: Label, e.g. ``"epoch 3/30"``.
    """

    def __init__(self, accelerator: Any, total: int, initial: int, desc: str) -> None:
        self.bar = None
        if accelerator.is_main_process and sys.stderr.isatty():
            try:
                from tqdm.auto import tqdm
            except ImportError:  # tqdm comes with the [train] extra
                return
            self.bar = tqdm(total=total, initial=initial, desc=desc, dynamic_ncols=True, leave=False)

    def step(self, loss: torch.Tensor) -> None:
        """One batch done; shows its loss (a host sync, only when the bar is shown)."""
        if self.bar is not None:
            self.bar.update(1)
            self.bar.set_postfix(loss=f'{loss.item():.3f}', refresh=False)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def format_duration(seconds: float) -> str:
    """``"4 min 05 s"``, ``"1 h 02 min"`` or ``"42 s"``: a duration as the run's log shows it."""
    seconds = max(0, round(seconds))
    if seconds >= 3600:
        return f'{seconds // 3600} h {seconds % 3600 // 60:02d} min'
    return f'{seconds // 60} min {seconds % 60:02d} s' if seconds >= 60 else f'{seconds} s'


class TimeEstimate:
    """Says how long a run will take: once after its first measured steps, then after every epoch.

    The first ``skip`` steps are left out of the measurement (allocator and thread-pool warm-up make them slow),
    then ``measure`` steps are timed. Lines go through ``accelerator.print`` and are flushed, so they appear at once
    when the output is a pipe or a file (``make demo | tee log``), not only on a terminal.

    Args:
        accelerator: The run's ``Accelerator`` (only the main process prints).
        epochs: Epochs still to run, this one included.
        steps_per_epoch: Batches per epoch.
        skip_first: Batches of the first epoch already done (a resumed run).
        skip: Steps left out before the measurement starts.
        measure: Steps timed for the first estimate.
    """

    def __init__(self, accelerator: Any, epochs: int, steps_per_epoch: int, skip_first: int = 0, *, skip: int = 3,
                 measure: int = 10) -> None:
        self.accelerator, self.epochs, self.steps_per_epoch = accelerator, epochs, steps_per_epoch
        self.total = max(epochs * steps_per_epoch - skip_first, 0)
        self.skip, self.measure = skip, measure
        self.done, self.epochs_done, self.start, self.measured_from = 0, 0, time.perf_counter(), None
        self.announced = False

    def step(self) -> str | None:
        """One training batch done; returns (and prints) the first estimate when the measurement completes."""
        self.done += 1
        if self.announced or self.epochs_done:
            return None
        if self.done == self.skip:
            self.measured_from = time.perf_counter()
            return None
        timed = self.done - self.skip
        if self.measured_from is None or timed < self.measure:
            return None
        self.announced = True
        per_step = (time.perf_counter() - self.measured_from) / timed
        line = (f'estimated training time: about {format_duration(per_step * self.total)} for {self.total} batches '
                f'({per_step:.2f} s/batch over batches {self.skip + 1}-{self.done}), plus an evaluation after each of '
                f'the {self.epochs} epochs; it scales with the cores or GPU, the threads and any other load')
        self.accelerator.print(line, flush=True)
        return line

    def epoch_done(self) -> str:
        """The remaining time after an epoch (training and evaluation), from the mean epoch so far."""
        self.epochs_done += 1
        elapsed = time.perf_counter() - self.start
        left = elapsed / self.epochs_done * (self.epochs - self.epochs_done)
        return f'{format_duration(elapsed)} elapsed, about {format_duration(left)} left'


def evaluation_metrics(net: nn.Module, dataloader: Any, accelerator: Any, *,
                       prepare_batch: Callable[[Any], tuple[torch.Tensor, torch.Tensor]],
                       num_classes: int) -> dict[str, Any]:
    """Run ``gaternet_zoo.evaluation.evaluate`` and flatten the result into metric fields.

    The fields are ``top1``, ``top5``, ``eval_loss``, ``eval_samples``, ``eval_images_per_sec`` and, for GaterNets,
    ``gate_open_fraction``, ``gates_always_on``/``_off``/``_input_dependent``, ``gate_open_fraction_per_block`` and
    ``gate_closed_fraction_per_block`` (samples whose gates in the block were all closed, or its branch gate), and
    with branch gates ``gate_branch_open_fraction_per_block`` and ``gate_effective_open_fraction_per_block``;
    ``_gate_stats`` holds the full gate summary (``None`` for plain backbones). See :func:`metric_fields`.
    """
    from ..evaluation import evaluate

    result = evaluate(net, dataloader, accelerator, prepare_batch=prepare_batch, num_classes=num_classes)
    out = {'top1': result.top1, 'top5': result.top5, 'eval_loss': result.loss, 'eval_samples': result.num_samples,
           'eval_images_per_sec': result.images_per_second}
    gates = result.gate_stats.summary() if result.gate_stats is not None else None
    if gates is not None:
        out.update({'gate_open_fraction': gates['mean_open_fraction'], 'gates_always_on': gates['always_on'],
                    'gates_always_off': gates['always_off'], 'gates_input_dependent': gates['input_dependent'],
                    'gate_open_fraction_per_block': gates['per_site_open_fraction'],
                    'gate_closed_fraction_per_block': gates['per_site_closed_fraction']})
        if 'per_site_branch_open_fraction' in gates:  # a model with branch gates
            out.update({'gate_branch_open_fraction_per_block': gates['per_site_branch_open_fraction'],
                        'gate_effective_open_fraction_per_block': gates['per_site_effective_open_fraction']})
    out['_gate_stats'] = gates
    return out


def metric_fields(metrics: dict[str, Any], split: str = '', ema: bool = False) -> dict[str, Any]:
    """Name the fields of :func:`evaluation_metrics` for a metrics row (without ``_gate_stats``).

    ``split=""`` keeps the names (``top1``, ``eval_loss``: the eval split, evaluated every epoch); ``split="val_"``
    or ``"test_"`` gives ``val_top1``, ``val_loss``, ``val_samples``, ...; ``ema=True`` puts ``ema_`` in front.
    """
    lead = 'ema_' if ema else ''
    return {lead + (split + k.removeprefix('eval_') if split else k): v for k, v in metrics.items() if k[0] != '_'}


def save_trained_model(net: nn.Module, folder: str | os.PathLike, *, metrics: dict[str, Any], num_classes: int,
                       label_names: Sequence[str] | None = None, mean_std: tuple[Any, Any] | None = None,
                       gate_stats: dict[str, Any] | None = None, dataset: str | None = None,
                       recipe: dict[str, Any] | None = None, push_to_hub: str | None = None) -> Path:
    """Save newly trained weights with a ``pretrained_cfg`` that says what they are and how they measured.

    The weights are not those of the tag the model was built (or fine-tuned) from, so the tag is cleared;
    ``save_pretrained`` then publishes only the input and provenance fields that describe these weights (no
    ``hf_hub_id`` or earlier sha256).

    Args:
        net: The trained model (unwrapped).
        folder: Where to save (``final/``).
        metrics: Measured figures for the card (``top1``, ``top5``, ...).
        num_classes: Classes of the data trained on.
        label_names: Class names.
        mean_std: Normalisation the weights were trained with, when it is not the model's own.
        gate_stats: Gate summary of the evaluation (GaterNets).
        dataset: Data the weights were trained on.
        recipe: How they were trained (command, config file).
        push_to_hub: Hub repository to push the folder to.
    """
    cfg = {**(getattr(net, 'pretrained_cfg', None) or {}), 'tag': None, 'num_classes': num_classes,
           'metrics': dict(metrics)}
    optional = {'label_names': list(label_names) if label_names is not None else None, 'dataset': dataset,
                'gate_stats': jsonable(gate_stats) if gate_stats is not None else None, 'recipe': recipe}
    cfg.update({k: v for k, v in optional.items() if v is not None})
    if mean_std is not None:
        cfg['mean'], cfg['std'] = mean_std
    net.pretrained_cfg = cfg
    net.save_pretrained(folder)
    if push_to_hub:
        net.push_to_hub(push_to_hub, commit_message='Add model trained with gaternet_zoo')
    return Path(folder)
