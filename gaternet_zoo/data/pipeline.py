"""Pick and build the input pipeline for an ``ImageDataSource``: decode-once tensors or timm transforms.

Rule (``choose_pipeline_kind``): the **tensor** pipeline is used when the first ``probe_rows`` train images (read
from their headers only) are all at most ``max_tensor_size`` (64) pixels on each side *and* the whole decoded data
(train + eval rows x 3 x H x W bytes) fits in ``max_decoded_bytes`` (8 GiB); otherwise the **timm** pipeline.
Small images (CIFAR, 32 px) are then decoded once and augmented on tensors, which is far faster than per-sample
PIL work on a small CPU; large images (ImageNet) would not fit in memory decoded and need resize-crop anyway, so
they go through timm's transforms in the loader workers. The tensor decode checks every image afterwards, so a
data set that only looked uniform from its first rows fails with a clear size error, not silently.
"""

from __future__ import annotations

import io
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import datasets
import torch

from .augment import Normalize, RandomCropFlip, compute_mean_std
from .decode import DecodedImageDataset, DecodeErrorPolicy, ImageDecodeError, decode_images
from .sources import ImageDataSource

__all__ = [
    "DataPipeline",
    "PipelineKind",
    "build_pipeline",
    "choose_pipeline_kind",
    "create_timm_transforms",
    "default_num_workers",
]

PipelineKind = Literal["tensor", "timm"]
MAX_TENSOR_SIZE = 64
MAX_DECODED_BYTES = 8 << 30
PROBE_ROWS = 64


def default_num_workers(kind: PipelineKind) -> int:
    """DataLoader workers recommended for a pipeline kind.

    Tensor pipeline: 0. Items are slices of one in-memory tensor, so worker processes only add inter-process
    copies (measured slower on 2 cores, see ``bench/bench_data.py``). timm pipeline: one worker per usable CPU
    (at most 8), since every item decodes and resizes an image in Python.
    """
    if kind == "tensor":
        return 0
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(cpus, 8))


def _probe_size(value: Mapping[str, Any]) -> tuple[int, int]:
    """(height, width) of an undecoded ``datasets.Image`` value, reading only the file header when possible."""
    import PIL.Image

    data, path = value.get("bytes"), value.get("path")
    if data is not None:
        with PIL.Image.open(io.BytesIO(data)) as image:
            return image.height, image.width
    if path is not None and os.path.exists(path):
        with PIL.Image.open(path) as image:
            return image.height, image.width
    image = datasets.Image().decode_example(dict(value))  # Remote files: no cheaper way than a full read.
    return image.height, image.width


def choose_pipeline_kind(
    source: ImageDataSource,
    *,
    max_tensor_size: int = MAX_TENSOR_SIZE,
    max_decoded_bytes: int = MAX_DECODED_BYTES,
    probe_rows: int = PROBE_ROWS,
    input_size: Sequence[int] | None = None,
) -> PipelineKind:
    """Return ``"tensor"`` for small images that fit in memory decoded, else ``"timm"`` (rule in module doc).

    Args:
        source: Resolved data source.
        max_tensor_size: Largest height or width (pixels) for the tensor pipeline.
        max_decoded_bytes: Largest total decoded size (train + eval) for the tensor pipeline.
        probe_rows: Number of leading train rows whose sizes are read.
        input_size: ``(H, W)`` (or ``(C, H, W)``) the images must already have for the tensor pipeline, which does
            not resize: images of another size go through timm's transforms, which resize them to it (evaluation
            of a trained model).

    Returns:
        The pipeline kind.
    """
    probe = source.train.select(range(min(probe_rows, len(source.train))))
    probe = probe.select_columns([source.image_column]).cast_column(source.image_column, datasets.Image(decode=False))
    sizes = []
    for index, row in enumerate(probe):
        value = row[source.image_column]
        try:
            sizes.append(_probe_size(value))
        except Exception as err:  # PIL.UnidentifiedImageError, OSError ...: name the row and the file
            raise ImageDecodeError(
                f"could not read the image in row {index} of column {source.image_column!r} of {source.description}"
                f"{_where(value)}: {type(err).__name__}: {err}. Remove or replace that image (or drop the row)"
            ) from err
    if not sizes:
        return "tensor"
    if input_size is not None and any(size != tuple(input_size)[-2:] for size in sizes):
        return "timm"
    height = max(h for h, _ in sizes)
    width = max(w for _, w in sizes)
    rows = sum(len(ds) for ds in source.splits().values())
    if max(height, width) <= max_tensor_size and rows * 3 * height * width <= max_decoded_bytes:
        return "tensor"
    return "timm"


