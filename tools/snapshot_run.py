"""Copy an unfinished run's newest complete checkpoint into the repository, so that a fresh clone can resume it.

    python -m tools.snapshot_run runs/c10_resnet20_e200_s0      # -> checkpoints_in_progress/c10_resnet20_e200_s0/

A long run outlives the machine it started on: its folder (``runs/`` is not committed) is copied without the older
checkpoints and without the TensorBoard logs, keeping what ``recipes/train.py --resume latest`` needs: the
settings (``config.yaml``), the metric files, and ``checkpoints/checkpoint_<n>/`` whole (weights, optimizer, RNG
states, position); a finished run's ``final/`` and test figure come along for publishing. The copy replaces the
previous snapshot of the same run, and is read back through :class:`~gaternet_zoo.training.RunRecord` before this
returns: the checkpoint it finds must be the one copied.
Resume from it with ``cp -r checkpoints_in_progress/<run> runs/`` and ``--resume latest``.
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

from gaternet_zoo.training import CHECKPOINT_STATE, RunRecord

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DEST = ROOT / 'checkpoints_in_progress'


def snapshot(run_dir: Path, dest_root: Path = DEFAULT_DEST) -> Path:
    """Copy ``run_dir``'s records and newest complete checkpoint to ``dest_root/<run name>``; returns the copy.

    Raises:
        FileNotFoundError: The run has no config or no complete checkpoint.
    """
    run = RunRecord(run_dir)
    checkpoint = run.newest_checkpoint()
    if not run.has_config() or checkpoint is None:
        raise FileNotFoundError(f'{run_dir}: no config.yaml or no complete checkpoint to snapshot')
    dest = Path(dest_root) / run.name
    tmp = dest.with_name(dest.name + '.tmp')
    shutil.rmtree(tmp, ignore_errors=True)
    (tmp / 'checkpoints').mkdir(parents=True)
    for name in (RunRecord.CONFIG, RunRecord.METRICS, RunRecord.SUMMARY):
        if (run.path / name).is_file():
            shutil.copy2(run.path / name, tmp / name)
    shutil.copytree(checkpoint, tmp / 'checkpoints' / checkpoint.name)
    for name in (RunRecord.TEST_METRICS,):
        if (run.path / name).is_file():
            shutil.copy2(run.path / name, tmp / name)
    if run.final_dir.is_dir():  # a finished run: its final weights, which publishing reads
        shutil.copytree(run.final_dir, tmp / RunRecord.FINAL)
    copied = RunRecord(tmp).newest_checkpoint()
    if copied is None or copied.name != checkpoint.name:
        raise RuntimeError(f'{tmp}: the copy does not read back as {checkpoint.name}; the snapshot was not replaced')
    shutil.rmtree(dest, ignore_errors=True)
    tmp.rename(dest)
    return dest


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('run_dir', type=Path, help='the run folder (recipes/train.py --output-dir)')
    p.add_argument('--dest', type=Path, default=DEFAULT_DEST, help='where snapshots live (default: %(default)s)')
    args = p.parse_args(argv)
    dest = snapshot(args.run_dir, args.dest)
    checkpoint = RunRecord(dest).newest_checkpoint()
    state = json.loads((checkpoint / CHECKPOINT_STATE).read_text())
    print(f'{dest}: {checkpoint.name}, step {state["global_step"]:,}, after {state["epoch"]} complete epochs'
          + (f' and {state["step_in_epoch"]} batches' if state['step_in_epoch'] else ''))
    return 0


if __name__ == '__main__':
    sys.exit(main())
