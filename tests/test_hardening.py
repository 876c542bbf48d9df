"""Hostile-user probes, round 2 (issue 24): no silent wrong answer from edited weights, skip mode or bad inputs.

Each test reproduces one case that used to give a wrong answer (or an error that did not say what to do) with no
error, on tiny models and tiny generated data. Training-run cases (resume, run-folder lock, checkpoint faults) are
in ``tests/test_resume_checks.py``.
"""
from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

import gaternet_zoo as gz
from gaternet_zoo.hub import CONFIG_VALUES_KEY, canonical_safetensors_header, sha256_file

REPO = Path(__file__).resolve().parents[1]
WEIGHTS = REPO / 'weights'
DENSE = WEIGHTS / 'gaternet_resnet20.cifar10'
BUDGET = WEIGHTS / 'gaternet_resnet20.cifar10_macs50'

pytestmark = pytest.mark.usefixtures('one_torch_thread')


def _copy(folder: Path, to: Path, edit=None) -> Path:
    out = shutil.copytree(folder, to)
    if edit is not None:
        config = json.loads((out / 'config.json').read_text())
        edit(config)
        (out / 'config.json').write_text(json.dumps(config, indent=2))
    return out


def _untag(config: dict) -> None:
    config['pretrained_cfg'].pop('tag')


# ------------------------------------------------------------------------ 1. config integrity of published weights

@pytest.mark.parametrize('folder', sorted(p.name for p in WEIGHTS.iterdir() if p.is_dir()))
def test_every_published_folder_loads_with_its_values_checked(folder: str) -> None:
    from gaternet_zoo.hub import read_config, verify_config

    config = read_config(WEIGHTS / folder / 'config.json')
    # True: a fingerprint was found and matched (not the "older folder, weights only" fallback).
    assert verify_config(config, WEIGHTS / folder / 'model.safetensors', folder) is True
    assert gz.create_model(f'local-dir:{WEIGHTS / folder}').pretrained_cfg['tag'] == folder.partition('.')[2]


@pytest.mark.parametrize('edit, key', [
    (lambda c: (_untag(c), c['pretrained_cfg'].update(mean=[0, 0, 0])), 'pretrained_cfg.mean is [0,0,0]'),
    (lambda c: (_untag(c), c['model_args'].update(pruned_filters={'backbone.stage1.block1': [0, 1, 2]})),
     'model_args.pruned_filters is {"backbone.stage1.block1":[0,1,2]} but was saved as unset'),
    (lambda c: (c['pretrained_cfg'].update(tag='other'), c['model_args'].update(gate_threshold=0.2)),
     'model_args.gate_threshold is 0.2 but was saved as 0.49999'),
], ids=['tag-deleted-mean', 'tag-deleted-pruned-filters', 'tag-changed-threshold'])
def test_removing_or_changing_the_tag_does_not_switch_the_check_off(tmp_path: Path, edit, key: str) -> None:
    folder = _copy(DENSE, tmp_path / 'edited', edit)
    with pytest.raises(gz.ChecksumError) as caught:
        gz.create_model(f'local-dir:{folder}')
    message = str(caught.value)
    assert 'published weights of gaternet_resnet20.cifar10' in message and 'pretrained_cfg.tag' in message
    assert key in message


@pytest.mark.parametrize('edit, key', [
    (lambda c: c['pretrained_cfg'].update(mean=[0, 0, 0], std=[1, 1, 1]),
     'pretrained_cfg.mean is [0,0,0] but was saved as [0.4914,0.4822,0.4465]; pretrained_cfg.std is [1,1,1]'),
    (lambda c: c['model_args'].update(gate_threshold=0.9), 'model_args.gate_threshold is 0.9 but was saved as 0.49999'),
], ids=['mean-std', 'threshold'])
def test_edited_value_of_a_published_folder_is_named(tmp_path: Path, edit, key: str) -> None:
    folder = _copy(DENSE, tmp_path / 'edited', edit)
    with pytest.raises(gz.ChecksumError, match='registry entry of gaternet_resnet20.cifar10 records') as caught:
        gz.create_model(f'local-dir:{folder}')
    assert key in str(caught.value)


