"""Decode every image of a split once into one uint8 tensor, and serve it as a ``torch`` dataset.

Decoding PNGs is the expensive part of a CIFAR epoch on a small CPU; doing it once per data set (and letting
``datasets`` cache the result on disk) leaves only cheap tensor indexing in the training loop.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Literal

import datasets
import numpy as np
import pyarrow as pa
import torch

__all__ = ["DecodedImageDataset", "DecodedImages", "ImageDecodeError", "decode_images", "default_num_proc"]

logger = logging.getLogger(__name__)

DecodeErrorPolicy = Literal["raise", "skip"]
# Below this many rows a single process wins: forking workers costs more than decoding a few thousand PNGs.
_ROWS_PER_PROCESS = 5_000
_MAX_AUTO_PROCS = 8


class ImageDecodeError(RuntimeError):
    """An image could not be decoded, or the decoded images do not share one size."""


@dataclass(frozen=True)
class DecodedImages:
    """A split decoded to tensors.

    Attributes:
        images: ``(N, 3, H, W)`` uint8 RGB pixels, contiguous.
        labels: ``(N,)`` int64 class indices.
        skipped_indices: Row indices (in the source split) dropped because they failed to decode.
    """

    images: torch.Tensor
    labels: torch.Tensor
    skipped_indices: tuple[int, ...] = ()

    @property
    def num_skipped(self) -> int:
        """Number of rows dropped because they failed to decode."""
        return len(self.skipped_indices)

    def __len__(self) -> int:
        return int(self.labels.shape[0])


def default_num_proc(num_rows: int) -> int:
    """Worker processes for decoding ``num_rows`` images: one per ~5,000 rows, at most the usable CPUs (and 8)."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(cpus, _MAX_AUTO_PROCS, num_rows // _ROWS_PER_PROCESS))


def _decode_batch(batch: dict, *, image_column: str) -> dict:
    """``Dataset.map`` worker: PNG/JPEG bytes -> CHW RGB bytes, recording failures instead of raising.

    Failures are returned as data rather than raised so that (a) the row index reaches the main process intact
    whatever ``num_proc`` is, and (b) the cached result does not depend on the error policy.
    """
    decoder = datasets.Image()
    pixels: list[bytes] = []
    heights: list[int] = []
    widths: list[int] = []
    errors: list[str] = []
    for value in batch[image_column]:
        try:
            image = decoder.decode_example(value)
            if image.mode != "RGB":
                image = image.convert("RGB")
            array = np.asarray(image)
            pixels.append(np.ascontiguousarray(array.transpose(2, 0, 1)).tobytes())
            heights.append(array.shape[0])
            widths.append(array.shape[1])
            errors.append("")
        except Exception as err:  # Any decoder failure is data here; the policy is applied by the caller.
            pixels.append(b"")
            heights.append(0)
            widths.append(0)
            errors.append(f"{type(err).__name__}: {err}")
    return {"__pixels": pixels, "__height": heights, "__width": widths, "__error": errors}


