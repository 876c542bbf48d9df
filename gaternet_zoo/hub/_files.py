"""Files of the Hub format: downloads, the local Hub cache, sha256, the shipped copies, an unreachable Hub.

Downloads go through ``hf_hub_download`` (its cache, ``HF_HUB_OFFLINE``, ``local_files_only``, revisions), with
errors that say what went wrong and how to go on. A registry tag's weights are looked for in order: the Hub at the
pinned revision, the local Hub cache, then the copy shipped with the package (``gaternet_zoo/weights/`` in a wheel,
``weights/`` in a source checkout or a ``torch.hub`` checkout). A quick probe keeps an unreachable Hub from costing
more than a few seconds.
"""
from __future__ import annotations

import hashlib
import logging
import os
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import timm
from huggingface_hub import constants, hf_hub_download, try_to_load_from_cache
from huggingface_hub.errors import (
    EntryNotFoundError,
    HfHubHTTPError,
    HFValidationError,
    LocalEntryNotFoundError,
    OfflineModeIsEnabled,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)

from .._io import display_path
from ..version import __version__
from ._constants import CONFIG_NAME, HUB_PROBE_TIMEOUT, MODEL_SOURCES, SHIP_LIMIT_BYTES, WEIGHTS_NAME
from ._errors import ChecksumError, HubLoadError

__all__ = [
    'sha256_file', 'check_sha256', 'download', 'hub_unreachable', 'shipped_weights_dirs', 'find_shipped_weights',
    'resolve_hub_weights', 'timm_pretrained_args', 'SourceFiles', 'source_files',
]

_logger = logging.getLogger(__name__)

# An endpoint found unreachable is not probed again for this long (seconds), so a loop of loads pays once.
_PROBE_MEMORY = 60.0
_unreachable_since: dict[str, tuple[float, str]] = {}
# gaternet_zoo/, which holds the wheel's weights/ folder and sits next to a checkout's weights/ folder.
_PACKAGE_DIR = Path(__file__).resolve().parent.parent


def sha256_file(path: str | os.PathLike, chunk_size: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, 'rb') as f:
        for chunk in iter(lambda: f.read(chunk_size), b''):
            digest.update(chunk)
    return digest.hexdigest()


def check_sha256(path: Path, expected: str, actual: str, label: str) -> None:
    """Refuse a weights file whose sha256 ``actual`` is not ``expected``.

    Raises:
        ChecksumError: Naming both digests and how to get the file again.
    """
    expected = expected.lower()  # hex digests are case-insensitive; ours are written in lower case
    if actual != expected:
        raise ChecksumError(
            f'sha256 mismatch for the weights of {label} ({path}): expected {expected}, got {actual}. The file is '
            f'corrupt or was changed after publishing; download it again with force_download=True, and if it '
            f'persists do not use it.')


def download(
        repo_id: str,
        filename: str,
        revision: str | None = None,
        *,
        cache_dir: str | os.PathLike | None = None,
        local_files_only: bool = False,
        force_download: bool = False,
        token: str | bool | None = None,
) -> Path:
    """``hf_hub_download`` with errors that say what went wrong and how to go on.

    Raises:
        HubLoadError: Repository, revision or file not found, or the Hub unreachable with nothing cached.
    """
    where = f'{repo_id}@{revision}' if revision else repo_id
    try:
        return Path(hf_hub_download(
            repo_id, filename, revision=revision, cache_dir=cache_dir, local_files_only=local_files_only,
            force_download=force_download, token=token, library_name='gaternet_zoo', library_version=__version__))
    except RevisionNotFoundError as e:
        raise HubLoadError(
            f'Revision {revision!r} not found in Hub repository {repo_id!r}. Check the branch, tag or commit sha '
            f'(list them with huggingface_hub.list_repo_refs({repo_id!r})).') from e
    except RepositoryNotFoundError as e:
        # Some Hub-compatible servers report a missing revision or file as a missing repository.
        raise HubLoadError(
            f'Could not find {filename!r} in Hub repository {where!r} ({constants.ENDPOINT}): the repository, the '
            f'revision or the file does not exist, or it is private and no token was given. Check the name; for a '
            f'private repository log in with `hf auth login` or pass token=...') from e
    except (LocalEntryNotFoundError, OfflineModeIsEnabled) as e:
        if constants.HF_HUB_OFFLINE or local_files_only:
            raise HubLoadError(
                f'{filename!r} of {where!r} is not in the local cache ({cache_dir or constants.HF_HUB_CACHE}) and '
                f'offline mode is on (HF_HUB_OFFLINE=1 or local_files_only=True). Download it once while online, '
                f'or load a saved folder with create_model("local-dir:/path/to/folder").') from e
        raise HubLoadError(
            f'Could not reach the Hugging Face Hub at {constants.ENDPOINT} to download {filename!r} of {where!r}, '
            f'and it is not in the cache. To work offline with weights downloaded before, set HF_HUB_OFFLINE=1 '
            f'(or pass local_files_only=True); to use a mirror set HF_ENDPOINT; or load a saved folder with '
            f'create_model("local-dir:/path/to/folder").') from e
    except EntryNotFoundError as e:
        raise HubLoadError(f'File {filename!r} not found in Hub repository {where!r}.') from e
    except HFValidationError as e:
        raise HubLoadError(
            f'{repo_id!r} is neither an existing folder nor a valid Hub repository id ("org/name"): {e}') from e
    except HfHubHTTPError as e:
        raise HubLoadError(f'The Hub at {constants.ENDPOINT} refused {filename!r} of {where!r}: {e}') from e