@pytest.mark.parametrize('untag', [False, True], ids=['tag-kept', 'tag-deleted'])
def test_weights_of_another_tag_do_not_take_over_its_card(tmp_path: Path, untag: bool) -> None:
    # The budget model's weights copied into the dense model's folder, the recorded sha256 updated to match: the
    # folder would load and claim the dense card's 89.49 %.
    folder = _copy(DENSE, tmp_path / 'swapped')
    shutil.copy(BUDGET / 'model.safetensors', folder / 'model.safetensors')
    config = json.loads((folder / 'config.json').read_text())
    config['pretrained_cfg']['sha256'] = sha256_file(folder / 'model.safetensors')
    if untag:
        _untag(config)
    (folder / 'config.json').write_text(json.dumps(config))
    with pytest.raises(gz.ChecksumError, match=r'published weights of gaternet_resnet20\.cifar10_macs50 .* but '
                                               r'config\.json names ' + ('no tag' if untag else
                                                                         r'gaternet_resnet20\.cifar10\b')):
        gz.create_model(f'local-dir:{folder}')


def test_a_new_save_records_its_values_and_names_an_edited_one(tmp_path: Path) -> None:
    torch.manual_seed(0)
    gz.create_model('gaternet_resnet20').save_pretrained(tmp_path / 'new')
    with safe_open(str(tmp_path / 'new' / 'model.safetensors'), framework='pt') as f:
        assert json.loads(f.metadata()[CONFIG_VALUES_KEY])['pretrained_cfg']['std'] == [0.247, 0.2435, 0.2616]
    folder = _copy(tmp_path / 'new', tmp_path / 'edited', lambda c: c['model_args'].update(gate_threshold=0.7))
    with pytest.raises(gz.ChecksumError, match=r'model_args\.gate_threshold is 0\.7 but was saved as 0\.49999\. '
                                               r'.*metadata of model\.safetensors'):
        gz.create_model(f'local-dir:{folder}')


# --------------------------------------------------------------------------------------------- 6. records that lie

