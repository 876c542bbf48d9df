"""Publishing a saved model folder: validate it locally, then upload it to the Hub in one commit.

Validation loads the folder exactly as a user would (strict, sha256-verified), and checks that the model card
exists and quotes the same sha256 as ``config.json`` and the file itself. The upload is one thin ``HfApi`` call.
"""
from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

from ._constants import DEFAULT_DATA_SOURCE
from .hub import CARD_NAME, CONFIG_NAME, WEIGHTS_NAME, ChecksumError, HubLoadError, read_config

__all__ = ['validate_folder', 'push_folder', 'ValidationReport']


@dataclass
class ValidationReport:
    """What :func:`validate_folder` checked, in words; ``figures`` says which metrics were re-measured."""

    folder: Path
    architecture: str
    sha256: str
    params: int
    figures: str = 'no figures recorded'

    def __str__(self) -> str:
        return (f'{self.folder}: {self.architecture}, {self.params:,} parameters, model.safetensors sha256 '
                f'{self.sha256} (verified; config values match their fingerprint; loads strictly; the card quotes '
                f'the sha256 and the recorded figures); figures: {self.figures}')


#: How many built-in-subset images a re-measured top-1 may differ by (a near-tie flipped by another thread count).
_REMEASURE_TOLERANCE_IMAGES = 1


def validate_folder(folder: str | os.PathLike, *, measure: bool = True) -> ValidationReport:
    """Check that ``folder`` is a complete, loadable, self-consistent model folder whose figures hold.

    The weights must match their sha256 and the config its fingerprint (a strict load); the card must quote the
    sha256 and the config's top-1/top-5; an evaluation report saved next to the weights (``eval_test.json``,
    ``eval_builtin_subset.json``, as ``tools/publish_weights.py`` writes) must agree with the config's figures; and
    with ``measure``, a ``top1_builtin_subset`` figure is measured again on the built-in CIFAR-10 subset. The
    report says which figures were re-measured and which are only as recorded.

    Raises:
        HubLoadError, ChecksumError, StateDictMismatchError: Naming what is wrong.
    """
    from ._factory import create_model
    from .utils.macs import count_params

    folder = Path(folder)
    for name in (WEIGHTS_NAME, CONFIG_NAME, CARD_NAME):
        if not (folder / name).is_file():
            raise HubLoadError(f'{folder} has no {name}: write the folder with model.save_pretrained({str(folder)!r}).')
    config = read_config(folder / CONFIG_NAME)
    recorded = (config.get('pretrained_cfg') or {}).get('sha256')
    if not recorded:
        raise HubLoadError(f'{folder / CONFIG_NAME} records no sha256 of {WEIGHTS_NAME}; save the folder again.')
    try:
        model = create_model(f'local-dir:{folder}')  # strict and sha256-verified
    except ChecksumError as e:
        if 'sha256 mismatch' not in str(e):
            raise  # an edited config: its own message names the key
        raise ChecksumError(
            f'{folder / WEIGHTS_NAME} does not have the sha256 recorded in {folder / CONFIG_NAME}: the weights changed '
            f'after the folder was saved. Save the model again with model.save_pretrained({str(folder)!r}) before '
            f'publishing.') from e
    card = (folder / CARD_NAME).read_text(encoding='utf-8')
    if recorded not in card:
        raise HubLoadError(
            f'{folder / CARD_NAME} does not quote the sha256 of {WEIGHTS_NAME} ({recorded}): the card belongs to '
            f'other weights. Save the folder again so that card and weights agree.')
    metrics = dict(config['pretrained_cfg'].get('metrics') or {})
    _check_card_figures(folder, card, metrics)
    _check_saved_reports(folder, metrics)
    figures = _remeasure(folder, model, metrics) if measure else 'as recorded (measure=False)'
    return ValidationReport(folder, config['architecture'], recorded, count_params(model), figures)


def _check_card_figures(folder: Path, card: str, metrics: dict) -> None:
    for key, label in (('top1', 'top-1'), ('top5', 'top-5')):
        if metrics.get(key) is None:
            continue
        shown = re.search(rf'^\| {label} on .* \(%\) \| ([^|]*?) \|', card, flags=re.MULTILINE)
        wanted = f'{float(metrics[key]):.2f}'
        if shown is None or shown.group(1) != wanted:
            raise HubLoadError(
                f'{folder / CARD_NAME} shows {label} {shown.group(1) if shown else "nowhere"}, but {CONFIG_NAME} '
                f'records metrics.{key} = {metrics[key]}: card and config disagree, so one of them is false. Render '
                f'the card again from the config (save the model again with save_pretrained) after checking the '
                f'figure.')


