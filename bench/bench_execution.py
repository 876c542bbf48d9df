"""CPU latency of a GaterNet's backbone by execution mode: plain, mask, pruned, skip, pruned + skip.

The gates are the published ``gaternet_resnet20.cifar10`` weights' own (or ``--weights``'), computed by its
gater on images of the built-in CIFAR-10 subset; the backbone is then timed with those gates given
(``model(x, gates=g)``), and the gater's own latency is printed apart. Next to each latency: the share of the
dense backbone's MACs that the gates use (the analytic figure of the model card, counting the branches that skip
execution does not run) and the ratio the issue's goal is stated in,

    latency / (MACs used share x dense latency)   (goal: <= 1.15 at batch 1)

The pruned export and skip execution are each timed twice: exact (only the always-closed, or closed, filters left
out) and with each block's computed filters rounded up to a multiple of ``--round-to`` (CPU conv kernels are
vectorised over 8 or 16 channels; the extra filters stay gated, so the logits do not change).

Modes are timed in interleaved rounds (median of the rounds) so that a load that comes and goes hits all alike;
each round cycles through a fixed set of images, so batch-1 figures average over inputs with different gates.

Usage::

    python -m bench.bench_execution                 # ~3-4 minutes on 2 CPU cores
    python -m bench.bench_execution --weights local-dir:DIR --threads 1
"""

from __future__ import annotations

import argparse
import copy
import statistics
from pathlib import Path

import numpy as np
import torch

from bench._timing import median_call_seconds
from gaternet_zoo.data import DEFAULT_SOURCE

ROOT = Path(__file__).resolve().parents[1]


def _images(model: torch.nn.Module, n: int) -> torch.Tensor:
    from gaternet_zoo.data import load_image_dataset

    source = load_image_dataset(DEFAULT_SOURCE)
    images = np.stack([np.asarray(im.convert('RGB')) for im in source.eval[source.image_column][:n]])
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float().div(255)
    mean, std = model.pretrained_cfg['mean'], model.pretrained_cfg['std']
    return (x - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)



@torch.no_grad()
def main(argv: list[str] | None = None) -> None:
    """Measure and print latencies, MAC shares and the goal ratio per mode, at each batch size."""
    import gaternet_zoo as gz
    from gaternet_zoo import GateStatistics, prune_gaternet
    from gaternet_zoo.utils import gaternet_macs

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--weights', default=f'local-dir:{ROOT / "weights" / "gaternet_resnet20.cifar10"}')
    parser.add_argument('--images', type=int, default=256, help='subset test images (calibration and inputs)')
    parser.add_argument('--batch-sizes', type=int, nargs='+', default=[1, 32])
    parser.add_argument('--seconds', type=float, default=3.0, help='timed span per mode and round')
    parser.add_argument('--rounds', type=int, default=3)
    parser.add_argument('--threads', type=int, default=None)
    parser.add_argument('--round-to', type=int, default=8, help='kept-filter multiple of the rounded pruned export')
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    model = gz.create_model(args.weights).eval()
    x_all = _images(model, args.images)
    gates_all = model.forward_gates(x_all)
    stats = GateStatistics(model.gate_sites)
    stats.update(gates_all)
    pruned = prune_gaternet(model, stats, calibration=f'{args.images} images of the built-in subset')
    rounded = prune_gaternet(model, stats, calibration=f'{args.images} images of the built-in subset',
                             round_to=args.round_to)
    skip = copy.deepcopy(model).set_execution('skip')
    skip_rounded = copy.deepcopy(model).set_execution('skip', width_multiple=args.round_to)
    pruned_skip = copy.deepcopy(rounded).set_execution('skip', width_multiple=args.round_to)
    size = tuple(x_all.shape[1:])
    macs = gaternet_macs(model, size, gates_all)
    used_share = macs['backbone_used'] / macs['backbone']
    print(f'torch {torch.__version__}, {torch.get_num_threads()} threads; {args.weights}')
    print(f'backbone MACs {macs["backbone"] / 1e6:.2f} M dense, {macs["backbone_used"] / 1e6:.2f} M used given the '
          f'gates ({used_share:.3f}); gater {macs["gater"] / 1e6:.2f} M; pruned: '
          f'{pruned.pretrained_cfg["pruning"]["filters_removed"]} of {model.gate_size} gated filters removed')

    modes = {
        'plain (no gates)': lambda x, g: model.backbone(x),
        'mask': lambda x, g: model(x, gates=g),
        'pruned': lambda x, g: pruned(x, gates=g),
        f'pruned x{args.round_to}': lambda x, g: rounded(x, gates=g),
        'skip': lambda x, g: skip(x, gates=g),
        f'skip x{args.round_to}': lambda x, g: skip_rounded(x, gates=g),
        f'pruned+skip x{args.round_to}': lambda x, g: pruned_skip(x, gates=g),
    }
    for bs in args.batch_sizes:
        batches = [(x_all[i:i + bs], gates_all[i:i + bs]) for i in range(0, len(x_all) - bs + 1, bs)]
        for fn in modes.values():  # warm-up: oneDNN builds its kernels in the first calls
            for x, g in batches[:5]:
                fn(x, g)
        samples: dict[str, list[float]] = {k: [] for k in modes}
        gater: list[float] = []
        for _ in range(args.rounds):
            for name, fn in modes.items():
                samples[name].append(median_call_seconds(lambda b, fn=fn: fn(*b), batches, args.seconds))
            gater.append(median_call_seconds(lambda b: model.forward_gates(b[0]), batches, args.seconds))
        dense = statistics.median(samples['plain (no gates)'])
        print(f'batch {bs}: gater {statistics.median(gater) * 1e3:.3f} ms (apart from the backbone figures below)')
        for name in modes:
            lat = statistics.median(samples[name])
            goal = lat / (used_share * dense)
            print(f'  {name:17s} {lat * 1e3:8.3f} ms  {lat / dense:5.2f}x dense  MACs used {used_share:.3f}  '
                  f'latency/(MACs share x dense) = {goal:.2f}' + ('' if name.startswith('plain') else
                                                               f" ({'meets' if goal <= 1.15 else 'misses'} 1.15)"))


if __name__ == '__main__':
    main()
