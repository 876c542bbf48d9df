"""Shared pytest configuration for the gaternet_zoo test suite (markers are declared in pyproject.toml)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch
from hubserver import local_hub  # noqa: F401 - re-exported so every test module can request the fixture


@pytest.fixture(scope='module')
def one_torch_thread() -> Iterator[None]:
    """Run a module's tests with one intra-op thread, restoring the previous count afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
