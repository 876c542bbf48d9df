"""Regenerate ``hubconf.py`` from the registry: explicit entry points (both name forms) with docstrings.

Run ``python -m tools.gen_hubconf``; ``tests/test_hubconf.py`` checks that the committed file is current.
"""
from __future__ import annotations

import sys
from pathlib import Path

HEADER = '''"""torch.hub entry points of gaternet_zoo.

    model = torch.hub.load("gaternet-zoo/gaternet_zoo", "gaternet_resnet50", trust_repo=True)
    model = torch.hub.load("gaternet-zoo/gaternet_zoo:v0.1.0", "gated_wrn28_10")   # pinned to a tag
    model = torch.hub.load("/path/to/checkout", "gaternet_resnet20", source="local")

Every entry point takes ``pretrained`` (load the default weight tag, sha256-verified: from the Hugging Face Hub at
its pinned revision, else the Hub cache, else the copy in this checkout's ``weights/``, so a local checkout needs
no network) and any model argument (``num_classes=100``, ``bottleneck=16``, ...). ``gated_<x>`` is an alias of
``gaternet_<x>``. Generated from the registry by ``tools/gen_hubconf.py``; a test checks that it is current.
"""
dependencies = ["torch", "torchvision", "timm", "huggingface_hub", "safetensors", "yaml"]

from gaternet_zoo import create_model as _create_model
from gaternet_zoo import gate as _gate
'''

ENTRY = '''

def {name}(pretrained: bool = False, **kwargs):
    """{doc}

    Args:
        pretrained: Load the default published weights (Hub, cache or the checkout's copy; sha256-verified).
        **kwargs: Model arguments, e.g. ``num_classes=100``.

    Example:
        >>> model = torch.hub.load("gaternet-zoo/gaternet_zoo", "{name}",
        ...                        pretrained=False, trust_repo=True)
    """
    return _create_model("{canonical}", pretrained=pretrained, **kwargs)
'''

GATE = '''

def gate(backbone: str, gater: str | None = None, **kwargs):
    """Gate any supported timm backbone: ``torch.hub.load(repo, "gate", "resnet50", gater="resnet18")``.

    Args:
        backbone: timm model name of the backbone.
        gater: timm model name of the gater's feature extractor.
        **kwargs: ``bottleneck``, ``num_classes``, ``pretrained_backbone`` and other GaterNet arguments.
    """
    return _gate(backbone, gater=gater, **kwargs)
'''


def render() -> str:
    """The content ``hubconf.py`` should have."""
    import timm

    import gaternet_zoo

    parts = [HEADER]
    for name in gaternet_zoo.list_models(include_backbones=True):
        doc = (timm.models.model_entrypoint(name).__doc__ or name).strip()
        parts.append(ENTRY.format(name=name, canonical=name, doc=doc))
        if name.startswith('gaternet_'):
            alias = 'gated_' + name[len('gaternet_'):]
            parts.append(ENTRY.format(name=alias, canonical=name, doc=f'Alias of ``{name}``.\n\n    {doc}'))
    parts.append(GATE)
    return ''.join(parts)


if __name__ == '__main__':
    target = Path(__file__).resolve().parents[1] / 'hubconf.py'
    target.write_text(render())
    print(f'wrote {target}', file=sys.stderr)
