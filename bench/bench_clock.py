"""The clock: whole-GaterNet CPU latency (gater included, skip execution) against its plain backbone.

Issue 26 item 5. For each model, input size, batch size (1 and 8) and gate pattern, side by side:

* **plain**: the backbone alone, an ungated timm model of the same architecture (``timm.create_model(backbone)``);
* **GaterNet (skip)**: the whole model in skip mode called as users call it, ``model(x)`` (its input checks
  included): the gater runs on the image (encoder, bottleneck and head: its whole cost is paid) and the backbone
  runs with its gates, skipping the closed filters and the branches whose gates (or branch gate) are all closed;
* **gater**: the gater alone (``model.gater(x)``), apart;

and the MACs of the same gates (``gaternet_macs``, per image): the backbone MACs those gates use, the gater's and
their sum, each as a multiple of the dense backbone's.

**How a synthetic pattern reaches the backbone.** The gater's binariser is replaced by :class:`FixedGates`, which
takes the gater's logits and returns the pattern instead (the same gate vector for every sample of the batch). The
gater's encoder and head still run on the image in every call, so ``model(x)`` costs what it costs with learnt
gates; only the comparison of the logits with the threshold (one per gate) is replaced by an ``expand``.
Nothing is timed apart and added.

**The patterns** (the issue's table), on a model built with ``branch_gates=True`` and random weights:

* all open: every filter gate and every branch gate open;
* 50 % / 25 % of filters open: each filter gate open with that probability (seeded, ``--seed``; the same for every
  sample), every branch gate open. A site whose filter gates all came out closed has its branch skipped;
* every other branch closed: every filter gate open, and the branch gate of every second block that has one
  closed (the 2nd, 4th, ... in forward order). Blocks without a shortcut have no branch gate and stay open: in
  EfficientNet-B0 the inverted residuals that change width or stride (7 of its 16 gated blocks) have no skip, so 4
  of its 9 branches are closed. Every block of the CIFAR ResNets, timm ResNet-50 and ConvNeXt-T has a shortcut;

and, for the published models (``gaternet_resnet20.cifar10``, ``gaternet_resnet56.cifar10``: no branch gates, the
shipped weights), **their real gates** on the test images of the built-in CIFAR-10 subset, cycling through
``--images`` of them (batch 1 figures average over inputs with different gates; the MACs are the mean over those
images, per image).

**Models** (``--models``): ``resnet20`` and ``resnet56`` (32 px) with the paper's ResNet-20 gater on the full image,
``resnet20-cheap`` and ``resnet56-cheap`` with ``gater="cifar_resnet8", gater_input_size=16``, ``resnet50``,
``convnext_tiny`` and ``efficientnet_b0`` (224 px, the zoo's default gaters: ResNet-18, ResNet-18,
MobileNetV3-Small on the full image), and the published ``resnet20.cifar10`` and ``resnet56.cifar10``. Inputs are
the subset's test images at 32 px and seeded random tensors at 224 px (with fixed gates the values do not matter).

**Timing.** Per model and batch size, the plain backbone, the gater and the GaterNet under each pattern are timed in
``--rounds`` interleaved rounds (each figure the median of the rounds, each round's figure the median call over
about ``--seconds`` and at least ``--min-calls`` calls), after ``--warmup`` untimed calls of each (oneDNN builds its
kernels in the first calls, and skip mode's sliced convs have shapes of their own per pattern), so that a load that
comes and goes hits all alike. ``--quick`` times the 32 px models only, with shorter spans.

Usage::

    python -m bench.bench_clock --quick                     # 32 px models only: ~3 minutes on 2 idle cores
    python -m bench.bench_clock                             # every model: ~12 minutes on 2 idle cores
    python -m bench.bench_clock --out docs/results/clock_table.md   # write the markdown table
    python -m bench.bench_clock --models resnet20 --batch-sizes 1 --rounds 1 --seconds 0.01   # runs, no figures
"""
from __future__ import annotations

import argparse
import re
import statistics
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from bench._timing import median_call_seconds


