"""Evaluation of zoo models: top-1/top-5 accuracy, loss, throughput and gate statistics in one pass.

:func:`evaluate` works with or without Hugging Face Accelerate. With an ``accelerator`` (also single-process),
per-sample results and gates are collected with ``accelerator.gather_for_metrics``, so every process ends with
the same metrics over the whole evaluation set, without the samples a distributed sampler duplicates to even out
the last batch. Plain backbones (no ``forward_with_gates``) are evaluated the same way, without gate statistics.

Example::

    result = evaluate(model, loader, accelerator, prepare_batch=prepare, num_classes=10)
    print(result.top1, result.gate_stats.summary())
"""
from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ._constants import DEFAULT_DATA_SOURCE
from .utils.gate_stats import GateStatistics, has_gates, site_gate_columns

__all__ = ['EvalData', 'EvalResult', 'build_eval_data', 'default_accelerator', 'evaluate', 'evaluate_model',
           'format_report', 'has_gates', 'kept_gate_mask', 'measure_latency', 'model_from_name', 'write_json']

#: Largest model input side (pixels) evaluated on decode-once tensors; larger inputs use timm's eval transforms.
_MAX_TENSOR_INPUT = 64


@dataclass
class EvalResult:
    """Metrics of one evaluation pass.

    Attributes:
        top1: Top-1 accuracy in percent.
        top5: Top-5 accuracy in percent (top-``num_classes`` when there are fewer than 5 classes).
        loss: Mean cross-entropy over the samples.
        num_samples: Number of samples evaluated (over all processes, without duplicates).
        gate_stats: Gate statistics over the samples, or ``None`` for models without gates.
        images_per_second: Samples evaluated per wall-clock second, data loading included, timed from the end of
            the first batch (which carries one-off start-up costs) when there is more than one batch.
    """

    top1: float
    top5: float
    loss: float
    num_samples: int
    gate_stats: GateStatistics | None
    images_per_second: float

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready metrics, with the gate statistics' summary under ``gates`` (``None`` without gates)."""
        return dict(top1=self.top1, top5=self.top5, loss=self.loss, num_samples=self.num_samples,
                    images_per_second=self.images_per_second,
                    gates=self.gate_stats.summary() if self.gate_stats is not None else None)


def _unwrap(model: nn.Module, accelerator: Any | None) -> nn.Module:
    if accelerator is not None:
        return accelerator.unwrap_model(model)
    base = getattr(model, 'module', model)
    return getattr(base, '_orig_mod', base)


