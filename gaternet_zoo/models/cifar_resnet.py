"""CIFAR ResNets that timm lacks, registered into timm's own registry.

* ``cifar_resnet20/32/44/56/110``: He et al., "Deep Residual Learning for Image Recognition" (CVPR 2016), CIFAR
  variant: 3x3 stem with 16 filters, three stages of basic blocks with 16/32/64 filters, global average pooling.
  Module names, the 1x1 projection shortcuts (only where the width changes) and the weight initialisation follow
  the released GaterNet code (google-research/google-research ``gaternet/``, Apache-2.0), so that its checkpoints
  map onto these models key for key.
* ``cifar_resnet164``: He et al., "Identity Mappings in Deep Residual Networks" (ECCV 2016): pre-activation
  bottleneck blocks, 16/32/64 bottleneck widths expanded 4x.
* ``cifar_wrn28_10``: Zagoruyko & Komodakis, "Wide Residual Networks" (BMVC 2016): pre-activation basic blocks,
  widths 160/320/640, optional dropout between the two convs.

Every residual block has a ``gate`` slot (an ``nn.Identity`` until a GaterNet installs a gate there) right after
the last conv of its residual branch (after its norm, for post-activation blocks) and before the residual add,
and declares ``gate_channels``. It also has an ``inner_gate`` slot on its inner conv's output (the first conv of a
basic block, the 3x3 conv of a bottleneck), after that conv's norm and activation and right before the next conv,
and declares ``inner_gate_convs`` (the inner conv and the next one): a GaterNet built with
``gate_placement="inner"`` gates there. Neither slot has parameters, so the ``state_dict`` keys are the same.
After ``import gaternet_zoo`` the models are available as ``timm.create_model("cifar_resnet20")``.
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Any

import torch
import torch.nn.functional as F
from timm.layers import create_classifier
from timm.models import checkpoint_seq, register_model
from timm.models._features import feature_take_indices
from torch import nn

from .. import _validation
from .._builder import build_with_cfg
from .._constants import CIFAR10_MEAN, CIFAR10_STD
from .._hub_mixin import ZooHubMixin
from .._pretrained import generate_default_cfgs
from ..layers.pruning import add_into_shortcut
from ..layers.skip import folded_conv_bn

__all__ = ['CifarResNet', 'BasicBlock', 'PreActBasicBlock', 'PreActBottleneck']



def _conv3x3(in_chs: int, out_chs: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_chs, out_chs, kernel_size=3, stride=stride, padding=1, bias=False)


def _projection(in_chs: int, out_chs: int, stride: int, norm: bool) -> nn.Sequential:
    layers: OrderedDict[str, nn.Module] = OrderedDict(
        conv=nn.Conv2d(in_chs, out_chs, kernel_size=1, stride=stride, bias=False))
    if norm:
        layers['bn'] = nn.BatchNorm2d(out_chs)
    return nn.Sequential(layers)


class BasicBlock(nn.Module):
    """Post-activation basic block: ``relu(gate(bn2(conv2(relu(bn1(conv1(x)))))) + shortcut(x))``."""

    def __init__(self, in_chs: int, out_chs: int, stride: int = 1, drop_rate: float = 0.0) -> None:
        super().__init__()
        self.conv1 = _conv3x3(in_chs, out_chs, stride)
        self.bn1 = nn.BatchNorm2d(out_chs)
        self.act1 = nn.ReLU(inplace=True)
        self.drop = nn.Dropout(drop_rate) if drop_rate > 0 else nn.Identity()
        self.conv2 = _conv3x3(out_chs, out_chs)
        self.bn2 = nn.BatchNorm2d(out_chs)
        self.gate = nn.Identity()
        # The official code projects only when the width changes (which is also where the stride is 2).
        self.shortcut = _projection(in_chs, out_chs, stride, norm=True) if in_chs != out_chs else nn.Identity()
        self.act2 = nn.ReLU(inplace=True)
        self.gate_channels = out_chs
        # The norm applied right after the gated conv, before the gate (None: the gate follows the conv).
        self.gate_norm = 'bn2'
        # Inner gate site: conv1's filters, gated after bn1 and its ReLU, are conv2's input channels.
        self.inner_gate = nn.Identity()
        self.inner_gate_convs = ('conv1', 'conv2')

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        branch, shortcut = self.branch_and_shortcut(x)
        return self.act2(branch + shortcut)

    def branch_and_shortcut(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The two operands of the block's residual addition: the gated branch and the shortcut."""
        y = self.inner_gate(self.drop(self.act1(self.bn1(self.conv1(x)))))
        return self.gate(self.bn2(self.conv2(y))), self.shortcut(x)

    def forward_kept(self, x: torch.Tensor, kept: torch.Tensor) -> torch.Tensor:
        """The block's output when conv2 computes only the filters ``kept`` (a pruned site of a static export): they
        are added into the shortcut at those channels, rather than scattered into a zero map that is then added."""
        branch, shortcut = self.branch_and_shortcut(x)
        return self.act2(add_into_shortcut(shortcut, kept, branch))

    def shortcut_output(self, x: torch.Tensor) -> torch.Tensor:
        """The block's output when every gate is closed (the branch adds 0): skip execution's short cut."""
        return self.act2(self.shortcut(x).clone())  # clone: the in-place ReLU must not change the input

    def inner_closed_output(self, x: torch.Tensor) -> torch.Tensor:
        """The block's output (evaluation) when every inner gate is closed: conv2 sees zeros, so the branch is
        bn2's shift, a per-channel constant, added to the shortcut. Neither conv of the branch runs."""
        _, shift = folded_conv_bn(self.conv2, self.bn2)  # bn2(conv2(0)) in evaluation
        return self.act2(self.shortcut(x) + shift.to(x.dtype)[None, :, None, None])

    def forward_open_inner(self, x: torch.Tensor, index: torch.Tensor, channels: torch.Tensor,
                           gate: torch.Tensor) -> torch.Tensor:
        """The block's output when only the filters ``index`` of ``conv1`` may be open (inner gates, skip mode).

        Only those filters of conv1 are computed and gated (``gate``: B x len(index)), and conv2 reads only those
        input channels; both convs run with their norms folded in (evaluation statistics). ``channels`` equals
        ``index`` here (an inner site is not pruned).
        """
        w1, b1 = folded_conv_bn(self.conv1, self.bn1)
        w2, b2 = folded_conv_bn(self.conv2, self.bn2)
        c1, c2 = self.conv1, self.conv2
        y = F.conv2d(x, w1.index_select(0, index), b1.index_select(0, index), c1.stride, c1.padding, c1.dilation)
        y = self.drop(self.act1(y)) * gate[:, :, None, None].to(y.dtype)
        z = F.conv2d(y, w2.index_select(1, index), b2, c2.stride, c2.padding, c2.dilation)
        return self.act2(z + self.shortcut(x))

    def forward_open_filters(self, x: torch.Tensor, index: torch.Tensor, channels: torch.Tensor,
                             gate: torch.Tensor) -> torch.Tensor:
        """The block's output when only the filters ``index`` of ``conv2`` may be open: skip execution's fast path.

        Only those filters are computed, gated (``gate``: B x len(index)) and added into the shortcut at
        ``channels`` (their places in the block's output); the others' gates are closed, so they add 0. Both convs
        run with their norms folded in (evaluation statistics), so no norm pass and no zero-filled map remain.
        """
        w1, b1 = folded_conv_bn(self.conv1, self.bn1)
        w2, b2 = folded_conv_bn(self.conv2, self.bn2)
        c1, c2 = self.conv1, self.conv2
        y = self.drop(self.act1(F.conv2d(x, w1, b1, c1.stride, c1.padding, c1.dilation)))
        z = F.conv2d(y, w2.index_select(0, index), b2.index_select(0, index), c2.stride, c2.padding, c2.dilation)
        z = z * gate[:, :, None, None].to(z.dtype)
        return self.act2(self.shortcut(x).index_add(1, channels, z))


