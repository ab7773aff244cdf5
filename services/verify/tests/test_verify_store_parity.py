"""The in-memory store of the fast tests and the real one cannot drift: same public methods,
same signatures."""

from __future__ import annotations

import inspect

from verify.store import VerifyStore

from verify_fakes import InMemoryVerifyStore


def public_methods(cls: type) -> dict[str, inspect.Signature]:
    return {name: inspect.signature(member) for name, member in inspect.getmembers(cls, inspect.isfunction)
            if not name.startswith("_")}


def test_same_public_methods():
    assert sorted(public_methods(InMemoryVerifyStore)) == sorted(public_methods(VerifyStore))


def test_same_signatures():
    real, fake = public_methods(VerifyStore), public_methods(InMemoryVerifyStore)
    differ = {name: (str(real[name]), str(fake[name])) for name in real if name in fake and real[name] != fake[name]}
    assert not differ


def test_the_comparison_can_fail():
    class Drifted(InMemoryVerifyStore):
        async def save(self, outcome, *, traceparent=None, extra=None) -> None: ...

        async def save_everything(self) -> None: ...

    assert public_methods(Drifted)["save"] != public_methods(VerifyStore)["save"]
    assert sorted(public_methods(Drifted)) != sorted(public_methods(VerifyStore))


def test_every_method_is_async_in_both():
    for cls in (VerifyStore, InMemoryVerifyStore):
        assert all(inspect.iscoroutinefunction(getattr(cls, name)) for name in public_methods(cls)), cls
