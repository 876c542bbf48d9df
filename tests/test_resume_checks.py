"""Issue 24, training-run cases: a resume continues exactly or is refused naming the flag, one training per run
folder, damaged checkpoints point at an intact one, and a full disk says what to do.

One tiny run (64 images, batch 16, one epoch, a checkpoint every step) is trained once in a subprocess; each test
works on a copy of it, and the refusals run in-process (they happen before any step is trained).
"""
from __future__ import annotations

import errno
import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

import gaternet_zoo.training as zt

REPO = Path(__file__).resolve().parents[1]
TRAIN = REPO / 'recipes' / 'train.py'

from recipes import train  # noqa: E402

ARGS = ['--model', 'gaternet_resnet20', '--cpu', '--epochs', '1', '--batch-size', '16', '--max-train-samples', '64',
        '--max-eval-samples', '16', '--checkpoint-every-steps', '1', '--keep-checkpoints', '5', '--seed', '0']


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ('WORLD_SIZE', 'RANK', 'LOCAL_RANK', 'MASTER_ADDR')}
    env.update(OMP_NUM_THREADS='1', MKL_NUM_THREADS='1', HF_HUB_OFFLINE='1', HF_DATASETS_OFFLINE='1')
    return env


@pytest.fixture(scope='module')
def finished_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp('resume') / 'run'
    proc = subprocess.run([sys.executable, str(TRAIN), *ARGS, '--output-dir', str(out)], env=_env(), cwd=REPO,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert not (out / zt.LOCK_NAME).exists()  # released when the run ended
    return out


@pytest.fixture
def run(finished_run: Path, tmp_path: Path) -> Path:
    """A copy of the run, as if killed after its first step (later checkpoints and final/ gone)."""
    out = shutil.copytree(finished_run, tmp_path / 'run')
    shutil.rmtree(out / 'final')
    for path in zt.list_checkpoints(out)[1:]:
        shutil.rmtree(path)
    return out


def _resume(out: Path, *extra: str) -> None:
    train.main(['--output-dir', str(out), '--resume', 'latest', *extra])


# ----------------------------------------------------------------------------------------- 2. exact resume or none

@pytest.mark.parametrize('flags, named', [
    (['--batch-size', '32'], r'--batch-size is 32 but the run used 16 .*pass --batch-size 16'),
    (['--max-train-samples', '32'], r'--max-train-samples is 32 but the run used 64'),
    (['--seed', '1'], r'--seed is 1 but the run used 0'),
    (['--epochs', '3'], r'--epochs is 3 but the run used 1'),
], ids=['batch-size', 'max-train-samples', 'seed', 'epochs'])
def test_resume_with_other_settings_is_refused_naming_the_flag(run: Path, flags: list[str], named: str) -> None:
    before = (run / 'config.yaml').read_text()
    with pytest.raises(zt.RecipeError, match=named + r'.*start a new run in another --output-dir'):
        _resume(run, *flags)
    assert (run / 'config.yaml').read_text() == before  # the run's record is not rewritten
    assert not (run / 'final').exists() and len(zt.list_checkpoints(run)) == 1  # and nothing was trained


def test_config_written_before_a_setting_existed_still_resumes_its_check(run: Path) -> None:
    # A key missing from an older run's config.yaml is "written before this check": not compared, not refused.
    config = yaml.safe_load((run / 'config.yaml').read_text())
    del config['torchcompile'], config['gate_budget']
    (run / 'config.yaml').write_text(yaml.safe_dump(config, sort_keys=False))
    state = zt.check_resume(zt.find_checkpoint('latest', run), {**config, 'torchcompile': True, 'gate_budget': 'x'},
                            steps_per_epoch=4, micro_steps=4)
    assert state['global_step'] == 1


def test_changed_data_is_refused_by_the_checkpoint_position(run: Path) -> None:
    config = yaml.safe_load((run / 'config.yaml').read_text())
    checkpoint = zt.find_checkpoint('latest', run)
    zt.check_resume(checkpoint, config, steps_per_epoch=4, micro_steps=4)  # the run's own shape passes
    state = json.loads((checkpoint / zt.CHECKPOINT_STATE).read_text())
    (checkpoint / zt.CHECKPOINT_STATE).write_text(json.dumps({**state, 'epoch': 1, 'step_in_epoch': 0,
                                                              'global_step': 3}))
    with pytest.raises(zt.RecipeError, match=r'saved at optimizer step 3 .* with this run\'s 4 steps per epoch .*'
                                             r'recorded 64 training images and 4 steps per epoch.*data changed'):
        zt.check_resume(checkpoint, config, steps_per_epoch=4, micro_steps=4)


def test_more_processes_than_the_checkpoint_has_random_states_for_is_refused(run: Path) -> None:
    config = yaml.safe_load((run / 'config.yaml').read_text())
    checkpoint = zt.find_checkpoint('latest', run)
    with pytest.raises(zt.RecipeError, match=r'written by 1 process\(es\), but this run has 2.*--num_processes 1'):
        zt.check_resume(checkpoint, config, steps_per_epoch=4, micro_steps=4, num_processes=2)


def test_resuming_a_finished_run_trains_nothing_and_says_so(finished_run: Path, tmp_path: Path) -> None:
    out = shutil.copytree(finished_run, tmp_path / 'done')
    with pytest.raises(zt.RecipeError, match=r'the run is complete .*epoch 1 of 1 and final/ is written.*nothing '
                                             r'to train'):
        _resume(out)


def test_truncated_random_states_are_refused_pointing_at_an_intact_checkpoint(finished_run: Path,
                                                                              tmp_path: Path) -> None:
    out = shutil.copytree(finished_run, tmp_path / 'rng')
    shutil.rmtree(out / 'final')
    newest = zt.list_checkpoints(out)[-1]
    rng = newest / 'random_states_0.pkl'
    rng.write_bytes(rng.read_bytes()[: rng.stat().st_size // 2])
    with pytest.raises(zt.RecipeError, match=r'random_states_0\.pkl is truncated .*newest intact checkpoint is '
                                             rf'.*{zt.list_checkpoints(out)[-2].name}: resume from it with --resume'):
        _resume(out)


def test_truncated_weights_of_a_checkpoint_point_at_the_newest_intact_one(finished_run: Path,
                                                                          tmp_path: Path) -> None:
    out = shutil.copytree(finished_run, tmp_path / 'cut')
    shutil.rmtree(out / 'final')
    checkpoints = zt.list_checkpoints(out)
    for path in checkpoints[-2:]:  # the two newest are damaged
        weights = path / 'model.safetensors'
        weights.write_bytes(weights.read_bytes()[:-1000])
    assert zt.newest_intact_checkpoint(out) == checkpoints[-3]
    with pytest.raises(zt.RecipeError, match=rf'model\.safetensors is truncated .*{checkpoints[-3]}'):
        _resume(out)
    # and the pointed-at checkpoint really resumes (past the refusal; the rest of the run is trained)
    train.main(['--output-dir', str(out), '--resume', str(checkpoints[-3])])
    assert (out / 'final' / 'model.safetensors').is_file()


# ------------------------------------------------------------------------------------ 3. one training per run folder

def test_second_training_into_a_live_run_folder_is_refused(run: Path) -> None:
    sleeper = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])
    try:
        (run / zt.LOCK_NAME).write_text(json.dumps({'pid': sleeper.pid, 'host': socket.gethostname(),
                                                    'started': None, 'time': 0}))
        with pytest.raises(zt.RecipeError, match=rf'in use by another training \(pid {sleeper.pid} .*Wait for it '
                                                 r'to end, or choose another --output-dir'):
            _resume(run)
        with pytest.raises(zt.RecipeError, match='in use by another training'):
            train.main(['--output-dir', str(run), '--overwrite', *ARGS])
        assert json.loads((run / zt.LOCK_NAME).read_text())['pid'] == sleeper.pid  # the owner keeps its lock
    finally:
        sleeper.kill()
        sleeper.wait()


def test_stale_lock_of_a_killed_training_is_taken_over(run: Path) -> None:
    dead = subprocess.Popen([sys.executable, '-c', 'pass'])
    dead.wait()
    (run / zt.LOCK_NAME).write_text(json.dumps({'pid': dead.pid, 'host': socket.gethostname(), 'time': 0}))
    zt.acquire_run_lock(run)
    assert json.loads((run / zt.LOCK_NAME).read_text())['pid'] == os.getpid()
    zt.release_run_locks()
    assert not (run / zt.LOCK_NAME).exists()
    # a lock from another machine cannot be checked from here: refused, saying how to clear it
    (run / zt.LOCK_NAME).write_text(json.dumps({'pid': 1, 'host': 'elsewhere', 'time': 0}))
    with pytest.raises(zt.RecipeError, match='on another machine.*delete the lock file'):
        zt.acquire_run_lock(run)


# ------------------------------------------------------------------------------------------ a full disk (message)

class _FullDisk:
    """An Accelerator whose save_state writes part of a checkpoint and then finds the disk full."""

    num_processes = 1

    def __init__(self, out: Path, error: Exception) -> None:
        self.out, self.error = out, error

    def save_state(self) -> None:
        folder = self.out / 'checkpoints' / 'checkpoint_9'
        folder.mkdir()
        (folder / 'model.safetensors').write_bytes(b'\0' * 100)
        raise self.error


@pytest.mark.parametrize('error', [
    RuntimeError('Error while serializing: IoError(Os { code: 28, kind: StorageFull, message: "No space left on '
                 'device" })'),
    OSError(errno.ENOSPC, 'No space left on device'),
], ids=['safetensors', 'oserror'])
def test_full_disk_while_checkpointing_says_what_is_intact_and_how_to_resume(run: Path, error: Exception) -> None:
    intact = zt.list_checkpoints(run)[-1]
    with pytest.raises(zt.RecipeError, match=rf'disk is full: writing checkpoint .*checkpoint_9 failed at '
                                             rf'model\.safetensors .*previous checkpoint {intact} is intact.*'
                                             rf'--resume latest'):
        zt.save_checkpoint_state(_FullDisk(run, error), run)
    assert not (run / 'checkpoints' / 'checkpoint_9').exists()  # the half-written folder gave its space back
    with pytest.raises(ValueError, match='other'):  # any other error is not dressed up as a full disk
        zt.save_checkpoint_state(_FullDisk(run, ValueError('other')), run)