def _check_saved_reports(folder: Path, metrics: dict) -> None:
    for name, pairs in (('eval_test.json', (('top1', 'top1'), ('top5', 'top5'))),
                        ('eval_builtin_subset.json', (('top1', 'top1_builtin_subset'),))):
        path = folder / name
        if not path.is_file():
            continue
        try:
            report = json.loads(path.read_text())
        except ValueError as e:
            raise HubLoadError(f'{path} is not valid JSON ({e}); restore it or remove it.') from e
        for measured, key in pairs:
            if key in metrics and report.get(measured) != metrics[key]:
                raise HubLoadError(
                    f'{CONFIG_NAME} of {folder} records metrics.{key} = {metrics[key]}, but the evaluation saved '
                    f'next to it ({name}) measured {report.get(measured)}: the config\'s figure is not the measured '
                    f'one. Publish the folder again with tools/publish_weights.py, which measures and records both.')


def _remeasure(folder: Path, model, metrics: dict) -> str:
    recorded = metrics.get('top1_builtin_subset')
    checked = [k for k in ('top1', 'top5') if k in metrics]
    if recorded is None or getattr(model, 'num_classes', None) != 10:
        return (f'{", ".join(checked)} as recorded (not re-measured: no built-in-subset figure)' if checked
                else 'none recorded')
    from .evaluation import evaluate_model

    report, _, _, _ = evaluate_model(model.eval(), DEFAULT_DATA_SOURCE)
    samples = report['num_samples']
    if abs(report['top1'] - recorded) * samples / 100 > _REMEASURE_TOLERANCE_IMAGES + 1e-6:
        raise HubLoadError(
            f'{CONFIG_NAME} of {folder} records metrics.top1_builtin_subset = {recorded}, but these weights measure '
            f'{report["top1"]} on the built-in CIFAR-10 subset ({samples} images) now: the recorded figures do not '
            f'belong to these weights. Measure and record them again (tools/publish_weights.py).')
    rest = f'; {", ".join(checked)} as recorded (the test split is not re-measured here)' if checked else ''
    return f'top-1 on the built-in subset re-measured: {report["top1"]:.2f} % (recorded {recorded}){rest}'


def push_folder(
        folder: str | os.PathLike,
        repo_id: str,
        *,
        revision: str | None = None,
        private: bool = False,
        create_pr: bool = False,
        commit_message: str = 'Upload GaterNet weights (gaternet_zoo)',
        token: str | bool | None = None,
        tag: str | None = None,
) -> str:
    """Create ``repo_id`` if needed and upload ``folder`` in one commit; returns the commit URL.

    The token comes from the usual huggingface_hub places (``HF_TOKEN``, ``hf auth login``) unless given. ``tag``
    creates a git tag on that commit: the registry pins weight tags to such a revision (and to the sha256).
    """
    from huggingface_hub import HfApi

    api = HfApi(token=token)
    stage = 'nothing was uploaded'
    try:
        api.create_repo(repo_id, private=private, exist_ok=True, repo_type='model')
        info = api.upload_folder(
            folder_path=str(folder), repo_id=repo_id, revision=revision, create_pr=create_pr,
            commit_message=commit_message, allow_patterns=[WEIGHTS_NAME, CONFIG_NAME, CARD_NAME, '*.yaml', '*.json',
                                                           '*.jsonl', '*.png', '*.csv'])
        if tag and not create_pr:
            stage = f'the files were uploaded ({getattr(info, "commit_url", info)}) but the tag {tag!r} was not created'
            api.create_tag(repo_id, tag=tag, revision=info.oid, repo_type='model')
    except Exception as e:
        if not _is_network_error(e):
            raise
        from huggingface_hub import constants

        raise HubLoadError(
            f'Could not push {folder} to {repo_id!r} at {constants.ENDPOINT} ({type(e).__name__}: {e}); {stage}. '
            f'Check the network connection, HF_ENDPOINT and your token (`hf auth login` or HF_TOKEN), then run the '
            f'push again.') from e
    return str(getattr(info, 'pr_url', None) or getattr(info, 'commit_url', info))


def _is_network_error(error: BaseException) -> bool:
    """A connection, timeout or HTTP error of the Hub client (whichever HTTP library it runs on)."""
    from huggingface_hub.errors import HfHubHTTPError

    if isinstance(error, (HfHubHTTPError, ConnectionError, TimeoutError)):
        return True
    return any(cls.__module__.split('.')[0] in ('httpx', 'httpx2', 'httpcore', 'httpcore2', 'requests', 'urllib3')
               for cls in type(error).__mro__)
