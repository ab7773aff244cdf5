"""regsosek.composition: a command's units of work and its drain, without a database or a
broker (fake pool, connection and producer)."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime

import pytest

from regsosek.composition import CommandRoot, unit_of_work
from regsosek.contracts import ErasureReason, FamilyErased
from regsosek.envelope import read_headers
from regsosek.settings import ServiceSettings
from regsosek.topics import Topic


class Conn:
    def __init__(self) -> None:
        self.outbox: list[tuple] = []
        self.committed = self.rolled_back = 0
        self.pending: list[tuple] = []

    async def executemany(self, sql: str, args) -> None:
        assert sql.startswith("insert into outbox")
        self.pending.extend(args)

    def transaction(self):
        conn = self

        class Tx:
            async def __aenter__(self):
                conn.pending = []

            async def __aexit__(self, exc_type, *exc):
                if exc_type is None:
                    conn.outbox.extend(conn.pending)
                    conn.committed += 1
                else:
                    conn.rolled_back += 1
                return False

        return Tx()


class Pool:
    def __init__(self, conn) -> None:
        self.conn = conn

    def acquire(self):
        conn = self.conn

        class Acquired:
            async def __aenter__(self):
                return conn

            async def __aexit__(self, *exc):
                return False

        return Acquired()


SLS = "64720100010001"


def erased() -> FamilyErased:
    return FamilyErased(erasure_id=str(uuid.uuid4()), family_id=f"{SLS}-0001-001", sls_id=SLS,
                        reason=ErasureReason.COURT_ORDER, erased_at=datetime.now(UTC))


async def test_unit_of_work_writes_its_events_and_deferred_work_to_the_outbox_then_calls_on_commit():
    conn, commits = Conn(), []
    async with unit_of_work(Pool(conn), "classify", on_commit=lambda: commits.append(1)) as uow:
        uow.outbox.publish(Topic.FAMILY_ERASED, "k", erased(), subject="s")

        async def later() -> None:
            uow.outbox.publish(Topic.FAMILY_ERASED, "k2", erased(), subject="s2")
        uow.defer("once", later)
    assert conn.committed == 1 and commits == [1]
    assert [r[1] for r in conn.outbox] == [b"k", b"k2"]
    headers = dict(zip([k.decode() for k in conn.outbox[0][3]], conn.outbox[0][4], strict=True))
    assert read_headers(list(headers.items())).source == "/regsosek/classify"


async def test_unit_of_work_rolled_back_writes_nothing_and_does_not_call_on_commit():
    conn, commits = Conn(), []
    with pytest.raises(RuntimeError):
        async with unit_of_work(Pool(conn), "classify", on_commit=lambda: commits.append(1)) as uow:
            uow.outbox.publish(Topic.FAMILY_ERASED, "k", erased(), subject="s")
            raise RuntimeError("the work failed")
    assert conn.outbox == [] and conn.rolled_back == 1 and commits == []


class OutboxConn:
    def __init__(self, ids: list[int]) -> None:
        self.rows = [{"id": i, "topic": "t", "key": b"K", "value": b"v", "header_keys": [b"n"],
                      "header_values": [b"%d" % i]} for i in ids]

    async def fetchval(self, sql: str, *args):
        if sql.startswith("select max(id)"):
            return max((r["id"] for r in self.rows), default=None)
        if "pg_try_advisory_lock" in sql:
            return True
        return any(r["id"] <= args[0] for r in self.rows)

    async def fetch(self, sql: str, limit: int):
        return self.rows[:limit]

    async def execute(self, sql: str, *args):
        if sql.startswith("delete from outbox"):
            self.rows = [r for r in self.rows if r["id"] not in args[0]]

    def transaction(self):
        return Conn().transaction()

    def is_closed(self) -> bool:
        return False


class Producer:
    def __init__(self) -> None:
        self.sent: list[bytes] = []
        self.stopped = False

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        self.stopped = True

    async def send(self, topic, value=None, key=None, headers=None):
        self.sent.append(dict(headers)["n"])
        fut = asyncio.get_running_loop().create_future()
        fut.set_result(None)
        return fut


async def test_command_root_drain_publishes_the_outbox_through_a_relay_and_stops_it():
    conn, producer = OutboxConn([1, 2, 3]), Producer()
    root = CommandRoot(ServiceSettings(service_name="classify"), Pool(conn), producer_factory=lambda: producer)
    assert await root.drain(timeout=5) == 3
    assert producer.sent == [b"1", b"2", b"3"] and producer.stopped and conn.rows == []
