"""CPU latency of a published GaterNet's static export next to the GaterNet itself, at batch 1 and 8.

For each model (by default the published ``gaternet_resnet20.cifar10`` and ``gaternet_resnet20.cifar10_macs50``
from ``weights/``), the gates are read over the training split of the built-in CIFAR-10 subset (the calibration
data; the test split is not used to choose anything) and counted: always open, always closed, input-dependent.

* A model whose gates are all constant there exports exactly (``export_static``): no gater, no gate slot.
* A model with input-dependent gates cannot: the export needs those gates fixed, with ``--input-dependent open``
  (their filters always open) or ``majority`` (each at its more frequent state). That changes the model's
  function, so the top-1 of every export on the subset's test split is printed next to the GaterNet's, with the
  share of test images whose prediction stays the GaterNet's.

Then, whole models timed side by side on test images (gater included where there is one): the GaterNet in mask
mode (the unpruned model) and in skip mode, the pruned GaterNet (``prune_gaternet``, which keeps the gater), the
static export at each ``--round-to`` (kept filters per block rounded up to a multiple: CPU conv kernels are
vectorised over 8 or 16 channels; the extra filters are zeroed, so the logits do not change), and the plain
backbone (same architecture, no gates). Each line gives the latency and its ratio to the GaterNet (mask) and to the
plain backbone. Modes are timed in interleaved rounds (median of the rounds) after a warm-up, so that a load that
comes and goes hits all alike.

Usage::

    python -m bench.bench_static_export                  # a few minutes on 2 CPU cores
    python -m bench.bench_static_export --threads 1 --batch-sizes 1
    python -m bench.bench_static_export --rounds 1 --seconds 0.05 --images 64 --test-images 64   # runs, no figures
"""
from __future__ import annotations

import argparse
import copy
import statistics
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from bench._timing import median_call_seconds

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_WEIGHTS = [f'local-dir:{ROOT / "weights" / name}'
                   for name in ('gaternet_resnet20.cifar10', 'gaternet_resnet20.cifar10_macs50')]


