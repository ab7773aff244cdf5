"""The outbox's flush on the real database: a unit of work's records are written each with
its own headers (none, a few, many; null values, a key with NUL, a key that was not UTF-8 on the wire)
and in the order they were added, which is the order the relay publishes them in (ids)."""

from __future__ import annotations

import asyncpg
import pytest

from regsosek import migrate
from regsosek.messaging.outbox import Outbox, OutgoingRecord

from itkit import World

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
async def conn(stack):
    world = await World(["intake"]).setup()
    try:
        await migrate.run("intake", dsn=world.dsn("intake"))
        c = await asyncpg.connect(world.dsn("intake"), timeout=10)
        try:
            yield c
        finally:
            await c.close()
    finally:
        await world.teardown()


async def test_records_are_written_in_order_each_with_its_own_headers(conn):
    records = [
        OutgoingRecord("a", b"k1", b"v1", [("ce_id", b"1"), ("ce_type", b"t")]),
        OutgoingRecord("b", None, None, []),
        OutgoingRecord("a", b"k2", b"v2", [("x\x00y", None), ("\udcff\udcfe", b"raw"), ("dlq_reason", b"r")]),
        OutgoingRecord("c", b"k3", b"", [("h", b"")]),
        *[OutgoingRecord("d", f"k{i}".encode(), b"v", [(f"n{j}", str(j).encode()) for j in range(i % 4)])
          for i in range(200)],
    ]
    outbox = Outbox("/t")
    for r in records:
        outbox.add_raw(r)
    async with conn.transaction():
        assert await outbox.flush(conn) == len(records)
    assert outbox.pending == []
    rows = await conn.fetch("select topic, key, value, header_keys, header_values from outbox order by id")
    assert [(r["topic"], r["key"], r["value"]) for r in rows] == [(r.topic, r.key, r.value) for r in records]
    assert [list(r["header_keys"]) for r in rows[:4]] == [
        [b"ce_id", b"ce_type"], [], [b"x\x00y", b"\xff\xfe", b"dlq_reason"], [b"h"]]
    assert [list(r["header_values"]) for r in rows[:4]] == [[b"1", b"t"], [], [None, b"raw", b"r"], [b""]]
    assert [len(r["header_keys"]) for r in rows[4:]] == [i % 4 for i in range(200)]
    assert [list(r["header_values"]) for r in rows[4:]] == [[str(j).encode() for j in range(i % 4)] for i in range(200)]
    assert await Outbox("/t").flush(conn) == 0  # nothing pending: no statement
