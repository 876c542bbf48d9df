"""Run an option screening on a validation split, and write its table: one row per arm, judged on validation only.

    python -m tools.screen run recipes/screening/cifar10_resnet20.yaml     # train (or resume) every arm in turn
    python -m tools.screen table recipes/screening/cifar10_resnet20.yaml \
        --out docs/results/cifar10_resnet20_screening.md

A screening file (YAML, see ``recipes/screening/``) names a ``base`` of recipe settings shared by all arms (it must
hold ``val_split``: arms are compared on held-out training images, never on the test split), and ``arms``, each a
recipe config file plus the options it changes. ``reference`` names the gated arm the options are compared with and
``plain`` the backbone alone.

``run`` trains the arms one after another with ``recipes/train.py`` in ``runs_dir/<arm>``: a finished arm
(``final/`` written) is skipped, an interrupted one resumed from its newest checkpoint, so the command can be
repeated after any kill. Each finished arm's record (``config.yaml`` and ``metrics.jsonl``) is copied to
``records_dir/<arm>``, which is what ``table`` reads and what is committed. ``table`` refuses a record whose model,
options or validation split differ from its arm's, and a run that stopped early. ``tests/test_screen.py`` regenerates
the committed table and fails if it differs.
"""
from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from gaternet_zoo.training import RESUME_EXACT_KEYS, RunRecord
from recipes import train as train_recipe
from tools.tables import write_table

ROOT = Path(__file__).resolve().parent.parent
TRAIN = Path(train_recipe.__file__)
# Settings a screening file may not set: they would let an arm evaluate on the test split or not be resumable.
_FORBIDDEN = ('test_at_end', 'eval_split', 'output_dir', 'resume', 'overwrite')


def load_spec(path: Path) -> dict[str, Any]:
    """Read and check a screening file; the paths in it are relative to the repository root."""
    spec = yaml.safe_load(Path(path).read_text()) or {}
    missing = [k for k in ('runs_dir', 'records_dir', 'base', 'arms', 'reference', 'plain') if k not in spec]
    if missing:
        raise ValueError(f'{path}: missing {", ".join(missing)}')
    if not spec['base'].get('val_split'):
        raise ValueError(f'{path}: base needs val_split N, the held-out training images the arms are judged on '
                         '(a screening never looks at the test split)')
    for name, arm in spec['arms'].items():
        if not isinstance(arm, dict) or 'config' not in arm:
            raise ValueError(f'{path}: arm {name!r} needs a config (a recipe config file)')
        bad = [k for k in _FORBIDDEN if k in arm or k in spec['base']]
        if bad:
            raise ValueError(f'{path}: {", ".join(bad)} cannot be set in a screening (arm {name!r})')
    for role in ('reference', 'plain'):
        if spec[role] not in spec['arms']:
            raise ValueError(f'{path}: {role} {spec[role]!r} is not one of the arms {sorted(spec["arms"])}')
    return spec


def arm_options(spec: dict[str, Any], name: str) -> dict[str, Any]:
    """The options an arm sets on top of its config file (the base's and its own, the arm's winning)."""
    return {k: v for k, v in {**spec['base'], **spec['arms'][name]}.items() if k != 'config'}


def arm_argv(spec: dict[str, Any], name: str, resume: bool) -> list[str]:
    """The ``recipes/train.py`` arguments of one arm (``--resume latest`` to continue its newest checkpoint)."""
    argv = ['--config', str(ROOT / spec['arms'][name]['config']), '--output-dir', str(ROOT / spec['runs_dir'] / name)]
    for key, value in arm_options(spec, name).items():
        flag = '--' + key.replace('_', '-')
        if value is True:
            argv.append(flag)
        elif value is not False:
            argv += [flag, str(value)]
    return argv + (['--resume', 'latest'] if resume else [])


def run(spec: dict[str, Any]) -> None:
    """Train every arm not finished yet, in the file's order, and copy each finished arm's record."""
    for name in spec['arms']:
        out = ROOT / spec['runs_dir'] / name
        if not RunRecord(out).final_dir.is_dir():
            resume = (out / 'checkpoints').is_dir() and any((out / 'checkpoints').iterdir())
            print(f'screening arm {name}: {"resuming" if resume else "starting"} in {out}', flush=True)
            subprocess.run([sys.executable, str(TRAIN), *arm_argv(spec, name, resume)], check=True, cwd=ROOT)
        record = ROOT / spec['records_dir'] / name
        record.mkdir(parents=True, exist_ok=True)
        for file in (RunRecord.CONFIG, RunRecord.METRICS):
            shutil.copy2(out / file, record / file)