def _split(model: torch.nn.Module, split: str, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The first ``n`` images of a split of the built-in subset, normalised as ``model`` expects, and labels."""
    from gaternet_zoo.data import DEFAULT_SOURCE, load_image_dataset

    source = load_image_dataset(DEFAULT_SOURCE)
    rows = source.train if split == 'train' else source.eval
    n = min(n, len(rows))
    images = np.stack([np.asarray(im.convert('RGB')) for im in rows[source.image_column][:n]])
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float().div(255)
    mean, std = model.pretrained_cfg['mean'], model.pretrained_cfg['std']
    x = (x - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    return x, torch.as_tensor(rows[source.label_column][:n])


def _predict(model: torch.nn.Module, x: torch.Tensor, batch: int = 250) -> torch.Tensor:
    return torch.cat([model(x[i:i + batch]).argmax(1) for i in range(0, len(x), batch)])



@torch.no_grad()
def bench_model(weights: str, args: argparse.Namespace) -> None:
    """Calibrate, export and time one published GaterNet; print its gate counts, accuracies and latencies."""
    import gaternet_zoo as gz
    from gaternet_zoo import GateStatistics, export_static, prune_gaternet

    model = gz.create_model(weights).eval()
    name = weights.rsplit('/', 1)[-1]
    x_cal, _ = _split(model, 'train', args.images)
    x_test, y_test = _split(model, 'test', args.test_images)
    stats = GateStatistics(model.gate_sites)
    for i in range(0, len(x_cal), 250):
        stats.update(model.forward_gates(x_cal[i:i + 250]))
    counts = stats.counts()
    calibration = f'{len(x_cal)} training images of the built-in CIFAR-10 subset'
    print(f'\n{name}: {model.gate_size} gates over {len(x_cal)} calibration images (subset train split): '
          f'{counts["always_on"]} always open, {counts["always_off"]} always closed, '
          f'{counts["input_dependent"]} input-dependent')

    policies = ['refuse'] if counts['input_dependent'] == 0 else list(args.input_dependent)
    if counts['input_dependent']:
        print(f'  not exact: a static export needs the {counts["input_dependent"]} input-dependent gates fixed '
              f'(--input-dependent {" / ".join(policies)}), which changes what the model computes')
    statics, first = {}, {}
    for policy in policies:
        suffix = '' if policy == 'refuse' else f' ({policy})'
        for round_to in args.round_to:
            statics[f'static x{round_to}{suffix}'] = export_static(
                model, stats, calibration=calibration, source=name, round_to=round_to, input_dependent=policy)
        # Rounding zeroes filters that are closed anyway: every round_to gives the same predictions.
        first[f'static export{suffix}'] = statics[f'static x{args.round_to[0]}{suffix}']
    pruned = prune_gaternet(model, stats, calibration=calibration)
    skip = copy.deepcopy(model).set_execution('skip')
    plain = gz.create_model(model.backbone_name, num_classes=model.num_classes).eval()

    reference = _predict(model, x_test)
    top1 = (reference == y_test).float().mean().item() * 100
    print(f'  top-1 on the subset test split ({len(x_test)} images): GaterNet {top1:.2f} %')
    for label, static in first.items():
        predicted = _predict(static, x_test)
        info = static.pretrained_cfg['static_export']
        print(f'    {label:24s} top-1 '
              f'{(predicted == y_test).float().mean().item() * 100:.2f} %, same prediction as the GaterNet for '
              f'{(predicted == reference).float().mean().item() * 100:.1f} % of the images; '
              f'{info["filters_removed"]} of {model.gate_size} gated filters removed')

    modes: dict[str, Callable[[torch.Tensor], object]] = {
        'GaterNet (mask)': model, 'GaterNet (skip)': skip, 'pruned GaterNet': pruned, **statics,
        f'plain {model.backbone_name}': plain}
    for bs in args.batch_sizes:
        batches = [x_test[i:i + bs] for i in range(0, len(x_test) - bs + 1, bs)][:args.max_batches]
        for fn in modes.values():  # warm-up: oneDNN builds its kernels in the first calls
            for x in batches[:args.warmup]:
                fn(x)
        samples: dict[str, list[float]] = {k: [] for k in modes}
        for _ in range(args.rounds):
            for label, fn in modes.items():
                samples[label].append(median_call_seconds(fn, batches, args.seconds))
        latency = {k: statistics.median(v) for k, v in samples.items()}
        base, plain_lat = latency['GaterNet (mask)'], latency[f'plain {model.backbone_name}']
        print(f'  batch {bs}, {torch.get_num_threads()} threads (median of {args.rounds} rounds):')
        for label, lat in latency.items():
            print(f'    {label:26s} {lat * 1e3:8.3f} ms   vs GaterNet (mask) = {lat / base:.2f}x   '
                  f'vs plain = {lat / plain_lat:.2f}x')


def main(argv: list[str] | None = None) -> None:
    """Parse the options and run every model."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--weights', nargs='+', default=DEFAULT_WEIGHTS,
                        help='GaterNets to export (names create_model takes; default: the two published ResNet-20 '
                             'GaterNets in weights/)')
    parser.add_argument('--images', type=int, default=3000, help='calibration images (subset train split)')
    parser.add_argument('--test-images', type=int, default=1000, help='test images (accuracy and timed inputs)')
    parser.add_argument('--batch-sizes', type=int, nargs='+', default=[1, 8])
    parser.add_argument('--round-to', type=int, nargs='+', default=[1, 8, 16],
                        help='kept-filter multiples of the static exports compared')
    parser.add_argument('--input-dependent', nargs='+', choices=('open', 'majority'), default=['open', 'majority'],
                        help='how a model with input-dependent gates is exported (each is timed and its accuracy '
                             'printed)')
    parser.add_argument('--seconds', type=float, default=2.0, help='timed span per mode and round')
    parser.add_argument('--rounds', type=int, default=3)
    parser.add_argument('--warmup', type=int, default=10, help='untimed calls per mode and batch size first')
    parser.add_argument('--max-batches', type=int, default=64, help='distinct input batches cycled through')
    parser.add_argument('--threads', type=int, default=None)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f'torch {torch.__version__}, {torch.get_num_threads()} threads')
    for weights in args.weights:
        bench_model(weights, args)


if __name__ == '__main__':
    main()