class PreActBasicBlock(nn.Module):
    """Pre-activation (wide) basic block: ``gate(conv2(drop(relu(bn2(conv1(relu(bn1(x)))))))) + shortcut``."""

    def __init__(self, in_chs: int, out_chs: int, stride: int = 1, drop_rate: float = 0.0) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_chs)
        self.act1 = nn.ReLU(inplace=True)
        self.conv1 = _conv3x3(in_chs, out_chs, stride)
        self.bn2 = nn.BatchNorm2d(out_chs)
        self.act2 = nn.ReLU(inplace=True)
        self.drop = nn.Dropout(drop_rate) if drop_rate > 0 else nn.Identity()
        self.conv2 = _conv3x3(out_chs, out_chs)
        self.gate = nn.Identity()
        needs_projection = in_chs != out_chs or stride != 1
        self.shortcut = _projection(in_chs, out_chs, stride, norm=False) if needs_projection else None
        self.gate_channels = out_chs
        # The norm applied right after the gated conv, before the gate (None: the gate follows the conv).
        self.gate_norm = None
        # Inner gate site: conv1's filters, gated after bn2, its ReLU and dropout, are conv2's input channels.
        self.inner_gate = nn.Identity()
        self.inner_gate_convs = ('conv1', 'conv2')

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        branch, shortcut = self.branch_and_shortcut(x)
        return branch + shortcut

    def branch_and_shortcut(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The two operands of the block's residual addition: the gated branch and the shortcut."""
        pre = self.act1(self.bn1(x))
        # A projection shortcut sees the pre-activated input, as in the WRN and pre-act ResNet papers.
        shortcut = self.shortcut(pre) if self.shortcut is not None else x
        y = self.conv1(pre)
        y = self.conv2(self.inner_gate(self.drop(self.act2(self.bn2(y)))))
        return self.gate(y), shortcut

    def forward_kept(self, x: torch.Tensor, kept: torch.Tensor) -> torch.Tensor:
        """The block's output when conv2 computes only the filters ``kept`` (a pruned site of a static export): they
        are added into the shortcut at those channels, rather than scattered into a zero map that is then added."""
        branch, shortcut = self.branch_and_shortcut(x)
        return add_into_shortcut(shortcut, kept, branch)

    def shortcut_output(self, x: torch.Tensor) -> torch.Tensor:
        """The block's output when every gate is closed (the branch adds 0): skip execution's short cut."""
        return self.shortcut(self.act1(self.bn1(x))) if self.shortcut is not None else x.clone()

    def inner_closed_output(self, x: torch.Tensor) -> torch.Tensor:
        """The block's output when every inner gate is closed: conv2 (no bias, no norm after it) gives 0, so the
        block is its shortcut."""
        return self.shortcut_output(x)


class PreActBottleneck(nn.Module):
    """Pre-activation bottleneck: 1x1 reduce, 3x3 (strided), 1x1 expand (x4); the expanding conv is gated."""

    expansion = 4

    def __init__(self, in_chs: int, mid_chs: int, stride: int = 1, drop_rate: float = 0.0) -> None:
        super().__init__()
        out_chs = mid_chs * self.expansion
        self.bn1 = nn.BatchNorm2d(in_chs)
        self.act1 = nn.ReLU(inplace=True)
        self.conv1 = nn.Conv2d(in_chs, mid_chs, kernel_size=1, bias=False)
        self.bn2 = nn.BatchNorm2d(mid_chs)
        self.act2 = nn.ReLU(inplace=True)
        self.conv2 = _conv3x3(mid_chs, mid_chs, stride)
        self.bn3 = nn.BatchNorm2d(mid_chs)
        self.act3 = nn.ReLU(inplace=True)
        self.drop = nn.Dropout(drop_rate) if drop_rate > 0 else nn.Identity()
        self.conv3 = nn.Conv2d(mid_chs, out_chs, kernel_size=1, bias=False)
        self.gate = nn.Identity()
        needs_projection = in_chs != out_chs or stride != 1
        self.shortcut = _projection(in_chs, out_chs, stride, norm=False) if needs_projection else None
        self.gate_channels = out_chs
        # The norm applied right after the gated conv, before the gate (None: the gate follows the conv).
        self.gate_norm = None
        # Inner gate site: the 3x3 conv2's filters, gated after bn3, its ReLU and dropout, are conv3's inputs.
        self.inner_gate = nn.Identity()
        self.inner_gate_convs = ('conv2', 'conv3')

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        branch, shortcut = self.branch_and_shortcut(x)
        return branch + shortcut

    def branch_and_shortcut(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The two operands of the block's residual addition: the gated branch and the shortcut."""
        pre = self.act1(self.bn1(x))
        shortcut = self.shortcut(pre) if self.shortcut is not None else x
        y = self.conv1(pre)
        y = self.conv2(self.act2(self.bn2(y)))
        y = self.conv3(self.inner_gate(self.drop(self.act3(self.bn3(y)))))
        return self.gate(y), shortcut

    def forward_kept(self, x: torch.Tensor, kept: torch.Tensor) -> torch.Tensor:
        """The block's output when conv3 computes only the filters ``kept`` (a pruned site of a static export): they
        are added into the shortcut at those channels, rather than scattered into a zero map that is then added."""
        branch, shortcut = self.branch_and_shortcut(x)
        return add_into_shortcut(shortcut, kept, branch)

    def shortcut_output(self, x: torch.Tensor) -> torch.Tensor:
        """The block's output when every gate is closed (the branch adds 0): skip execution's short cut."""
        return self.shortcut(self.act1(self.bn1(x))) if self.shortcut is not None else x.clone()

    def inner_closed_output(self, x: torch.Tensor) -> torch.Tensor:
        """The block's output when every inner gate is closed: conv3 (no bias, no norm after it) gives 0, so the
        block is its shortcut, and none of its three convs needs to run."""
        return self.shortcut_output(x)


_BLOCKS: dict[str, type[nn.Module]] = {
    'basic': BasicBlock,
    'preact_basic': PreActBasicBlock,
    'preact_bottleneck': PreActBottleneck,
}


class CifarResNet(nn.Module, ZooHubMixin):
    """ResNet for 32x32 inputs: 3x3 stem, three stages (strides 1, 2, 2), global pooling and a linear classifier.

    Follows timm's model contract (``forward_features``, ``forward_head``, ``get_classifier``,
    ``reset_classifier``, ``num_features``, ``feature_info``), so timm tooling works with it.

    Args:
        block: ``"basic"`` (post-activation, the original CIFAR ResNet), ``"preact_basic"`` (WRN) or
            ``"preact_bottleneck"`` (ResNet-164).
        layers: Number of blocks in each of the three stages.
        widths: Output width of the basic blocks or bottleneck width of each stage.
        stem_width: Filters of the stem conv.
        num_classes: Classifier outputs; 0 gives pooled features.
        in_chans: Input channels.
        global_pool: timm pooling type.
        drop_rate: Dropout before the classifier.
        block_drop_rate: Dropout inside each block, between its convs (WRN's dropout).
    """

    def __init__(
            self,
            block: str = 'basic',
            layers: tuple[int, ...] = (3, 3, 3),
            widths: tuple[int, ...] = (16, 32, 64),
            stem_width: int = 16,
            num_classes: int = 10,
            in_chans: int = 3,
            global_pool: str = 'avg',
            drop_rate: float = 0.0,
            block_drop_rate: float = 0.0,
    ) -> None:
        super().__init__()
        if block not in _BLOCKS:
            raise ValueError(f'Unknown block type {block!r}; choose one of {sorted(_BLOCKS)}.')
        if len(layers) != len(widths):
            raise ValueError(f'layers {layers} and widths {widths} must have the same length.')
        owner = 'CifarResNet'
        _validation.check_count('num_classes', num_classes, minimum=0, maximum=_validation.MAX_NUM_CLASSES,
                                owner=owner)
        _validation.check_count('in_chans', in_chans, maximum=_validation.MAX_CHANNELS, owner=owner)
        _validation.check_count('stem_width', stem_width, maximum=_validation.MAX_WIDTH, owner=owner)
        for n in widths:
            _validation.check_count('widths[i]', n, maximum=_validation.MAX_WIDTH, owner=owner)
        for n in layers:
            _validation.check_count('layers[i]', n, minimum=0, maximum=_validation.MAX_WIDTH, owner=owner)
        for name, rate in (('drop_rate', drop_rate), ('block_drop_rate', block_drop_rate)):
            _validation.check_finite(name, rate, owner=owner)
        block_cls = _BLOCKS[block]
        self.num_classes = num_classes
        self.in_chans = in_chans
        self.drop_rate = drop_rate
        self.grad_checkpointing = False
        pre_activation = block.startswith('preact')

        self.conv = _conv3x3(in_chans, stem_width)
        # Pre-activation nets normalise inside the first block; the stem is then a bare conv.
        self.bn = nn.Identity() if pre_activation else nn.BatchNorm2d(stem_width)
        self.act = nn.Identity() if pre_activation else nn.ReLU(inplace=True)
        self.feature_info = [dict(num_chs=stem_width, reduction=1, module='act')]

        in_chs = stem_width
        reduction = 1
        for stage_idx, (num_blocks, width) in enumerate(zip(layers, widths)):
            stride = 1 if stage_idx == 0 else 2
            reduction *= stride
            blocks: OrderedDict[str, nn.Module] = OrderedDict()
            for block_idx in range(num_blocks):
                blk = block_cls(in_chs, width, stride if block_idx == 0 else 1, drop_rate=block_drop_rate)
                blocks[f'block{block_idx + 1}'] = blk
                in_chs = blk.gate_channels
            stage_name = f'stage{stage_idx + 1}'
            self.add_module(stage_name, nn.Sequential(blocks))
            self.feature_info.append(dict(num_chs=in_chs, reduction=reduction, module=stage_name))
        self.num_stages = len(layers)

        self.final_norm = nn.BatchNorm2d(in_chs) if pre_activation else nn.Identity()
        self.final_act = nn.ReLU(inplace=True) if pre_activation else nn.Identity()
        self.num_features = self.head_hidden_size = in_chs
        self.global_pool, self.fc = create_classifier(self.num_features, num_classes, pool_type=global_pool)
        self.init_weights()

    def init_weights(self) -> None:
        """Initialise as the released GaterNet code: He-normal (fan-out) convs, unit BN scale, zero biases."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode='fan_out')
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.zeros_(m.bias)

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> dict[str, Any]:
        return dict(stem=r'^conv|^bn\b', blocks=r'^stage(\d+)' if coarse else r'^stage(\d+)\.block(\d+)')

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.grad_checkpointing = enable

    @torch.jit.ignore
    def get_classifier(self, name_only: bool = False) -> str | nn.Module:
        return 'fc' if name_only else self.fc

    def reset_classifier(self, num_classes: int, global_pool: str = 'avg') -> None:
        num_classes = _validation.check_count('num_classes', num_classes, minimum=0,
                                              maximum=_validation.MAX_NUM_CLASSES, owner=type(self).__name__)
        self.num_classes = num_classes
        self.global_pool, self.fc = create_classifier(self.num_features, num_classes, pool_type=global_pool)

    def stages(self) -> list[nn.Sequential]:
        return [getattr(self, f'stage{i + 1}') for i in range(self.num_stages)]

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act(self.bn(self.conv(x)))
        for stage in self.stages():
            if self.grad_checkpointing and not torch.jit.is_scripting():
                x = checkpoint_seq(stage, x)
            else:
                x = stage(x)
        return self.final_act(self.final_norm(x))

    def forward_intermediates(
            self,
            x: torch.Tensor,
            indices: int | list[int] | None = None,
            norm: bool = False,
            stop_early: bool = False,
            output_fmt: str = 'NCHW',
            intermediates_only: bool = False,
    ) -> list[torch.Tensor] | tuple[torch.Tensor, list[torch.Tensor]]:
        """Features of the stem and of each stage (``feature_info`` levels), timm's feature API.

        Args:
            x: Input images.
            indices: Levels to return: the last n for an int, all for ``None``, else those listed.
            norm: Apply the final norm (pre-activation nets) to the last stage's output when it is returned.
            stop_early: Stop after the last level asked for.
            output_fmt: ``'NCHW'`` only.
            intermediates_only: Return the intermediates only.

        Returns:
            The intermediates, or ``(final features, intermediates)``.
        """
        if output_fmt != 'NCHW':
            raise ValueError(f'output_fmt must be NCHW, got {output_fmt!r}.')
        take_indices, max_index = feature_take_indices(len(self.feature_info), indices)
        intermediates = []
        x = self.act(self.bn(self.conv(x)))
        if 0 in take_indices:
            intermediates.append(x)
        stages = self.stages()[:max_index] if stop_early else self.stages()
        for idx, stage in enumerate(stages, start=1):
            if self.grad_checkpointing and not torch.jit.is_scripting():
                x = checkpoint_seq(stage, x)
            else:
                x = stage(x)
            if idx in take_indices:
                last = idx == self.num_stages
                intermediates.append(self.final_act(self.final_norm(x)) if norm and last else x)
        if intermediates_only:
            return intermediates
        if len(stages) == self.num_stages:
            x = self.final_act(self.final_norm(x))
        return x, intermediates

    def prune_intermediate_layers(
            self,
            indices: int | list[int] = 1,
            prune_norm: bool = False,
            prune_head: bool = True,
    ) -> list[int]:
        """Remove the stages (and head) after the last of the levels ``indices``; returns the levels kept."""
        take_indices, max_index = feature_take_indices(len(self.feature_info), indices)
        for idx in range(max_index + 1, self.num_stages + 1):
            setattr(self, f'stage{idx}', nn.Sequential())  # empty, so that forward still iterates the stages
        prune_end = max_index < self.num_stages
        if prune_norm or prune_end:
            self.final_norm, self.final_act = nn.Identity(), nn.Identity()
        if prune_end:
            self.num_features = self.head_hidden_size = self.feature_info[max_index]['num_chs']
        if prune_head or prune_end:
            self.reset_classifier(0, '')
        return take_indices

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.global_pool(x)
        if self.drop_rate:
            x = nn.functional.dropout(x, p=float(self.drop_rate), training=self.training)
        return x if pre_logits else self.fc(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Checked here, not in forward_features, which a GaterNet calls after checking the input itself.
        _validation.check_image_batch(x, self, in_chans=self.in_chans, min_side=_validation.min_input_side(self),
                                      owner=type(self).__name__)
        return self.forward_head(self.forward_features(x))


def _create_cifar_resnet(variant: str, pretrained: bool = False, **kwargs: Any) -> CifarResNet:
    return build_with_cfg(CifarResNet, variant, pretrained, **kwargs)


def _cfg(**kwargs: Any) -> dict[str, Any]:
    return {
        'num_classes': 10, 'input_size': (3, 32, 32), 'pool_size': (8, 8), 'crop_pct': 1.0,
        'interpolation': 'bilinear', 'mean': CIFAR10_MEAN, 'std': CIFAR10_STD, 'first_conv': 'conv',
        'classifier': 'fc', 'license': 'apache-2.0', **kwargs,
    }


default_cfgs = generate_default_cfgs({
    # The default tag (first listed): trained here with recipes/configs/cifar10_resnet20.yaml for 200 epochs in bf16 on
    # the first 45,000 training images, the test split evaluated once (weights/cifar_resnet20.cifar10_e200/).
    'cifar_resnet20.cifar10_e200': _cfg(
        paper_ids='arXiv:1512.03385', hf_hub_id='gaternet-zoo/cifar_resnet20.cifar10_e200', revision='v0.2.0',
        sha256='9f9446912a634e52de620b325ad1d8f1cb8a801aff6af3e1d3586e9b598e51e7', dataset='uoft-cs/cifar10',
        config_sha256='5f3248193ec2c8b364745c7ade44a651def99f9e295e6bc34f8c6d8c79f764f1'),
    # Trained here with recipes/configs/cifar10_resnet20.yaml for 30 epochs (weights/cifar_resnet20.cifar10/).
    'cifar_resnet20.cifar10': _cfg(
        paper_ids='arXiv:1512.03385', hf_hub_id='gaternet-zoo/cifar_resnet20.cifar10', revision='v0.1.0',
        sha256='47d3fe801fc3efc37f74c5dca5904d95f1aa1d37e3c4d424d4f27bde3ca0ce30', dataset='uoft-cs/cifar10',
        config_sha256='5f3248193ec2c8b364745c7ade44a651def99f9e295e6bc34f8c6d8c79f764f1'),
    'cifar_resnet8': _cfg(paper_ids='arXiv:1512.03385'),
    'cifar_resnet32': _cfg(paper_ids='arXiv:1512.03385'),
    'cifar_resnet44': _cfg(paper_ids='arXiv:1512.03385'),
    # Trained here with recipes/configs/cifar10_resnet56.yaml for 30 epochs in bf16 (weights/cifar_resnet56.cifar10/).
    'cifar_resnet56.cifar10': _cfg(
        paper_ids='arXiv:1512.03385', hf_hub_id='gaternet-zoo/cifar_resnet56.cifar10', revision='v0.1.0',
        sha256='ff2914f1d3a63146f23e976aba75920089213fadc12c28cb32a55bc0cb2722ba', dataset='uoft-cs/cifar10',
        config_sha256='9ae22cdf201f58b23aadb1a4819b650269b4abb68d9963fb220704d7f728412a'),
    'cifar_resnet110': _cfg(paper_ids='arXiv:1512.03385'),
    'cifar_resnet164': _cfg(paper_ids='arXiv:1603.05027'),
    'cifar_wrn28_10': _cfg(paper_ids='arXiv:1605.07146'),
})


def _basic_resnet(variant: str, depth: int, pretrained: bool, **kwargs: Any) -> CifarResNet:
    n = (depth - 2) // 6
    model_args = dict(block='basic', layers=(n, n, n), widths=(16, 32, 64))
    return _create_cifar_resnet(variant, pretrained, **dict(model_args, **kwargs))


@register_model
def cifar_resnet8(pretrained: bool = False, **kwargs: Any) -> CifarResNet:
    """ResNet-8 for CIFAR (78k params): 1 basic block per stage; a cheap gater (``gater="cifar_resnet8"``)."""
    return _basic_resnet('cifar_resnet8', 8, pretrained, **kwargs)


@register_model
def cifar_resnet20(pretrained: bool = False, **kwargs: Any) -> CifarResNet:
    """ResNet-20 for CIFAR (0.27M params): 3 basic blocks per stage."""
    return _basic_resnet('cifar_resnet20', 20, pretrained, **kwargs)


@register_model
def cifar_resnet32(pretrained: bool = False, **kwargs: Any) -> CifarResNet:
    """ResNet-32 for CIFAR: 5 basic blocks per stage."""
    return _basic_resnet('cifar_resnet32', 32, pretrained, **kwargs)


@register_model
def cifar_resnet44(pretrained: bool = False, **kwargs: Any) -> CifarResNet:
    """ResNet-44 for CIFAR: 7 basic blocks per stage."""
    return _basic_resnet('cifar_resnet44', 44, pretrained, **kwargs)


@register_model
def cifar_resnet56(pretrained: bool = False, **kwargs: Any) -> CifarResNet:
    """ResNet-56 for CIFAR (0.85M params): 9 basic blocks per stage."""
    return _basic_resnet('cifar_resnet56', 56, pretrained, **kwargs)


@register_model
def cifar_resnet110(pretrained: bool = False, **kwargs: Any) -> CifarResNet:
    """ResNet-110 for CIFAR (1.7M params): 18 basic blocks per stage."""
    return _basic_resnet('cifar_resnet110', 110, pretrained, **kwargs)


@register_model
def cifar_resnet164(pretrained: bool = False, **kwargs: Any) -> CifarResNet:
    """Pre-activation ResNet-164 for CIFAR (1.7M params): 18 bottleneck blocks per stage."""
    model_args = dict(block='preact_bottleneck', layers=(18, 18, 18), widths=(16, 32, 64))
    return _create_cifar_resnet('cifar_resnet164', pretrained, **dict(model_args, **kwargs))


@register_model
def cifar_wrn28_10(pretrained: bool = False, **kwargs: Any) -> CifarResNet:
    """Wide ResNet-28-10 for CIFAR (36.5M params); ``block_drop_rate=0.3`` gives the paper's dropout variant."""
    model_args = dict(block='preact_basic', layers=(4, 4, 4), widths=(160, 320, 640))
    return _create_cifar_resnet('cifar_wrn28_10', pretrained, **dict(model_args, **kwargs))
