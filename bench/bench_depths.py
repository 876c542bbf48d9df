"""Training throughput of the plain and gated CIFAR ResNets of every depth, side by side in one run.

The figure behind the "train img/s" column of the decisive table in docs/results.md: a bare training step
(forward + backward + SGD on a ready batch of 128) in the CIFAR recipes' CPU default format, bf16 autocast +
channels_last (``bench_precision.StepRunner``), after warm-up. The models are measured in interleaved rounds and
the median of the rounds is printed, so a load that comes and goes hits all alike. The last line is the
``--img-per-sec`` argument of ``tools/depth_table.py``.

Usage::

    python -m bench.bench_depths                        # ~2-3 minutes on 2 CPU cores
    python -m bench.bench_depths --depths 20 --format "fp32 channels_last"
"""

from __future__ import annotations

import argparse
import statistics

from bench.bench_precision import FORMATS, StepRunner


def main(argv: list[str] | None = None) -> dict[str, float]:
    """Measure and print images/s per model; returns them."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--depths", type=int, nargs="+", default=[20, 56])
    parser.add_argument("--format", default="bf16 channels_last", choices=FORMATS)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--seconds", type=float, default=6.0, help="timed span per model and round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=5, help="untimed steps per model before measuring")
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args(argv)

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)

    names = [f"{kind}_resnet{d}" for d in args.depths for kind in ("cifar", "gaternet")]
    runners = {name: StepRunner(name, args.format, args.batch_size) for name in names}
    for runner in runners.values():
        for _ in range(args.warmup):
            runner.step()
    samples: dict[str, list[float]] = {name: [] for name in names}
    for _ in range(args.rounds):
        for name, runner in runners.items():
            samples[name].append(runner.run(args.seconds))
    rates = {name: statistics.median(values) for name, values in samples.items()}
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, batch {args.batch_size}, {args.format}, "
          f"median of {args.rounds} interleaved rounds")
    for d in args.depths:
        plain, gated = rates[f"cifar_resnet{d}"], rates[f"gaternet_resnet{d}"]
        print(f"  ResNet-{d}: plain {plain:6.0f} img/s | gated {gated:6.0f} img/s | gated/plain = {gated / plain:.2f}x")
    print("--img-per-sec " + " ".join(f"{name}={rate:.0f}" for name, rate in rates.items()))
    return rates


if __name__ == "__main__":
    main()
