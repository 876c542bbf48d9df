"""Publishing a saved model folder: validate it locally, then upload it to the Hub in one commit.

Validation loads the folder exactly as a user would (strict, sha256-verified), and checks that the model card
exists and quotes the same sha256 as ``config.json`` and the file itself. The upload is one thin ``HfApi`` call.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from ._hub import CARD_NAME, CONFIG_NAME, WEIGHTS_NAME, ChecksumError, HubLoadError, read_config

__all__ = ['validate_folder', 'push_folder', 'ValidationReport']


@dataclass
class ValidationReport:
    folder: Path
    architecture: str
    sha256: str
    params: int

    def __str__(self) -> str:
        return (f'{self.folder}: {self.architecture}, {self.params:,} parameters, model.safetensors sha256 '
                f'{self.sha256} (verified; loads strictly; card present)')


def validate_folder(folder: str | os.PathLike) -> ValidationReport:
    """Check that ``folder`` is a complete, loadable, self-consistent model folder.

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
        raise ChecksumError(
            f'{folder / WEIGHTS_NAME} does not have the sha256 recorded in {folder / CONFIG_NAME}: the weights changed '
            f'after the folder was saved. Save the model again with model.save_pretrained({str(folder)!r}) before '
            f'publishing.') from e
    card = (folder / CARD_NAME).read_text(encoding='utf-8')
    if recorded not in card:
        raise HubLoadError(
            f'{folder / CARD_NAME} does not quote the sha256 of {WEIGHTS_NAME} ({recorded}): the card belongs to '
            f'other weights. Save the folder again so that card and weights agree.')
    return ValidationReport(folder, config['architecture'], recorded, count_params(model))


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
