"""The in-memory store cannot drift from the real one: same public methods, same signatures."""

from __future__ import annotations

import inspect

from classify.store import ClassifyStore


def public_methods(cls: type) -> dict[str, inspect.Signature]:
    return {name: inspect.signature(member) for name, member in inspect.getmembers(cls, inspect.isfunction)
            if not name.startswith("_")}


def test_in_memory_store_has_the_real_stores_public_methods_and_signatures(in_memory_store_class):
    real, fake = public_methods(ClassifyStore), public_methods(in_memory_store_class)
    assert sorted(fake) == sorted(real)
    for name, signature in real.items():
        assert fake[name] == signature, name
    assert len(real) >= 12  # the comparison above covers every method the handlers use
