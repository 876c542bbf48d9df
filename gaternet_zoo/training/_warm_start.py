"""Warm starts: begin a run from the weights of a trained model instead of a fresh initialisation.

The GaterNet use is the warm-start GaterNet: its backbone takes the weights of a finished plain model of the same
architecture (the gate slots add no parameters, so the keys are the plain model's), and with open gates
(``gate_init_bias``) the GaterNet starts as that plain model. Its gater's feature extractor may start from another
trained plain model (a CIFAR ResNet-20 for the zoo's CIFAR gaters). The control of such an experiment is the plain
model fine-tuned from the same weights with the same schedule, which ``init_from`` also gives.

Sources are anything :func:`~gaternet_zoo.create_model` loads with ``pretrained=True`` (``cifar_resnet20``,
``cifar_resnet20.cifar10``, ``hf-hub:org/repo@rev``, ``local-dir:path``), a folder saved with ``save_pretrained``,
or a run folder whose ``final/`` holds one. Published tags are sha256-checked by the usual loading path.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .._factory import create_model
from ..hub import CONFIG_NAME, WEIGHTS_NAME, classifier_keys, sha256_file, state_dict_mismatches
from ._run_dir import RecipeError, RunRecord

__all__ = ['INIT_PARTS', 'WarmStart', 'resolve_init_source', 'warm_start']

#: What a warm start fills: the whole model (or a GaterNet's backbone), or a GaterNet's gater feature extractor.
INIT_PARTS = ('model', 'gater')


@dataclass(frozen=True)
class WarmStart:
    """What one warm start did, for the log and the run's runtime record.

    Attributes:
        source: The source as given (``init_from`` / ``init_gater_from``).
        resolved: The name it was loaded by (``local-dir:...`` for folders).
        target: The module that received the weights: ``model``, ``backbone`` or ``gater.encoder``.
        sha256: sha256 of the source's weight file, where it is known.
        kept_fresh: Keys left at their fresh initialisation (a classifier of another shape).
    """

    source: str
    resolved: str
    target: str
    sha256: str | None
    kept_fresh: tuple[str, ...] = ()

    def describe(self) -> str:
        """One log line."""
        sha = f' (sha256 {self.sha256[:12]}...)' if self.sha256 else ''
        fresh = f'; left fresh: {", ".join(self.kept_fresh)}' if self.kept_fresh else ''
        return f'{self.target} initialised from {self.resolved}{sha}{fresh}'

    def record(self) -> dict[str, Any]:
        """The JSON-able record kept in the run's ``config.yaml`` (``runtime.warm_starts``)."""
        return {**asdict(self), 'kept_fresh': list(self.kept_fresh), 'description': self.describe()}


def resolve_init_source(source: str) -> str:
    """Map an ``init_from`` value to a name :func:`~gaternet_zoo.create_model` loads with ``pretrained=True``.

    An existing folder becomes ``local-dir:``: a folder holding ``config.json`` itself, or a run folder whose
    ``final/`` holds one. Anything else (registry names, tags, ``hf-hub:``/``local-dir:`` names) passes unchanged.

    Raises:
        RecipeError: For a folder that holds neither a saved model nor a run's ``final/``.
    """
    folder = Path(source).expanduser()
    if not folder.is_dir():
        return source
    for candidate in (folder, RunRecord(folder).final_dir):
        if (candidate / CONFIG_NAME).is_file():
            return f'local-dir:{candidate}'
    raise RecipeError(
        f'{source} is a folder but holds no saved model ({CONFIG_NAME} + {WEIGHTS_NAME}) and no run\'s final/ '
        'with one: pass the final/ folder of a finished run, a folder written by save_pretrained, or a zoo tag '
        'such as cifar_resnet20.cifar10.')


def _load_source(source: str) -> tuple[nn.Module, str, str | None]:
    resolved = resolve_init_source(source)
    try:
        model = create_model(resolved, pretrained=not resolved.startswith(('local-dir:', 'hf-hub:')))
    except (KeyError, ValueError, OSError, RuntimeError) as err:
        message = err.args[0] if isinstance(err, KeyError) and err.args else err
        raise RecipeError(f'cannot warm-start from {source!r}: {message}') from err
    cfg = getattr(model, 'pretrained_cfg', None) or {}
    sha = cfg.get('sha256')
    if resolved.startswith('local-dir:'):
        sha = sha256_file(Path(resolved[len('local-dir:'):]) / WEIGHTS_NAME)
    return model.eval(), resolved, sha


def _is_gaternet(model: nn.Module) -> bool:
    return hasattr(model, 'gater') and hasattr(model, 'backbone')


