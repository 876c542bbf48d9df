"""Gate binarisation and the slots that apply gates inside a backbone.

GaterNet (Chen et al., CVPR 2019) binarises the gater's logits with *Improved SemHash* (Kaiser & Bengio, 2018).
The float operations below follow the released GaterNet code in the same order (sigmoid, ``1.2 * g - 0.1``,
clamp, ``> 0.49999``), so that evaluation gates are bit-identical to the official implementation.

Gates reach the backbone through :class:`GateSlot` modules that a gating plugin places at each gate site. All
slots of one model share a :class:`GateContext`, which holds the gates of each forward call in progress for that
call only (per thread, nested calls stacked). A slot with no gates in its context is the identity, so the gated
backbone still runs as the plain backbone when called on its own.
"""
from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator

import torch
import torch.fx
from timm.layers import register_notrace_module
from torch import nn

__all__ = ['GateContext', 'GateSlot', 'ImprovedSemHash', 'autocast_enabled', 'step_ste', 'DEFAULT_THRESHOLD']

#: The step threshold of the released GaterNet code (not 0.5: ``clamp`` maps a logit of 0 to exactly 0.5).
DEFAULT_THRESHOLD = 0.49999

#: Key of a forward call's memo (:meth:`GateContext.memo`) under which skip execution leaves the offsets of the gate
#: sites whose gates are all exactly 1 for every sample of the call (``gaternet_zoo.layers.skip.SkipPlan``).
UNIT_GATE_SITES = 'unit_gate_sites'


class _StepSTE(torch.autograd.Function):
    """Hard step in the forward pass, identity gradient in the backward pass (straight-through estimator)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, threshold: float) -> torch.Tensor:  # noqa: D102
        return (x > threshold).to(x.dtype)

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor) -> tuple[torch.Tensor, None]:  # noqa: D102
        return grad_output, None


def step_ste(x: torch.Tensor, threshold: float = DEFAULT_THRESHOLD) -> torch.Tensor:
    """Binarise ``x`` at ``threshold`` with a straight-through gradient.

    Args:
        x: Values in [0, 1].
        threshold: Values strictly above it become 1, the rest 0.

    Returns:
        A tensor of 0s and 1s of the dtype of ``x`` whose gradient is passed to ``x`` unchanged.
    """
    return _StepSTE.apply(x, threshold)


def autocast_enabled(x: torch.Tensor) -> bool:
    """Whether autocast is on for the device of ``x`` (``False`` while ``torch.fx`` traces ``x`` as a Proxy)."""
    if isinstance(x, torch.fx.Proxy) or x.device.type == 'meta':
        return False
    return torch.is_autocast_enabled(x.device.type)


@register_notrace_module  # one node in torch.fx graphs (timm's tracers): its training branch draws random numbers
class ImprovedSemHash(nn.Module):
    """Improved SemHash binarisation of gate logits.

    Training: add ``N(0, noise_std^2)`` noise, ``g_a = clamp(1.2 * sigmoid(.) - 0.1, 0, 1)``, ``g_b = step(g_a)``
    with a straight-through gradient, and for each sample independently use ``g_b`` with probability
    ``discrete_prob``, else ``g_a``. Evaluation: no noise, always ``g_b`` (binary and deterministic). Always
    computed in float32 with autocast off, whatever the logits' dtype: the gates are float32.

    Args:
        noise_std: Standard deviation of the training noise (1.0 in the paper and the official code).
        discrete_prob: Per-sample probability of the discrete gate in training (0.5 in the official code).
        threshold: Step threshold.
    """

    def __init__(
            self,
            noise_std: float = 1.0,
            discrete_prob: float = 0.5,
            threshold: float = DEFAULT_THRESHOLD,
    ) -> None:
        super().__init__()
        if not 0.0 <= discrete_prob <= 1.0:
            raise ValueError(f'discrete_prob must be in [0, 1], got {discrete_prob}.')
        if noise_std < 0:
            raise ValueError(f'noise_std must be >= 0, got {noise_std}.')
        self.noise_std = noise_std
        self.discrete_prob = discrete_prob
        self.threshold = threshold

    def forward(self, logits: torch.Tensor) -> torch.Tensor:
        """Turn gate logits (B x C) into float32 gates (B x C), whatever the logits' dtype or autocast state."""
        # A gate is a hard decision: in bf16/fp16, 0.49999 rounds to 0.5 and logits just above 0 close gates that
        # float32 opens, so the same weights would give other gates (and other figures) under mixed precision.
        logits = logits.float()
        if autocast_enabled(logits):
            with torch.autocast(logits.device.type, enabled=False):
                return self._binarize(logits)
        return self._binarize(logits)

    def _binarize(self, logits: torch.Tensor) -> torch.Tensor:
        if self.training and self.noise_std > 0:
            logits = logits + torch.randn_like(logits) * self.noise_std
        # Same op order as the official code: sigmoid, then 1.2 * g - 0.1, then clamp.
        continuous = torch.clamp(1.2 * torch.sigmoid(logits) - 0.1, min=0.0, max=1.0)
        discrete = step_ste(continuous, self.threshold)
        if not self.training:
            return discrete
        use_discrete = torch.rand_like(logits[:, :1]) < self.discrete_prob  # one draw per sample
        return torch.where(use_discrete, discrete, continuous)

    def extra_repr(self) -> str:
        return f'noise_std={self.noise_std}, discrete_prob={self.discrete_prob}, threshold={self.threshold}'


