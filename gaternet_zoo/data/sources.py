"""Resolve a data source (Hub id, local folder, in-memory dataset, built-in subset) to train/eval splits.

Everything ends up as ``datasets.Dataset`` objects loaded through ``datasets.load_dataset`` (or given in memory),
so Hub datasets and their local parquet copies follow exactly the same code path after loading.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import datasets
import numpy as np
from huggingface_hub import constants as hf_constants

from .._constants import DEFAULT_DATA_SOURCE

__all__ = [
    "BUILTIN_DATASETS",
    "DEFAULT_SOURCE",
    "DataSourceError",
    "ImageDataSource",
    "check_class_count",
    "check_label_range",
    "load_image_dataset",
]

SourceLike = str | os.PathLike | datasets.Dataset | datasets.DatasetDict

_BUILTIN_ROOT = Path(__file__).resolve().parent / "builtin"
#: Built-in data sets shipped as package data, addressed as ``"builtin:<name>"``.
BUILTIN_DATASETS: dict[str, Path] = {"cifar10-subset": _BUILTIN_ROOT / "cifar10_subset"}
#: The source used when the caller does not name one.
DEFAULT_SOURCE = DEFAULT_DATA_SOURCE

# Column names tried, in order, when no column carries the right feature type.
_IMAGE_NAMES = ("img", "image", "images", "picture", "photo")
# ``label`` first so CIFAR-100's ``coarse_label`` never wins over ``fine_label`` by column order.
_LABEL_NAMES = ("label", "fine_label", "labels", "target", "targets", "class")
_DATA_FILE_BUILDERS = {".parquet": "parquet", ".arrow": "arrow"}
_IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"}
_SHARD_SUFFIX = re.compile(r"-\d+-of-\d+$")
_SPLIT_DIR_NAMES = {"train", "test", "validation", "valid", "val", "eval", "dev"}
# Same shape as huggingface_hub's repo-id check: optional namespace, then a name; no path-like prefixes.
_HUB_ID = re.compile(r"^(?:[A-Za-z0-9][\w.-]*/)?[A-Za-z0-9][\w.-]{0,95}$")

_ACCEPTED_FORMS = (
    "accepted sources are: a Hugging Face Hub dataset id such as 'uoft-cs/cifar10' or 'uoft-cs/cifar100'; "
    "a local folder of parquet/arrow files named by split (e.g. 'train-00000-of-00002.parquet', 'test.parquet'); "
    "an imagefolder directory ('<dir>/train/<class>/*.png'); a folder written by Dataset.save_to_disk; "
    "an in-memory datasets.Dataset or DatasetDict; or one of "
    + ", ".join(f"'builtin:{name}'" for name in BUILTIN_DATASETS)
)


class DataSourceError(ValueError):
    """A data source, split or column could not be resolved; the message says what was expected."""


@dataclass(frozen=True)
class ImageDataSource:
    """Train/eval splits of an image classification data set with their resolved schema.

    Attributes:
        train: Training split.
        eval: Evaluation split, or ``None`` when none was requested or the source is a bare ``Dataset``.
        image_column: Name of the column holding images (a ``datasets.Image`` feature).
        label_column: Name of the integer class-index column.
        num_classes: Number of classes; every label is in ``[0, num_classes)``.
        class_names: Class name of every index (``str(i)`` when the labels carry no names).
        description: Human-readable description of where the data came from, for logs.
        class_count_from: Where ``num_classes`` comes from: ``"metadata"`` (a ``ClassLabel`` feature),
            ``"declared"`` (the caller's ``num_classes``) or ``"labels"`` (plain integer labels that cover
            ``0..K-1`` without a gap; see ``load_image_dataset``).
    """

    train: datasets.Dataset
    eval: datasets.Dataset | None
    image_column: str
    label_column: str
    num_classes: int
    class_names: tuple[str, ...]
    description: str
    class_count_from: str = "metadata"

    def splits(self) -> dict[str, datasets.Dataset]:
        """Return the non-empty splits as ``{"train": ..., "eval": ...}``."""
        out = {"train": self.train}
        if self.eval is not None:
            out["eval"] = self.eval
        return out


def load_image_dataset(
    source: SourceLike = DEFAULT_SOURCE,
    *,
    split_train: str = "train",
    split_eval: str | None = "test",
    image_column: str | None = None,
    label_column: str | None = None,
    cache_dir: str | os.PathLike | None = None,
    num_classes: int | None = None,
) -> ImageDataSource:
    """Load an image classification data set and resolve its splits, columns and classes.

    Args:
        source: One of

            * a Hub dataset id (``"uoft-cs/cifar10"``, ``"uoft-cs/cifar100"``, an ImageNet-style id), loaded with
              ``datasets.load_dataset(id)``;
            * a local folder of ``.parquet`` (or ``.arrow``) files with the Hub schema; the split of a file is its
              name without the ``-NNNNN-of-NNNNN`` shard suffix (``train-00000-of-00002.parquet`` -> ``train``),
              or its parent folder when that folder is named like a split (``train/part-0.parquet``);
            * an imagefolder directory (``<dir>/<split>/<class>/<image>``), loaded with ``"imagefolder"``;
            * a folder written by ``Dataset.save_to_disk`` / ``DatasetDict.save_to_disk``;
            * an in-memory ``datasets.DatasetDict``, or a ``datasets.Dataset``, which becomes the train split
              (no eval split);
            * ``"builtin:cifar10-subset"`` (the default): a class-balanced CIFAR-10 subset shipped in the package.

            An existing local path always wins over a Hub id of the same spelling.
        split_train: Name of the training split.
        split_eval: Name of the evaluation split, or ``None`` for no eval split.
        image_column: Image column; by default the column whose feature is ``datasets.Image``, else the first of
            ``img``, ``image``, ... that exists (cast to ``Image``).
        label_column: Label column; by default the ``ClassLabel`` column, preferring ``label``, ``fine_label`` and
            ``labels``; else an integer column with one of those names (see ``num_classes`` for its classes).
        cache_dir: ``datasets`` cache folder (``None`` uses the ``datasets`` default).
        num_classes: The number of classes, declared. With a ``ClassLabel`` column it may not be below the
            metadata's count. Without one it is what the labels are checked against; when it is not given either, the
            classes are inferred from the labels only if they are exactly ``0..K-1`` with every class present: a
            gap (labels 0-9 and one stray 99) is refused, naming the rows, instead of guessing 100 classes.

    Returns:
        The resolved splits and schema.

    Raises:
        DataSourceError: Unknown dataset or missing path, missing split or column, no image/label column, or a
            label outside ``[0, num_classes)`` (the rows are named), a declared ``num_classes`` that contradicts
            the metadata, or labels without metadata that leave a gap.
    """
    cache = os.fspath(cache_dir) if cache_dir is not None else None
    if isinstance(source, datasets.Dataset):
        split_eval = None  # A bare Dataset is only training data; there is no split to evaluate on.
    wanted = [split_train] if split_eval is None else [split_train, split_eval]
    splits, description = _load_splits(source, wanted, cache)
    _require_splits(wanted, splits, description)
    train = splits[split_train]
    eval_split = splits[split_eval] if split_eval is not None else None

    parts = [(split_train, train)] + ([(split_eval, eval_split)] if eval_split is not None else [])
    image_col = _resolve_image_column(parts, image_column, description)
    parts = [(name, _ensure_image_feature(ds, image_col)) for name, ds in parts]
    label_col = _resolve_label_column(parts, label_column, image_col, description)
    num_classes, class_names, count_from = _resolve_classes(parts, label_col, num_classes, description)
    for name, ds in parts:
        check_label_range(ds, label_col, num_classes, f"split {name!r} of {description}")

    return ImageDataSource(
        train=parts[0][1],
        eval=parts[1][1] if len(parts) > 1 else None,
        image_column=image_col,
        label_column=label_col,
        num_classes=num_classes,
        class_names=class_names,
        description=description,
        class_count_from=count_from,
    )


# --------------------------------------------------------------------------------------------------------------
# Source resolution
# --------------------------------------------------------------------------------------------------------------


def _load_splits(source: SourceLike, wanted: list[str], cache_dir: str | None) -> tuple[dict, str]:
    """Turn ``source`` into ``{split_name: Dataset}`` (possibly only the ``wanted`` ones) and a description."""
    if isinstance(source, datasets.DatasetDict):
        return dict(source), "the in-memory DatasetDict"
    if isinstance(source, datasets.Dataset):
        # A bare Dataset has no split names of its own: it is the training data, under whatever name was asked.
        return {wanted[0]: source}, "the in-memory Dataset"
    if not isinstance(source, (str, os.PathLike)):
        raise DataSourceError(f"unsupported source type {type(source).__name__}; {_ACCEPTED_FORMS}")

    text = os.fspath(source)
    if isinstance(source, str) and text.startswith("builtin:"):
        name = text.removeprefix("builtin:")
        if name not in BUILTIN_DATASETS:
            raise DataSourceError(f"unknown built-in dataset {text!r}; {_ACCEPTED_FORMS}")
        return _load_local(BUILTIN_DATASETS[name], wanted, cache_dir, f"built-in dataset {text!r}")

    path = Path(text).expanduser()
    if path.exists():
        return _load_local(path, wanted, cache_dir, f"local path '{path}'")
    if isinstance(source, os.PathLike) or _looks_like_path(text) or not _HUB_ID.match(text):
        raise DataSourceError(f"path '{text}' does not exist and is not a Hub dataset id; {_ACCEPTED_FORMS}")
    return _load_hub(text, cache_dir), f"Hub dataset {text!r}"


def _require_splits(wanted: list[str], available: Sequence[str], description: str) -> None:
    for name in wanted:
        if name not in available:
            raise DataSourceError(
                f"split {name!r} does not exist in {description}; available splits: {sorted(available)}"
            )


def _looks_like_path(text: str) -> bool:
    """True for strings that can only be meant as a filesystem path, never as a Hub id."""
    windows_path = os.sep != "/" and os.sep in text
    return text.startswith(("/", "./", "../", "~", "\\")) or text.count("/") > 1 or windows_path


def _load_hub(dataset_id: str, cache_dir: str | None) -> dict[str, datasets.Dataset]:
    """Load every split of a Hub dataset with plain ``datasets.load_dataset``.

    Unless offline mode is on, one quick probe of the Hub comes first: ``datasets`` would otherwise retry for
    about 25 s before it fails with an unreachable Hub. Offline mode reads the ``datasets`` cache as before.
    """
    from .._io import display_path
    from ..hub import hub_unreachable

    reason = None if datasets.config.HF_HUB_OFFLINE else hub_unreachable()
    if reason is not None:
        raise DataSourceError(
            f"could not load {dataset_id!r}: the Hugging Face Hub at {hf_constants.ENDPOINT} is unreachable "
            f"({reason}). If it was downloaded before, set HF_HUB_OFFLINE=1 to load it from the datasets cache "
            f"({display_path(datasets.config.HF_DATASETS_CACHE)}); or pass a local folder (parquet files named by "
            f"split, or '<dir>/train/<class>/*.png'); or use '{DEFAULT_DATA_SOURCE}', which needs no download"
        )
    try:
        loaded = datasets.load_dataset(dataset_id, cache_dir=cache_dir)
    except Exception as err:  # Offline, unknown id, gated repo ...: all surface as one clear error.
        raise DataSourceError(
            f"could not load {dataset_id!r} from the Hugging Face Hub ({type(err).__name__}: {err}); "
            f"{_ACCEPTED_FORMS}"
        ) from err
    return dict(loaded)


def _load_local(path: Path, wanted: list[str], cache_dir: str | None, description: str) -> tuple[dict, str]:
    """Load a local file or folder, choosing the ``datasets`` builder from what it contains."""
    if path.is_dir() and ((path / "dataset_dict.json").exists() or (path / "state.json").exists()):
        loaded = datasets.load_from_disk(os.fspath(path))
        if isinstance(loaded, datasets.Dataset):
            return {wanted[0]: loaded}, description
        return dict(loaded), description

    files = [path] if path.is_file() else _visible_files(path)
    data_files = [p for p in files if p.suffix in _DATA_FILE_BUILDERS]
    if data_files:
        builders = {_DATA_FILE_BUILDERS[p.suffix] for p in data_files}
        if len(builders) > 1:
            raise DataSourceError(f"{description} mixes .parquet and .arrow files; keep one format per folder")
        by_split = _group_by_split(data_files, path if path.is_dir() else path.parent)
        # Only the requested splits are prepared; the others are still listed if a requested one is missing.
        selected = {name: [os.fspath(p) for p in by_split[name]] for name in wanted if name in by_split}
        _require_splits(wanted, by_split, description)
        for paths in selected.values():
            _check_data_files([Path(p) for p in paths])
        try:
            loaded = datasets.load_dataset(builders.pop(), data_files=selected, cache_dir=cache_dir)
        except datasets.exceptions.DatasetGenerationError as err:
            cause = err.__cause__ or err
            raise DataSourceError(
                f"could not read the data files of {description} ({', '.join(sorted(selected))} split): "
                f"{type(cause).__name__}: {cause}. Check that every file is a complete, non-empty "
                f"{'parquet' if data_files[0].suffix == '.parquet' else 'arrow'} file with the same columns "
                f"(re-export or re-download a broken one)"
            ) from err
        return dict(loaded), description

    if path.is_dir() and any(p.suffix.lower() in _IMAGE_SUFFIXES for p in files):
        loaded = datasets.load_dataset("imagefolder", data_dir=os.fspath(path), cache_dir=cache_dir)
        return dict(loaded), description

    raise DataSourceError(
        f"{description} holds no .parquet/.arrow data files and no images (looked for "
        f"{', '.join(sorted(_IMAGE_SUFFIXES))}); {_ACCEPTED_FORMS}"
    )


def _check_data_files(paths: Sequence[Path]) -> None:
    """Refuse empty or unreadable parquet files before ``datasets`` fails on them with a generic error.

    Reads only each file's footer (its row count), not the data.
    """
    import pyarrow.parquet as pq

    for path in paths:
        if path.suffix != ".parquet":
            continue
        try:
            rows = pq.ParquetFile(path).metadata.num_rows
        except Exception as err:  # ArrowInvalid, OSError: a zero-byte, truncated or non-parquet file
            raise DataSourceError(
                f"{path} is not a readable parquet file ({path.stat().st_size} bytes; {type(err).__name__}: {err}). "
                f"It is truncated or not parquet at all: re-export or re-download it, or move it out of the folder"
            ) from err
        if rows == 0:
            raise DataSourceError(
                f"{path} holds no rows (an empty export?): there is nothing to train or evaluate on. Write the "
                f"data into it again, or move it out of the folder"
            )


def _visible_files(root: Path) -> list[Path]:
    """All files under ``root``, sorted, skipping hidden files and folders (caches, VCS metadata).

    ``os.walk`` (``scandir`` underneath) avoids a ``stat`` per entry, which matters for ImageNet-sized imagefolders.
    """
    out = []
    for folder, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        out.extend(Path(folder, f) for f in files if not f.startswith("."))
    return sorted(out)


def _group_by_split(files: Sequence[Path], root: Path) -> dict[str, list[Path]]:
    """Group data files by split name (see ``load_image_dataset`` for the naming rule)."""
    groups: dict[str, list[Path]] = {}
    for p in files:
        split = _SHARD_SUFFIX.sub("", p.stem)
        parent = p.parent.name if p.parent != root else None
        if parent is not None and parent.lower() in _SPLIT_DIR_NAMES:
            split = parent
        groups.setdefault(split, []).append(p)
    for name, paths in groups.items():
        # The shards of one split sit side by side; a second folder with the same split is a copy (a backup, an
        # older download), and merging it would silently double or mix the split.
        folders = sorted({os.fspath(p.parent) for p in paths})
        if len(folders) > 1:
            listed = '; '.join(f"{folder}: {', '.join(p.name for p in paths if os.fspath(p.parent) == folder)}"
                               for folder in folders)
            raise DataSourceError(
                f"split {name!r} has data files in {len(folders)} folders under {root} ({listed}); the files of one "
                f"split must sit in one folder, and reading them all would merge copies into one split. Move the "
                f"extra copy out of {root} (or rename it), or point the data source at the folder you mean."
            )
    return {name: sorted(paths) for name, paths in groups.items()}


# --------------------------------------------------------------------------------------------------------------
# Column and class resolution
# --------------------------------------------------------------------------------------------------------------


def _common_columns(parts: list[tuple[str, datasets.Dataset]]) -> list[str]:
    first = parts[0][1].column_names
    return [c for c in first if all(c in ds.column_names for _, ds in parts[1:])]


def _check_named_column(parts: list[tuple[str, datasets.Dataset]], column: str, kind: str, where: str) -> None:
    for split, ds in parts:
        if column not in ds.column_names:
            raise DataSourceError(
                f"{kind} column {column!r} does not exist in split {split!r} of {where}; "
                f"columns: {ds.column_names}"
            )


def _resolve_image_column(parts: list[tuple[str, datasets.Dataset]], requested: str | None, where: str) -> str:
    if requested is not None:
        _check_named_column(parts, requested, "image", where)
        return requested
    columns = _common_columns(parts)
    features = parts[0][1].features
    typed = [c for c in columns if isinstance(features[c], datasets.Image)]
    if typed:
        # Several Image columns (rare): a conventional name is the most likely intent, else the first.
        return next((c for c in _IMAGE_NAMES if c in typed), typed[0])
    named = [c for c in _IMAGE_NAMES if c in columns]
    if named:
        return named[0]
    raise DataSourceError(
        f"no image column found in {where}: no column has the datasets.Image feature and none is named "
        f"{list(_IMAGE_NAMES)}; columns: {columns}; pass image_column=... (--image-column on the command line)"
    )


def _ensure_image_feature(ds: datasets.Dataset, column: str) -> datasets.Dataset:
    """Cast ``column`` to ``datasets.Image`` when it holds paths/bytes without the feature type."""
    feature = ds.features[column]
    if isinstance(feature, datasets.Image):
        return ds
    try:
        return ds.cast_column(column, datasets.Image())
    except Exception as err:
        raise DataSourceError(
            f"column {column!r} has feature {feature} and cannot be read as images "
            f"(expected datasets.Image, file paths or {{'bytes', 'path'}} structs): {err}"
        ) from err


def _is_integer_feature(feature: object) -> bool:
    return isinstance(feature, datasets.Value) and feature.dtype.startswith(("int", "uint"))


def _resolve_label_column(
    parts: list[tuple[str, datasets.Dataset]], requested: str | None, image_column: str, where: str
) -> str:
    features = parts[0][1].features
    if requested is not None:
        _check_named_column(parts, requested, "label", where)
        feature = features[requested]
        if not isinstance(feature, datasets.ClassLabel) and not _is_integer_feature(feature):
            raise DataSourceError(
                f"label column {requested!r} has feature {feature}; expected ClassLabel or an integer Value"
                + _string_label_hint(parts[0][1], requested, where)
            )
        return requested
    columns = [c for c in _common_columns(parts) if c != image_column]
    class_labels = [c for c in columns if isinstance(features[c], datasets.ClassLabel)]
    if class_labels:
        return next((c for c in _LABEL_NAMES if c in class_labels), class_labels[0])
    integers = [c for c in _LABEL_NAMES if c in columns and _is_integer_feature(features[c])]
    if integers:
        return integers[0]
    strings = [c for c in _LABEL_NAMES if c in columns and isinstance(features[c], datasets.Value)
               and features[c].dtype in ("string", "large_string")]
    if strings:
        raise DataSourceError(
            f"the label column {strings[0]!r} of {where} holds class names (strings), not class indices"
            + _string_label_hint(parts[0][1], strings[0], where)
        )
    raise DataSourceError(
        f"no label column found in {where}: no ClassLabel column and no integer column named {list(_LABEL_NAMES)}; "
        f"columns: {columns}; pass label_column=... (--label-column on the command line)"
    )


def _string_label_hint(ds: datasets.Dataset, column: str, where: str) -> str:
    feature = ds.features[column]
    if not (isinstance(feature, datasets.Value) and feature.dtype in ("string", "large_string")):
        return ""
    names = sorted({str(v) for v in ds.select(range(min(len(ds), 1000)))[column]})
    shown = ", ".join(repr(n) for n in names[:5]) + (", ..." if len(names) > 5 else "")
    return (
        f" (values such as {shown}). The zoo trains and scores class indices 0..N-1 with their names as metadata: "
        f"convert the column once with datasets, e.g. ds = ds.class_encode_column({column!r}) (names sorted "
        f"alphabetically, a ClassLabel feature), save the data again and point the data source at the new copy"
    )


def _label_array(ds: datasets.Dataset, column: str) -> np.ndarray:
    """Labels as a numpy array, honouring any indices mapping (select/shuffle) of ``ds``."""
    table = ds.select_columns([column]).with_format("arrow")[:]
    col = table.column(0)
    if col.null_count:
        raise DataSourceError(f"label column {column!r} has {col.null_count} missing (null) values")
    return col.to_numpy()


def _resolve_classes(
    parts: list[tuple[str, datasets.Dataset]], column: str, declared: int | None, where: str
) -> tuple[int, tuple[str, ...], str]:
    """(num_classes, class_names, where the count comes from): metadata, the declared count, or gap-free labels."""
    if declared is not None:
        if isinstance(declared, bool) or not isinstance(declared, (int, np.integer)) or declared < 1:
            raise DataSourceError(f"num_classes must be a positive integer, got {declared!r}")
        declared = int(declared)
    feature = parts[0][1].features[column]
    if isinstance(feature, datasets.ClassLabel):
        for split, ds in parts[1:]:
            other = ds.features[column]
            if not isinstance(other, datasets.ClassLabel) or list(other.names) != list(feature.names):
                raise DataSourceError(f"split {split!r} has different classes in {column!r} than the train split")
        if declared is not None and declared < feature.num_classes:
            raise DataSourceError(
                f"num_classes={declared} was declared, but {where} has {feature.num_classes} classes in its ClassLabel "
                f"column {column!r} ({_names_text(feature.names)}); declare at least {feature.num_classes} (or "
                f"nothing: the metadata gives the count)"
            )
        if declared is not None and declared > feature.num_classes:  # room for classes this data does not have
            extra = tuple(str(i) for i in range(feature.num_classes, declared))
            return declared, tuple(feature.names) + extra, "declared"
        return feature.num_classes, tuple(feature.names), "metadata"
    if declared is not None:  # The range check of every split then names any row outside it.
        return declared, tuple(str(i) for i in range(declared)), "declared"

    # Plain integers, nothing declared: accept 0..K-1 only if every class occurs. A count is never guessed from a
    # stray value: labels 0..9 and one 99 would otherwise make a 100-class data set out of a 10-class one.
    arrays = [(split, _label_array(ds, column)) for split, ds in parts]
    present = np.unique(np.concatenate([arr for _, arr in arrays])) if arrays else np.array([], dtype=np.int64)
    present = present[present >= 0]  # negative values are reported by the range check, with their rows
    if not len(present):
        raise DataSourceError(f"label column {column!r} has no non-negative labels")
    highest = int(present[-1])
    if len(present) != highest + 1:
        gap = int(np.setdiff1d(np.arange(highest + 1), present)[0])
        above = present[present > gap]
        rows = []
        for split, arr in arrays:
            idx = np.flatnonzero(arr > gap)
            if len(idx):
                rows.append(f"split {split!r} row(s) {_rows_text(idx)}")
        raise DataSourceError(
            f"label column {column!r} of {where} carries no class metadata (it is not a ClassLabel) and its labels "
            f"are not the classes 0..K-1 without a gap: {len(present)} distinct values from {int(present[0])} to "
            f"{highest}, but no label {gap}. The labels above the gap ({_values_text(above)}) are in "
            f"{'; '.join(rows)}. The number of classes is not guessed from labels like these: declare it with "
            f"num_classes=N (--num-classes N on the command line), or fix those rows"
        )
    return highest + 1, tuple(str(i) for i in range(highest + 1)), "labels"


def _rows_text(rows: np.ndarray, limit: int = 10) -> str:
    shown = ", ".join(str(int(r)) for r in rows[:limit])
    return shown + (f", ... ({len(rows)} in all)" if len(rows) > limit else "")


def _values_text(values: np.ndarray, limit: int = 10) -> str:
    shown = ", ".join(str(int(v)) for v in values[:limit])
    return shown + (f", ... ({len(values)} values)" if len(values) > limit else "")


def _names_text(names: Sequence[str], limit: int = 5) -> str:
    shown = ", ".join(names[:limit])
    return shown + (", ..." if len(names) > limit else "")


def check_label_range(ds: datasets.Dataset, label_column: str, num_classes: int, where: str, *,
                      what: str = "num_classes", fix: str | None = None) -> None:
    """Raise if a label of ``ds`` is outside ``[0, num_classes)``, naming the rows and labels (the zoo's one check).

    Args:
        ds: The split to check.
        label_column: Its label column.
        num_classes: Classes the labels must index.
        where: The split, for the message (``"the train split of <data>"``).
        what: How to name ``num_classes`` in the message (``"the model's num_classes"``).
        fix: What to do, for the message (default: fix the rows or declare the right class count).

    Raises:
        DataSourceError: Naming the first offending row and its label, every bad row, the range and the fix.
    """
    labels = _label_array(ds, label_column)
    bad = np.flatnonzero((labels < 0) | (labels >= num_classes))
    if len(bad):
        first = int(bad[0])
        raise DataSourceError(
            f"label outside {what}={num_classes} in {where}: row {first} has label {int(labels[first])} "
            f"({len(bad)} such row(s): rows {_rows_text(bad)}); labels must be in [0, {num_classes}). "
            + (fix or "Fix or drop those rows, or declare the right number of classes with num_classes=N "
                      "(--num-classes N on the command line)")
        )


def check_class_count(
    source: ImageDataSource,
    num_classes: int,
    *,
    what: str = "num_classes",
    split_names: Mapping[str, str] | None = None,
) -> None:
    """Check that a model with ``num_classes`` outputs fits ``source``: every label indexes it and the counts agree.

    Call it after building or loading the model, with the model's class count (training, evaluation, analysis).
    Labels are checked first, so a label a classifier of ``num_classes`` cannot score is reported with its rows.

    Args:
        source: The loaded data (possibly cut to fewer rows).
        num_classes: Classes of the model (its classifier's outputs).
        what: How to name ``num_classes`` in messages (``"the model's num_classes"``, ``"num_classes"``).
        split_names: Names to show for ``"train"``/``"eval"`` (e.g. ``{"train": "test"}`` when the evaluated
            split was loaded as the source's train split).

    Raises:
        DataSourceError: A label outside ``[0, num_classes)`` (naming the split, the rows and the values), or a
            data set whose class count differs from ``num_classes`` (naming both counts, where the data's count
            comes from, and the fix).
    """
    for split, ds in source.splits().items():
        check_label_range(ds, source.label_column, num_classes,
                          f"the {(split_names or {}).get(split, split)} split of {source.description}", what=what,
                          fix="Use a model with as many classes as the data, or fix the labels")
    if source.num_classes == num_classes:
        return
    origin = {
        "metadata": f"from its ClassLabel metadata ({_names_text(source.class_names)})",
        "declared": "as declared",
        "labels": f"inferred from its labels 0..{source.num_classes - 1}, which carry no class metadata",
    }.get(source.class_count_from, "")
    if source.class_count_from == "labels" and source.num_classes < num_classes:
        fix = (
            f"If the data does have {num_classes} classes (some of which do not occur in it), declare them with "
            f"num_classes={num_classes} (--num-classes {num_classes}); otherwise use a model with "
            f"{source.num_classes} classes"
        )
    else:
        fix = (
            f"Use data with {num_classes} classes, or a model with {source.num_classes} (fine-tune one with "
            f"create_model(..., num_classes={source.num_classes}))"
        )
    raise DataSourceError(
        f"{source.description} has {source.num_classes} classes ({origin}) but {what} is {num_classes}: scores "
        f"of a {num_classes}-class model on {source.num_classes}-class data mean nothing. {fix}"
    )
