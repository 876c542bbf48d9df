"""Hostile-user probes (issue 16): bad input in, a clear error or a documented outcome out, never a silent result.

Every probe runs on tiny models and tiny in-memory data. Training-loop probes (a NaN learning rate, a diverging
run, ``--resume`` from another model) belong to ``recipes/train.py`` and are tested with the recipe.
"""
from __future__ import annotations

import io
import json
import shutil
import socket
from collections.abc import Iterator
from pathlib import Path

import datasets
import numpy as np
import PIL.Image
import pytest
import torch
from safetensors.torch import load_file, save_file

import gaternet_zoo as gz
from gaternet_zoo import _validation
from gaternet_zoo._convert import OfficialCheckpointError
from gaternet_zoo._io import OutputExistsError, check_output_dir, prepare_output_dir
from gaternet_zoo.cli import main as cli_main
from gaternet_zoo.data import DataSourceError, ImageDecodeError, build_pipeline, check_class_count, load_image_dataset
from gaternet_zoo.evaluation import build_eval_data
from gaternet_zoo.hub import CONFIG_FINGERPRINT_KEY, config_fingerprint, load_weights, sha256_file

REPO = Path(__file__).resolve().parents[1]
PUBLISHED = REPO / 'weights' / 'gaternet_resnet20.cifar10'

pytestmark = pytest.mark.usefixtures('one_torch_thread')


# ------------------------------------------------------------------------------------------------ helpers

def _png(seed: int, size: int = 8) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, size=(size, size, 3), dtype=np.uint8)
    buf = io.BytesIO()
    PIL.Image.fromarray(pixels).save(buf, 'PNG')
    return buf.getvalue()


def _dataset(labels: list[int], *, names: list[str] | None = None, size: int = 8) -> datasets.Dataset:
    label_feature = datasets.ClassLabel(names=names) if names else datasets.Value('int64')
    features = datasets.Features({'img': datasets.Image(), 'label': label_feature})
    rows = {'img': [{'bytes': _png(i, size), 'path': None} for i in range(len(labels))], 'label': labels}
    return datasets.Dataset.from_dict(rows, features=features)


def _parquet(folder: Path, split: str, ds: datasets.Dataset) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    ds.to_parquet(folder / f'{split}.parquet')
    return folder


