"""Build the class-balanced CIFAR-10 subset that ships inside ``gaternet_zoo.data``.

The subset is what ``load_image_dataset("builtin:cifar10-subset")`` (the default source) loads, so tests, smoke
runs and benchmarks work without the full dataset.

Selection rule (deterministic, no random numbers): walk each source split in its original CIFAR row order and keep
the first ``--train-per-class`` (resp. ``--test-per-class``) rows of every class. Kept rows stay in source order,
so classes remain interleaved exactly as in CIFAR. The PNG bytes are copied unchanged and the parquet schema,
including its ``huggingface`` metadata (``img`` is ``Image``, ``label`` is ``ClassLabel``), is kept as is.

Usage::

    python -m tools.make_builtin_subset --source path/to/cifar10
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from gaternet_zoo.hub import sha256_file

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUTPUT = REPO_ROOT / "gaternet_zoo" / "data" / "builtin" / "cifar10_subset"
_SHARD_SUFFIX = re.compile(r"-\d+-of-\d+$")
# Small row groups keep random access cheap; 500 rows of ~2.3 KB PNGs is ~1 MB per group.
_ROW_GROUP_SIZE = 500


def read_split(source: Path, split: str) -> pa.Table:
    """Read every parquet file of ``split`` from ``source``, in shard order.

    Args:
        source: Folder in the Hub's ``uoft-cs/cifar10`` parquet layout.
        split: Split name, matched against file names with any ``-NNNNN-of-NNNNN`` suffix removed.

    Returns:
        The concatenated table, with the schema metadata of the first shard.
    """
    files = sorted(p for p in source.glob("*.parquet") if _SHARD_SUFFIX.sub("", p.stem) == split)
    if not files:
        raise FileNotFoundError(f"no parquet file for split {split!r} in {source}")
    tables = [pq.read_table(p) for p in files]
    return pa.concat_tables(tables)


def select_first_per_class(labels: np.ndarray, per_class: int) -> np.ndarray:
    """Return the sorted row indices of the first ``per_class`` rows of every class.

    Args:
        labels: Integer class index of every row, in source order.
        per_class: Rows to keep per class.

    Returns:
        Sorted int64 indices into ``labels``.
    """
    keep: list[np.ndarray] = []
    for cls in np.unique(labels):
        rows = np.flatnonzero(labels == cls)
        if len(rows) < per_class:
            raise ValueError(f"class {cls} has only {len(rows)} rows, {per_class} requested")
        keep.append(rows[:per_class])
    return np.sort(np.concatenate(keep)).astype(np.int64)


def write_readme(output: Path, rows: dict[str, tuple[int, int]], source: Path) -> None:
    """Write the README that documents where the subset comes from and how to verify it.

    Args:
        output: Folder holding the written parquet files.
        rows: Split name to ``(per_class, total_rows)``.
        source: Folder the rows were taken from.
    """
    lines = [
        "# Built-in CIFAR-10 subset",
        "",
        'Loaded by `gaternet_zoo.data.load_image_dataset("builtin:cifar10-subset")`, the default data source.',
        "Written by `tools/make_builtin_subset.py`; do not edit by hand, rerun the tool instead.",
        "",
        "## Source",
        "",
        "The full CIFAR-10 in the Hugging Face `uoft-cs/cifar10` parquet layout "
        f"(`{source.name}/`: `train-0000{{0,1}}-of-00002.parquet`, `test.parquet`), lossless PNGs in the original "
        "CIFAR row order. CIFAR-10 was collected by Alex Krizhevsky, Vinod Nair and Geoffrey Hinton "
        "(*Learning Multiple Layers of Features from Tiny Images*, 2009); cite it when you use this data.",
        "",
        "## Row selection",
        "",
        "For each split, the first N rows of every class in source row order are kept (no randomness), and the kept",
        "rows stay in source order, so classes are interleaved as in CIFAR. PNG bytes are copied unchanged; the",
        "parquet schema keeps its `huggingface` metadata, so `datasets` decodes `img` as `Image` and `label` as",
        "`ClassLabel` (airplane, automobile, bird, cat, deer, dog, frog, horse, ship, truck).",
        "",
        "## Files",
        "",
        "| file | per class | rows | bytes | sha256 |",
        "| --- | --- | --- | --- | --- |",
    ]
    for split, (per_class, total) in rows.items():
        path = output / f"{split}.parquet"
        lines.append(
            f"| `{path.name}` | {per_class} | {total:,} | {path.stat().st_size:,} | `{sha256_file(path)}` |"
        )
    lines.append("")
    (output / "README.md").write_text("\n".join(lines), encoding="utf-8")


def main(argv: list[str] | None = None) -> None:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default_source = Path(__file__).resolve().parents[2] / "shared" / "data" / "cifar10"
    parser.add_argument("--source", type=Path, default=default_source)
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    # 200/50 per class keeps the shipped files near 5.7 MB (CIFAR PNGs average ~2.3 KB); 500/100 would be ~14 MB.
    parser.add_argument("--train-per-class", type=int, default=300)
    parser.add_argument("--test-per-class", type=int, default=100)
    args = parser.parse_args(argv)

    args.output.mkdir(parents=True, exist_ok=True)
    counts: dict[str, tuple[int, int]] = {}
    for split, per_class in (("train", args.train_per_class), ("test", args.test_per_class)):
        table = read_split(args.source, split)
        labels = table.column("label").to_numpy()
        subset = table.take(pa.array(select_first_per_class(labels, per_class)))
        # Fixed writer settings so rerunning with the same pyarrow version reproduces the same bytes.
        pq.write_table(
            subset, args.output / f"{split}.parquet", row_group_size=_ROW_GROUP_SIZE, compression="snappy"
        )
        counts[split] = (per_class, subset.num_rows)
        print(f"{split}: {subset.num_rows} rows -> {args.output / f'{split}.parquet'}")
    write_readme(args.output, counts, args.source)
    total = sum((args.output / f"{s}.parquet").stat().st_size for s in counts)
    print(f"total parquet bytes: {total:,}")


if __name__ == "__main__":
    main()