@torch.no_grad()
def evaluate(
        model: nn.Module,
        dataloader: Iterable[Any],
        accelerator: Any | None = None,
        *,
        prepare_batch: Callable[[Any], tuple[torch.Tensor, torch.Tensor]],
        num_classes: int,
        collect_class_stats: bool = False,
        max_batches: int | None = None,
) -> EvalResult:
    """Evaluate ``model`` over ``dataloader``: accuracy, loss, throughput and (for GaterNets) gate statistics.

    The model runs in eval mode (binary gates) under ``torch.no_grad``; its previous train/eval mode is restored
    afterwards.

    Args:
        model: A zoo model, possibly prepared by ``accelerator``. Models with ``forward_with_gates`` also give
            gate statistics.
        dataloader: Batches of any form ``prepare_batch`` understands (prepared by ``accelerator`` for
            distributed runs).
        accelerator: Optional ``accelerate.Accelerator``; results are gathered from all processes with
            ``gather_for_metrics`` and the forward pass runs under ``accelerator.autocast()``.
        prepare_batch: Maps a batch to ``(images, labels)``: normalised float images on the model's device and
            integer class labels.
        num_classes: Number of classes (top-5 becomes top-``num_classes`` below 5 classes; size of the class x
            gate matrix).
        collect_class_stats: Also accumulate the class x gate mean-activity matrix
            (``gate_stats.class_gate_matrix()``).
        max_batches: Stop after this many batches (per process).

    Returns:
        The metrics; identical on every process.

    Raises:
        ValueError: If no sample was evaluated, or a label is outside ``[0, num_classes)``.
    """
    base = _unwrap(model, accelerator)
    gated = has_gates(base)
    stats = GateStatistics(base.gate_sites, num_classes if collect_class_stats else None) if gated else None
    k5 = min(5, num_classes)
    total = correct1 = correct5 = first_n = 0
    loss_sum = 0.0
    first_end = 0.0
    was_training = model.training
    model.eval()
    start = time.perf_counter()
    try:
        for step, batch in enumerate(dataloader):
            if max_batches is not None and step >= max_batches:
                break
            images, labels = prepare_batch(batch)
            labels = labels.long()
            if accelerator is not None:
                with accelerator.autocast():
                    logits, gates = base.forward_with_gates(images) if gated else (model(images), None)
            else:
                logits, gates = base.forward_with_gates(images) if gated else (model(images), None)
            logits = logits.float()
            if labels.numel() and (labels.min() < 0 or labels.max() >= num_classes):
                bad = ((labels < 0) | (labels >= num_classes)).nonzero().flatten().tolist()
                raise ValueError(
                    f'labels must be in [0, {num_classes}) (the model has {num_classes} classes), but batch {step} has '
                    f'label(s) {sorted({int(labels[i]) for i in bad})[:10]} at position(s) {bad[:10]}. The data has '
                    f'other classes than the model: check the data set, or use a model with its classes.')
            if not bool(torch.isfinite(logits).all()):
                bad = (~torch.isfinite(logits)).any(dim=1).nonzero().flatten().tolist()
                raise ValueError(
                    f'The model produced NaN or infinite scores for {len(bad)} sample(s) of batch {step} (positions '
                    f'{bad[:10]}): an accuracy over them would mean nothing. Its weights are probably not finite (a '
                    f'diverged training run), or the inputs are not.')
            if logits.ndim != 2 or logits.shape[1] != num_classes:
                raise ValueError(
                    f'The model outputs {tuple(logits.shape[1:])} scores per sample but num_classes={num_classes}: '
                    f'evaluate a model with as many classes as the data (or pass its num_classes).')
            top = logits.topk(k5, dim=1).indices
            hit = top.eq(labels.unsqueeze(1))
            per_sample = dict(loss=F.cross_entropy(logits, labels, reduction='none'), top1=hit[:, 0].long(),
                              top5=hit.any(dim=1).long(), labels=labels)
            if gates is not None:
                per_sample['gates'] = gates.float()
            if accelerator is not None:
                per_sample = accelerator.gather_for_metrics(per_sample)
            n = int(per_sample['labels'].shape[0])
            total += n
            correct1 += int(per_sample['top1'].sum())
            correct5 += int(per_sample['top5'].sum())
            loss_sum += float(per_sample['loss'].double().sum())
            if stats is not None and n:
                stats.update(per_sample['gates'], per_sample['labels'] if collect_class_stats else None)
            if step == 0:  # Throughput is timed from the end of the first batch: it carries one-off start-up costs.
                first_n, first_end = total, time.perf_counter()
    finally:
        model.train(was_training)
    end = time.perf_counter()
    if total == 0:
        raise ValueError('evaluate() saw no samples: the dataloader is empty (or max_batches=0).')
    timed, elapsed = (total - first_n, end - first_end) if total > first_n else (total, end - start)
    return EvalResult(top1=100.0 * correct1 / total, top5=100.0 * correct5 / total, loss=loss_sum / total,
                      num_samples=total, gate_stats=stats,
                      images_per_second=timed / elapsed if elapsed > 0 else math.inf)


@torch.no_grad()
def measure_latency(
        model: nn.Module,
        batch_size: int = 1,
        input_size: tuple[int, int, int] | None = None,
        repeats: int = 20,
        *,
        warmup: int = 3,
        device: torch.device | str | None = None,
) -> float:
    """Median wall-clock milliseconds of one forward pass on a batch of zeros, after warm-up.

    Args:
        model: The model (run in eval mode; its previous mode is restored).
        batch_size: Batch size.
        input_size: ``(C, H, W)``; defaults to ``model.pretrained_cfg['input_size']``.
        repeats: Number of timed forward passes.
        warmup: Untimed forward passes run first.
        device: Device to run on; defaults to the model's.

    Returns:
        Median latency per batch, in milliseconds.
    """
    if repeats < 1 or batch_size < 1:
        raise ValueError('repeats and batch_size must be at least 1.')
    input_size = tuple(input_size or getattr(model, 'pretrained_cfg', {}).get('input_size', (3, 224, 224)))
    if device is None:
        param = next(model.parameters(), None)
        device = param.device if param is not None else torch.device('cpu')
    device = torch.device(device)
    x = torch.zeros(batch_size, *input_size, device=device)

    def sync() -> None:
        if device.type == 'cuda':
            torch.cuda.synchronize(device)

    was_training = model.training
    model.eval()
    try:
        for _ in range(warmup):
            model(x)
        sync()
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            model(x)
            sync()
            times.append((time.perf_counter() - t0) * 1000.0)
    finally:
        model.train(was_training)
    times.sort()
    mid = len(times) // 2
    return times[mid] if len(times) % 2 else 0.5 * (times[mid - 1] + times[mid])


