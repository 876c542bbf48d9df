"""Training throughput benchmark: data loader vs training step, recipe vs a bare loop, GaterNet vs its backbone.

Three figures, all in images/s on the built-in CIFAR-10 subset at batch 128 (after warm-up, so oneDNN's kernel
builds and allocator growth are not timed):

1. data loader (``bench_data.measure_loader_throughput``: load, augment, normalise) vs one training step
   (forward + backward + SGD on a ready batch) of ``gaternet_resnet20``. A ratio well above 1 means the input
   pipeline is not what limits training.
2. ``recipes/train.py`` (Accelerate, scheduler, accumulation context, logging, per-epoch eval excluded) vs a minimal
   hand-written PyTorch loop over the same model, data, augmentation and batches. Target: >= 0.9x.
3. ``gaternet_resnet20`` vs its plain backbone ``cifar_resnet20``: training-step throughput ratio next to their
   MACs ratio (the gater's extra compute; mask-mode gating saves nothing at run time).

Usage::

    python -m bench.bench_train               # ~3-5 minutes on 2 CPU cores
    python -m bench.bench_train --threads 1 --seconds 5   # steadier when other jobs share the cores
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from gaternet_zoo.data import DEFAULT_SOURCE
from gaternet_zoo.evaluation import has_gates

ROOT = Path(__file__).resolve().parents[1]


def _pipeline(model: torch.nn.Module, max_train_samples: int | None = None):
    from gaternet_zoo.data import build_pipeline, load_image_dataset

    source = load_image_dataset(DEFAULT_SOURCE, split_eval=None)
    if max_train_samples:
        from dataclasses import replace

        source = replace(source, train=source.train.select(range(min(max_train_samples, len(source.train)))))
    return build_pipeline(source, model=model, channels_last=True)


def _make(name: str) -> torch.nn.Module:
    import gaternet_zoo

    torch.manual_seed(0)
    return gaternet_zoo.create_model(name).to(memory_format=torch.channels_last).train()


def _step_fn(model: torch.nn.Module):
    """One SGD training step on a ready batch, the way the recipe computes its loss."""
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, nesterov=True, weight_decay=5e-4)
    gated = has_gates(model)

    def step(x: torch.Tensor, y: torch.Tensor) -> float:
        logits = model.forward_with_gates(x)[0] if gated else model(x)
        loss = F.cross_entropy(logits, y)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return float(loss.detach())

    return step


def step_throughput(name: str, batch_size: int, seconds: float, warmup: int) -> float:
    """Images/s of forward + backward + optimizer step on one fixed, already prepared batch."""
    model = _make(name)
    step = _step_fn(model)
    x = torch.randn(batch_size, 3, 32, 32).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (batch_size,))
    for _ in range(warmup):
        step(x, y)
    done, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds or done < 3:
        step(x, y)
        done += 1
    return done * batch_size / (time.perf_counter() - start)


def bare_loop_throughput(name: str, batch_size: int, warmup: int, seed: int = 0) -> float:
    """Images/s of a minimal PyTorch loop over one full epoch: load, augment, normalise, step (after warm-up)."""
    from gaternet_zoo.data import augmentation_generator

    model = _make(name)
    pipeline = _pipeline(model)
    step = _step_fn(model)
    loader = torch.utils.data.DataLoader(pipeline.train_dataset, batch_size=batch_size, shuffle=True, drop_last=True,
                                         generator=torch.Generator().manual_seed(seed))
    for i, batch in enumerate(loader):  # Warm-up epoch prefix: kernels built, allocator grown.
        if i >= warmup:
            break
        x = pipeline.prepare_batch(batch["pixel_values"], train=True, generator=augmentation_generator(seed, 0, i))
        step(x, batch["label"])
    images, start = 0, time.perf_counter()
    for i, batch in enumerate(loader):
        x = pipeline.prepare_batch(batch["pixel_values"], train=True, generator=augmentation_generator(seed, 1, i))
        step(x, batch["label"])
        images += x.shape[0]
    return images / (time.perf_counter() - start)


def recipe_throughput(name: str, batch_size: int, epochs: int) -> float:
    """``train_images_per_sec`` of the recipe's last epoch (the first one includes the warm-up)."""
    from recipes import train as recipe
    with tempfile.TemporaryDirectory() as tmp:
        record = recipe.main([
            "--model", name, "--cpu", "--epochs", str(epochs), "--batch-size", str(batch_size), "--max-eval-samples",
            str(batch_size), "--output-dir", str(Path(tmp) / "run"), "--keep-checkpoints", "1", "--no-model-ema",
        ])
    return float(record["train_images_per_sec"])


def macs_ratio(gated: str, plain: str) -> tuple[int, int]:
    """MACs per image of the whole GaterNet (backbone + gater) and of the plain backbone."""
    from gaternet_zoo.utils import count_macs, gaternet_macs

    return gaternet_macs(_make(gated))["total"], count_macs(_make(plain).eval(), torch.zeros(1, 3, 32, 32))[0]


def main(argv: list[str] | None = None) -> None:
    """Run the three measurements and print them with their ratios."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="gaternet_resnet20")
    parser.add_argument("--backbone", default="cifar_resnet20", help="the plain backbone of --model")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--seconds", type=float, default=8.0, help="timed span of each step measurement")
    parser.add_argument("--warmup", type=int, default=5, help="untimed steps before each measurement")
    parser.add_argument("--recipe-epochs", type=int, default=2, help="recipe epochs; the last one is timed")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch intra-op threads (default: torch's); 1 is steadier on CPUs shared with others")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    bs = args.batch_size
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, batch {bs}, built-in CIFAR-10 subset")

    try:
        from bench.bench_data import measure_loader_throughput
    except ImportError:
        measure_loader_throughput = None
    if measure_loader_throughput is not None:
        loader = measure_loader_throughput(_pipeline(_make(args.model)), batch_size=bs, channels_last=True,
                                           min_seconds=args.seconds / 2)
    else:
        loader = float("nan")
    step = step_throughput(args.model, bs, args.seconds, args.warmup)
    print(f"(1) data loader {loader:9.0f} img/s | {args.model} training step {step:7.1f} img/s | "
          f"loader/step = {loader / step:.1f}x")

    recipe = recipe_throughput(args.model, bs, args.recipe_epochs)
    bare = bare_loop_throughput(args.model, bs, args.warmup)
    verdict = "meets" if recipe / bare >= 0.9 else "MISSES"
    print(f"(2) recipes/train.py {recipe:7.1f} img/s | bare PyTorch loop {bare:7.1f} img/s | "
          f"recipe/bare = {recipe / bare:.2f}x ({verdict} the 0.9x target)")

    plain = step_throughput(args.backbone, bs, args.seconds, args.warmup)
    gated_macs, plain_macs = macs_ratio(args.model, args.backbone)
    print(f"(3) {args.model} {step:7.1f} img/s | {args.backbone} {plain:7.1f} img/s | "
          f"time ratio (plain/gated throughput) = {plain / step:.2f}x | MACs ratio (gated/plain) = "
          f"{gated_macs / plain_macs:.2f}x ({gated_macs / 1e6:.1f}M vs {plain_macs / 1e6:.1f}M per image)")


if __name__ == "__main__":
    main()