class GateContext:
    """The gates of the forward calls in progress, shared by every :class:`GateSlot` of one model.

    Gates live here only for the duration of one forward call, on a stack per thread: concurrent calls from
    several threads each see their own gates (``nn.DataParallel`` runs its replicas, which share this object, in
    one thread each), a call nested in another one (a forward hook that calls the model again) pushes its gates on
    top and the outer call gets its own back when it returns, and :meth:`bind` pops them again even when the
    forward pass raises.

    While ``torch.compile`` or ``torch.export`` trace the model, a plain stack on this object is used instead: the
    thread-local storage is not traceable, and the compiled graph carries the gates as ordinary tensors, so no
    state is shared at run time. Code that runs eagerly in the middle of a compiled call (after a graph break)
    reads that stack when its thread has none of its own.

    It is a plain object rather than a module so that it adds nothing to ``state_dict`` and is not visited by
    ``model.apply``; ``copy.deepcopy`` of the model (EMA, for instance) and pickling give it a fresh, empty one.
    """

    def __init__(self) -> None:
        self._local = threading.local()
        self._traced: list[torch.Tensor] = []

    def __deepcopy__(self, memo: dict) -> GateContext:
        return GateContext()  # never share a forward call's gates with a copy (threading.local cannot be copied)

    def __getstate__(self) -> dict:
        return {}

    def __setstate__(self, state: dict) -> None:
        self.__init__()

    def _stack(self) -> list[torch.Tensor]:
        if torch.compiler.is_compiling():
            return self._traced
        stack = getattr(self._local, 'stack', None)
        if stack is None:
            stack = self._local.stack = []
        return stack

    @property
    def gates(self) -> torch.Tensor | None:
        """The gates of the innermost forward call of this thread in progress, ``None`` outside one."""
        stack = self._stack()
        if stack:
            return stack[-1]
        if self._traced:  # eager code inside a compiled call (graph break): the compiled part pushed them there
            return self._traced[-1]
        return None

    def _memos(self) -> list[dict] | None:
        if torch.compiler.is_compiling():
            return None
        memos = getattr(self._local, 'memos', None)
        if memos is None:
            memos = self._local.memos = []
        return memos

    def memo(self) -> dict | None:
        """A dict that lives as long as this thread's innermost forward call (``None`` outside one, or traced).

        Skip execution keeps there what it derives from the gates once per call (every site's open filters, and
        which sites' gates are all 1: :data:`UNIT_GATE_SITES`), so that no block or conv derives it again.
        """
        memos = self._memos()
        return memos[-1] if memos else None

    def push(self, gates: torch.Tensor) -> int:
        """Make ``gates`` current; returns the depth to give :meth:`pop`."""
        stack = self._stack()
        depth = len(stack)
        stack.append(gates)
        memos = self._memos()
        if memos is not None:
            del memos[depth:]
            memos.append({})
        return depth

    def pop(self, depth: int) -> None:
        """Restore the gates that were current before the :meth:`push` that returned ``depth``."""
        stack = self._stack()
        while len(stack) > depth:
            stack.pop()
        memos = self._memos()
        if memos is not None:
            del memos[depth:]

    @contextlib.contextmanager
    def bind(self, gates: torch.Tensor) -> Iterator[None]:
        """``with context.bind(gates): backbone(x)`` runs the backbone with ``gates``, in this thread only."""
        depth = self.push(gates)
        try:
            yield
        finally:
            self.pop(depth)