@dataclass(frozen=True)
class SourceFiles:
    """The ``config.json`` and ``model.safetensors`` of a ``hf-hub:`` repository or a ``local-dir:`` folder.

    Made by :func:`source_files`; each method fetches one file when asked, so that a caller can check the config
    before the weights are downloaded.

    Attributes:
        source: ``"hf-hub"`` or ``"local-dir"``.
        identifier: ``org/repo[@revision]`` or the folder as given.
        where: The folder or ``repo@revision``, for messages.
    """

    source: str
    identifier: str
    where: str
    folder: Path | None = None
    repo_id: str | None = None
    revision: str | None = None
    hub_kwargs: dict[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        """The model name these files were asked for (``hf-hub:org/repo``, ``local-dir:path``)."""
        return f'{self.source}:{self.identifier}'

    def config_path(self) -> Path:
        """The ``config.json``, downloaded for a repository (a folder's may be missing: ``read_config`` says so).

        Raises:
            HubLoadError: The repository, revision or file cannot be obtained.
        """
        if self.folder is not None:
            return self.folder / CONFIG_NAME
        return download(self.repo_id, CONFIG_NAME, self.revision, **self.hub_kwargs)

    def weights_path(self) -> Path:
        """The ``model.safetensors``, downloaded for a repository.

        Raises:
            HubLoadError: The folder holds none, or the repository's cannot be obtained.
        """
        if self.folder is not None:
            weights = self.folder / WEIGHTS_NAME
            if not weights.is_file():
                raise HubLoadError(
                    f'No {WEIGHTS_NAME} in {self.folder}: save the model with model.save_pretrained(folder).')
            return weights
        return download(self.repo_id, WEIGHTS_NAME, self.revision, **self.hub_kwargs)


def source_files(
        source: str,
        identifier: str,
        *,
        revision: str | None = None,
        cache_dir: str | os.PathLike | None = None,
        local_files_only: bool = False,
        force_download: bool = False,
        token: str | bool | None = None,
) -> SourceFiles:
    """Where the files of ``source:identifier`` are; nothing is downloaded yet.

    Args:
        source: ``"hf-hub"`` or ``"local-dir"``.
        identifier: ``org/repo[@revision]`` or a folder path (``~`` is expanded).
        revision: Branch, tag or commit sha (Hub only; wins over one given in ``identifier``).
        cache_dir: Hub cache folder.
        local_files_only: Use the Hub cache only.
        force_download: Download again even if cached.
        token: Hub token.

    Raises:
        HubLoadError: A ``local-dir`` that is not a folder.
        ValueError: An unknown source.
    """
    if source == 'hf-hub':
        repo_id, _, id_revision = identifier.partition('@')
        revision = revision or id_revision or None
        hub = dict(cache_dir=cache_dir, local_files_only=local_files_only, force_download=force_download,
                   token=token)
        where = f'{repo_id}@{revision}' if revision else repo_id
        return SourceFiles(source, identifier, where, repo_id=repo_id, revision=revision, hub_kwargs=hub)
    if source == 'local-dir':
        folder = Path(identifier).expanduser()
        if not folder.is_dir():
            raise HubLoadError(f'local-dir:{identifier}: no such folder.')
        return SourceFiles(source, identifier, str(folder), folder=folder)
    raise ValueError(f'Unknown model source {source!r}; use one of {MODEL_SOURCES}.')


def shipped_weights_dirs() -> list[Path]:
    """Folders that may hold shipped ``<architecture>.<tag>/`` weight folders, in the order they are searched.

    ``gaternet_zoo/weights/`` is where a wheel carries them (package data). A source checkout, an editable install
    and a ``torch.hub`` checkout keep them in the repository's top-level ``weights/`` folder, next to
    ``hubconf.py``.
    """
    dirs = [_PACKAGE_DIR / 'weights']
    root = _PACKAGE_DIR.parent
    if (root / 'hubconf.py').is_file() and (root / 'pyproject.toml').is_file():
        dirs.append(root / 'weights')
    return [d for d in dirs if d.is_dir()]


def find_shipped_weights(name_tag: str) -> Path | None:
    """The shipped ``model.safetensors`` of ``architecture.tag``, or ``None`` (not verified here)."""
    for folder in shipped_weights_dirs():
        path = folder / name_tag / WEIGHTS_NAME
        if path.is_file():
            return path
    return None


def hub_unreachable(endpoint: str | None = None, timeout: float = HUB_PROBE_TIMEOUT) -> str | None:
    """Why the Hub at ``endpoint`` (default ``HF_ENDPOINT``) cannot serve downloads now, or ``None`` if it answers.

    One ``HEAD`` of the endpoint with a short timeout and no retry (proxy settings from the environment apply):
    huggingface_hub retries a refused or timed-out download for about 25 s before it gives up, which is too long
    to wait when a verified copy is at hand. Any HTTP answer below 500 counts as reachable. An unreachable endpoint
    is remembered for a minute.
    """
    endpoint = (endpoint or constants.ENDPOINT).rstrip('/')
    seen = _unreachable_since.get(endpoint)
    if seen is not None and time.monotonic() - seen[0] < _PROBE_MEMORY:
        return seen[1]
    reason = None
    start = time.monotonic()
    try:
        urllib.request.urlopen(urllib.request.Request(endpoint + '/', method='HEAD'), timeout=timeout).close()
    except urllib.error.HTTPError as e:
        if e.code >= 500:
            reason = f'it answered HTTP {e.code}'
    except (urllib.error.URLError, OSError, ValueError) as e:
        why = getattr(e, 'reason', None) or e
        reason = f'{why} after {time.monotonic() - start:.1f} s'
    if reason is not None:
        _unreachable_since[endpoint] = (time.monotonic(), reason)
    return reason


def resolve_hub_weights(
        name_tag: str,
        repo_id: str,
        revision: str | None,
        *,
        architecture: str | None,
        cache_dir: str | os.PathLike | None,
        local_files_only: bool,
        force_download: bool,
        token: str | bool | None,
) -> tuple[Path, str, str | None]:
    """(``model.safetensors``, where it came from, why the Hub was passed over) of a registry tag.

    The Hub comes first, then the local Hub cache, then the shipped copy. The reason is set only when the shipped
    copy is used although offline mode is off; :func:`~gaternet_zoo.hub.load_pretrained` says it in its one notice.

    Raises:
        HubLoadError: No source has the weights; the message says how to get or train them.
    """
    where = f'{repo_id}@{revision or "main"}'
    hub = dict(cache_dir=cache_dir, token=token)
    offline = local_files_only or constants.HF_HUB_OFFLINE
    if offline:
        hub_failure = 'offline mode is on (HF_HUB_OFFLINE=1 or local_files_only=True)'
    else:
        hub_failure = hub_unreachable()
        if hub_failure is None:
            try:
                path = download(repo_id, WEIGHTS_NAME, revision, force_download=force_download, **hub)
                return path, f'the Hub ({constants.ENDPOINT}, {where})', None
            except HubLoadError as e:
                if force_download:
                    raise
                hub_failure = str(e)
        else:
            if force_download:
                raise HubLoadError(f'force_download=True, but the Hub at {constants.ENDPOINT} is unreachable: '
                                   f'{hub_failure}.')
            hub_failure = f'the Hub at {constants.ENDPOINT} is unreachable: {hub_failure}'
    try:
        path = download(repo_id, WEIGHTS_NAME, revision, local_files_only=True, **hub)
        return path, f'the local Hub cache ({where})', None
    except HubLoadError:
        pass
    shipped = find_shipped_weights(name_tag)
    if shipped is not None:
        source = f'the copy shipped with gaternet_zoo ({display_path(shipped)})'
        # In offline mode the user asked for local weights; otherwise the notice says why the Hub was passed over.
        return shipped, source, None if offline else hub_failure.rstrip('.')
    searched = ', '.join(str(d) for d in shipped_weights_dirs()) or 'no weights folder found'
    raise HubLoadError(
        f'No weights for {name_tag}: {hub_failure.rstrip(".")}; {where} is not in the local Hub cache '
        f'({cache_dir or constants.HF_HUB_CACHE}); and no copy is shipped with gaternet_zoo (searched: {searched}; '
        f'a wheel carries only weights up to {SHIP_LIMIT_BYTES >> 20} MiB, a source checkout\'s weights/ folder '
        f'every published tag). To get them: on a machine that reaches the Hub run `hf download {repo_id} '
        f'--revision {revision or "main"} --local-dir DIR` and load create_model("local-dir:DIR"), or copy its Hub '
        f'cache here; or use a git checkout of gaternet_zoo; or train them with `accelerate launch '
        f'recipes/train.py --model {architecture}` (recipes/configs/ holds the published recipes).')


#: The files timm's loader tries, in this order, in a timm weights repository on the Hub.
_TIMM_WEIGHT_FILES = ('model.safetensors', 'pytorch_model.bin')


def timm_pretrained_args(model_name: str, create_args: dict[str, Any], *,
                         option: str = 'backbone_args') -> dict[str, Any]:
    """``timm.create_model`` arguments that load ``model_name``'s timm weights without a slow failure offline.

    With ``pretrained=True`` and the Hub unreachable, timm's download retries each of its files for about 25 s
    before it gives up with a generic error (46 s in all for a ResNet-18). One quick probe (:func:`hub_unreachable`)
    decides first: if the Hub answers, or ``HF_HUB_OFFLINE=1`` and the weights are cached, nothing changes; if the
    Hub is unreachable but the weights are in the local Hub cache, timm is pointed at the cached file
    (``pretrained_cfg_overlay={'file': ...}``, timm's own override); otherwise an error says how to go on, at once.

    Args:
        model_name: timm model name (``resnet18``, ``resnet18.tv_in1k``).
        create_args: The keyword arguments meant for ``timm.create_model``.
        option: The argument that carried them, named in the error (``backbone_args`` or ``gater_args``).

    Returns:
        ``create_args``, or a copy that names the cached file.

    Raises:
        HubLoadError: The weights are neither reachable nor cached; the message names ``HF_HUB_OFFLINE=1`` and a
            local file as the ways out.
    """
    overlay = dict(create_args.get('pretrained_cfg_overlay') or {})
    if not create_args.get('pretrained') or overlay.get('file') or overlay.get('state_dict') or \
            create_args.get('pretrained_cfg') is not None:
        return create_args  # nothing to download, or the caller chose the source
    cfg = timm.models.get_pretrained_cfg(model_name, allow_unregistered=True)
    if cfg is None or not cfg.hf_hub_id or cfg.file:
        return create_args
    repo_id, _, revision = cfg.hf_hub_id.partition('@')
    cache_dir = create_args.get('cache_dir')
    names = ((cfg.hf_hub_filename,) if cfg.hf_hub_filename else ()) + _TIMM_WEIGHT_FILES
    cached = next((found for name in names if isinstance(found := try_to_load_from_cache(
        repo_id, name, cache_dir=cache_dir, revision=revision or None), str)), None)
    if constants.HF_HUB_OFFLINE:
        if cached is not None:
            return create_args  # timm reads the cache without a request
        why = 'offline mode is on (HF_HUB_OFFLINE=1)'
    else:
        reason = hub_unreachable()
        if reason is None:
            return create_args
        if cached is not None:
            _logger.info('%s: the Hub at %s is unreachable (%s); using the weights in the local Hub cache (%s).',
                         model_name, constants.ENDPOINT, reason, display_path(cached))
            return {**create_args, 'pretrained_cfg_overlay': {**overlay, 'file': cached}}
        why = f'the Hub at {constants.ENDPOINT} is unreachable ({reason})'
    raise HubLoadError(
        f"No pretrained weights for {model_name!r} (timm's {cfg.hf_hub_id}): {why}, and they are not in the local "
        f"Hub cache ({display_path(cache_dir or constants.HF_HUB_CACHE)}). Either fetch them once where the Hub is "
        f"reachable (`hf download {repo_id}`, or copy that Hub cache here) and then set HF_HUB_OFFLINE=1 to load "
        f"them without a network; or pass a local file: {option}=dict(pretrained_cfg_overlay=dict("
        f"file='/path/to/model.safetensors')); or start from scratch (pretrained_backbone=False).")
