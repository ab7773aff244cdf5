"""Which database failures are retried (transient) and which dead-letter (permanent)."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest

from regsosek.db import Backoff, is_transient


class WithState(Exception):
    def __init__(self, sqlstate):
        super().__init__("x")
        self.sqlstate = sqlstate


@pytest.mark.parametrize(
    "exc,expected",
    [
        (OSError("network down"), True),
        (ConnectionRefusedError(), True),
        (ConnectionResetError(), True),
        (TimeoutError(), True),
        (TimeoutError(), True),
        (asyncpg.exceptions.UniqueViolationError("dup"), False),
        (asyncpg.exceptions.ForeignKeyViolationError("fk"), False),
        (asyncpg.exceptions.CheckViolationError("check"), False),
        (asyncpg.exceptions.UndefinedTableError("no table"), False),
        (asyncpg.exceptions.SerializationError("retry"), True),
        (asyncpg.exceptions.DeadlockDetectedError("deadlock"), True),
        (asyncpg.exceptions.TooManyConnectionsError("busy"), True),
        (asyncpg.exceptions.AdminShutdownError("bye"), True),
        (asyncpg.exceptions.QueryCanceledError("timeout"), True),
        (WithState("08006"), True),  # connection failure
        (WithState("08001"), True),
        (WithState("53300"), True),  # too many connections
        (WithState("57P01"), True),  # admin shutdown
        (WithState("58030"), True),  # io error
        (WithState("23505"), False),  # unique violation
        (WithState("22P02"), False),  # invalid text representation
        (WithState(None), False),
        (WithState(""), False),
        (ValueError("bad data"), False),
        (KeyError("k"), False),
    ],
    ids=lambda v: (type(v).__name__ + (f"({v.sqlstate})" if isinstance(v, WithState) else "")
                   if isinstance(v, BaseException) else str(v)),
)
def test_is_transient(exc, expected):
    assert is_transient(exc) is expected


def test_asyncpg_classes_carry_expected_sqlstate():
    assert asyncpg.exceptions.UniqueViolationError.sqlstate == "23505"


async def test_backoff_doubles_up_to_maximum_and_resets(monkeypatch):
    slept: list[float] = []

    async def fake_sleep(d):
        slept.append(d)

    monkeypatch.setattr(asyncio, "sleep", fake_sleep)
    b = Backoff(0.5, 3.0)
    for _ in range(5):
        await b.wait()
    assert slept == [0.5, 1.0, 2.0, 3.0, 3.0]
    b.reset()
    assert b.delay == 0.5