def create_timm_transforms(
    model: torch.nn.Module | None = None,
    *,
    pretrained_cfg: Mapping[str, Any] | None = None,
    train_kwargs: Mapping[str, Any] | None = None,
) -> tuple[Callable, Callable, dict[str, Any]]:
    """Return timm train and eval transforms for a model's data config.

    Args:
        model: A timm model; its ``pretrained_cfg`` gives input size, interpolation, crop and mean/std.
        pretrained_cfg: Used instead of ``model.pretrained_cfg`` when given.
        train_kwargs: Extra ``timm.data.create_transform`` arguments for training only (e.g. ``auto_augment``,
            ``re_prob``); timm's defaults apply otherwise (random-resized crop, flip, colour jitter 0.4).

    Returns:
        ``(train_transform, eval_transform, data_config)``; both transforms map a PIL image to a normalised float
        ``(3, H, W)`` tensor.
    """
    import timm.data

    if model is None and not pretrained_cfg:
        # No model yet: timm's ImageNet defaults at 224 px.
        config = timm.data.resolve_data_config(args={"input_size": (3, 224, 224)})
    else:
        config = timm.data.resolve_data_config(pretrained_cfg=dict(pretrained_cfg or {}), model=model)
    train = timm.data.create_transform(**config, is_training=True, **dict(train_kwargs or {}))
    evaluate = timm.data.create_transform(**config, is_training=False)
    return train, evaluate, config


def _where(value: Any) -> str:
    path = value.get("path") if isinstance(value, Mapping) else None
    return f" (file {path})" if path else ""


class _TimmBatchTransform:
    """``Dataset.with_transform`` callable: undecoded images -> ``pixel_values`` (a class, so workers can pickle it).

    The images arrive undecoded (``datasets.Image(decode=False)``) and are decoded here, so that an unreadable one
    fails naming its file and label instead of as a bare ``PIL.UnidentifiedImageError`` inside ``datasets``.
    """

    def __init__(self, transform: Callable, image_column: str, label_column: str) -> None:
        self.transform = transform
        self.image_column = image_column
        self.label_column = label_column

    def __call__(self, batch: dict[str, list]) -> dict[str, list]:
        decoder = datasets.Image()
        pixels = []
        for value, label in zip(batch[self.image_column], batch[self.label_column]):
            try:
                img = decoder.decode_example(value) if isinstance(value, Mapping) else value
            except Exception as err:
                raise ImageDecodeError(
                    f"could not decode an image of column {self.image_column!r}{_where(value) or ' (embedded bytes)'}"
                    f", labelled {label}: {type(err).__name__}: {err}. Remove or replace that image, or drop its row"
                ) from err
            pixels.append(self.transform(img if img.mode == "RGB" else img.convert("RGB")))
        return {"pixel_values": pixels, "label": batch[self.label_column]}


