"""Fixtures of classify's fast tests: the in-memory store (classify_fakes.py; each service's fakes
module has a name of its own, as test directories are not packages)."""

from __future__ import annotations

import pytest

from classify_fakes import InMemoryClassifyStore


@pytest.fixture
def store() -> InMemoryClassifyStore:
    """A fresh in-memory classify store."""
    return InMemoryClassifyStore()


@pytest.fixture
def in_memory_store_class() -> type:
    return InMemoryClassifyStore
