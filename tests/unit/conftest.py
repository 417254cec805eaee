"""Unit-test fixtures."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No ETCD_REGISTRAR_* from the developer's shell leaks into these tests."""
    for name in list(os.environ):
        if name.startswith("ETCD_REGISTRAR_"):
            monkeypatch.delenv(name)
    yield