def test_saving_is_byte_reproducible(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = gz.create_model('gaternet_resnet20')
    digests = set()
    for i in range(8):  # safetensors writes its metadata in hash-map order: two keys came out either way round
        model.save_pretrained(tmp_path / str(i))
        digests.add(sha256_file(tmp_path / str(i) / 'model.safetensors'))
        digests.add(hashlib.sha256((tmp_path / str(i) / 'config.json').read_bytes()).hexdigest())
    assert len(digests) == 2  # one weights file and one config, whatever the run


def test_canonical_header_changes_the_order_only(tmp_path: Path) -> None:
    from safetensors.torch import load_file, save_file

    tensors = {'a': torch.arange(6.0).reshape(2, 3), 'b': torch.ones(4, dtype=torch.int64)}
    path = tmp_path / 'x.safetensors'
    save_file(tensors, str(path), metadata={'z': '1', 'format': 'pt', 'm': 'x"y'})
    size = path.stat().st_size
    canonical_safetensors_header(path)
    raw = path.read_bytes()
    header = json.loads(raw[8:8 + int.from_bytes(raw[:8], 'little')])  # in file order (safe_open's is a hash map)
    assert list(header['__metadata__'].items()) == [('format', 'pt'), ('m', 'x"y'), ('z', '1')]
    assert path.stat().st_size == size
    loaded = load_file(str(path))
    assert all(torch.equal(loaded[k], v) for k, v in tensors.items())
    assert canonical_safetensors_header(path) is False  # already canonical: left alone


# ------------------------------------------------------------------------------ 4. skip execution after weight edits

def _vector_to_parameters(model: torch.nn.Module) -> None:
    from torch.nn.utils import parameters_to_vector, vector_to_parameters

    vector_to_parameters(parameters_to_vector(model.parameters()) * 0.7, model.parameters())


def _assign_data(model: torch.nn.Module) -> None:
    for p in model.backbone.parameters():
        p.data = p.data * 0.7


def _load_state_dict(model: torch.nn.Module) -> None:
    model.load_state_dict({k: v * 0.7 if v.is_floating_point() else v for k, v in model.state_dict().items()})


def _optimizer_step(model: torch.nn.Module) -> None:
    from timm.optim import create_optimizer_v2

    for opt in ('sgd', 'adamw'):
        optimizer = create_optimizer_v2(model, opt=opt, lr=0.5)
        for p in model.parameters():
            p.grad = torch.ones_like(p)
        optimizer.step()


def _no_grad_in_place(model: torch.nn.Module) -> None:
    with torch.no_grad():
        for p in model.backbone.parameters():
            p.mul_(0.7)


@pytest.mark.parametrize('change', [_assign_data, _vector_to_parameters, _load_state_dict, _optimizer_step,
                                    _no_grad_in_place],
                         ids=['data-assigned', 'vector_to_parameters', 'load_state_dict', 'optimizer-step',
                              'no-grad-in-place'])
def test_skip_mode_follows_every_weight_change(change) -> None:
    model = gz.create_model(f'local-dir:{BUDGET}').eval().set_execution('skip')
    x = torch.randn(16, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        model(x)  # folds (and caches) the published weights
        change(model)
        model.eval()
        skip = model(x)
        mask = model.set_execution('mask')(x)
    assert torch.allclose(skip, mask, atol=1e-4, rtol=1e-4), (skip - mask).abs().max()


def test_set_execution_refolds_after_an_in_place_write_through_data() -> None:
    # ``param.data.mul_()`` bumps no version counter (the documented limit of the cache): set_execution drops it.
    model = gz.create_model(f'local-dir:{BUDGET}').eval().set_execution('skip')
    x = torch.randn(16, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        model(x)
        for p in model.backbone.parameters():
            p.data.mul_(0.7)
        skip = model.set_execution('skip')(x)
        mask = model.set_execution('mask')(x)
    assert torch.allclose(skip, mask, atol=1e-4, rtol=1e-4)


# ------------------------------------------------------------------------------------------------------ 5. inputs

@pytest.mark.slow  # issue 25: out of `make test-fast` (torch.compile takes seconds per model)
@pytest.mark.parametrize('name', ['gaternet_resnet20', 'cifar_resnet20'])
def test_compiled_model_still_refuses_nan_pixels(name: str) -> None:
    torch.manual_seed(0)
    model = gz.create_model(name).eval()
    compiled = torch.compile(model, backend='eager', fullgraph=True)  # fullgraph: the check breaks no graph
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(compiled(x), model(x))
        x[1, 0, 3, 3] = float('nan')
        with pytest.raises(RuntimeError, match=r'\(compiled\) got non-finite \(NaN or inf\) pixels'):
            compiled(x)


def test_exported_model_refuses_nan_pixels() -> None:
    model = gz.create_model('cifar_resnet20').eval()
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    exported = torch.export.export(model, (x,)).module()
    with torch.no_grad():
        assert exported(x).shape == (2, 10)
        with pytest.raises(RuntimeError, match='non-finite'):
            exported(torch.full_like(x, float('inf')))


def _image_folder(folder: Path, size: int, count: int = 8) -> Path:
    import datasets
    import numpy as np
    import PIL.Image

    rows = {'img': [PIL.Image.fromarray(np.random.default_rng(i).integers(0, 256, (size, size, 3), dtype=np.uint8))
                    for i in range(count)], 'label': [i % 10 for i in range(count)]}
    features = datasets.Features({'img': datasets.Image(), 'label': datasets.ClassLabel(num_classes=10)})
    folder.mkdir(parents=True, exist_ok=True)
    datasets.Dataset.from_dict(rows, features=features).to_parquet(folder / 'test.parquet')
    return folder


def test_eval_resizes_small_images_to_the_model_input_size(tmp_path: Path) -> None:
    from gaternet_zoo.evaluation import build_eval_data

    model = gz.create_model('cifar_resnet20')
    data = build_eval_data(model, str(_image_folder(tmp_path / 'px64', 64)))
    assert data.input_size == (3, 32, 32)  # was (3, 64, 64): the model ran on images twice its size
    assert tuple(next(iter(torch.utils.data.DataLoader(data.dataset, batch_size=2)))['pixel_values'].shape) == (
        2, 3, 32, 32)
    same = build_eval_data(model, str(_image_folder(tmp_path / 'px32', 32)))
    assert same.input_size == (3, 32, 32)


def test_a_backup_copy_in_a_subfolder_is_not_merged_into_the_split(tmp_path: Path) -> None:
    from gaternet_zoo.data import DataSourceError, load_image_dataset

    data = _image_folder(tmp_path / 'data', 32)
    assert len(load_image_dataset(str(data), split_train='test', split_eval=None).train) == 8
    _image_folder(data / 'backup', 32)  # the same split copied aside: it used to double the test split
    with pytest.raises(DataSourceError, match=r"split 'test' has data files in 2 folders .*backup: test\.parquet.*"
                                              r'Move the extra copy out'):
        load_image_dataset(str(data), split_train='test', split_eval=None)
    # shards of one split in one subfolder (the Hub's data/ layout) are still one split
    hub = tmp_path / 'hub'
    for i in range(2):
        shard = _image_folder(tmp_path / f'shard{i}', 32) / 'test.parquet'
        (hub / 'data').mkdir(parents=True, exist_ok=True)
        shutil.move(shard, hub / 'data' / f'test-0000{i}-of-00002.parquet')
    assert len(load_image_dataset(str(hub), split_train='test', split_eval=None).train) == 16


def test_integer_weights_are_not_cast_into_float_parameters(tmp_path: Path) -> None:
    from safetensors.torch import load_file, save_file

    from gaternet_zoo.hub import load_weights

    tensors = load_file(str(DENSE / 'model.safetensors'))
    tensors['backbone.fc.weight'] = (tensors['backbone.fc.weight'] * 100).to(torch.int32)
    save_file(tensors, str(tmp_path / 'model.safetensors'))
    model = gz.create_model('gaternet_resnet20')
    before = model.backbone.fc.weight.detach().clone()
    with pytest.raises(gz.StateDictMismatchError, match=r'backbone\.fc\.weight \(torch\.int32 into torch\.float32\)'
                                                         r'.*Nothing was loaded'):
        load_weights(model, tmp_path / 'model.safetensors')
    assert torch.equal(model.backbone.fc.weight, before)


@pytest.mark.parametrize('threshold, effect', [(2.0, 'closes every gate'), (-1.0, 'opens every gate'),
                                               (1.0, 'closes every gate')])
def test_gate_threshold_outside_the_gate_range_is_refused(threshold: float, effect: str) -> None:
    with pytest.raises(ValueError, match=rf'gate_threshold of GaterNet must be in \[0, 1\), got {threshold}.*'
                                         rf'{effect}'):
        gz.create_model('gaternet_resnet20', gate_threshold=threshold)
    with pytest.raises(ValueError, match='gate_noise_std of GaterNet .* must be >= 0'):
        gz.create_model('gaternet_resnet20', gate_noise_std=-1.0)
    assert gz.create_model('gaternet_resnet20', gate_threshold=0.0).num_classes == 10


# --------------------------------------------------------------------------------------------- 6. records that lie

def _set_metric(folder: Path, key: str, value: float, *, card: bool) -> None:
    config = json.loads((folder / 'config.json').read_text())
    old = config['pretrained_cfg']['metrics'][key]
    config['pretrained_cfg']['metrics'][key] = value
    (folder / 'config.json').write_text(json.dumps(config, indent=2))
    if card:
        text = (folder / 'README.md').read_text()
        (folder / 'README.md').write_text(text.replace(f'| {old:.2f} |', f'| {value:.2f} |'))


@pytest.mark.slow  # issue 25: out of `make test-fast` (evaluates a published model on the built-in subset)
def test_validate_folder_does_not_vouch_for_a_false_figure(tmp_path: Path) -> None:
    from gaternet_zoo._publish import validate_folder
    from gaternet_zoo.hub import HubLoadError

    report = validate_folder(_copy(DENSE, tmp_path / 'ok'))
    assert 'top-1 on the built-in subset re-measured: 90.00 % (recorded 90.0)' in str(report)
    assert 'top1, top5 as recorded' in str(report)  # the test split is not claimed as verified
    edited = _copy(DENSE, tmp_path / 'config-only')
    _set_metric(edited, 'top1', 95.0, card=False)
    with pytest.raises(HubLoadError, match=r'shows top-1 89\.49, but config\.json records metrics\.top1 = 95\.0'):
        validate_folder(edited)
    both = _copy(DENSE, tmp_path / 'card-too')
    _set_metric(both, 'top1', 95.0, card=True)
    with pytest.raises(HubLoadError, match=r'metrics\.top1 = 95\.0, but the evaluation saved next to it '
                                           r'\(eval_test\.json\) measured 89\.49'):
        validate_folder(both)
    (both / 'eval_builtin_subset.json').unlink()
    (both / 'eval_test.json').unlink()
    _set_metric(both, 'top1_builtin_subset', 95.0, card=False)
    with pytest.raises(HubLoadError, match=r'top1_builtin_subset = 95\.0, but these weights measure 90\.0'):
        validate_folder(both)


def test_eval_json_does_not_overwrite_a_file_that_is_not_a_report(tmp_path: Path,
                                                                   capsys: pytest.CaptureFixture) -> None:
    from gaternet_zoo.cli import main as cli_main

    script = tmp_path / 'train_notes.py'
    script.write_text('print("my work")\n')
    assert cli_main(['eval', 'cifar_resnet20', '--max-samples', '8', '--json', str(script)]) == 2
    assert 'is not a JSON report' in capsys.readouterr().err
    assert script.read_text() == 'print("my work")\n'
    report = tmp_path / 'report.json'
    report.write_text('{"top1": 1.0}\n')  # an earlier report is replaced, as before
    assert cli_main(['eval', 'cifar_resnet20', '--max-samples', '8', '--json', str(report)]) == 0
    assert json.loads(report.read_text())['num_samples'] == 8


@pytest.mark.parametrize('name_tag', ['gaternet_resnet20', 'gaternet_resnet20.'])
def test_publish_weights_without_a_tag_is_refused(tmp_path: Path, name_tag: str, monkeypatch,
                                                  capsys: pytest.CaptureFixture) -> None:
    from tools import publish_weights

    with pytest.raises(SystemExit) as exit_info:
        publish_weights.main([str(tmp_path / 'run'), name_tag, '--data', 'x', '--out', str(tmp_path / 'out')])
    assert exit_info.value.code == 2
    assert 'name_tag must be architecture.tag' in capsys.readouterr().err
    assert not (tmp_path / 'out').exists()
    model = gz.create_model('gaternet_resnet20')
    model.pretrained_cfg['tag'] = ''
    model.pretrained_cfg.pop('sha256', None)
    model.save_pretrained(tmp_path / 'saved')
    assert 'tag' not in json.loads((tmp_path / 'saved' / 'config.json').read_text())['pretrained_cfg']


# ------------------------------------------------------------------------------------ errors that say what to do

def test_convert_official_says_why_a_pickle_is_refused_and_what_it_is(tmp_path: Path,
                                                                      capsys: pytest.CaptureFixture) -> None:
    from gaternet_zoo.cli import main as cli_main

    torch.save({'model': torch.nn.Linear(2, 2)}, tmp_path / 'whole_model.pth')  # a pickled module, not tensors
    assert cli_main(['convert-official', str(tmp_path / 'whole_model.pth'), str(tmp_path / 'out')]) == 2
    err = capsys.readouterr().err
    assert 'is a pickle of Python objects (it names torch.nn.modules.linear.Linear' in err
    assert 'runs code it names, so the zoo never does' in err and 'ResNet-20-Gated.pth' in err
    assert 'weights_only=False' not in err and 'will likely succeed' not in err
    (tmp_path / 'cut.pth').write_bytes((tmp_path / 'whole_model.pth').read_bytes()[:100])
    assert cli_main(['convert-official', str(tmp_path / 'cut.pth'), str(tmp_path / 'out')]) == 2
    assert 'not a complete torch.save file' in capsys.readouterr().err


def test_empty_or_zero_byte_parquet_is_named(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from gaternet_zoo.data import DataSourceError, load_image_dataset

    folder = tmp_path / 'data'
    folder.mkdir()
    pq.write_table(pa.table({'img': pa.array([], pa.binary()), 'label': pa.array([], pa.int64())}),
                   folder / 'test.parquet')
    with pytest.raises(DataSourceError, match=r'test\.parquet holds no rows \(an empty export\?\)'):
        load_image_dataset(str(folder), split_train='test', split_eval=None)
    (folder / 'test.parquet').write_bytes(b'')
    with pytest.raises(DataSourceError, match=r'test\.parquet is not a readable parquet file \(0 bytes'):
        load_image_dataset(str(folder), split_train='test', split_eval=None)


def test_string_labels_say_how_to_convert_them(tmp_path: Path) -> None:
    import datasets

    from gaternet_zoo.data import DataSourceError, load_image_dataset

    png = _image_folder(tmp_path / 'png', 8, count=4)
    rows = datasets.Dataset.from_parquet(str(png / 'test.parquet'))
    rows = rows.remove_columns('label').add_column('label', ['cat', 'dog', 'cat', 'bird'])
    folder = tmp_path / 'named'
    folder.mkdir()
    rows.to_parquet(folder / 'test.parquet')
    with pytest.raises(DataSourceError, match=r"label column 'label' .* holds class names \(strings\).*'bird', "
                                              r"'cat', 'dog'.*class_encode_column\('label'\)"):
        load_image_dataset(str(folder), split_train='test', split_eval=None)


def test_decode_error_hint_names_no_flag_the_recipes_lack() -> None:
    import datasets

    from gaternet_zoo.data import ImageDecodeError, decode_images

    rows = datasets.Dataset.from_dict({'img': [{'bytes': b'not an image', 'path': None}], 'label': [0]},
                                      features=datasets.Features({'img': datasets.Image(),
                                                                  'label': datasets.Value('int64')}))
    with pytest.raises(ImageDecodeError) as caught:
        decode_images(rows, image_column='img', label_column='label')
    message = str(caught.value)
    assert 'remove or replace that image' in message and "build_pipeline(..., on_decode_error='skip')" in message
    assert 'recipes/train.py and gaternet-zoo eval have no such option' in message
    assert '--on-decode-error' not in message and '--skip' not in message


def test_bad_batch_size_and_round_to_fail_before_any_work(tmp_path: Path, capsys: pytest.CaptureFixture,
                                                          monkeypatch) -> None:
    from gaternet_zoo import evaluation
    from gaternet_zoo.cli import main as cli_main

    def no_work(*args, **kwargs):
        raise AssertionError('the model or data was loaded before the argument was checked')

    monkeypatch.setattr(evaluation, 'model_from_name', no_work)
    monkeypatch.setattr(evaluation, 'build_eval_data', no_work)
    assert cli_main(['eval', 'cifar_resnet20', '--batch-size', '0']) == 2
    assert 'batch_size (--batch-size) must be a positive number of images per batch, got 0' in (
        capsys.readouterr().err)
    assert cli_main(['prune', 'gaternet_resnet20', '--round-to', '0', '--out', str(tmp_path / 'p')]) == 2
    assert 'round_to (--round-to) must be a positive number of filters' in capsys.readouterr().err
