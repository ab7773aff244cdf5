"""Fault injection points: off unless configured, fire on the N-th hit."""

from __future__ import annotations

import pytest

from regsosek.messaging.faults import FaultPoint

VAR = "REGSOSEK_FAULT_TEST_POINT"


@pytest.mark.parametrize("raw", [None, "", "0", "-1", "abc", "2.5", " 3"])
def test_unset_or_invalid_never_fires(monkeypatch, raw):
    if raw is None:
        monkeypatch.delenv(VAR, raising=False)
    else:
        monkeypatch.setenv(VAR, raw)
    fp = FaultPoint(VAR)
    assert not fp.armed
    assert not any(fp.hit() for _ in range(100))
    assert not fp.hit(1000)


@pytest.mark.parametrize("n", [1, 2, 5, 17])
def test_fires_on_nth_hit(monkeypatch, n):
    monkeypatch.setenv(VAR, str(n))
    fp = FaultPoint(VAR)
    assert fp.armed and fp.name == VAR
    results = [fp.hit() for _ in range(n)]
    assert results == [False] * (n - 1) + [True]


@pytest.mark.parametrize("n,counts,first_fire", [(5, [2, 2, 2], 2), (3, [3], 0), (4, [1, 10], 1), (10, [4, 4, 1, 1], 3)])
def test_counted_hits(monkeypatch, n, counts, first_fire):
    monkeypatch.setenv(VAR, str(n))
    fp = FaultPoint(VAR)
    fired = [fp.hit(c) for c in counts]
    assert fired.index(True) == first_fire
    assert not any(fired[:first_fire])


def test_reads_environment_at_construction(monkeypatch):
    monkeypatch.delenv(VAR, raising=False)
    fp = FaultPoint(VAR)
    monkeypatch.setenv(VAR, "1")
    assert not fp.hit()
    assert FaultPoint(VAR).hit()