@dataclass(frozen=True)
class Case:
    """One model of the bench.

    Attributes:
        key: Its name for ``--models``.
        model: The ``create_model`` name.
        kwargs: Further ``create_model`` arguments.
        published: The published weights, timed with their real gates on real images (no synthetic pattern).
    """

    key: str
    model: str
    kwargs: dict[str, Any] = field(default_factory=dict)
    published: bool = False


CHEAP_GATER: dict[str, Any] = {'gater': 'cifar_resnet8', 'gater_input_size': 16}
CASES: dict[str, Case] = {case.key: case for case in (
    Case('resnet20', 'gaternet_resnet20', {'branch_gates': True}),
    Case('resnet20-cheap', 'gaternet_resnet20', {'branch_gates': True, **CHEAP_GATER}),
    Case('resnet56', 'gaternet_resnet56', {'branch_gates': True}),
    Case('resnet56-cheap', 'gaternet_resnet56', {'branch_gates': True, **CHEAP_GATER}),
    Case('resnet50', 'gaternet_resnet50', {'branch_gates': True}),
    Case('convnext_tiny', 'gaternet_convnext_tiny', {'branch_gates': True}),
    Case('efficientnet_b0', 'gaternet_efficientnet_b0', {'branch_gates': True}),
    Case('resnet20.cifar10', 'gaternet_resnet20.cifar10', {'pretrained': True}, published=True),
    Case('resnet56.cifar10', 'gaternet_resnet56.cifar10', {'pretrained': True}, published=True),
)}
#: ``--quick``: the 32 px models.
QUICK_MODELS = ['resnet20', 'resnet20-cheap', 'resnet56', 'resnet56-cheap', 'resnet20.cifar10', 'resnet56.cifar10']
#: Synthetic patterns, in table order: name -> share of filter gates drawn open (``None``: see ``pattern_gates``).
PATTERNS: dict[str, float | None] = {'all open': 1.0, '50 % of filters open': 0.5, '25 % open': 0.25,
                                     'every other branch closed': None}
#: Defaults of the full run and of ``--quick``: (models, rounds, seconds).
FULL = (list(CASES), 3, 2.0)
QUICK = (QUICK_MODELS, 3, 0.8)

COLUMNS = ['model', 'gater', 'input', 'batch', 'gates', 'filters open', 'plain (ms)', 'GaterNet, skip (ms)',
           'GaterNet / plain', 'gater alone (ms)', 'gater / plain', 'MACs: GaterNet / plain',
           'MACs: backbone used / plain', 'MACs: gater / plain']


