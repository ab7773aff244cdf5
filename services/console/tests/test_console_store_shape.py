"""The in-memory store cannot drift from the real one: same public methods, same signatures."""

from __future__ import annotations

import inspect

from console.store import ConsoleStore

from console_fakes import InMemoryConsoleStore


def _public(cls) -> dict[str, inspect.Signature]:
    return {n: inspect.signature(f) for n, f in inspect.getmembers(cls, inspect.isfunction)
            if not n.startswith("_")}


def test_the_fake_store_has_the_real_stores_methods_and_signatures():
    real, fake = _public(ConsoleStore), _public(InMemoryConsoleStore)
    assert set(real) == set(fake)
    for name, signature in real.items():
        assert [(p.name, p.kind, p.default) for p in signature.parameters.values()] == \
               [(p.name, p.kind, p.default) for p in fake[name].parameters.values()], name
