"""Tests of ``gaternet_zoo.data``: sources, column detection, decode-once, augmentation, pipelines.

All data is made in tmp dirs or comes from the built-in subset; nothing here needs /work/shared/data. Hub ids are
loaded from the real local Hub server of ``tests/hubserver.py`` (no mock), in a subprocess because
huggingface_hub reads ``HF_ENDPOINT`` at import time.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import datasets
import numpy as np
import PIL.Image
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
import torch.nn.functional as F
from hubserver import LocalHub

from gaternet_zoo.data import (
    BUILTIN_DATASETS,
    CIFAR10_MEAN,
    CIFAR10_STD,
    DataSourceError,
    DecodedImageDataset,
    ImageDecodeError,
    Normalize,
    RandomCropFlip,
    augmentation_generator,
    build_pipeline,
    choose_pipeline_kind,
    compute_mean_std,
    decode_images,
    load_image_dataset,
)

CLASSES = ["cat", "dog", "emu"]
FEATURES = datasets.Features({"img": datasets.Image(), "label": datasets.ClassLabel(names=CLASSES)})


def _pixels(n: int, size: int = 8, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(n, size, size, 3), dtype=np.uint8)


def _png(array: np.ndarray, mode: str | None = None) -> bytes:
    image = PIL.Image.fromarray(array)
    if mode is not None:
        image = image.convert(mode)
    buf = io.BytesIO()
    image.save(buf, "PNG")
    return buf.getvalue()


def _dataset(n: int, *, size: int = 8, seed: int = 0, features: datasets.Features = FEATURES) -> datasets.Dataset:
    pixels = _pixels(n, size, seed)
    rows = {"img": [{"bytes": _png(a), "path": None} for a in pixels], "label": [i % len(CLASSES) for i in range(n)]}
    return datasets.Dataset.from_dict(rows, features=features)


@pytest.fixture
def cache(tmp_path: Path) -> Path:
    return tmp_path / "hf_cache"


@pytest.fixture
def parquet_dir(tmp_path: Path) -> Path:
    """Hub-style parquet folder: train in two shards, one test file, with the huggingface schema metadata."""
    root = tmp_path / "pq"
    root.mkdir()
    train = _dataset(12, seed=1)
    train.select(range(6)).to_parquet(root / "train-00000-of-00002.parquet")
    train.select(range(6, 12)).to_parquet(root / "train-00001-of-00002.parquet")
    _dataset(6, seed=2).to_parquet(root / "test.parquet")
    return root


@pytest.fixture(scope="module")
def builtin_source(tmp_path_factory: pytest.TempPathFactory):
    return load_image_dataset(cache_dir=tmp_path_factory.mktemp("builtin_cache"))


# ------------------------------------------------------------------------------------------------------------------
# Sources
# ------------------------------------------------------------------------------------------------------------------


def test_parquet_folder_infers_splits_and_columns(parquet_dir: Path, cache: Path) -> None:
    src = load_image_dataset(parquet_dir, cache_dir=cache)
    assert (len(src.train), len(src.eval)) == (12, 6)
    assert (src.image_column, src.label_column) == ("img", "label")
    assert (src.num_classes, src.class_names) == (3, tuple(CLASSES))
    # Shards are read in order, so rows keep their source order.
    expected = _dataset(12, seed=1)
    assert src.train[7]["img"].tobytes() == expected[7]["img"].tobytes()


def test_parquet_folder_as_string_path_and_split_subfolders(tmp_path: Path, cache: Path) -> None:
    root = tmp_path / "nested"
    (root / "train").mkdir(parents=True)
    (root / "validation").mkdir()
    _dataset(4).to_parquet(root / "train" / "part-0.parquet")
    _dataset(3).to_parquet(root / "validation" / "part-0.parquet")
    src = load_image_dataset(str(root), split_eval="validation", cache_dir=cache)
    assert (len(src.train), len(src.eval)) == (4, 3)


def test_imagefolder_source(tmp_path: Path, cache: Path) -> None:
    pixels = _pixels(6)
    for split, rows in (("train", range(4)), ("test", range(4, 6))):
        for i in rows:
            folder = tmp_path / "imgs" / split / CLASSES[i % 2]
            folder.mkdir(parents=True, exist_ok=True)
            PIL.Image.fromarray(pixels[i]).save(folder / f"{i}.png")
    src = load_image_dataset(tmp_path / "imgs", cache_dir=cache)
    assert (len(src.train), len(src.eval)) == (4, 2)
    assert (src.image_column, src.label_column) == ("image", "label")
    assert src.class_names == ("cat", "dog")
    decoded = decode_images(src.train, image_column=src.image_column, label_column=src.label_column)
    assert decoded.images.shape == (4, 3, 8, 8)


def test_in_memory_dataset_dict_and_dataset() -> None:
    dd = datasets.DatasetDict({"train": _dataset(5), "test": _dataset(2, seed=3)})
    src = load_image_dataset(dd)
    assert (len(src.train), len(src.eval), src.description) == (5, 2, "the in-memory DatasetDict")
    single = load_image_dataset(_dataset(5))
    assert len(single.train) == 5 and single.eval is None
    assert load_image_dataset(dd, split_eval=None).eval is None


def test_builtin_subset_is_default_and_balanced(builtin_source) -> None:
    src = builtin_source
    assert (len(src.train), len(src.eval)) == (3000, 1000)
    assert src.num_classes == 10 and src.class_names[0] == "airplane" and src.class_names[-1] == "truck"
    counts = np.bincount(np.asarray(src.train[src.label_column]), minlength=10)
    assert counts.tolist() == [300] * 10
    assert src.train[0]["img"].size == (32, 32)


def test_builtin_readme_checksums_match_files() -> None:
    folder = BUILTIN_DATASETS["cifar10-subset"]
    readme = (folder / "README.md").read_text()
    listed = dict(re.findall(r"\| `(\w+\.parquet)` \|.*\| `([0-9a-f]{64})` \|", readme))
    assert set(listed) == {"train.parquet", "test.parquet"}
    for name, digest in listed.items():
        assert hashlib.sha256((folder / name).read_bytes()).hexdigest() == digest


def _publish_dataset_repo(hub: LocalHub, repo_id: str, splits: dict[str, datasets.Dataset], config: str) -> None:
    """Serve ``splits`` as Hub dataset ``repo_id`` in the ``uoft-cs/cifar10`` layout (README configs + parquet)."""
    repo = hub.mirrors_dir / "datasets" / repo_id
    (repo / config).mkdir(parents=True)
    lines = ["---", "configs:", f"- config_name: {config}", "  data_files:"]
    for split, ds in splits.items():
        ds.to_parquet(repo / config / f"{split}-00000-of-00001.parquet")
        lines += [f"  - split: {split}", f"    path: {config}/{split}-*"]
    (repo / "README.md").write_text("\n".join([*lines, "  default: true", "---", ""]))
    git_env = {**os.environ, "GIT_CONFIG_NOSYSTEM": "1", "GIT_CONFIG_GLOBAL": os.devnull}
    identity = ["-c", "user.name=gaternet-zoo tests", "-c", "user.email=tests@gaternet-zoo.invalid"]
    commit = [*identity, "commit", "-q", "--no-gpg-sign", "-m", "data"]
    for args in (["init", "-q", "-b", "main"], ["add", "--all"], commit):
        subprocess.run(["git", *args], cwd=repo, env=git_env, check=True, capture_output=True)


@pytest.mark.hub
def test_hub_ids_load_through_datasets_load_dataset(local_hub: LocalHub, tmp_path: Path) -> None:
    # Same ids and layout as the real Hub; CIFAR-100's fine_label must win over coarse_label (both ClassLabel).
    c10 = {"train": _dataset(4), "test": _dataset(2, seed=1)}
    _publish_dataset_repo(local_hub, "uoft-cs/cifar10", c10, "plain_text")
    c100 = datasets.Features(
        {
            "img": datasets.Image(),
            "fine_label": datasets.ClassLabel(names=[f"f{i}" for i in range(5)]),
            "coarse_label": datasets.ClassLabel(names=["c0", "c1"]),
        }
    )
    rows = {"img": _dataset(4)["img"], "fine_label": [0, 4, 2, 1], "coarse_label": [0, 1, 0, 1]}
    split = datasets.Dataset.from_dict(rows, features=c100)
    _publish_dataset_repo(local_hub, "uoft-cs/cifar100", {"train": split, "test": split}, "cifar100")
    script = textwrap.dedent(
        """
        import json
        from gaternet_zoo.data import DataSourceError, load_image_dataset
        out = {}
        for repo in ("uoft-cs/cifar10", "uoft-cs/cifar100"):
            s = load_image_dataset(repo)
            out[repo] = [len(s.train), len(s.eval), s.image_column, s.label_column, s.num_classes]
        try:
            load_image_dataset("gaternet-test/no-such-dataset")
        except DataSourceError as err:
            out["error"] = str(err)
        print(json.dumps(out))
        """
    )
    env = local_hub.client_env(tmp_path / "hf-home")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(Path(__file__).resolve().parents[1]), env.get("PYTHONPATH")]))
    proc = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["uoft-cs/cifar10"] == [4, 2, "img", "label", 3]
    assert out["uoft-cs/cifar100"] == [4, 4, "img", "fine_label", 5]
    assert "could not load 'gaternet-test/no-such-dataset' from the Hugging Face Hub" in out["error"]
    assert "accepted sources are:" in out["error"]


# ------------------------------------------------------------------------------------------------------------------
# Column detection and overrides
# ------------------------------------------------------------------------------------------------------------------


def test_image_column_found_by_feature_type_and_label_override() -> None:
    features = datasets.Features(
        {"thumb": datasets.Image(), "label": datasets.ClassLabel(names=CLASSES), "other": datasets.Value("int64")}
    )
    base = _dataset(3)
    ds = datasets.Dataset.from_dict({"thumb": base["img"], "label": [0, 1, 2], "other": [5, 6, 7]}, features=features)
    src = load_image_dataset(ds)
    assert (src.image_column, src.label_column) == ("thumb", "label")
    # Plain integers 5..7 name no class count: it is declared, never guessed from the labels (see test_reliability).
    with pytest.raises(DataSourceError, match="no label 0"):
        load_image_dataset(ds, label_column="other")
    src = load_image_dataset(ds, label_column="other", num_classes=8)
    assert (src.label_column, src.num_classes, src.class_names[-1]) == ("other", 8, "7")
    assert src.class_count_from == "declared"


def test_untyped_columns_fall_back_to_names_and_are_cast() -> None:
    pixels = _pixels(3)
    ds = datasets.Dataset.from_dict(
        {"image": [{"bytes": _png(a), "path": None} for a in pixels], "labels": [2, 0, 1], "note": ["a", "b", "c"]}
    )
    assert not isinstance(ds.features["image"], datasets.Image)
    src = load_image_dataset(ds)
    assert (src.image_column, src.label_column, src.num_classes) == ("image", "labels", 3)
    assert isinstance(src.train.features["image"], datasets.Image)
    assert np.array_equal(np.asarray(src.train[1]["image"]), pixels[1])


def test_explicit_image_column_override() -> None:
    features = datasets.Features(
        {"img": datasets.Image(), "mask": datasets.Image(), "label": datasets.ClassLabel(names=CLASSES)}
    )
    base = _dataset(2)
    ds = datasets.Dataset.from_dict({"img": base["img"], "mask": base["img"], "label": [0, 1]}, features=features)
    assert load_image_dataset(ds).image_column == "img"
    assert load_image_dataset(ds, image_column="mask").image_column == "mask"


# ------------------------------------------------------------------------------------------------------------------
# Errors
# ------------------------------------------------------------------------------------------------------------------


def test_missing_path_error_lists_accepted_forms(tmp_path: Path) -> None:
    with pytest.raises(DataSourceError, match=r"does not exist.*accepted sources are: a Hugging Face Hub dataset id"):
        load_image_dataset(tmp_path / "nope")
    with pytest.raises(DataSourceError, match="does not exist and is not a Hub dataset id"):
        load_image_dataset("not a dataset!")
    with pytest.raises(DataSourceError, match=r"unknown built-in dataset 'builtin:mnist'.*'builtin:cifar10-subset'"):
        load_image_dataset("builtin:mnist")


def test_folder_without_data_error(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("hi")
    with pytest.raises(DataSourceError, match="holds no .parquet/.arrow data files and no images"):
        load_image_dataset(tmp_path)


def test_missing_named_column_lists_columns() -> None:
    with pytest.raises(DataSourceError, match=r"image column 'pic' does not exist .* columns: \['img', 'label'\]"):
        load_image_dataset(_dataset(2), image_column="pic")
    with pytest.raises(DataSourceError, match=r"label column 'y' does not exist .* columns: \['img', 'label'\]"):
        load_image_dataset(_dataset(2), label_column="y")


def test_no_image_or_label_column() -> None:
    with pytest.raises(DataSourceError, match=r"no image column found.*columns: \['x', 'label'\]"):
        load_image_dataset(datasets.Dataset.from_dict({"x": [1, 2], "label": [0, 1]}))
    no_label = _dataset(2).remove_columns("label").add_column("caption", ["a", "b"])
    with pytest.raises(DataSourceError, match=r"no label column found.*columns: \['caption'\]"):
        load_image_dataset(no_label)


@pytest.mark.parametrize("bad_value", [5, -1])
def test_label_out_of_range_names_row_and_value(tmp_path: Path, cache: Path, bad_value: int) -> None:
    # ClassLabel does not validate stored ints, so a parquet file can carry any value: write one by hand.
    table = pq.read_table(_write(tmp_path / "ok" / "train.parquet", _dataset(4)))
    labels = pa.array([0, 1, bad_value, 2], type=pa.int64())
    table = table.set_column(table.schema.get_field_index("label"), "label", labels)
    (tmp_path / "bad").mkdir()
    pq.write_table(table, tmp_path / "bad" / "train.parquet")
    with pytest.raises(DataSourceError, match=rf"row 2 has label {bad_value} .*labels must be in \[0, 3\)"):
        load_image_dataset(tmp_path / "bad", split_eval=None, cache_dir=cache)


def _write(path: Path, ds: datasets.Dataset) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.to_parquet(path)
    return path


def test_missing_split_lists_splits(parquet_dir: Path, cache: Path) -> None:
    expected = r"split 'validation' does not exist .* available splits: \['test', 'train'\]"
    with pytest.raises(DataSourceError, match=expected):
        load_image_dataset(parquet_dir, split_eval="validation", cache_dir=cache)
    dd = datasets.DatasetDict({"train": _dataset(2)})
    with pytest.raises(DataSourceError, match=r"split 'test' does not exist .* available splits: \['train'\]"):
        load_image_dataset(dd)


# ------------------------------------------------------------------------------------------------------------------
# Decode once
# ------------------------------------------------------------------------------------------------------------------


def _pil_chw(png: bytes) -> np.ndarray:
    return np.asarray(PIL.Image.open(io.BytesIO(png)).convert("RGB")).transpose(2, 0, 1)


def test_decode_matches_pil_for_all_modes() -> None:
    pixels = _pixels(4, size=6)
    pngs = [_png(pixels[0]), _png(pixels[1], "L"), _png(pixels[2], "RGBA"), _png(pixels[3], "P")]
    rows = {"img": [{"bytes": b, "path": None} for b in pngs], "label": [0, 1, 2, 0]}
    ds = datasets.Dataset.from_dict(rows, features=FEATURES)
    out = decode_images(ds, image_column="img", label_column="label", num_proc=1)
    assert out.images.shape == (4, 3, 6, 6) and out.images.dtype == torch.uint8 and out.images.is_contiguous()
    assert out.labels.dtype == torch.int64 and out.labels.tolist() == [0, 1, 2, 0]
    for i, png in enumerate(pngs):
        assert np.array_equal(out.images[i].numpy(), _pil_chw(png))
    assert np.array_equal(out.images[0].numpy(), pixels[0].transpose(2, 0, 1))  # lossless round trip
    assert out.num_skipped == 0


def test_decode_builtin_subset_values(builtin_source) -> None:
    src = builtin_source
    out = decode_images(src.eval, image_column=src.image_column, label_column=src.label_column)
    assert out.images.shape == (1000, 3, 32, 32) and out.labels.shape == (1000,)
    raw = src.eval.cast_column(src.image_column, datasets.Image(decode=False))
    for i in (0, 123, 499):
        assert np.array_equal(out.images[i].numpy(), _pil_chw(raw[i][src.image_column]["bytes"]))
        assert int(out.labels[i]) == src.eval[i][src.label_column]


def _with_corrupt_rows(n: int, bad: set[int]) -> datasets.Dataset:
    pixels = _pixels(n)
    images = [{"bytes": b"not a png" if i in bad else _png(pixels[i]), "path": None} for i in range(n)]
    return datasets.Dataset.from_dict({"img": images, "label": [i % 3 for i in range(n)]}, features=FEATURES)


def test_decode_error_fails_with_row_index() -> None:
    ds = _with_corrupt_rows(10, {7})
    expected = r"row 7 of column 'img'.*UnidentifiedImageError.*on_decode_error='skip'"
    with pytest.raises(ImageDecodeError, match=expected):
        decode_images(ds, image_column="img", label_column="label", num_proc=1)


def test_decode_error_skip_counts_and_keeps_labels_aligned(caplog: pytest.LogCaptureFixture) -> None:
    ds = _with_corrupt_rows(10, {3, 8})
    # Two processes: row 8 is in the second shard, so this also checks indices are global, not per shard.
    out = decode_images(ds, image_column="img", label_column="label", num_proc=2, on_decode_error="skip")
    assert out.skipped_indices == (3, 8) and out.num_skipped == 2 and len(out) == 8
    kept = [i for i in range(10) if i not in (3, 8)]
    assert out.labels.tolist() == [i % 3 for i in kept]
    assert np.array_equal(out.images[3].numpy(), _pixels(10)[4].transpose(2, 0, 1))
    assert "skipped 2 undecodable image(s) of 10" in caplog.text


def test_decode_rejects_mixed_sizes() -> None:
    ds = datasets.concatenate_datasets([_dataset(2, size=8), _dataset(1, size=10)])
    with pytest.raises(ImageDecodeError, match=r"images differ in size \(8x8 in row 0, 10x10 in row 2"):
        decode_images(ds, image_column="img", label_column="label", num_proc=1)


def test_decoded_dataset_through_dataloader() -> None:
    out = decode_images(_dataset(10), image_column="img", label_column="label", num_proc=1)
    ds = DecodedImageDataset(out)
    assert ds[3]["label"] == 0 and ds[3]["pixel_values"].shape == (3, 8, 8)
    batch = next(iter(torch.utils.data.DataLoader(ds, batch_size=4)))
    assert batch["pixel_values"].shape == (4, 3, 8, 8) and batch["pixel_values"].dtype == torch.uint8
    assert batch["label"].dtype == torch.int64 and batch["label"].tolist() == [0, 1, 2, 0]


# ------------------------------------------------------------------------------------------------------------------
# Augmentation and normalisation
# ------------------------------------------------------------------------------------------------------------------


def _batch(b: int = 16, c: int = 3, h: int = 8, w: int = 8) -> torch.Tensor:
    return torch.randint(1, 256, (b, c, h, w), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)


def test_augmentation_is_deterministic_per_generator_seed() -> None:
    images = _batch()
    aug = RandomCropFlip(padding=4)
    a = aug(images, torch.Generator().manual_seed(123))
    b = aug(images, torch.Generator().manual_seed(123))
    c = aug(images, torch.Generator().manual_seed(124))
    assert a.shape == images.shape and a.dtype == torch.uint8
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_augmentation_generator_reproduces_seed_epoch_step() -> None:
    images = _batch()
    aug = RandomCropFlip()
    first = aug(images, augmentation_generator(7, epoch=2, step=5))
    again = aug(images, augmentation_generator(7, epoch=2, step=5))  # e.g. after resuming from a checkpoint
    assert torch.equal(first, again)
    for other in (augmentation_generator(7, 2, 6), augmentation_generator(7, 3, 5), augmentation_generator(8, 2, 5),
                  augmentation_generator(7, 2, 5, rank=1)):
        assert not torch.equal(first, aug(images, other))
    with pytest.raises(ValueError, match=">= 0"):
        augmentation_generator(-1, 0, 0)


def test_flip_reverses_width_and_identity_without_randomness() -> None:
    images = _batch()
    gen = torch.Generator().manual_seed(0)
    assert torch.equal(RandomCropFlip(padding=0, flip_prob=1.0)(images, gen), images.flip(-1))
    assert torch.equal(RandomCropFlip(padding=0, flip_prob=0.0)(images, gen), images)


def test_crop_is_shifted_window_of_zero_padded_image() -> None:
    images = _batch(b=2, h=6, w=7)
    aug = RandomCropFlip(padding=2)
    centred = aug.apply(images, torch.tensor([[2, 2], [2, 2]]), torch.tensor([False, False]))
    assert torch.equal(centred, images)
    out = aug.apply(images, torch.tensor([[0, 0], [4, 3]]), torch.tensor([False, True]))
    assert out.shape == images.shape
    # Window at (0, 0): content moves down-right by 2, with zero rows/cols on top/left.
    assert torch.equal(out[0, :, 2:, 2:], images[0, :, :-2, :-2])
    assert (out[0, :, :2, :] == 0).all() and (out[0, :, :, :2] == 0).all()
    # Window at (4, 3) then flipped: same as slicing the padded image and mirroring it.
    padded = F.pad(images, (2, 2, 2, 2))
    assert torch.equal(out[1], padded[1, :, 4:10, 3:10].flip(-1))


def test_random_crop_flip_matches_reference_per_sample() -> None:
    images = _batch(b=32)
    aug = RandomCropFlip(padding=4)
    offsets, flips = aug.sample(32, torch.Generator().manual_seed(5))
    assert offsets.min() >= 0 and offsets.max() <= 8 and flips.any() and not flips.all()
    out = aug(images, torch.Generator().manual_seed(5))
    padded = F.pad(images, (4, 4, 4, 4))
    for i in range(32):
        dy, dx = offsets[i].tolist()
        ref = padded[i, :, dy : dy + 8, dx : dx + 8]
        assert torch.equal(out[i], ref.flip(-1) if flips[i] else ref)


def test_normalize_values_dtype_and_channels_last() -> None:
    images = _batch(b=2)
    out = Normalize(CIFAR10_MEAN, CIFAR10_STD)(images)
    mean = torch.tensor(CIFAR10_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(CIFAR10_STD).view(1, 3, 1, 1)
    assert out.dtype == torch.float32 and out.is_contiguous()
    torch.testing.assert_close(out, (images.float() / 255 - mean) / std)
    cl = Normalize(channels_last=True, dtype=torch.bfloat16)(images)
    assert cl.dtype == torch.bfloat16 and cl.is_contiguous(memory_format=torch.channels_last)
    with pytest.raises(TypeError, match="expects uint8"):
        Normalize()(images.float())


def test_compute_mean_std() -> None:
    images = _batch(b=4)
    mean, std = compute_mean_std(images, chunk_size=3)
    x = images.double() / 255
    torch.testing.assert_close(torch.tensor(mean, dtype=torch.float64), x.mean(dim=(0, 2, 3)))
    torch.testing.assert_close(torch.tensor(std, dtype=torch.float64), x.std(dim=(0, 2, 3), unbiased=False))


# ------------------------------------------------------------------------------------------------------------------
# Pipelines
# ------------------------------------------------------------------------------------------------------------------


def test_tensor_pipeline_on_builtin(builtin_source) -> None:
    data = build_pipeline(builtin_source, mean=CIFAR10_MEAN, std=CIFAR10_STD, channels_last=True)
    assert data.kind == "tensor" and data.input_size == (3, 32, 32) and data.num_workers == 0
    assert (len(data.train_dataset), len(data.eval_dataset)) == (3000, 1000)
    loader = torch.utils.data.DataLoader(data.train_dataset, batch_size=64, shuffle=False)
    batch = next(iter(loader))
    x = data.prepare_batch(batch["pixel_values"], train=True, generator=augmentation_generator(0, 0, 0))
    assert x.shape == (64, 3, 32, 32) and x.dtype == torch.float32
    assert x.is_contiguous(memory_format=torch.channels_last)
    y = data.prepare_batch(batch["pixel_values"], train=True, generator=augmentation_generator(0, 0, 0))
    assert torch.equal(x, y)
    with pytest.raises(ValueError, match="needs a generator"):
        data.prepare_batch(batch["pixel_values"], train=True)


def test_timm_pipeline_for_large_images(tmp_path: Path) -> None:
    features = datasets.Features({"img": datasets.Image(), "label": datasets.ClassLabel(names=CLASSES)})
    dd = datasets.DatasetDict({"train": _dataset(4, size=80, features=features), "test": _dataset(2, size=80)})
    src = load_image_dataset(dd)
    assert choose_pipeline_kind(src) == "timm"
    assert choose_pipeline_kind(src, max_tensor_size=80) == "tensor"
    cfg = {"input_size": (3, 48, 48), "mean": (0.5, 0.5, 0.5), "std": (0.25, 0.25, 0.25), "crop_pct": 0.875,
           "interpolation": "bilinear"}
    data = build_pipeline(src, pretrained_cfg=cfg)
    assert data.kind == "timm" and data.input_size == (3, 48, 48)
    item = data.train_dataset[0]
    assert item["pixel_values"].shape == (3, 48, 48) and item["pixel_values"].dtype == torch.float32
    assert item["label"] == 0
    batch = next(iter(torch.utils.data.DataLoader(data.eval_dataset, batch_size=2)))
    assert batch["pixel_values"].shape == (2, 3, 48, 48) and batch["label"].tolist() == [0, 1]
    assert data.prepare_batch(batch["pixel_values"], train=False).shape == (2, 3, 48, 48)
