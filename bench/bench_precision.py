"""CPU training speed by numeric format: the recipe's new defaults next to its old ones, and torch.compile's pay-off.

Three measurements, each side by side in one run on the built-in CIFAR-10 subset at batch 128, after warm-up
(oneDNN builds its kernels in the first steps, so those are never timed):

1. A bare training step (forward + backward + SGD on a ready batch) in fp32 NCHW, fp32 channels_last and bf16
   autocast + channels_last, for the GaterNet and for its plain backbone. The formats are measured in interleaved
   rounds and the median of the rounds is printed, so a load that comes and goes on a shared machine hits every
   format alike.
2. ``recipes/train.py`` with the CIFAR-10 GaterNet config (``recipes/configs/cifar10_gaternet_resnet20.yaml``, on
   the built-in subset) under its old CPU defaults (fp32, channels_last) and its new ones (``mixed_precision:
   auto``: bf16 autocast where the CPU supports bf16, channels_last), alternating old/new runs. Target: the new
   defaults train ``gaternet_resnet20`` >= 1.4x as fast as the old ones.
3. ``torch.compile`` (inductor) on top of bf16 + channels_last: the compile time and the steady-state step
   throughput against eager, and from them the net time it saves (or costs) over a 30-epoch run on the full
   CIFAR-10 training set (50,000 images an epoch). The recipe keeps compile opt-in unless that figure is a saving.

Usage::

    python -m bench.bench_precision                 # ~5-8 minutes on 2 CPU cores
    python -m bench.bench_precision --no-compile    # skip (3)
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import nullcontext
from pathlib import Path

import torch
import torch.nn.functional as F
import yaml

from gaternet_zoo.data import DEFAULT_SOURCE

FORMATS = ("fp32 NCHW", "fp32 channels_last", "bf16 channels_last")
# The CIFAR-10 recipe of the GaterNet (its CPU default is mixed_precision: auto), run on the built-in subset.
CIFAR_CONFIG = Path(__file__).resolve().parents[1] / "recipes" / "configs" / "cifar10_gaternet_resnet20.yaml"
RECIPE = Path(__file__).resolve().parents[1] / "recipes" / "train.py"


def _bf16_supported() -> bool:
    """Whether this CPU runs bf16 matmuls natively (AVX512-BF16 or AMX); elsewhere bf16 is emulated and slow."""
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(getattr(torch.cpu, name, lambda: False)() for name in checks)


class StepRunner:
    """One model, optimizer and ready batch in one numeric format; ``run(seconds)`` returns images/s."""

    def __init__(self, name: str, fmt: str, batch_size: int, compile_model: bool = False) -> None:
        import gaternet_zoo

        torch.manual_seed(0)
        self.channels_last = fmt != "fp32 NCHW"
        self.bf16 = fmt.startswith("bf16")
        model = gaternet_zoo.create_model(name).train()
        if self.channels_last:
            model = model.to(memory_format=torch.channels_last)
        self.gated = hasattr(model, "forward_with_gates")
        self.optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, nesterov=True, weight_decay=5e-4)
        self.model = model
        self.forward = torch.compile(model.forward_with_gates if self.gated else model) if compile_model else (
            model.forward_with_gates if self.gated else model)
        x = torch.randn(batch_size, 3, 32, 32)
        self.x = x.contiguous(memory_format=torch.channels_last) if self.channels_last else x
        self.y = torch.randint(0, 10, (batch_size,))
        self.batch_size = batch_size

    def step(self) -> None:
        autocast = torch.autocast("cpu", dtype=torch.bfloat16) if self.bf16 else nullcontext()
        with autocast:
            out = self.forward(self.x)
            logits = out[0] if self.gated else out
            loss = F.cross_entropy(logits.float(), self.y)
        loss.backward()
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)

    def run(self, seconds: float) -> float:
        done, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds or done < 3:
            self.step()
            done += 1
        return done * self.batch_size / (time.perf_counter() - start)


def bare_formats(name: str, batch_size: int, seconds: float, rounds: int, warmup: int) -> dict[str, float]:
    """Median images/s per format over interleaved rounds."""
    runners = {fmt: StepRunner(name, fmt, batch_size) for fmt in FORMATS}
    for runner in runners.values():
        for _ in range(warmup):
            runner.step()
    samples: dict[str, list[float]] = {fmt: [] for fmt in FORMATS}
    for _ in range(rounds):
        for fmt, runner in runners.items():
            samples[fmt].append(runner.run(seconds))
    return {fmt: statistics.median(v) for fmt, v in samples.items()}


def recipe_formats(name: str, batch_size: int, epochs: int, rounds: int) -> dict[str, tuple[float, str]]:
    """Median ``train_images_per_sec`` of the recipe's last epoch with old and new CPU defaults, alternating.

    Each run is its own process: Accelerate's state (the mixed precision among it) is set once per process.
    """
    settings = {"old defaults (fp32, channels_last)": ["--mixed-precision", "no"], "new defaults": []}
    samples: dict[str, list[float]] = {k: [] for k in settings}
    precision: dict[str, str] = {}
    for _ in range(rounds):
        for label, extra in settings.items():
            with tempfile.TemporaryDirectory() as tmp:
                out = Path(tmp) / "run"
                subprocess.run([
                    sys.executable, str(RECIPE), "--config", str(CIFAR_CONFIG), "--data", DEFAULT_SOURCE,
                    "--model", name, "--cpu", "--epochs", str(epochs), "--batch-size", str(batch_size),
                    "--max-eval-samples", str(batch_size), "--output-dir", str(out), "--keep-checkpoints", "1",
                    "--no-model-ema", *extra], check=True, capture_output=True, text=True)
                record = json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])
                runtime = yaml.safe_load((out / "config.yaml").read_text())["runtime"]
            samples[label].append(float(record["train_images_per_sec"]))
            precision[label] = str(runtime.get("mixed_precision"))
    return {k: (statistics.median(v), precision[k]) for k, v in samples.items()}


def compile_payoff(name: str, batch_size: int, seconds: float, warmup: int) -> tuple[float, float, float]:
    """(compile seconds, eager img/s, compiled img/s) in bf16 + channels_last."""
    eager = StepRunner(name, "bf16 channels_last", batch_size)
    for _ in range(warmup):
        eager.step()
    compiled = StepRunner(name, "bf16 channels_last", batch_size, compile_model=True)
    start = time.perf_counter()
    compiled.step()  # The first call compiles forward and backward.
    first = time.perf_counter() - start
    for _ in range(warmup):
        compiled.step()
    eager_ips, compiled_ips = [], []
    for _ in range(2):
        eager_ips.append(eager.run(seconds))
        compiled_ips.append(compiled.run(seconds))
    steady = statistics.median(compiled_ips)
    # The first call's cost beyond one ordinary compiled step is the compile time.
    return max(first - batch_size / steady, 0.0), statistics.median(eager_ips), steady


def main(argv: list[str] | None = None) -> None:
    """Run the measurements and print them with their ratios."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="gaternet_resnet20")
    parser.add_argument("--backbone", default="cifar_resnet20", help="the plain backbone of --model")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--seconds", type=float, default=6.0, help="timed span of one step measurement")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds per format")
    parser.add_argument("--warmup", type=int, default=5, help="untimed steps before measuring")
    parser.add_argument("--recipe-epochs", type=int, default=2, help="recipe epochs; the last one is timed")
    parser.add_argument("--recipe-rounds", type=int, default=2, help="alternating old/new recipe runs each")
    parser.add_argument("--no-compile", action="store_true", help="skip the torch.compile measurement")
    parser.add_argument("--no-bare", action="store_true", help="skip the bare-step measurement (1)")
    args = parser.parse_args(argv)
    bs = args.batch_size
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, batch {bs}, "
          f"CPU bf16 support: {_bf16_supported()}")

    for name in () if args.no_bare else (args.model, args.backbone):
        res = bare_formats(name, bs, args.seconds, args.rounds, args.warmup)
        base = res["fp32 NCHW"]
        cells = " | ".join(f"{fmt} {ips:6.0f} img/s ({ips / base:.2f}x)" for fmt, ips in res.items())
        print(f"(1) bare step, {name}: {cells}")

    rec = recipe_formats(args.model, bs, args.recipe_epochs, args.recipe_rounds)
    (old_label, (old, old_prec)), (new_label, (new, new_prec)) = rec.items()
    verdict = "meets" if new / old >= 1.4 else "MISSES"
    print(f"(2) recipes/train.py {args.model}: {old_label} [{old_prec}] {old:6.0f} img/s | {new_label} "
          f"[{new_prec}] {new:6.0f} img/s | new/old = {new / old:.2f}x ({verdict} the 1.4x target)")

    if not args.no_compile:
        compile_s, eager, compiled = compile_payoff(args.model, bs, args.seconds, args.warmup)
        images = 30 * 50_000
        saved = images / eager - images / compiled - compile_s
        print(f"(3) torch.compile, {args.model} bf16 channels_last: compile {compile_s:.0f} s | eager {eager:6.0f} "
              f"img/s | compiled {compiled:6.0f} img/s ({compiled / eager:.2f}x) | over 30 epochs of 50k images: "
              f"{'saves' if saved > 0 else 'costs'} {abs(saved) / 60:.1f} min")


if __name__ == "__main__":
    main()