@dataclass
class DataPipeline:
    """What a training recipe needs: ``torch`` datasets plus the per-batch steps to run on the device.

    Items of both datasets are ``{"pixel_values": tensor, "label": int}``. Call ``prepare_batch`` on every batch
    (after ``accelerator.prepare``-ed loaders moved it to the device) to get the model input.

    Attributes:
        kind: ``"tensor"`` (uint8 items; ``prepare_batch`` augments and normalises) or ``"timm"`` (items are
            already transformed float tensors; ``prepare_batch`` only sets the memory format).
        train_dataset: Training dataset.
        eval_dataset: Evaluation dataset, or ``None``.
        num_classes: Number of classes.
        class_names: Name of each class index.
        augment: Batch augmentation for the tensor kind, else ``None``.
        normalize: Batch normalisation for the tensor kind, else ``None``.
        channels_last: Whether ``prepare_batch`` returns channels-last tensors.
        input_size: ``(C, H, W)`` of the model input.
        num_skipped: Undecodable rows dropped per split (``{"train": n, "eval": m}``), tensor kind only.
        data_config: timm data config (timm kind) or ``{"mean", "std"}`` used for normalisation (tensor kind).
    """

    kind: PipelineKind
    train_dataset: torch.utils.data.Dataset
    eval_dataset: torch.utils.data.Dataset | None
    num_classes: int
    class_names: tuple[str, ...]
    augment: RandomCropFlip | None
    normalize: Normalize | None
    channels_last: bool
    input_size: tuple[int, int, int]
    num_skipped: dict[str, int] = field(default_factory=dict)
    data_config: dict[str, Any] = field(default_factory=dict)

    @property
    def num_workers(self) -> int:
        """Recommended ``DataLoader`` worker count for this pipeline (see ``default_num_workers``)."""
        return default_num_workers(self.kind)

    def prepare_batch(
        self, pixel_values: torch.Tensor, *, train: bool, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """Turn a loader batch's ``pixel_values`` into model input.

        Args:
            pixel_values: ``(B, C, H, W)`` batch from a loader over ``train_dataset`` or ``eval_dataset``.
            train: Apply training augmentation (tensor kind only; the timm kind augments inside the loader).
            generator: Required for ``train=True`` with the tensor kind: the augmentation's only randomness, e.g.
                ``augmentation_generator(seed, epoch, step, rank=accelerator.process_index)``.

        Returns:
            Float model input on the same device as ``pixel_values``.
        """
        if self.kind == "timm":
            fmt = torch.channels_last if self.channels_last else torch.contiguous_format
            return pixel_values.contiguous(memory_format=fmt)
        if train and self.augment is not None:
            if generator is None:
                raise ValueError("train=True needs a generator, e.g. augmentation_generator(seed, epoch, step)")
            pixel_values = self.augment(pixel_values, generator)
        assert self.normalize is not None  # Always set for the tensor kind.
        return self.normalize(pixel_values)


def build_pipeline(
    source: ImageDataSource,
    *,
    kind: Literal["auto", "tensor", "timm"] = "auto",
    model: torch.nn.Module | None = None,
    pretrained_cfg: Mapping[str, Any] | None = None,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    padding: int = 4,
    flip_prob: float = 0.5,
    channels_last: bool = False,
    num_proc: int | None = None,
    on_decode_error: DecodeErrorPolicy = "raise",
    max_tensor_size: int = MAX_TENSOR_SIZE,
    timm_train_kwargs: Mapping[str, Any] | None = None,
) -> DataPipeline:
    """Build the pipeline for ``source``, choosing tensor or timm transforms (rule in the module doc).

    Args:
        source: Resolved data source from ``load_image_dataset``.
        kind: ``"auto"`` applies ``choose_pipeline_kind``; ``"tensor"``/``"timm"`` force one.
        model: timm model whose ``pretrained_cfg`` drives the timm transforms, and the mean/std of the tensor
            pipeline when it has them.
        pretrained_cfg: Used instead of ``model.pretrained_cfg``.
        mean: Normalisation mean for the tensor pipeline; beats the model's. If neither gives one, the mean/std of
            the decoded train images is used.
        std: Normalisation std, with ``mean``.
        padding: Crop padding of the tensor pipeline's ``RandomCropFlip``.
        flip_prob: Horizontal flip probability of the tensor pipeline.
        channels_last: Make ``prepare_batch`` return channels-last tensors.
        num_proc: Decoding processes of the tensor pipeline (``None``: automatic).
        on_decode_error: ``"raise"`` or ``"skip"`` undecodable images (tensor pipeline).
        max_tensor_size: Size limit of the automatic choice.
        timm_train_kwargs: Extra training arguments for ``timm.data.create_transform``.

    Returns:
        The pipeline.
    """
    if kind == "auto":
        kind = choose_pipeline_kind(source, max_tensor_size=max_tensor_size)
    if kind not in ("tensor", "timm"):
        raise ValueError(f"kind must be 'auto', 'tensor' or 'timm', got {kind!r}")
    if (mean is None) != (std is None):
        raise ValueError("pass mean and std together")
    cfg = dict(pretrained_cfg) if pretrained_cfg else dict(getattr(model, "pretrained_cfg", None) or {})

    if kind == "timm":
        train_tf, eval_tf, config = create_timm_transforms(model, pretrained_cfg=cfg, train_kwargs=timm_train_kwargs)
        columns = [source.image_column, source.label_column]
        undecoded = datasets.Image(decode=False)
        train = source.train.cast_column(source.image_column, undecoded).with_transform(
            _TimmBatchTransform(train_tf, source.image_column, source.label_column), columns=columns
        )
        evaluate = None
        if source.eval is not None:
            evaluate = source.eval.cast_column(source.image_column, undecoded).with_transform(
                _TimmBatchTransform(eval_tf, source.image_column, source.label_column), columns=columns
            )
        return DataPipeline(
            kind="timm",
            train_dataset=train,
            eval_dataset=evaluate,
            num_classes=source.num_classes,
            class_names=source.class_names,
            augment=None,
            normalize=None,
            channels_last=channels_last,
            input_size=tuple(config["input_size"]),
            data_config=config,
        )

    decoded = {
        name: decode_images(
            ds,
            image_column=source.image_column,
            label_column=source.label_column,
            num_proc=num_proc,
            on_decode_error=on_decode_error,
        )
        for name, ds in source.splits().items()
    }
    train_images = decoded["train"].images
    if mean is None and "mean" in cfg and "std" in cfg:
        mean, std = cfg["mean"], cfg["std"]
    if mean is None:
        mean, std = compute_mean_std(train_images)
    return DataPipeline(
        kind="tensor",
        train_dataset=DecodedImageDataset(decoded["train"]),
        eval_dataset=DecodedImageDataset(decoded["eval"]) if "eval" in decoded else None,
        num_classes=source.num_classes,
        class_names=source.class_names,
        augment=RandomCropFlip(padding=padding, flip_prob=flip_prob),
        normalize=Normalize(mean, std, channels_last=channels_last),
        channels_last=channels_last,
        input_size=tuple(train_images.shape[1:]),
        num_skipped={name: d.num_skipped for name, d in decoded.items()},
        data_config={"mean": tuple(mean), "std": tuple(std)},
    )
