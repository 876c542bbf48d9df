"""``ZooHubMixin``: the zoo's models as huggingface_hub ``ModelHubMixin`` models.

The mixin's own machinery carries the model's configuration both ways. ``ModelHubMixin.__new__`` records the
``__init__`` arguments of every instance (``_hub_mixin_config``); :meth:`ZooHubMixin._save_pretrained` writes them
as the ``model_args`` of the timm-schema ``config.json`` (a pruned GaterNet's ``pruned_filters`` among them, which
``GaterNet.prune_filters`` records there). :meth:`ZooHubMixin.from_pretrained` reads that ``config.json`` and hands
it to :meth:`ZooHubMixin._from_pretrained` as ``config``, as the mixin does, and ``_from_pretrained`` builds the model
with :func:`~gaternet_zoo._builder.build_from_files`, so the arguments reach ``__init__`` (and are recorded again).
The files themselves are fetched, verified and written by :mod:`gaternet_zoo.hub`.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from huggingface_hub import ModelCard, ModelHubMixin
from torch import nn

from ._builder import build_from_files
from ._model_card import render_model_card
from .hub import CARD_NAME, CONFIG_NAME, HubLoadError, read_config, save_pretrained, source_files

__all__ = ['ZooHubMixin']


def _source_of(model_id: str) -> str:
    """``"local-dir"`` for an existing folder, else ``"hf-hub"`` (a repository id)."""
    return 'local-dir' if os.path.isdir(os.path.expanduser(model_id)) else 'hf-hub'


class ZooHubMixin(
    ModelHubMixin,
    library_name='gaternet_zoo',
    license='apache-2.0',
    pipeline_tag='image-classification',
    tags=['gaternet', 'dynamic-network', 'image-classification', 'timm'],
    repo_url='https://github.com/gaternet-zoo/gaternet_zoo',
    paper_url='https://arxiv.org/abs/1811.11205',
):
    """Hub integration of the zoo's models: ``save_pretrained``, ``from_pretrained`` and ``push_to_hub``.

    The saved ``config.json`` follows timm's schema (``architecture``, ``num_classes``, ``num_features``,
    ``model_args``, ``pretrained_cfg``), so the folder also loads with ``create_model("local-dir:...")`` and
    ``timm.create_model("hf-hub:...")``. ``from_pretrained`` is strict, verifies the sha256 and leaves the
    train/eval mode as built (train) for the caller to choose.
    """

    def _save_pretrained(self, save_directory: Path) -> None:
        # config.json is written here, in timm's schema, with the mixin's record of the __init__ arguments as its
        # model_args; ModelHubMixin.save_pretrained then leaves it as it is.
        save_pretrained(self, save_directory, model_args=self._hub_mixin_config)
        # The card quotes the weights' sha256: record it, and drop a card left from earlier weights (the mixin
        # only writes README.md when there is none).
        config = json.loads((save_directory / CONFIG_NAME).read_text())
        self.pretrained_cfg['sha256'] = config['pretrained_cfg']['sha256']
        for key in ('tag', 'dataset'):  # dropped on save if they named other weights; the card follows config.json
            if key not in config['pretrained_cfg']:
                self.pretrained_cfg[key] = None
        (save_directory / CARD_NAME).unlink(missing_ok=True)

    def generate_model_card(self, *args: Any, **kwargs: Any) -> ModelCard:  # noqa: D102
        return render_model_card(self, **kwargs)

    @classmethod
    def from_pretrained(
            cls,
            pretrained_model_name_or_path: str | os.PathLike,
            *,
            force_download: bool = False,
            token: str | bool | None = None,
            cache_dir: str | os.PathLike | None = None,
            local_files_only: bool = False,
            revision: str | None = None,
            **model_kwargs: Any,
    ) -> nn.Module:
        """Load a model from a Hub repository id (``org/name``) or a local folder saved by ``save_pretrained``.

        Args:
            pretrained_model_name_or_path: Repository id or folder.
            force_download: Download again even if cached.
            token: Hub token for private repositories.
            cache_dir: Hub cache folder.
            local_files_only: Use the cache only (as ``HF_HUB_OFFLINE=1``).
            revision: Branch, tag or commit sha to pin.
            **model_kwargs: Overrides of the saved model arguments, e.g. ``num_classes=5`` for fine-tuning.
        """
        # ModelHubMixin.from_pretrained's part (read config.json, pass it to _from_pretrained), done with the zoo's
        # checks: the mixin's would turn a mistyped path into a repository id, report a missing or unreachable
        # repository with a bare huggingface_hub error, and wait out its retries twice when the Hub is unreachable.
        model_id = str(pretrained_model_name_or_path)
        looks_like_path = os.path.isabs(model_id) or model_id.startswith(('.', '~')) or os.sep + os.sep in model_id
        if looks_like_path and not os.path.isdir(os.path.expanduser(model_id)):
            raise HubLoadError(f'{model_id}: no such folder (and a path is not a Hub repository id).')
        hub = dict(revision=revision, cache_dir=cache_dir, force_download=force_download,
                   local_files_only=local_files_only, token=token)
        config = read_config(source_files(_source_of(model_id), model_id, **hub).config_path())
        return cls._from_pretrained(model_id=model_id, config=config, **hub, **model_kwargs)

    @classmethod
    def _from_pretrained(cls, *, model_id: str, revision: str | None, cache_dir: str | os.PathLike | None,
                         force_download: bool, local_files_only: bool, token: str | bool | None,
                         config: dict[str, Any] | None = None, **model_kwargs: Any) -> nn.Module:
        """Build the model ``config`` (its ``config.json``, read when not given) describes and load its weights.

        Raises:
            TypeError: The folder or repository holds another kind of model than ``cls``.
        """
        files = source_files(_source_of(model_id), model_id, revision=revision, cache_dir=cache_dir,
                             local_files_only=local_files_only, force_download=force_download, token=token)
        model = build_from_files(files, config, overrides=model_kwargs)
        if not isinstance(model, cls):
            raise TypeError(
                f'{model_id} holds a {type(model).__name__} ({model.pretrained_cfg.get("architecture")}), not a '
                f'{cls.__name__}; load it with gaternet_zoo.create_model instead.')
        return model
