"""Gates do not depend on the precision the model runs in: the gater and the binarisation always run in float32."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import gaternet_zoo as gz
from gaternet_zoo.data import load_image_dataset
from gaternet_zoo.layers.gates import DEFAULT_THRESHOLD, ImprovedSemHash

pytestmark = pytest.mark.usefixtures('one_torch_thread')

WEIGHTS = Path(__file__).resolve().parents[1] / 'weights' / 'gaternet_resnet20.cifar10'


def _subset_images(mean: tuple[float, ...], std: tuple[float, ...]) -> torch.Tensor:
    """The built-in CIFAR-10 subset's test split, normalised as the model expects (N x 3 x 32 x 32)."""
    source = load_image_dataset('builtin:cifar10-subset')
    images = np.stack([np.asarray(im.convert('RGB')) for im in source.eval[source.image_column]])
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float().div(255)
    return (x - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)


@pytest.mark.slow  # issue 25: out of `make test-fast` (seconds of subprocesses or full-size models)
def test_published_weights_give_the_same_gates_under_bf16_autocast() -> None:
    """Eval gates of ``gaternet_resnet20.cifar10`` over the built-in subset: bf16 autocast == float32, bit for bit.

    Before the gater ran in float32, 88 of these 336,000 gates flipped under bf16 autocast (61 with only the
    binarisation in float32), and one prediction changed.
    """
    model = gz.create_model(f'local-dir:{WEIGHTS}').eval()
    x = _subset_images(model.pretrained_cfg['mean'], model.pretrained_cfg['std'])
    with torch.no_grad():
        reference = model.forward_gates(x)
        with torch.autocast('cpu', dtype=torch.bfloat16):
            logits, gates = model.forward_with_gates(x)
            logits_only = model(x)
    assert logits.dtype == torch.bfloat16  # autocast did run the backbone in bf16
    assert gates.dtype == reference.dtype == torch.float32
    assert reference.shape == (len(x), 336)
    assert 0 < reference.mean() < 1  # a real mixture of open and closed gates
    assert torch.equal(gates, reference)
    assert torch.equal(logits_only, logits)


@pytest.mark.parametrize('dtype', [torch.bfloat16, torch.float16])
def test_binarisation_is_float32_for_low_precision_logits(dtype: torch.dtype) -> None:
    """Logits that round across the threshold in low precision are binarised as float32 would."""
    binarizer = ImprovedSemHash().eval()
    # 2e-5 opens a gate in float32 (clamp(1.2 * sigmoid(2e-5) - 0.1) = 0.500006 > 0.49999) ...
    logits = torch.tensor([[-1e-3, -1e-4, 2e-5, 1e-3, 3.0]])
    expected = (torch.clamp(1.2 * torch.sigmoid(logits) - 0.1, 0.0, 1.0) > DEFAULT_THRESHOLD).float()
    assert expected.tolist() == [[0.0, 0.0, 1.0, 1.0, 1.0]]
    with torch.autocast('cpu', dtype=torch.bfloat16):
        gates = binarizer(logits)
    assert gates.dtype == torch.float32 and torch.equal(gates, expected)
    # ... and low-precision logits are widened before the binarisation, not binarised in their own dtype.
    low = logits.to(dtype)
    in_low_precision = (torch.clamp(1.2 * torch.sigmoid(low) - 0.1, 0.0, 1.0) > DEFAULT_THRESHOLD).float()
    assert not torch.equal(in_low_precision, expected)  # what binarising in the logits' own dtype would give
    gates = binarizer(low)
    assert gates.dtype == torch.float32
    assert torch.equal(gates, (torch.clamp(1.2 * torch.sigmoid(low.float()) - 0.1, 0.0, 1.0) > DEFAULT_THRESHOLD)
                       .float())


def test_training_runs_the_gater_encoder_in_low_precision_and_the_gates_in_float32() -> None:
    """Training under autocast: the encoder follows autocast (the speed of bf16 training), the logits and gates are
    float32; with ``float32_in_training`` the encoder stays float32 as in evaluation."""
    torch.manual_seed(0)
    model = gz.create_model('gaternet_resnet20').train()
    seen: list[torch.dtype] = []
    model.gater.encoder.register_forward_hook(lambda m, a, out: seen.append(out.dtype))
    x = torch.randn(4, 3, 32, 32)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        logits = model.forward_gate_logits(x)
        _, gates = model(x, return_gates=True)
        model.gater.float32_in_training = True
        model.forward_gate_logits(x)
        model.eval()
        model.forward_gate_logits(x)
    assert seen == [torch.bfloat16, torch.bfloat16, torch.float32, torch.float32]
    assert logits.dtype == gates.dtype == torch.float32
    gates.sum().backward()
    assert model.gater.encoder.conv.weight.grad is not None