def decode_images(
    dataset: datasets.Dataset,
    *,
    image_column: str,
    label_column: str,
    num_proc: int | None = None,
    on_decode_error: DecodeErrorPolicy = "raise",
    load_from_cache_file: bool = True,
) -> DecodedImages:
    """Decode every image of ``dataset`` once into a ``(N, 3, H, W)`` uint8 tensor plus int64 labels.

    Decoding runs in ``Dataset.map(batched=True, num_proc=...)``; when ``dataset`` is backed by files (anything
    from ``load_dataset``), ``datasets`` caches the decoded pixels next to it under a fingerprint of the data and
    this function, so later runs only read the cache. Images are converted to RGB (grey, palette and RGBA
    included) and EXIF orientation is applied, exactly as ``datasets.Image`` decoding does.

    Args:
        dataset: A split, e.g. ``ImageDataSource.train``.
        image_column: Column with ``datasets.Image`` values (decoded or not).
        label_column: Integer class-index column.
        num_proc: Decoding processes; ``None`` picks one per ~5,000 rows up to the usable CPUs.
        on_decode_error: ``"raise"`` fails on the first undecodable row, naming its index; ``"skip"`` drops
            undecodable rows, logs how many, and lists them in ``DecodedImages.skipped_indices``.
        load_from_cache_file: Reuse a cached decode of the same data if there is one.

    Returns:
        The decoded pixels and labels, in row order (minus skipped rows).

    Raises:
        ImageDecodeError: A row failed to decode under the ``"raise"`` policy, or images differ in size.
        ValueError: ``on_decode_error`` is not a known policy.
    """
    if on_decode_error not in ("raise", "skip"):
        raise ValueError(f"on_decode_error must be 'raise' or 'skip', got {on_decode_error!r}")
    if num_proc is None:
        num_proc = default_num_proc(len(dataset))
    num_proc = max(1, min(num_proc, len(dataset))) if len(dataset) else 1

    # Decode ourselves from the raw bytes: the per-row try/except is what lets a bad image name its row.
    raw = dataset.select_columns([image_column, label_column]).cast_column(image_column, datasets.Image(decode=False))
    features = datasets.Features(
        {
            label_column: raw.features[label_column],
            "__pixels": datasets.Value("binary"),
            "__height": datasets.Value("int32"),
            "__width": datasets.Value("int32"),
            "__error": datasets.Value("string"),
        }
    )
    decoded = raw.map(
        _decode_batch,
        batched=True,
        batch_size=500,
        num_proc=num_proc if num_proc > 1 else None,
        remove_columns=[image_column],
        features=features,
        fn_kwargs={"image_column": image_column},
        load_from_cache_file=load_from_cache_file,
        desc="Decoding images",
    )
    table = decoded.with_format("arrow")[:]

    errors = table.column("__error").to_numpy(zero_copy_only=False)
    failed = np.flatnonzero(errors != "")
    if len(failed) and on_decode_error == "raise":
        first = int(failed[0])
        others = f" ({len(failed) - 1} more row(s) also failed)" if len(failed) > 1 else ""
        raise ImageDecodeError(
            f"could not decode the image in row {first} of column {image_column!r}: {errors[first]}{others}; "
            "remove or replace that image (or drop its row) and load the data again; from Python, "
            "build_pipeline(..., on_decode_error='skip') drops undecodable rows instead (recipes/train.py and "
            "gaternet-zoo eval have no such option: they use every row, so the data must be clean)"
        )
    if len(failed):
        logger.warning("skipped %d undecodable image(s) of %d; first row index %d", len(failed), len(table), failed[0])

    ok = np.ones(len(table), dtype=bool)
    ok[failed] = False
    heights = table.column("__height").to_numpy()[ok]
    widths = table.column("__width").to_numpy()[ok]
    labels = table.column(label_column).to_numpy()[ok].astype(np.int64)
    if len(heights) == 0:
        images = torch.empty((0, 3, 0, 0), dtype=torch.uint8)
        return DecodedImages(images, torch.from_numpy(labels), tuple(int(i) for i in failed))

    sizes = np.unique(np.stack([heights, widths], axis=1), axis=0)
    if len(sizes) > 1:
        rows = np.flatnonzero(ok)
        (h0, w0), (h1, w1) = sizes[0], sizes[1]
        r0 = int(rows[np.flatnonzero((heights == h0) & (widths == w0))[0]])
        r1 = int(rows[np.flatnonzero((heights == h1) & (widths == w1))[0]])
        raise ImageDecodeError(
            f"images differ in size ({h0}x{w0} in row {r0}, {h1}x{w1} in row {r1}; {len(sizes)} sizes in all); "
            "the decode-once tensor pipeline needs one size: resize the data or use the timm pipeline"
        )
    height, width = int(heights[0]), int(widths[0])
    flat = _concat_binary(table.column("__pixels"))
    images = torch.from_numpy(flat.reshape(len(labels), 3, height, width))
    return DecodedImages(images, torch.from_numpy(labels), tuple(int(i) for i in failed))


def _concat_binary(column: pa.ChunkedArray) -> np.ndarray:
    """Concatenate all values of a binary column into one owned uint8 array without per-row Python objects.

    Failed rows hold ``b""`` and so contribute nothing, which is what drops them from the pixel buffer.
    """
    pieces = []
    for chunk in column.chunks:
        if len(chunk) == 0:
            continue
        offset_type = np.int64 if pa.types.is_large_binary(chunk.type) else np.int32
        offsets = np.frombuffer(chunk.buffers()[1], dtype=offset_type)[chunk.offset : chunk.offset + len(chunk) + 1]
        data = chunk.buffers()[2]
        if data is None:
            continue
        pieces.append(np.frombuffer(data, dtype=np.uint8)[offsets[0] : offsets[-1]])
    # np.concatenate copies, so the result owns its memory (not a view on a memory-mapped cache file).
    return np.concatenate(pieces) if pieces else np.empty(0, dtype=np.uint8)


class DecodedImageDataset(torch.utils.data.Dataset):
    """``torch`` dataset over decoded pixels: item ``i`` is ``{"pixel_values": uint8 (3, H, W), "label": int}``.

    Augmentation and normalisation are deliberately not applied here: they run per batch (see
    ``RandomCropFlip`` and ``Normalize``), where an explicit generator makes them reproducible and they can run on
    the accelerator. The default collate function turns a batch into ``pixel_values`` ``(B, 3, H, W)`` uint8 and
    ``label`` ``(B,)`` int64, which ``accelerator.prepare(DataLoader(...))`` moves to the device as usual.

    Args:
        images: ``(N, 3, H, W)`` uint8 tensor, or a ``DecodedImages`` (then ``labels`` must be omitted).
        labels: ``(N,)`` integer tensor.
    """

    def __init__(self, images: torch.Tensor | DecodedImages, labels: torch.Tensor | None = None) -> None:
        if isinstance(images, DecodedImages):
            if labels is not None:
                raise ValueError("pass labels only together with an images tensor, not with DecodedImages")
            images, labels = images.images, images.labels
        if labels is None:
            raise ValueError("labels are required")
        if images.dtype != torch.uint8 or images.ndim != 4:
            raise ValueError(f"images must be a (N, C, H, W) uint8 tensor, got {images.dtype} {tuple(images.shape)}")
        if images.shape[0] != labels.shape[0]:
            raise ValueError(f"{images.shape[0]} images but {labels.shape[0]} labels")
        self.images = images
        self.labels = labels.to(torch.int64)

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def __getitem__(self, index: int) -> dict[str, torch.Tensor | int]:
        return {"pixel_values": self.images[index], "label": int(self.labels[index])}
