"""Benchmark of the data pipeline: decoded batches through a DataLoader, then augmentation and normalisation.

Measures what a training step waits for on the input side, after warm-up, on the built-in CIFAR-10 subset by
default. Decoding happens once before timing (it is cached by ``datasets``) and is not part of the figure.

Usage::

    python -m bench.bench_data                       # default workers, batch 128, CPU
    python -m bench.bench_data --num-workers 2 --channels-last --torch-threads 1
"""

from __future__ import annotations

import argparse
import time

import torch

from gaternet_zoo.data import (
    DEFAULT_SOURCE,
    DataPipeline,
    augmentation_generator,
    build_pipeline,
    load_image_dataset,
)


def measure_loader_throughput(
    pipeline: DataPipeline | None = None,
    *,
    source: str = DEFAULT_SOURCE,
    batch_size: int = 128,
    num_workers: int | None = None,
    device: str | torch.device = "cpu",
    channels_last: bool = False,
    warmup_batches: int = 10,
    min_seconds: float = 3.0,
    seed: int = 0,
) -> float:
    """Return training-input images/s: load, move to ``device``, augment, normalise.

    Batches are drawn as a recipe would: a shuffled ``DataLoader`` over ``pipeline.train_dataset`` (full batches
    only), then ``prepare_batch(..., train=True)`` with the per-step generator. Epochs repeat until at least
    ``min_seconds`` have been timed after the first ``warmup_batches`` batches.

    Args:
        pipeline: Pipeline to measure; built from ``source`` when ``None``.
        source: Data source for ``load_image_dataset`` when no pipeline is given.
        batch_size: Images per batch.
        num_workers: DataLoader workers; ``None`` uses the pipeline's recommended count.
        device: Where augmentation and normalisation run.
        channels_last: Normalise into channels-last memory format (only when the pipeline is built here).
        warmup_batches: Batches run before the clock starts (worker start-up, allocator warm-up).
        min_seconds: Shortest timed span.
        seed: Seed of shuffling and augmentation.

    Returns:
        Images per second over the timed span.
    """
    if pipeline is None:
        pipeline = build_pipeline(load_image_dataset(source, split_eval=None), channels_last=channels_last)
    workers = pipeline.num_workers if num_workers is None else num_workers
    device = torch.device(device)
    loader = torch.utils.data.DataLoader(
        pipeline.train_dataset,
        batch_size=batch_size,
        shuffle=True,
        drop_last=True,
        num_workers=workers,
        persistent_workers=workers > 0,
        pin_memory=device.type == "cuda",
        generator=torch.Generator().manual_seed(seed),
    )
    if len(loader) == 0:
        raise ValueError(f"dataset of {len(pipeline.train_dataset)} images has no full batch of {batch_size}")

    def sync() -> None:
        # Kernels are asynchronous on accelerators: only count work that has actually finished.
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    seen = 0
    start = None
    batches = 0
    epoch = 0
    checksum = 0.0  # Consumes the outputs so no step can be skipped as dead code.
    while True:
        for step, batch in enumerate(loader):
            pixels = batch["pixel_values"].to(device, non_blocking=True)
            x = pipeline.prepare_batch(pixels, train=True, generator=augmentation_generator(seed, epoch, step))
            checksum += float(x[0, 0, 0, 0])
            batches += 1
            if batches == warmup_batches:
                sync()
                start = time.perf_counter()
            elif start is not None:
                seen += x.shape[0]
                if time.perf_counter() - start >= min_seconds:
                    sync()
                    return seen / (time.perf_counter() - start)
        epoch += 1


def main(argv: list[str] | None = None) -> None:
    """Command-line entry point: print the loader throughput."""
    parser = argparse.ArgumentParser(description="Data pipeline throughput (images/s).")
    parser.add_argument("--source", default=DEFAULT_SOURCE)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--num-workers", type=int, default=None, help="default: the pipeline's recommendation")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--channels-last", action="store_true")
    parser.add_argument("--seconds", type=float, default=3.0)
    # On a shared 2-core machine torch's 2 intra-op threads stall whenever another process holds a core;
    # 1 thread gives a stable figure there.
    parser.add_argument("--torch-threads", type=int, default=None, help="default: torch's own choice")
    args = parser.parse_args(argv)
    if args.torch_threads is not None:
        torch.set_num_threads(args.torch_threads)

    pipeline = build_pipeline(load_image_dataset(args.source, split_eval=None), channels_last=args.channels_last)
    workers = pipeline.num_workers if args.num_workers is None else args.num_workers
    rate = measure_loader_throughput(
        pipeline, batch_size=args.batch_size, num_workers=workers, device=args.device, min_seconds=args.seconds
    )
    print(
        f"data pipeline ({pipeline.kind}, {len(pipeline.train_dataset)} train images, batch {args.batch_size}, "
        f"{workers} workers, {torch.get_num_threads()} torch threads, {args.device}): {rate:,.0f} images/s"
    )


if __name__ == "__main__":
    main()