class GateSlot(nn.Module):
    """Multiplies a feature map by its slice of the current gate vector (and by its branch gate, if it has one).

    Args:
        context: The context shared with the other slots of the model.
        offset: Index of this site's first gate in the flat gate vector.
        num_channels: Number of gated channels (filters) at this site.
        name: Name of the block the slot sits in, for error messages and statistics.
        after: An optional parameter-free module run after the gate (timm's ``drop_path`` slot holds it).
        branch_offset: Index of the site's branch gate in the flat gate vector, or ``None`` (no branch gate). The
            site's filter gates are multiplied by it, so a closed branch gate zeroes the whole branch and the
            block gives its shortcut.
        filter_gates: Whether the site has filter gates in the gate vector (at ``offset``). ``False`` (a GaterNet
            built with ``filter_gates=False``): the branch gate alone multiplies every filter of the site, and
            ``offset`` only tells the site apart.
    """

    def __init__(
            self,
            context: GateContext,
            offset: int,
            num_channels: int,
            name: str = '',
            after: nn.Module | None = None,
            branch_offset: int | None = None,
            filter_gates: bool = True,
    ) -> None:
        super().__init__()
        if not filter_gates and branch_offset is None:
            raise ValueError(f'gate slot {name!r} has neither filter gates nor a branch gate: it would gate nothing.')
        self.context = context
        self.offset = offset
        self.num_channels = num_channels
        self.name = name
        self.after = after
        self.branch_offset = branch_offset
        self.filter_gates = filter_gates
        # Kept filters of a pruned site (sorted indices into num_channels), None when nothing is pruned. Not
        # persistent: a pruned model's config records them, and its conv and norm shapes follow from them.
        self.register_buffer('kept', None, persistent=False)

    def set_kept_channels(self, kept: torch.Tensor | None) -> None:
        """Make this a pruned site: the feature map holds only the ``kept`` filters, put back at their indices."""
        self.kept = None if kept is None else torch.as_tensor(kept, dtype=torch.long)

    def site_gates(self, gates: torch.Tensor) -> torch.Tensor:
        """The gates that act on this site's filters (B x num_channels): its filter gates times its branch gate.

        Without filter gates, its branch gate for every filter (a view, expanded over the channels).
        """
        if not self.filter_gates:
            return gates[:, self.branch_offset:self.branch_offset + 1].expand(-1, self.num_channels)
        gate = gates[:, self.offset:self.offset + self.num_channels]
        if self.branch_offset is not None:
            gate = gate * gates[:, self.branch_offset:self.branch_offset + 1]
        return gate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gates = self.context.gates
        width = self.num_channels if self.kept is None else len(self.kept)
        # (torch.fx traces shapes as Proxies, which cannot be compared; the traced model checked it at build.)
        if gates is not None and not isinstance(x, torch.fx.Proxy) and x.shape[1] != width:
            raise RuntimeError(
                f'Gate site {self.name!r} expects {width} channels but the feature map has '
                f'{x.shape[1]}: the backbone was changed after the gates were installed.')
        if gates is not None and not self._multiply_is_identity(gates):
            if not self.filter_gates:  # one gate for the whole map: broadcast it rather than expand it per channel
                gate = gates[:, self.branch_offset:self.branch_offset + 1]
            else:
                gate = self.site_gates(gates)
                if self.kept is not None:
                    gate = gate.index_select(1, self.kept)
            x = x * gate[:, :, None, None].to(x.dtype)
        if self.kept is not None:  # the pruned filters' outputs are 0 (their gates never open): scatter back
            full = x.new_zeros(x.shape[0], self.num_channels, *x.shape[2:])
            x = full.index_copy(1, self.kept, x)
        if self.after is not None:
            x = self.after(x)
        return x

    def _multiply_is_identity(self, gates: torch.Tensor) -> bool:
        """Whether multiplying by this site's gates can be left out in this call, the result being the same.

        Only where skip execution found them all exactly 1 for the whole batch (``x * 1.0`` is ``x``, bit for bit)
        and autograd does not record the gates, whose gradient needs the multiply. Mask mode never records that, so
        it always multiplies; traced and compiled calls have no memo, and multiply too.
        """
        memo = self.context.memo()
        if not memo:
            return False
        unit = memo.get(UNIT_GATE_SITES)
        return (unit is not None and self.offset in unit
                and not (torch.is_grad_enabled() and gates.requires_grad))

    def extra_repr(self) -> str:
        pruned = '' if self.kept is None else f', kept={len(self.kept)}'
        branch = '' if self.branch_offset is None else f', branch_offset={self.branch_offset}'
        filters = '' if self.filter_gates else ', filter_gates=False'
        return f'name={self.name!r}, offset={self.offset}, num_channels={self.num_channels}{branch}{filters}{pruned}'