@pytest.fixture
def closed_port() -> Iterator[int]:
    """A loopback port bound but not listening: every connection is refused."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(('127.0.0.1', 0))
        yield sock.getsockname()[1]


@pytest.fixture(scope='module')
def gaternet() -> gz.GaterNet:
    torch.manual_seed(0)
    return gz.create_model('gaternet_resnet20').eval()


@pytest.fixture(scope='module')
def saved(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(1)
    folder = tmp_path_factory.mktemp('saved') / 'gaternet'
    gz.create_model('gaternet_resnet20').save_pretrained(folder)
    return folder


def _edit_config(folder: Path, edit) -> Path:
    config = json.loads((folder / 'config.json').read_text())
    edit(config)
    (folder / 'config.json').write_text(json.dumps(config, indent=2))
    return folder


def _strip_fingerprint(folder: Path) -> None:
    """Make a folder as saved before config fingerprints existed (weights without one, sha256 recorded)."""
    weights = folder / 'model.safetensors'
    save_file(load_file(weights), str(weights), metadata={'format': 'pt'})
    _edit_config(folder, lambda c: c['pretrained_cfg'].update(sha256=sha256_file(weights)))


X = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))


# ------------------------------------------------------------------------------------- inputs and gates (4, 6)

@pytest.mark.parametrize('gates, error, message', [
    (torch.full((2, 336), 5.0), ValueError, r'gates must be in \[0, 1\].*values in \[5, 5\]'),
    (torch.full((2, 336), -1.0), ValueError, r'gates must be in \[0, 1\]'),
    (torch.full((2, 336), float('nan')), ValueError, r'non-finite'),
    (torch.ones(2, 336, dtype=torch.long), TypeError, r'float tensor.*gates\.float\(\)'),
    (torch.ones(2, 336, dtype=torch.bool), TypeError, r'got dtype torch\.bool'),
    ([[1.0] * 336] * 2, TypeError, r'got list\. Convert it with torch\.tensor'),
], ids=['five', 'minus-one', 'nan', 'int', 'bool', 'list'])
def test_gates_outside_unit_interval_are_refused(gaternet: gz.GaterNet, gates, error, message) -> None:
    with pytest.raises(error, match=message):
        gaternet(X, gates=gates)


def test_fractional_gates_scale_filters_as_documented(gaternet: gz.GaterNet) -> None:
    # [0, 1] is the documented range: 1 keeps a filter, 0 closes it, 0.5 halves it (the gater's training output).
    with torch.no_grad():
        full, half, closed = (gaternet(X, gates=torch.full((1, 336), v)) for v in (1.0, 0.5, 0.0))
    assert torch.isfinite(half).all() and not torch.equal(full, half) and not torch.equal(half, closed)


@pytest.mark.parametrize('train', [False, True], ids=['eval', 'train'])
def test_nan_pixel_is_refused_naming_the_sample(gaternet: gz.GaterNet, train: bool) -> None:
    x = X.clone()
    x[1, 0, 3, 3] = float('nan')
    gaternet.train(train)
    try:
        with pytest.raises(ValueError, match=r'non-finite \(NaN or inf\) pixels in sample\(s\) 1 of the batch'):
            gaternet(x)
        with pytest.raises(ValueError, match='non-finite'):
            gaternet.forward_gates(x)
    finally:
        gaternet.eval()
    plain = gz.create_model('cifar_resnet20').eval()
    with pytest.raises(ValueError, match=r'CifarResNet got non-finite'):
        plain(x)


@pytest.mark.parametrize('dtype, fix', [
    (torch.uint8, r'expects float images, got dtype torch\.uint8.*x\.float\(\) / 255'),
    (torch.float16, r'float32 parameters but the input is torch\.float16.*x\.to\(torch\.float32\)'),
    (torch.float64, r'float32 parameters but the input is torch\.float64'),
])
def test_input_dtype_errors_say_how_to_convert(gaternet: gz.GaterNet, dtype: torch.dtype, fix: str) -> None:
    x = (X.abs() * 50).to(dtype)
    with pytest.raises(TypeError, match=fix):
        gaternet(x)
    with pytest.raises(TypeError, match=fix.replace('GaterNet', 'CifarResNet')):
        gz.create_model('cifar_resnet20').eval()(x)


def test_autocast_input_is_accepted(gaternet: gz.GaterNet) -> None:
    with torch.no_grad(), torch.autocast('cpu', dtype=torch.bfloat16):
        assert gaternet(X).shape == (2, 10)


def test_tiny_images_are_refused_with_the_minimum_size() -> None:
    cifar = gz.create_model('cifar_resnet20').eval()
    with pytest.raises(ValueError, match=r'CifarResNet needs images of at least 4x4 pixels.*got 1x1'):
        cifar(torch.zeros(1, 3, 1, 1))
    imagenet = gz.gate('resnet10t', gater='resnet10t', num_classes=10).eval()
    with pytest.raises(ValueError, match=r'GaterNet needs images of at least 32x32 pixels.*got 1x1'):
        imagenet(torch.zeros(1, 3, 1, 1))
    with torch.no_grad():
        assert imagenet(torch.zeros(1, 3, 32, 32)).shape == (1, 10)


@pytest.mark.parametrize('kwargs, error, message', [
    (dict(num_classes=-1), ValueError, r'num_classes of GaterNet must be at least 0'),
    (dict(num_classes='10'), TypeError, r"num_classes of GaterNet must be an integer, got '10'.*num_classes=10"),
    (dict(num_classes=10 ** 12), ValueError, r'num_classes of GaterNet is 1,000,000,000,000, more than'),
    (dict(in_chans=0), ValueError, r'in_chans of GaterNet must be at least 1, got 0'),
    (dict(bottleneck=2 ** 40), ValueError, r'bottleneck of GaterNet is'),
    (dict(gate_threshold=float('nan')), ValueError, r'gate_threshold of GaterNet must be a finite number'),
    (dict(gater='nosuch'), ValueError, r"Unknown gater 'nosuch': not a timm model name"),
    (dict(backbone='cifar_resnet2O'), ValueError, r"backbone 'cifar_resnet2O'.*Did you mean .*'cifar_resnet20'"),
], ids=['negative-classes', 'string-classes', 'huge-classes', 'no-channels', 'huge-bottleneck', 'nan-threshold',
        'unknown-gater', 'typo-backbone'])
def test_bad_model_arguments_fail_before_building(kwargs, error, message) -> None:
    with pytest.raises(error, match=message):
        gz.create_model('gaternet', **kwargs)


def test_bad_plain_backbone_arguments() -> None:
    with pytest.raises(ValueError, match=r'in_chans of CifarResNet must be at least 1'):
        gz.create_model('cifar_resnet20', in_chans=0)
    with pytest.raises(ValueError, match=r'num_classes of CifarResNet must be at least 0'):
        gz.create_model('gaternet_resnet20').reset_classifier(-1)
    with pytest.raises(ValueError, match=r'widths\[i\] of CifarResNet is 1,000,000,000'):
        gz.create_model('cifar_resnet20', widths=(16, 32, 10 ** 9))
    with pytest.raises(ValueError, match=r"Unknown gater 'cifar_resnet2'.*Did you mean"):
        gz.gate('cifar_resnet20', gater='cifar_resnet2')  # close matches suggested
    with pytest.raises(ValueError, match=r"Unknown gater 'nosuch'"):
        gz.gate('cifar_resnet20', gater='nosuch')


def test_value_checks_are_skipped_when_tracing_or_compiling(gaternet: gz.GaterNet, monkeypatch) -> None:
    # Symbolic tracing sees a Proxy, not data: the checks step aside and the traced graph runs as the model does.
    traced = torch.fx.symbolic_trace(gz.create_model('cifar_resnet20').eval())
    with torch.no_grad():
        assert traced(X).shape == (2, 10)
    monkeypatch.setattr(torch.compiler, 'is_compiling', lambda: True)
    assert not _validation.checks_apply(X)
    with torch.no_grad():  # as inside torch.compile: no Python-level check (no graph break), an in-graph assert
        assert gaternet(X).shape == (2, 10)
        with pytest.raises(RuntimeError, match=r'GaterNet \(compiled\) got non-finite'):
            gaternet(torch.full_like(X, float('nan')))


@pytest.mark.slow  # issue 25: out of `make test-fast` (seconds each on 2 busy cores)
def test_checks_do_not_break_compile_or_export() -> None:
    # fullgraph=True fails on any graph break: the value checks must not put a data-dependent branch in the graph.
    model = gz.create_model('cifar_resnet20').eval()
    with torch.no_grad():
        assert torch.compile(model, backend='eager', fullgraph=True)(X).shape == (2, 10)
    assert torch.export.export(model, (X,)).module()(X).shape == (2, 10)


def test_info_input_size_of_the_wrong_channels(capsys: pytest.CaptureFixture) -> None:
    assert cli_main(['info', 'gaternet_resnet20', '--input-size', '1', '32', '32']) == 2
    err = capsys.readouterr().err
    assert '--input-size 1 32 32: GaterNet takes 3-channel images' in err and 'in_chans=1' in err
    assert cli_main(['info', 'cifar_resnet20', '--input-size', '3', '2', '2']) == 2
    assert 'needs images of at least 4x4 pixels' in capsys.readouterr().err


# ------------------------------------------------------------------------------------ config.json integrity (3)

@pytest.mark.parametrize('edit', [
    lambda c: c['model_args'].update(num_classes=100) or c.update(num_classes=100),
    lambda c: c['model_args'].update(gate_threshold=0.2),
    lambda c: c['pretrained_cfg'].update(mean=[0.0, 0.0, 0.0]),
    lambda c: c.update(architecture='gaternet_resnet56') or c['model_args'].update(backbone='cifar_resnet56'),
    lambda c: c['model_args'].update(bottleneck=10 ** 9),
], ids=['num_classes', 'gate_threshold', 'mean', 'architecture', 'huge'])
def test_edited_config_is_refused(saved: Path, tmp_path: Path, edit) -> None:
    folder = _edit_config(shutil.copytree(saved, tmp_path / 'edited'), edit)
    with pytest.raises(gz.ChecksumError, match=r'config\.json of .* was changed after the model was saved.*'
                                                r'metadata of model\.safetensors'):
        gz.create_model(f'local-dir:{folder}')


def test_unedited_fields_and_overrides_still_load(saved: Path, tmp_path: Path) -> None:
    from safetensors import safe_open

    # The fingerprint is in the weights' metadata, so the weights' sha256 covers it.

    with safe_open(str(saved / 'model.safetensors'), framework='pt') as f:
        recorded = f.metadata()[CONFIG_FINGERPRINT_KEY]
    assert recorded == config_fingerprint(json.loads((saved / 'config.json').read_text()))
    # Provenance fields do not change the model: editing them is not refused.
    folder = _edit_config(shutil.copytree(saved, tmp_path / 'notes'), lambda c: c['pretrained_cfg'].update(
        notes='hand-written note'))
    assert gz.create_model(f'local-dir:{folder}').num_classes == 10
    # Fine-tuning asks for other classes explicitly, and gets a fresh classifier.
    assert gz.create_model(f'local-dir:{saved}', num_classes=5).num_classes == 5


def test_published_folder_is_covered_by_its_registry_pin(tmp_path: Path) -> None:
    model = gz.create_model(f'local-dir:{PUBLISHED}')  # the published config matches the registry's pin
    model.save_pretrained(tmp_path / 'mirror')  # the same weights re-saved: the same file, still covered
    assert sha256_file(tmp_path / 'mirror' / 'model.safetensors') == sha256_file(PUBLISHED / 'model.safetensors')
    folder = _edit_config(shutil.copytree(PUBLISHED, tmp_path / 'edited'),
                          lambda c: c['model_args'].update(gate_threshold=0.2))
    with pytest.raises(gz.ChecksumError, match='the registry entry of gaternet_resnet20.cifar10 records'):
        gz.create_model(f'local-dir:{folder}')
    with pytest.raises(gz.ChecksumError):
        gz.create_model(f'local-dir:{_edit_config(tmp_path / "mirror", lambda c: c.update(num_classes=100))}')
    # The same weights with a model value the registry does not pin: the fingerprint goes into the weights.
    model.pretrained_cfg['crop_pct'] = 0.9
    model.save_pretrained(tmp_path / 'recropped')
    assert sha256_file(tmp_path / 'recropped' / 'model.safetensors') != sha256_file(PUBLISHED / 'model.safetensors')
    assert gz.create_model(f'local-dir:{tmp_path / "recropped"}').pretrained_cfg['crop_pct'] == 0.9
    with pytest.raises(gz.ChecksumError, match='metadata of model.safetensors'):
        gz.create_model(f'local-dir:{_edit_config(tmp_path / "recropped", lambda c: c.update(num_classes=9))}')


def test_legacy_folder_checks_its_values_against_the_weights(saved: Path, tmp_path: Path) -> None:
    # No fingerprint anywhere: num_classes edited must not load a fresh head silently.
    folder = shutil.copytree(saved, tmp_path / 'legacy')
    _strip_fingerprint(folder)
    assert gz.create_model(f'local-dir:{folder}').num_classes == 10
    _edit_config(folder, lambda c: c['model_args'].update(num_classes=100) or c.update(num_classes=100))
    with pytest.raises(gz.StateDictMismatchError, match=r'classifier of shape \(10, 64\) but .* num_classes=100'):
        gz.create_model(f'local-dir:{folder}')


def test_legacy_config_with_an_unknown_or_huge_argument(saved: Path, tmp_path: Path) -> None:
    folder = shutil.copytree(saved, tmp_path / 'legacy-args')
    _strip_fingerprint(folder)
    _edit_config(folder, lambda c: c['model_args'].update(widths=[16, 32, 64]))
    with pytest.raises(gz.HubLoadError, match=r"does not fit its architecture 'gaternet_resnet20'.*widths"):
        gz.create_model(f'local-dir:{folder}')
    _edit_config(folder, lambda c: c['model_args'].pop('widths') and c['model_args'].update(num_classes=10 ** 12))
    with pytest.raises(ValueError, match='num_classes of GaterNet is 1,000,000,000,000'):
        gz.create_model(f'local-dir:{folder}')


def test_upper_case_sha256_is_accepted(saved: Path, tmp_path: Path) -> None:
    folder = _edit_config(shutil.copytree(saved, tmp_path / 'upper'),
                          lambda c: c['pretrained_cfg'].update(sha256=c['pretrained_cfg']['sha256'].upper()))
    assert gz.create_model(f'local-dir:{folder}').num_classes == 10
    load_weights(gz.create_model('gaternet_resnet20'), saved / 'model.safetensors',
                 sha256=sha256_file(saved / 'model.safetensors').upper())
    with pytest.raises(gz.ChecksumError, match='sha256 mismatch'):
        load_weights(gz.create_model('gaternet_resnet20'), saved / 'model.safetensors', sha256='AB' * 32)


def test_weights_of_a_diverged_run_are_neither_saved_nor_loaded_nor_scored(saved: Path, tmp_path: Path) -> None:
    from gaternet_zoo.evaluation import evaluate
    from gaternet_zoo.hub import NonFiniteWeightsError

    model = gz.create_model('gaternet_resnet20')
    with torch.no_grad():
        model.backbone.fc.weight[0, 0] = float('nan')
    with pytest.raises(NonFiniteWeightsError, match=r'Refusing to save .* 1 tensor\(s\) hold NaN'):
        model.save_pretrained(tmp_path / 'diverged')
    assert not (tmp_path / 'diverged' / 'model.safetensors').exists()

    folder = shutil.copytree(saved, tmp_path / 'nan')  # written by something else, e.g. an older version
    state = load_file(folder / 'model.safetensors')
    state['gater.fc2.bias'][3] = float('inf')
    save_file(state, str(folder / 'model.safetensors'), metadata={'format': 'pt'})
    _edit_config(folder, lambda c: c['pretrained_cfg'].update(sha256=sha256_file(folder / 'model.safetensors')))
    with pytest.raises(NonFiniteWeightsError, match=r'gater\.fc2\.bias.*diverged.*Nothing was loaded'):
        gz.create_model(f'local-dir:{folder}')

    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(X, torch.tensor([0, 1])), batch_size=2)
    with pytest.raises(ValueError, match=r'NaN or infinite scores for 2 sample\(s\) of batch 0'):
        evaluate(model, loader, prepare_batch=lambda b: (b[0], b[1]), num_classes=10)


# ------------------------------------------------------------------------------------------ class counts (2)

def test_stray_label_is_not_a_new_class() -> None:
    labels = [i % 3 for i in range(8)] + [99]
    with pytest.raises(DataSourceError, match=r"no label 3\. The labels above the gap \(99\) are in split 'train' "
                                              r'row\(s\) 8\..*num_classes=N'):
        load_image_dataset(_dataset(labels))
    with pytest.raises(DataSourceError,
                       match=r'row 8 has label 99 \(1 such row\(s\): rows 8\); labels must be in \[0, 3\)'):
        load_image_dataset(_dataset(labels), num_classes=3)
    source = load_image_dataset(_dataset(labels[:-1]))  # gap-free plain labels: 3 classes, and said so
    assert (source.num_classes, source.class_count_from) == (3, 'labels')


def test_declared_count_may_not_contradict_the_metadata() -> None:
    named = _dataset([0, 1, 2], names=['a', 'b', 'c'])
    with pytest.raises(DataSourceError, match=r'num_classes=2 was declared, but .* 3 classes in its ClassLabel'):
        load_image_dataset(named, num_classes=2)
    wider = load_image_dataset(named, num_classes=5)  # room for classes the data lacks: explicit, so allowed
    assert (wider.num_classes, wider.class_names, wider.class_count_from) == (5, ('a', 'b', 'c', '3', '4'),
                                                                              'declared')


def test_check_class_count_names_both_counts_and_rows() -> None:
    five = load_image_dataset(_dataset([i % 5 for i in range(10)]))
    with pytest.raises(DataSourceError, match=r'has 5 classes \(inferred from its labels 0\.\.4.*but num_classes is '
                                              r'10.*declare them with num_classes=10'):
        check_class_count(five, 10)
    named = load_image_dataset(_dataset([0, 1, 2], names=['a', 'b', 'c']))
    with pytest.raises(DataSourceError, match=r'has 3 classes \(from its ClassLabel metadata \(a, b, c\)\) but '
                                              r'num_classes is 10'):
        check_class_count(named, 10)
    with pytest.raises(DataSourceError, match=r'label outside num_classes=3 in the train split .* row 3 has label 3 '
                                              r'\(4 such row\(s\): rows 3, 4, 8, 9\)'):
        check_class_count(five, 3)
    check_class_count(named, 3)  # agreeing counts pass


def test_eval_and_analyze_refuse_data_with_other_classes(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    data = _parquet(tmp_path / 'five', 'test', _dataset([i % 5 for i in range(10)], size=32))
    assert cli_main(['eval', 'cifar_resnet20', '--data', str(data)]) == 2
    err = capsys.readouterr().err
    assert 'has 5 classes (inferred from its labels 0..4' in err and "the model's num_classes is 10" in err
    assert cli_main(['analyze', 'gaternet_resnet20', '--data', str(data), '--split', 'test', '--out',
                     str(tmp_path / 'fig')]) == 2
    assert 'has 5 classes' in capsys.readouterr().err and not (tmp_path / 'fig').exists()
    # Declaring the data's classes as the model's makes the 5-class data a 10-class evaluation set.
    assert cli_main(['eval', 'cifar_resnet20', '--data', str(data), '--num-classes', '10']) == 0
    assert 'top-1' in capsys.readouterr().out

    stray = _parquet(tmp_path / 'stray', 'test', _dataset([i % 10 for i in range(10)] + [99], size=32))
    assert cli_main(['eval', 'cifar_resnet20', '--data', str(stray)]) == 2
    err = capsys.readouterr().err
    assert "labels above the gap (99) are in split 'test' row(s) 10" in err and 'IndexError' not in err
    assert cli_main(['eval', 'cifar_resnet20', '--data', str(stray), '--num-classes', '100']) == 2
    err = capsys.readouterr().err
    assert "label outside the model's num_classes=10 in the test split" in err and 'row 10 has label 99' in err


def test_build_eval_data_checks_labels_against_the_model() -> None:
    model = gz.create_model('cifar_resnet20')
    with pytest.raises(DataSourceError, match=r"label outside the model's num_classes=10 in the test split .* "
                                              r'row 2 has label 12'):
        build_eval_data(model, _dataset([0, 1, 12], size=32), num_classes=13)


# ------------------------------------------------------------------------------------------------ images (6)

def test_corrupt_image_is_named_by_row_and_file(tmp_path: Path) -> None:
    folder = tmp_path / 'imgs'
    for split in ('train', 'test'):
        for cls in ('a', 'b'):
            (folder / split / cls).mkdir(parents=True)
            for i in range(2):
                (folder / split / cls / f'{i}.png').write_bytes(_png(i, 8))
    bad = folder / 'train' / 'a' / '1.png'
    bad.write_bytes(b'not a png at all')
    source = load_image_dataset(folder, cache_dir=tmp_path / 'cache')
    with pytest.raises(ImageDecodeError, match=r'could not read the image in row \d of column .*1\.png'):
        build_pipeline(source)
    pipeline = build_pipeline(source, kind='timm', pretrained_cfg=dict(input_size=(3, 8, 8), crop_pct=1.0))
    with pytest.raises(ImageDecodeError, match=r'could not decode an image of column .*\(file .*1\.png\), labelled'):
        [pipeline.train_dataset[i] for i in range(len(pipeline.train_dataset))]


# -------------------------------------------------------------------------------------------- converter (6)

@pytest.fixture(scope='module')
def official() -> dict:
    from test_convert import make_official_checkpoint

    return make_official_checkpoint(20, seed=5)


@pytest.mark.parametrize('spoil, message', [
    (lambda b: b.__setitem__('module.conv.weight', b['module.conv.weight'] * float('nan')), r'NaN or infinite'),
    (lambda b: b.__setitem__('module.conv.weight', b['module.conv.weight'].long()), r'dtype torch\.int64'),
    (lambda b: b.__setitem__('module.conv.weight', 'weights'), r"\['conv\.weight'\] is a str, not a tensor"),
], ids=['nan', 'int64', 'non-tensor'])
def test_converter_refuses_spoiled_tensors(official: dict, spoil, message: str) -> None:
    checkpoint = {k: dict(v) for k, v in official.items()}
    spoil(checkpoint['backbone_state_dict'])
    with pytest.raises(OfficialCheckpointError, match=message):
        gz.load_official_checkpoint(checkpoint)


def test_converter_handles_any_6n_plus_2_depth() -> None:
    from test_convert import make_official_checkpoint

    model = gz.load_official_checkpoint(make_official_checkpoint(26, seed=6))
    assert model.gate_size == 4 * (16 + 32 + 64)  # four blocks per stage
    assert model.backbone.stage1[-1] is model.backbone.stage1.block4


# ---------------------------------------------------------------------------------------------- writers (5)

def test_convert_official_refuses_a_non_empty_folder(official: dict, tmp_path: Path,
                                                     capsys: pytest.CaptureFixture) -> None:
    ckpt = tmp_path / 'ResNet-20-Gated.pth'
    torch.save(official, ckpt)
    out = tmp_path / 'out'
    out.mkdir()
    (out / 'README.md').write_text('my notes')
    assert cli_main(['convert-official', str(ckpt), str(out)]) == 2
    err = capsys.readouterr().err
    assert f'{out} is not empty (it holds README.md)' in err and '--overwrite' in err
    assert (out / 'README.md').read_text() == 'my notes' and not (out / 'model.safetensors').exists()
    assert cli_main(['convert-official', str(ckpt), str(out), '--overwrite']) == 0
    assert gz.create_model(f'local-dir:{out}').gate_size == 336


def test_output_helpers_for_every_writer(tmp_path: Path) -> None:
    (tmp_path / 'full').mkdir()
    (tmp_path / 'full' / 'x').write_text('x')
    with pytest.raises(OutputExistsError, match='pass --overwrite to replace them'):
        check_output_dir(tmp_path / 'full', what='the pruned model')
    assert check_output_dir(tmp_path / 'full', overwrite=True) == tmp_path / 'full'
    with pytest.raises(NotADirectoryError, match=r'x is a file, not a folder'):
        prepare_output_dir(tmp_path / 'full' / 'x' / 'sub', what='the pruned model')
    assert prepare_output_dir(tmp_path / 'new' / 'deep').is_dir()


def test_unwritable_outputs_fail_before_the_work(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    blocker = tmp_path / 'a-file'
    blocker.write_text('')
    assert cli_main(['eval', 'cifar_resnet20', '--json', str(blocker / 'report.json')]) == 2
    err = capsys.readouterr().err
    assert 'Cannot write the JSON report (--json)' in err and 'is a file, not a folder' in err
    assert 'top-1' not in capsys.readouterr().out
    assert cli_main(['analyze', 'gaternet_resnet20', '--out', str(blocker / 'figs')]) == 2
    assert 'Cannot write the analysis figures (--out)' in capsys.readouterr().err


def test_publish_weights_refuses_a_non_empty_folder(tmp_path: Path, monkeypatch) -> None:
    from tools import publish_weights

    out = tmp_path / 'published'
    out.mkdir()
    (out / 'README.md').write_text('keep me')
    with pytest.raises(OutputExistsError, match='pass --overwrite'):
        publish_weights.main([str(tmp_path / 'run'), 'gaternet_resnet20.probe', '--data', 'x', '--out', str(out)])
    assert (out / 'README.md').read_text() == 'keep me'


def test_push_without_network_is_one_clear_error(saved: Path, monkeypatch, closed_port: int,
                                                 capsys: pytest.CaptureFixture) -> None:
    from huggingface_hub import constants

    monkeypatch.setattr(constants, 'ENDPOINT', f'http://127.0.0.1:{closed_port}')
    monkeypatch.setenv('HF_TOKEN', 'hf_probe')
    assert cli_main(['push', str(saved), 'probe/gaternet']) == 2
    err = capsys.readouterr().err
    assert f"Could not push {saved} to 'probe/gaternet' at http://127.0.0.1:{closed_port}" in err
    assert 'nothing was uploaded' in err and 'Traceback' not in err
