"""``RunRecord``: the one writer and reader of a run folder, and of the run record kept beside published weights."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from gaternet_zoo.training import RunRecord, plot_training_curves

REPO = Path(__file__).resolve().parents[1]


def _finished_run(folder: Path, *, epochs: int = 2, val: bool = False) -> RunRecord:
    record = RunRecord(folder)
    folder.mkdir(parents=True)
    record.write_config({'model': 'cifar_resnet20', 'seed': 0, 'epochs': epochs, 'val_split': 5 if val else 0},
                        {'num_processes': 1, 'warm_starts': [{'description': 'backbone from x'}]})
    lead = 'val_' if val else ''
    for epoch in range(epochs):
        record.append_epoch({'epoch': epoch, 'train_loss': 1.0 / (epoch + 1), f'{lead}top1': 50.0 + epoch})
    return record


def test_the_recipe_files_written_are_read_back(tmp_path: Path) -> None:
    record = _finished_run(tmp_path / 'run')
    assert record.config()['model'] == 'cifar_resnet20' and record.runtime()['num_processes'] == 1
    assert record.warm_starts() == [{'description': 'backbone from x'}]
    assert [e['epoch'] for e in record.epochs()] == [0, 1]
    assert (record.path / RunRecord.SUMMARY).read_text().splitlines()[0].split(',') == ['epoch', 'train_loss', 'top1']
    assert record.test_top1() == 51.0  # evaluated on the test split every epoch: the last epoch counts
    assert record.final_dir == record.path / 'final' and record.newest_checkpoint() is None
    # A resume drops the epochs it trains again, in both metric files.
    record.truncate_epochs(1)
    assert [e['epoch'] for e in record.epochs()] == [0]
    assert len((record.path / RunRecord.SUMMARY).read_text().splitlines()) == 2


def test_the_test_figure_comes_from_the_final_weights_evaluation_first(tmp_path: Path) -> None:
    record = _finished_run(tmp_path / 'run', val=True)
    with pytest.raises(ValueError, match='holds no test figure; evaluate its final weights once'):
        record.test_top1()  # validation figures per epoch are never a test figure
    record.write_test_metrics({'test_top1': 90.5})
    assert record.test_top1() == 90.5
    (record.path / RunRecord.EVAL_TEST).write_text(json.dumps({'top1': 90.25}))
    assert record.test_top1() == 90.25  # published weights: their float32 evaluation


def test_an_unfinished_run_or_a_foreign_folder_is_refused_with_the_way_out(tmp_path: Path) -> None:
    record = _finished_run(tmp_path / 'run', epochs=2)
    config = yaml.safe_load((record.path / RunRecord.CONFIG).read_text())
    (record.path / RunRecord.CONFIG).write_text(yaml.safe_dump({**config, 'epochs': 5}))
    with pytest.raises(ValueError, match=r'stopped after epoch 2 of 5; finish it with `make it so`'):
        record.last_epoch(finish_with='`make it so`')
    with pytest.raises(FileNotFoundError, match='holds no config.yaml .*not the folder of a run'):
        RunRecord(tmp_path / 'elsewhere').config()


def test_a_published_weight_folder_reads_as_its_run() -> None:
    record = RunRecord(REPO / 'weights' / 'cifar_resnet20.cifar10')
    assert record.config_path().name == RunRecord.PUBLISHED_CONFIG
    assert record.config()['epochs'] == len(record.epochs()) == 30
    assert record.test_top1() == record.eval_report()['top1']


def test_one_curve_figure_for_test_and_validation_runs(tmp_path: Path) -> None:
    test_run, val_run = _finished_run(tmp_path / 'a'), _finished_run(tmp_path / 'b', val=True)
    png = plot_training_curves([test_run.path], tmp_path / 'test.png')
    assert png.read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'
    assert plot_training_curves([val_run], tmp_path / 'val.png').is_file()  # validation chosen: it is all they log
    with pytest.raises(ValueError, match=r"a: no val_top1 in metrics.jsonl.*try split='test'"):
        plot_training_curves([test_run, val_run], tmp_path / 'mixed.png', split='val')
    with pytest.raises(ValueError, match='no epochs'):
        plot_training_curves([tmp_path / 'empty'], tmp_path / 'empty.png')


def test_a_snapshot_keeps_the_newest_complete_checkpoint_whole(tmp_path: Path) -> None:
    from tools.snapshot_run import snapshot

    record = _finished_run(tmp_path / 'runs' / 'long')
    for n, complete in ((3, True), (4, True), (5, False)):  # checkpoint_5 was being written when the run stopped
        folder = record.path / 'checkpoints' / f'checkpoint_{n}'
        folder.mkdir(parents=True)
        (folder / 'model.safetensors').write_bytes(b'weights %d' % n)
        if complete:
            (folder / 'training_state.json').write_text(json.dumps({'epoch': n, 'global_step': 10 * n}))
    dest = snapshot(record.path, tmp_path / 'in_progress')
    copied = RunRecord(dest)
    assert copied.newest_checkpoint() == dest / 'checkpoints' / 'checkpoint_4'  # a folder, not its files flattened
    assert (copied.newest_checkpoint() / 'model.safetensors').read_bytes() == b'weights 4'
    assert [p.name for p in copied.checkpoints()] == ['checkpoint_4'] and copied.epochs() == record.epochs()
    assert copied.config() == record.config() and not copied.final_dir.exists()
    (record.final_dir).mkdir()
    (record.final_dir / 'model.safetensors').write_bytes(b'final')
    assert (RunRecord(snapshot(record.path, tmp_path / 'in_progress')).final_dir / 'model.safetensors').read_bytes() \
        == b'final'  # a finished run keeps its final weights for publishing
    with pytest.raises(FileNotFoundError, match='no complete checkpoint'):
        snapshot(_finished_run(tmp_path / 'runs' / 'fresh').path, tmp_path / 'in_progress')
