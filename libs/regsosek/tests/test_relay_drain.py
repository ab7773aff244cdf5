"""OutboxRelay.drain, the public way a command publishes what it wrote before exiting:
without a broker or a database (a fake producer and connection)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aiokafka.errors import UnknownTopicOrPartitionError

from regsosek.messaging.outbox import RelayWakeup
from regsosek.messaging.relay import RELAY_LOCK, OutboxRelay
from regsosek.settings import ServiceSettings


def row(i: int) -> dict[str, Any]:
    return {"id": i, "topic": "t", "key": b"K", "value": b"v%d" % i, "header_keys": [b"ce_id"],
            "header_values": [b"%d" % i]}


class Producer:
    def __init__(self, send_raises: dict[int, BaseException] | None = None) -> None:
        self.send_raises = dict(send_raises or {})
        self.sent: list[int] = []
        self.started = self.stopped = False

    async def start(self) -> None:
        self.started = True

    async def stop(self) -> None:
        self.stopped = True

    async def send(self, topic, value=None, key=None, headers=None):
        i = int(dict(headers)["ce_id"])
        if i in self.send_raises:
            raise self.send_raises.pop(i)
        self.sent.append(i)
        fut = asyncio.get_running_loop().create_future()
        fut.set_result(None)
        return fut


class Outbox:
    """A connection to an outbox table; `other_relay` holds the relay lock until it has sent
    `other_sends` rows (one per poll), like a running service's relay."""

    def __init__(self, ids: list[int], *, other_relay: bool = False, other_sends: int | None = None) -> None:
        self.rows = [row(i) for i in ids]
        self.other_relay = other_relay
        self.other_sends = other_sends
        self.locked_by_us = False
        self.unlocked = 0

    async def fetchval(self, sql: str, *args):
        if sql.startswith("select max(id)"):
            return max((r["id"] for r in self.rows), default=None)
        if "pg_try_advisory_lock" in sql:
            assert args == (RELAY_LOCK,)
            if self.other_relay:
                self._other_relay_step()
                return False
            self.locked_by_us = True
            return True
        if sql.startswith("select exists"):
            return any(r["id"] <= args[0] for r in self.rows)
        raise AssertionError(sql)

    def _other_relay_step(self) -> None:
        if self.rows and self.other_sends:
            self.rows.pop(0)
            self.other_sends -= 1
        if self.other_sends == 0:
            self.other_relay = False  # that relay stopped: the lock is free

    async def fetch(self, sql: str, limit: int):
        assert self.locked_by_us
        return self.rows[:limit]

    async def execute(self, sql: str, *args):
        if "pg_advisory_unlock" in sql:
            self.locked_by_us = False
            self.unlocked += 1
            return
        assert sql.startswith("delete from outbox")
        self.rows = [r for r in self.rows if r["id"] not in args[0]]

    async def executemany(self, sql: str, args):
        raise AssertionError("nothing is set aside here")

    def transaction(self):
        class Tx:
            async def __aenter__(self):
                return None

            async def __aexit__(self, *exc):
                return False

        return Tx()

    def is_closed(self) -> bool:
        return False


class Pool:
    def __init__(self, conn: Outbox) -> None:
        self.conn = conn

    def acquire(self):
        conn = self.conn

        class Acquired:
            async def __aenter__(self):
                return conn

            async def __aexit__(self, *exc):
                return False

        return Acquired()


def relay(conn: Outbox, *producers: Producer, batch: int = 2) -> tuple[OutboxRelay, list[Producer]]:
    queue, made = list(producers), []

    def factory():
        made.append(queue.pop(0))
        return made[-1]

    settings = ServiceSettings(service_name="unit", relay_batch_size=batch, retry_initial_s=0.001, retry_max_s=0.001)
    return OutboxRelay(settings, lambda: Pool(conn), RelayWakeup(), factory), made


async def test_drain_publishes_every_committed_row_in_order_then_releases_the_lock_and_stops():
    conn = Outbox([1, 2, 3, 4, 5])
    r, made = relay(conn, Producer())
    assert await r.drain() == 5
    assert made[0].sent == [1, 2, 3, 4, 5] and made[0].stopped and r.producer is None
    assert conn.rows == [] and conn.unlocked == 1 and not conn.locked_by_us


async def test_drain_of_an_empty_outbox_sends_nothing_and_takes_no_lock():
    conn = Outbox([])
    r, made = relay(conn, Producer())
    assert await r.drain() == 0
    assert made == [] and conn.unlocked == 0


async def test_drain_waits_for_the_running_services_relay_and_publishes_nothing_itself():
    # The other relay sends one row per poll and keeps the lock after the rows are gone.
    conn = Outbox([1, 2, 3], other_relay=True, other_sends=10)
    r, made = relay(conn, Producer())
    assert await r.drain(poll_s=0) == 0
    assert conn.rows == [] and made == []


async def test_drain_takes_over_when_the_other_relay_lets_the_lock_go():
    conn = Outbox([1, 2, 3, 4], other_relay=True, other_sends=1)
    r, made = relay(conn, Producer())
    assert await r.drain(poll_s=0) == 3  # row 1 went through the other relay, 2..4 through this one
    assert made[0].sent == [2, 3, 4] and conn.unlocked == 1


async def test_drain_retries_a_transient_failure():
    conn = Outbox([1, 2])
    first = Producer(send_raises={1: UnknownTopicOrPartitionError()})
    r, made = relay(conn, first)
    assert await r.drain() == 2
    assert made == [first] and first.sent == [1, 2]  # a topic not there yet: same producer, tried again


async def test_drain_gives_up_after_its_timeout_with_rows_left():
    conn = Outbox([1], other_relay=True, other_sends=None)
    r, _ = relay(conn, Producer())
    with pytest.raises(TimeoutError):
        await r.drain(timeout=-1.0, poll_s=0)  # already past its deadline
    assert conn.rows  # nothing was lost: the row waits in the outbox