class FixedGates(nn.Module):
    """A gater binariser that returns a fixed gate vector for every sample: the gater computes its logits, then this.

    Args:
        gates: The gates, ``1 x gate_size``.
    """

    def __init__(self, gates: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer('gates', gates.float())

    def forward(self, logits: torch.Tensor) -> torch.Tensor:
        """``gates`` for each of the ``len(logits)`` samples (the logits are otherwise not used)."""
        return self.gates.expand(logits.shape[0], -1)


def pattern_gates(model: nn.Module, pattern: str, seed: int = 0) -> tuple[torch.Tensor, str]:
    """The ``1 x gate_size`` gates of a synthetic pattern for ``model``, and the pattern's label for the table.

    Args:
        model: A GaterNet (with branch gates for ``'every other branch closed'``).
        pattern: A key of :data:`PATTERNS`.
        seed: Seed of the random filter gates.

    Raises:
        ValueError: For ``'every other branch closed'`` on a model without branch gates.
    """
    gates = torch.ones(1, model.gate_size)
    share = PATTERNS[pattern]
    if share is not None:
        if share < 1:
            drawn = torch.rand(model.num_filter_gates, generator=torch.Generator().manual_seed(seed))
            gates[0, :model.num_filter_gates] = (drawn < share).float()
        return gates, f'{pattern} (random)' if share < 1 else pattern
    branched = [s for s in model.gate_sites if s.branch_offset is not None]
    if not branched:
        raise ValueError(f'{pattern!r} closes branch gates: build {model.backbone_name} with branch_gates=True')
    closed = branched[1::2]
    for site in closed:
        gates[0, site.branch_offset] = 0.0
    label = f'{pattern} ({len(closed)} of {len(branched)})'
    without = len(model.gate_sites) - len(branched)
    if without:
        label += f'; {without} blocks without shortcut stay open'
    return gates, label


def _images(model: nn.Module, n: int) -> torch.Tensor:
    """``n`` test images of the built-in CIFAR-10 subset, normalised as ``model`` expects."""
    from bench.bench_execution import _images as subset_images

    return subset_images(model, n)



def _gater_label(model: nn.Module, side: int) -> str:
    size = model.gater.input_size
    return f'{model.gater_name}, {size[0] if size else side} px'


@torch.no_grad()
def bench_case(case: Case, args: argparse.Namespace) -> list[dict[str, Any]]:
    """Time one model at every batch size and gate pattern (its real gates, for a published model).

    Args:
        case: The model.
        args: The bench's parsed options (:func:`build_parser`, resolved).

    Returns:
        One row per batch size and pattern, for :func:`table_lines`: the table's text cells (``model``, ``gater``,
        ``input``, ``batch``, ``gates``, ``filters open``: the mean share of effective filter gates open), the
        measured latencies in seconds (``plain_s``, ``whole_s``, ``gater_s``) and the MACs per image
        (``macs_backbone`` dense, ``macs_used`` given the gates, ``macs_gater``), from which the table's ratios
        are computed.
    """
    import timm

    import gaternet_zoo as gz
    from gaternet_zoo.utils import gaternet_macs

    model = gz.create_model(case.model, **case.kwargs).eval()
    # timm's own model (the zoo registers its CIFAR ResNets with timm): no gate slot, no gater.
    plain = timm.create_model(model.backbone_name, num_classes=model.num_classes).eval()
    input_size = tuple(model.pretrained_cfg['input_size'])
    side = input_size[-1]
    if case.published or side == 32:
        x_all = _images(model, args.images)
    else:
        x_all = torch.randn(max(args.batch_sizes) * 2, *input_size, generator=torch.Generator().manual_seed(args.seed))
    name = case.model + (' (published weights)' if case.published else ', random weights')

    # Gates per pattern, and their MACs (counted in mask mode, before skip execution is set).
    patterns: dict[str, tuple[str, nn.Module, torch.Tensor]] = {}
    if case.published:
        gates = torch.cat([model.forward_gates(x_all[i:i + 256]) for i in range(0, len(x_all), 256)])
        label = f'real: its gates on {len(x_all)} subset test images'
        patterns['real'] = (label, model.gater.binarizer, gates)
    else:
        for pattern in PATTERNS:
            gates, label = pattern_gates(model, pattern, args.seed)
            patterns[pattern] = (label, FixedGates(gates), gates)
    macs = {key: gaternet_macs(model, input_size, gates) for key, (_, _, gates) in patterns.items()}
    model.set_execution('skip')
    for key, (_, binarizer, gates) in patterns.items():  # the pattern reaches the backbone
        model.gater.binarizer = binarizer
        _, used = model(x_all[:2], return_gates=True)
        if not case.published and not torch.equal(used, gates.expand(2, -1)):
            raise RuntimeError(f'the {key!r} gates did not reach the backbone')

    # What each timed figure calls, and the gater binariser in place while it runs (the pattern's, for the GaterNet).
    first = next(iter(patterns.values()))[1]
    timed: dict[str, tuple[Callable[[torch.Tensor], object], nn.Module]] = {
        'plain': (plain, first), 'gater': (model.gater, first),
        **{key: (model, binarizer) for key, (_, binarizer, _) in patterns.items()}}

    def run_span(key: str, batches: list[torch.Tensor], seconds: float, min_calls: int) -> float:
        fn, model.gater.binarizer = timed[key]
        return median_call_seconds(fn, batches, seconds, min_calls)

    rows = []
    for bs in args.batch_sizes:
        batches = [x_all[i:i + bs] for i in range(0, len(x_all) - bs + 1, bs)]
        for key in timed:  # warm-up: oneDNN builds its kernels in the first calls
            run_span(key, batches, 0.0, args.warmup)
        samples: dict[str, list[float]] = {key: [] for key in timed}
        for _ in range(args.rounds):
            for key in timed:
                samples[key].append(run_span(key, batches, args.seconds, args.min_calls))
        latency = {key: statistics.median(values) for key, values in samples.items()}
        print(f'{case.key}, batch {bs}: plain {latency["plain"] * 1e3:.3f} ms | gater {latency["gater"] * 1e3:.3f} ms '
              f'| gater/plain = {latency["gater"] / latency["plain"]:.2f}x', flush=True)
        for key, (label, _, gates) in patterns.items():
            count = macs[key]
            open_share = model.effective_gates(gates).mean().item()
            row = {
                'model': name, 'gater': _gater_label(model, side), 'input': f'{side} px', 'batch': bs,
                'gates': label, 'filters open': open_share,
                'plain_s': latency['plain'], 'whole_s': latency[key], 'gater_s': latency['gater'],
                'macs_backbone': count['backbone'], 'macs_used': count['backbone_used'], 'macs_gater': count['gater'],
            }
            rows.append(row)
            print(f'  {label}: GaterNet (skip) {row["whole_s"] * 1e3:.3f} ms | '
                  f'GaterNet/plain = {row["whole_s"] / row["plain_s"]:.2f}x | MACs GaterNet/plain = '
                  f'{(count["backbone_used"] + count["gater"]) / count["backbone"]:.2f}x', flush=True)
    return rows


def table_lines(rows: list[dict[str, Any]]) -> list[str]:
    """The markdown table of the rows of :func:`bench_case`: latencies in ms, every ratio computed from them."""
    lines = ['| ' + ' | '.join(COLUMNS) + ' |', '|' + '---|' * len(COLUMNS)]
    for r in rows:
        backbone = r['macs_backbone']
        cells = [
            r['model'], r['gater'], r['input'], str(r['batch']), r['gates'], f'{r["filters open"] * 100:.1f} %',
            f'{r["plain_s"] * 1e3:.3f}', f'{r["whole_s"] * 1e3:.3f}', f'{r["whole_s"] / r["plain_s"]:.2f}x',
            f'{r["gater_s"] * 1e3:.3f}', f'{r["gater_s"] / r["plain_s"]:.2f}x',
            f'{(r["macs_used"] + r["macs_gater"]) / backbone:.3f}x', f'{r["macs_used"] / backbone:.3f}x',
            f'{r["macs_gater"] / backbone:.3f}x',
        ]
        lines.append('| ' + ' | '.join(cells) + ' |')
    return lines


def _cpu_name() -> str:
    try:
        for line in Path('/proc/cpuinfo').read_text().splitlines():
            if line.startswith('model name'):
                return line.split(':', 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or 'unknown CPU'


def build_parser() -> argparse.ArgumentParser:
    """The bench's options (also what :func:`check_table` parses a table's header command with)."""
    parser = argparse.ArgumentParser(prog='python -m bench.bench_clock', description=__doc__.splitlines()[0])
    parser.add_argument('--models', nargs='+', choices=list(CASES), default=None,
                        help=f'models to time (default: all; --quick: {" ".join(QUICK_MODELS)})')
    parser.add_argument('--quick', action='store_true',
                        help=f'the 32 px models, {QUICK[1]} rounds of {QUICK[2]} s: ~3 minutes on 2 idle cores')
    parser.add_argument('--batch-sizes', type=int, nargs='+', default=[1, 8])
    parser.add_argument('--rounds', type=int, default=None, help=f'interleaved rounds (default {FULL[1]})')
    parser.add_argument('--seconds', type=float, default=None,
                        help=f'timed span per figure and round (default {FULL[2]}, --quick {QUICK[2]})')
    parser.add_argument('--min-calls', type=int, default=10, help='timed calls per figure and round, at least')
    parser.add_argument('--warmup', type=int, default=5, help='untimed calls per figure and batch size first')
    parser.add_argument('--images', type=int, default=256, help='subset test images cycled through (32 px)')
    parser.add_argument('--seed', type=int, default=0, help='seed of the random gate patterns and 224 px inputs')
    parser.add_argument('--threads', type=int, default=2)
    parser.add_argument('--out', type=Path, default=None, help='write the markdown table there (default: print it)')
    return parser


def _resolve(args: argparse.Namespace) -> argparse.Namespace:
    models, rounds, seconds = QUICK if args.quick else FULL
    args.models = args.models or models
    args.rounds = args.rounds if args.rounds is not None else rounds
    args.seconds = args.seconds if args.seconds is not None else seconds
    return args


def main(argv: Sequence[str] | None = None) -> list[dict[str, Any]]:
    """Time the models, print their figures, then print or write the table; returns its rows."""
    from tools.tables import generated_table, write_table

    argv = list(sys.argv[1:] if argv is None else argv)
    args = _resolve(build_parser().parse_args(argv))
    torch.set_num_threads(args.threads)
    spans = sum(len(args.batch_sizes) * args.rounds * (2 + (1 if CASES[key].published else len(PATTERNS)))
                for key in args.models)
    print(f'torch {torch.__version__}, {torch.get_num_threads()} threads, {_cpu_name()}; models {" ".join(args.models)}'
          f'; {spans} timed spans of {args.seconds:g} s ({args.min_calls} calls) at least: '
          f'>= {spans * args.seconds / 60:.1f} minutes', flush=True)
    rows = [row for key in args.models for row in bench_case(CASES[key], args)]
    lines = table_lines(rows)
    lines += ['', f'torch {torch.__version__}, {torch.get_num_threads()} threads, {_cpu_name()}; each latency the '
              f'median of {args.rounds} interleaved rounds (each the median call over {args.seconds:g} s, '
              f'{args.min_calls} calls at least) after {args.warmup} warm-up calls.']
    write_table(generated_table(' '.join(['bench.bench_clock', *argv]), lines), args.out)
    return rows


HEADER = re.compile(r'<!-- generated by: python -m bench\.bench_clock(?P<args>(?: .*?)?) \(do not edit\) -->\n')


def _number(cell: str) -> float:
    return float(cell.rstrip('x% ').strip())


def check_table(text: str) -> None:
    """Check a table this bench wrote: its header command, its columns, and every ratio against its figures.

    The latencies cannot be measured again in a test, but the table must be what the bench writes: the command in
    its header parses, the columns are :data:`COLUMNS`, and each ratio is the ratio of the columns it divides (to
    the rounding of the cells).

    Raises:
        AssertionError: Naming what does not hold.
    """
    header = HEADER.match(text)
    assert header, 'the table does not start with the bench_clock command that generated it'
    try:
        build_parser().parse_args(header.group('args').split())
    except SystemExit:
        raise AssertionError(f'the command in the header is not one bench_clock takes: {header.group(0)}') from None
    rows = [line for line in text[header.end():].splitlines() if line.startswith('|')]
    assert rows and rows[0] == '| ' + ' | '.join(COLUMNS) + ' |', f'columns are not {COLUMNS}: {rows[:1]}'
    assert len(rows) > 2, 'the table has no row'
    col = {name: i for i, name in enumerate(COLUMNS)}
    for line in rows[2:]:
        cells = [c.strip() for c in line.strip().strip('|').split('|')]
        assert len(cells) == len(COLUMNS), f'{len(cells)} cells, not {len(COLUMNS)}: {line}'
        plain, whole, gater = (_number(cells[col[c]]) for c in ('plain (ms)', 'GaterNet, skip (ms)',
                                                                 'gater alone (ms)'))
        # A ratio of two cells rounded to 0.001 ms, itself rounded to 0.01.
        for ratio, numerator in (('GaterNet / plain', whole), ('gater / plain', gater)):
            slack = 0.0051 + 0.0006 * (1 + numerator / plain) / plain
            assert abs(_number(cells[col[ratio]]) - numerator / plain) <= slack, \
                f'{ratio} {cells[col[ratio]]} is not {numerator} / {plain} ms: {line}'
        total, used, gater_macs = (_number(cells[col[c]]) for c in (
            'MACs: GaterNet / plain', 'MACs: backbone used / plain', 'MACs: gater / plain'))
        assert abs(total - used - gater_macs) <= 0.0016, f'GaterNet MACs are not backbone used + gater: {line}'


if __name__ == '__main__':
    main()