# --------------------------------------------------------------------------------------------------------------
# Evaluating a model on a data source (shared by ``gaternet-zoo eval``/``analyze``, recipes/eval.py and the demo)
# --------------------------------------------------------------------------------------------------------------


class BatchPreparer:
    """``prepare_batch`` for loaders over the data layer's datasets: ``{"pixel_values", "label"}`` -> model input.

    Args:
        normalize: uint8 -> normalised float module (decode-once tensor data), or ``None`` when the items are
            already transformed float tensors (timm transforms).
        device: Device the images and labels are moved to (a no-op for batches already there).
    """

    def __init__(self, normalize: nn.Module | None, device: torch.device | str = 'cpu') -> None:
        self.normalize = normalize
        self.device = torch.device(device)

    def __call__(self, batch: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
        """Return ``(images, labels)`` on ``self.device``."""
        images = batch['pixel_values'].to(self.device, non_blocking=True)
        labels = torch.as_tensor(batch['label']).to(self.device, non_blocking=True)
        if self.normalize is not None:
            images = self.normalize(images)
        return images, labels


@dataclass
class EvalData:
    """An evaluation split ready for :func:`evaluate`.

    Attributes:
        dataset: ``torch`` dataset of ``{"pixel_values", "label"}`` items.
        prepare_batch: Turns a collated batch into ``(images, labels)``; set its ``device`` before use.
        num_classes: Number of classes of the data.
        class_names: Name of each class index.
        input_size: ``(C, H, W)`` of the model input.
        description: Where the data came from, for reports.
        split: Name of the split.
        num_workers: Recommended ``DataLoader`` workers.
    """

    dataset: torch.utils.data.Dataset
    prepare_batch: BatchPreparer
    num_classes: int
    class_names: tuple[str, ...]
    input_size: tuple[int, int, int]
    description: str
    split: str
    num_workers: int = 0


def build_eval_data(
        model: nn.Module,
        source: Any = DEFAULT_DATA_SOURCE,
        *,
        split: str = 'test',
        max_samples: int | None = None,
        num_classes: int | None = None,
) -> EvalData:
    """Load one split of ``source`` for evaluating ``model``, preprocessed as the model expects.

    Small images that already have the model's input size (at most 64 px) are decoded once into a uint8 tensor
    and normalised per batch with the model's ``pretrained_cfg`` mean/std; anything else goes through timm's eval
    transforms for the model's data config (resize, centre crop, normalise).

    Args:
        model: The model to evaluate (its ``pretrained_cfg`` gives input size and normalisation).
        source: Any source ``gaternet_zoo.data.load_image_dataset`` accepts (built-in subset, parquet folder,
            imagefolder, Hub id, ...).
        split: Split to evaluate.
        max_samples: Keep only the first ``max_samples`` rows (the CIFAR splits interleave classes).
        num_classes: The data's number of classes, declared (for labels without ``ClassLabel`` metadata).

    Returns:
        The split with its ``prepare_batch``.

    Raises:
        DataSourceError: The data's classes do not match the model's (both counts named), or a label is out of
            the model's range (its rows named).
    """
    from .data import (
        DecodedImageDataset,
        Normalize,
        build_pipeline,
        choose_pipeline_kind,
        compute_mean_std,
        decode_images,
        default_num_workers,
        load_image_dataset,
    )
    from .data.sources import check_class_count

    if max_samples is not None and max_samples < 1:
        raise ValueError(f'max_samples must be at least 1, got {max_samples}.')
    loaded = load_image_dataset(source, split_train=split, split_eval=None, num_classes=num_classes)
    rows = loaded.train
    if max_samples is not None and max_samples < len(rows):
        rows = rows.select(range(max_samples))
    # The data layer resolves one split as "train"; here it is the evaluation split (no augmentation is applied).
    src = dataclasses.replace(loaded, train=rows, eval=rows)
    model_classes = getattr(model, 'num_classes', None)
    if isinstance(model_classes, int):
        # Before any image is decoded: a 10-class model on 5-class data would report a meaningless accuracy.
        check_class_count(dataclasses.replace(src, eval=None), model_classes, what="the model's num_classes",
                          split_names={'train': split})
    cfg = dict(getattr(model, 'pretrained_cfg', None) or {})
    model_size = tuple(cfg.get('input_size', (3, 32, 32)))[1:]
    # The tensor path does not resize: only images of the model's own input size take it (64 px images for a 32 px
    # model were evaluated at 64 px, a silently wrong figure).
    kind = choose_pipeline_kind(src, input_size=model_size) if max(model_size) <= _MAX_TENSOR_INPUT else 'timm'
    description = f'{loaded.description} [{split}]'
    if kind == 'tensor':
        decoded = decode_images(rows, image_column=src.image_column, label_column=src.label_column)
        mean, std = cfg.get('mean'), cfg.get('std')
        if mean is None or std is None:
            mean, std = compute_mean_std(decoded.images)
        return EvalData(DecodedImageDataset(decoded), BatchPreparer(Normalize(mean, std)), src.num_classes,
                        src.class_names, tuple(decoded.images.shape[1:]), description, split,
                        default_num_workers('tensor'))
    pipeline = build_pipeline(src, kind='timm', model=model)
    return EvalData(pipeline.eval_dataset, BatchPreparer(None), src.num_classes, src.class_names,
                    pipeline.input_size, description, split, pipeline.num_workers)


def default_accelerator(cpu: bool = False) -> Any:
    """An ``accelerate.Accelerator`` for evaluation; on a machine without CUDA it is always created with ``cpu=True``.

    Without ``cpu=True``, ``accelerate launch --multi_gpu --num_processes 2`` on a CPU machine leaves every process
    believing it is alone; with it, the processes form one gloo group (as in ``recipes/train.py``).

    Args:
        cpu: Run on the CPU even if a GPU is present.
    """
    from accelerate import Accelerator

    return Accelerator(cpu=cpu or not torch.cuda.is_available())


def model_from_name(name: str) -> nn.Module:
    """The model a name means for evaluation: with its published weights when it has some.

    A registry name (``gaternet_resnet20``, ``gaternet_resnet20.cifar10``) loads the weights of its tag (the default
    tag for a bare name), wherever ``pretrained=True`` finds them; ``hf-hub:`` and ``local-dir:`` names load what they
    hold. A registry name without weights is built untrained, and a warning says so (its figures are then those of a
    random initialisation, useful for parameters and MACs only).
    """
    from ._factory import create_model, parse_model_name
    from ._registry import get_pretrained_cfg

    source, _ = parse_model_name(name)
    pretrained = source is None and get_pretrained_cfg(name).has_weights
    if source is None and not pretrained:
        logging.getLogger(__name__).warning(
            '%s has no published weights: evaluating it untrained. Give a trained model as local-dir:FOLDER or '
            'hf-hub:org/name.', name)
    return create_model(name, pretrained=pretrained)


def evaluate_model(
        model: str | nn.Module,
        source: Any = DEFAULT_DATA_SOURCE,
        *,
        split: str = 'test',
        batch_size: int = 128,
        max_samples: int | None = None,
        accelerator: Any | None = None,
        collect_class_stats: bool = False,
        num_workers: int | None = None,
        num_classes: int | None = None,
) -> tuple[dict[str, Any], EvalResult, nn.Module, EvalData]:
    """Evaluate a zoo model on a data source and measure its size and compute.

    Args:
        model: A model, or a name ``create_model`` accepts (``gaternet_resnet20``, ``name.tag``,
            ``local-dir:/path``, ``hf-hub:org/repo``, plain backbones such as ``cifar_resnet20``).
        source: Data source (see :func:`build_eval_data`).
        split: Split to evaluate.
        batch_size: Batch size per process.
        max_samples: Evaluate only the first ``max_samples`` rows.
        accelerator: ``accelerate.Accelerator``; :func:`default_accelerator` when ``None`` (one CPU/GPU process,
            or whatever ``accelerate launch`` set up).
        collect_class_stats: Also accumulate the class x gate matrix.
        num_workers: ``DataLoader`` workers (default: what the data pipeline recommends).
        num_classes: The data's number of classes, declared (for labels without ``ClassLabel`` metadata); it must
            equal the model's.

    Returns:
        ``(report, result, model, data)``: a JSON-ready report (metrics, params, MACs, gate counts), the raw
        :class:`EvalResult`, the unwrapped model (eval mode) and the data.
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f'batch_size (--batch-size) must be a positive number of images per batch, got '
                         f'{batch_size!r}.')  # before loading anything (the DataLoader would refuse it later)
    from .utils.macs import count_macs, count_params, gaternet_macs

    if accelerator is None:
        accelerator = default_accelerator()
    name = model if isinstance(model, str) else type(model).__name__
    if isinstance(model, str):
        model = model_from_name(model)
    model.eval()
    data = build_eval_data(model, source, split=split, max_samples=max_samples, num_classes=num_classes)
    loader = torch.utils.data.DataLoader(data.dataset, batch_size=batch_size, shuffle=False,
                                         num_workers=data.num_workers if num_workers is None else num_workers)
    prepared_model, loader = accelerator.prepare(model, loader)
    data.prepare_batch.device = accelerator.device
    result = evaluate(prepared_model, loader, accelerator, prepare_batch=data.prepare_batch,
                      num_classes=model.num_classes, collect_class_stats=collect_class_stats)
    model = accelerator.unwrap_model(prepared_model)
    cfg = dict(getattr(model, 'pretrained_cfg', None) or {})
    report: dict[str, Any] = dict(
        model=name, architecture=cfg.get('architecture'), data=data.description, split=split,
        input_size=list(data.input_size), num_samples=result.num_samples, top1=result.top1, top5=result.top5,
        loss=result.loss, images_per_second=result.images_per_second, num_processes=accelerator.num_processes,
        params=count_params(model))
    stats = result.gate_stats
    if stats is not None:
        # The filters that acted (their branch gate open too, where the model has branch gates) are what count.
        macs = gaternet_macs(model, data.input_size, stats.effective_firing_rate.unsqueeze(0),
                             branch_closed=stats.per_site_closed_fraction())
        summary = stats.summary()
        report.update(
            params_backbone=count_params(model.backbone), params_gater=count_params(model.gater),
            macs_backbone=macs['backbone'], macs_gater=macs['gater'], macs_total=macs['total'],
            macs_backbone_used=macs['backbone_used'], gate_size=stats.gate_size, gate_sites=len(model.gate_sites),
            mean_open_fraction=summary['mean_open_fraction'], always_on=summary['always_on'],
            always_off=summary['always_off'], input_dependent=summary['input_dependent'],
            per_site_open_fraction=summary['per_site_open_fraction'])
        if 'branch_gates' in summary:  # reported apart: one gate per residual branch, after the filter gates
            report.update(branch_gates=summary['branch_gates'], filter_gates=summary['filter_gates'],
                          per_site_branch_open_fraction=summary['per_site_branch_open_fraction'])
        report.update(_kept_gate_summary(model, stats))
    else:
        device = next(model.parameters()).device
        report['macs'] = count_macs(model, torch.zeros(1, *data.input_size, device=device))[0]
    return report, result, model, data


def kept_gate_mask(model: nn.Module) -> torch.Tensor | None:
    """For a pruned GaterNet, which of its ``gate_size`` gates still have a filter; ``None`` for an unpruned one.

    The gater of a pruned export still emits every gate, but the gate of a removed filter acts on nothing. A site
    without filter gates (``filter_gates=False``) keeps its branch gate, whatever filters it lost.
    """
    pruned = getattr(model, 'pruned_filters', None)
    if not pruned:
        return None
    mask = torch.ones(model.gate_size, dtype=torch.bool)
    for site in model.gate_sites:
        if site.name in pruned and getattr(site, 'filter_gates', True):
            mask[site.offset:site.offset + site.num_channels] = False
            mask[[site.offset + i for i in pruned[site.name]]] = True
    return mask


def _kept_gate_summary(model: nn.Module, stats: GateStatistics) -> dict[str, Any]:
    """The gate figures of a pruned GaterNet over the gates that still have a filter (nothing for an unpruned one).

    Counting the removed filters' gates would report always-off gates that no longer exist, and an open fraction
    diluted by them.
    """
    kept = kept_gate_mask(model)
    if kept is None:
        return {}
    rate = stats.firing_rate
    always_on, always_off = int((rate[kept] == 1).sum()), int((rate[kept] == 0).sum())
    per_site = {}
    for site in model.gate_sites:
        columns = torch.tensor(site_gate_columns(site))
        per_site[site.name] = rate[columns][kept[columns]].mean().item()
    return dict(gates_pruned=int((~kept).sum()), mean_open_fraction=rate[kept].mean().item(), always_on=always_on,
                always_off=always_off, input_dependent=int(kept.sum()) - always_on - always_off,
                per_site_open_fraction=per_site)


def _mean(values: dict[str, float]) -> float:
    return sum(values.values()) / max(len(values), 1)


def _human(n: float) -> str:
    for unit, scale in (('G', 1e9), ('M', 1e6), ('K', 1e3)):
        if abs(n) >= scale:
            return f'{n / scale:.2f}{unit}'
    return f'{n:.0f}'


def format_report(report: dict[str, Any]) -> str:
    """Human-readable lines for a report of :func:`evaluate_model`."""
    lines = [('model', f"{report['model']} ({report.get('architecture')})"),
             ('data', f"{report['data']}, {report['num_samples']:,} samples, input {tuple(report['input_size'])}"),
             ('top-1', f"{report['top1']:.2f} %"), ('top-5', f"{report['top5']:.2f} %"),
             ('loss', f"{report['loss']:.4f}")]
    if 'gate_size' in report:
        used = report['macs_backbone_used']
        lines += [
            ('params', f"{report['params']:,} (backbone {report['params_backbone']:,}, "
                       f"gater {report['params_gater']:,})"),
            ('MACs backbone', f"{_human(report['macs_backbone'])} ({report['macs_backbone']:,})"),
            ('MACs gater', f"{_human(report['macs_gater'])} ({report['macs_gater']:,})"),
            ('MACs backbone used', f"{_human(used)} ({100.0 * used / report['macs_backbone']:.1f} % of backbone, "
                                   'given the gates)'),
            ('gates open (mean)', f"{100.0 * report['mean_open_fraction']:.1f} % of "
                                  f"{report['gate_size'] - report.get('gates_pruned', 0):,} gates over "
                                  f"{report['gate_sites']} sites" + (
                                      f" ({report['gates_pruned']:,} more pruned with their filters)"
                                      if report.get('gates_pruned') else '')),
            *([('branch gates open', f"{100.0 * _mean(report['per_site_branch_open_fraction']):.1f} % of "
                                     f"{report['branch_gates']} (one per residual branch, counted above too)")]
              if report.get('branch_gates') else []),
            *([('filter gates', 'none (filter_gates=False): every filter of an open branch is on')]
              if report.get('branch_gates') and report.get('filter_gates') == 0 else []),
            ('gates always on', f"{report['always_on']:,}"),
            ('gates always off', f"{report['always_off']:,}"),
            ('gates input-dep.', f"{report['input_dependent']:,}"),
        ]
    else:
        lines += [('params', f"{report['params']:,}"),
                  ('MACs', f"{_human(report['macs'])} ({report['macs']:,}); plain backbone, no gates")]
    lines.append(('images/s', f"{report['images_per_second']:.1f} ({report['num_processes']} process(es))"))
    width = max(len(k) for k, _ in lines)
    return '\n'.join(f'{k:<{width}}  {v}' for k, v in lines)


def write_json(obj: Any, path: str | os.PathLike) -> Path:
    """Write ``obj`` as indented JSON, creating parent folders; returns the path."""
    from ._io import check_output_file

    path = check_output_file(path, what='the JSON report', replaces_json_only=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=2) + '\n')
    return path
