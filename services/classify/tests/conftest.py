"""Fixtures of classify's fast tests. The in-memory store (fakes.py) is loaded by its path under
a name of its own: every service has a tests/fakes.py, and test directories are not packages."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

_spec = importlib.util.spec_from_file_location("classify_tests_fakes", Path(__file__).with_name("fakes.py"))
assert _spec is not None and _spec.loader is not None
fakes = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = fakes
_spec.loader.exec_module(fakes)


@pytest.fixture
def store():
    """A fresh in-memory classify store."""
    return fakes.InMemoryClassifyStore()


@pytest.fixture
def in_memory_store_class() -> type:
    return fakes.InMemoryClassifyStore