def _record(spec: dict[str, Any], name: str) -> dict[str, Any]:
    """The last epoch of an arm's committed record, after checking that the record is that arm's run."""
    record = RunRecord(ROOT / spec['records_dir'] / name)
    folder = record.path
    if not record.epochs() or not record.has_config():
        raise FileNotFoundError(f'{folder}: no record of arm {name!r}; run `python -m tools.screen run ...` first')
    config = record.config()
    wanted = train_recipe.parse_args(arm_argv(spec, name, resume=False))[0].to_dict()
    # Every setting that shapes the training must be the arm's; data is a path, the same data may sit elsewhere.
    # (A key the record lacks was written before the setting existed, as a resume treats it.)
    keys = [k for k in RESUME_EXACT_KEYS if k != 'data' and k in config]
    differ = [f'{k}: {config[k]!r} in the run, {wanted[k]!r} in the screening' for k in keys
              if config[k] != wanted[k]]
    if differ:
        raise ValueError(f'{folder} is not the run of arm {name!r}: ' + '; '.join(differ))
    last = record.last_epoch(finish_with='`python -m tools.screen run ...`')
    if 'val_top1' not in last:
        raise ValueError(f'{folder}: the run logged no validation top-1; rerun the arm with its val_split')
    return {'model': config['model'], **last}


def screen_table(spec: dict[str, Any], source: str = '') -> str:
    """The markdown table, one row per arm, and the arm the screening selects.

    The selected arm has the highest validation top-1 among the gated arms whose gates close at all (some gate
    always off or input-dependent on the validation split).
    """
    rows = {name: _record(spec, name) for name in spec['arms']}
    reference, plain = rows[spec['reference']]['val_top1'], rows[spec['plain']]['val_top1']
    header = ['arm', 'model', 'options', 'val top-1', f'vs `{spec["reference"]}`', f'vs `{spec["plain"]}`',
              'train loss', 'open gates', 'gates on / off / input-dep.']
    lines = ['| ' + ' | '.join(header) + ' |', '|' + '---|' * len(header)]
    for name, row in rows.items():
        options = {k: v for k, v in spec['arms'][name].items() if k != 'config'}
        gated = 'val_gates_always_on' in row
        cells = [f'`{name}`', f'`{row["model"]}`',
                 ', '.join(f'`{k}={v}`' for k, v in options.items()) or '–', f'{row["val_top1"]:.2f}',
                 f'{row["val_top1"] - reference:+.2f}' if name != spec['reference'] else '–',
                 f'{row["val_top1"] - plain:+.2f}' if name != spec['plain'] else '–', f'{row["train_loss"]:.4f}',
                 f'{row["val_gate_open_fraction"]:.3f}' if gated else '–',
                 f'{row["val_gates_always_on"]} / {row["val_gates_always_off"]} / {row["val_gates_input_dependent"]}'
                 if gated else '–']
        lines.append('| ' + ' | '.join(cells) + ' |')
    # An arm whose gates are all open on every validation image is its backbone plus a gater that does nothing:
    # it cannot be the selected GaterNet, however accurate.
    gating = {n: r['val_top1'] for n, r in rows.items()
              if 'val_gates_always_on' in r and r['val_gates_always_off'] + r['val_gates_input_dependent'] > 0}
    base, never = spec['base'], [f'`{n}`' for n, r in rows.items() if 'val_gates_always_on' in r and n not in gating]
    note = (f'\n{base["epochs"]} epochs, seed {base["seed"]}, validation = the last {base["val_split"]:,} training '
            'images; the test split was not evaluated. ')
    if never:
        note += f'No gate of {", ".join(never)} ever closed on the validation split. '
    if gating:
        best = max(gating, key=gating.get)
        note += (f'Selected (highest validation top-1 of an arm whose gates close): `{best}`, {gating[best]:.2f} '
                 f'({gating[best] - plain:+.2f} vs `{spec["plain"]}`).\n')
    else:
        note += 'No gated arm closes any gate, so none is selected.\n'
    return (f'<!-- generated by: python -m tools.screen table {source} (do not edit) -->\n'
            + '\n'.join(lines) + '\n' + note)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('command', choices=('run', 'table'))
    p.add_argument('screening', type=Path, help='screening file (recipes/screening/*.yaml)')
    p.add_argument('--out', type=Path, help='table: markdown file to write (default: print)')
    args = p.parse_args(argv)
    spec = load_spec(args.screening)
    if args.command == 'run':
        run(spec)
    else:
        write_table(screen_table(spec, args.screening.as_posix()), args.out)
    return 0


if __name__ == '__main__':
    sys.exit(main())