def _copy_state(target: nn.Module, state: dict[str, torch.Tensor], *, what: str, source: str,
                droppable: tuple[str, ...] = ()) -> tuple[str, ...]:
    """Copy ``state`` into ``target`` strictly; keys in ``droppable`` whose shape differs stay fresh."""
    expected = target.state_dict()
    kept_fresh = tuple(k for k in droppable if k in state and k in expected and state[k].shape != expected[k].shape)
    state = {k: v for k, v in state.items() if k not in kept_fresh}
    parts = state_dict_mismatches(expected, state, ignore=kept_fresh)
    if parts:
        explain = getattr(target, 'state_dict_mismatch_hint', None)  # a GaterNet: e.g. branch gates on one side
        hint = explain(state) if callable(explain) else None
        raise RecipeError(
            f'the weights of {source} do not fit the {what}: ' + '; '.join(parts) + (f' ({hint})' if hint else '')
            + '. A warm start needs a source of the same architecture (e.g. cifar_resnet56 weights for '
            'gaternet_resnet56\'s backbone, cifar_resnet20 weights for its gater); nothing was loaded.')
    with torch.no_grad():
        for key, value in state.items():
            expected[key].copy_(value)
    return kept_fresh


def _check_preprocessing(net: nn.Module, source_model: nn.Module, source: str) -> None:
    """Refuse a source trained on differently normalised inputs: its weights would see other numbers."""
    mine, theirs = getattr(net, 'pretrained_cfg', None) or {}, getattr(source_model, 'pretrained_cfg', None) or {}
    for key in ('mean', 'std'):
        if key in mine and key in theirs and tuple(mine[key]) != tuple(theirs[key]):
            raise RecipeError(
                f'{source} was trained with input {key} {tuple(theirs[key])}, but this model normalises with '
                f'{tuple(mine[key])}: warm-start from weights trained with the same preprocessing.')


def warm_start(net: nn.Module, source: str, *, part: str = 'model') -> WarmStart:
    """Load a trained model's weights into ``net`` (or into a part of it), strictly.

    ``part="model"``: a plain source fills a plain ``net`` whole, or a GaterNet's backbone; a GaterNet source fills a
    GaterNet whole. ``part="gater"``: a plain source fills a GaterNet's gater feature extractor (its classifier is
    not part of the extractor). A classifier of another size (another class count) is left freshly initialised;
    every other key must match exactly.

    Args:
        net: The freshly built model of the run.
        source: See :func:`resolve_init_source`.
        part: One of :data:`INIT_PARTS`.

    Returns:
        What was loaded where.

    Raises:
        RecipeError: Unknown or unreadable source, a source of another architecture or preprocessing, or a
            combination that has no meaning (a GaterNet into a plain model, anything but a plain model into a gater).
    """
    if part not in INIT_PARTS:
        raise ValueError(f'part must be one of {INIT_PARTS}, got {part!r}')
    if part == 'gater' and not _is_gaternet(net):
        raise RecipeError('init_gater_from applies to GaterNets only; this model has no gater. Use init_from.')
    source_model, resolved, sha = _load_source(source)
    _check_preprocessing(net, source_model, source)
    state = source_model.state_dict()
    classifier = classifier_keys(source_model)
    if part == 'gater':
        if _is_gaternet(source_model):
            raise RecipeError(f'init_gater_from needs a plain model (e.g. cifar_resnet20.cifar10); {source} is a '
                              'GaterNet. To start a whole GaterNet from another one, use init_from.')
        state = {k: v for k, v in state.items() if k not in classifier}  # the encoder is built with num_classes=0
        _copy_state(net.gater.encoder, state, what='gater feature extractor', source=source)
        return WarmStart(source, resolved, 'gater.encoder', sha)
    placements = [getattr(m, 'gate_placement', 'last') for m in (source_model, net)]
    if _is_gaternet(source_model) and _is_gaternet(net) and placements[0] != placements[1]:
        # The widths may agree (a ResNet-20's 336 gates either way), but the gater's outputs would mean other gates.
        raise RecipeError(f'{source} is a GaterNet with gate_placement={placements[0]!r} and this model has '
                          f'gate_placement={placements[1]!r}: its gater\'s outputs would gate other filters. '
                          'Warm-start from a GaterNet with the same gate_placement, or from a plain backbone.')
    if _is_gaternet(source_model) and not _is_gaternet(net):
        raise RecipeError(f'{source} is a GaterNet and this model is a plain backbone: a GaterNet\'s weights do not '
                          'make a plain model. Warm-start a plain model from a plain one.')
    target, what = (net.backbone, 'backbone') if _is_gaternet(net) and not _is_gaternet(source_model) else (
        net, 'model')
    kept = _copy_state(target, state, what=what, source=source, droppable=classifier)
    return WarmStart(source, resolved, what, sha, kept)
