"""Shared pytest configuration for the gaternet_zoo test suite."""

from __future__ import annotations

import pytest
from hubserver import local_hub  # noqa: F401 - re-exported so every test module can request the fixture


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "hub: talks to a real local Hugging Face Hub server (olah on loopback, see tests/hubserver.py)"
    )
