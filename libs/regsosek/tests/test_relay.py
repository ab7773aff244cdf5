"""The outbox relay's decisions without a broker: which rows are published, set aside
or kept, when the producer is replaced, and when the outbox counts as stalled."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aiokafka.errors import (
    InvalidTopicError,
    KafkaConnectionError,
    KafkaTimeoutError,
    MessageSizeTooLargeError,
    NotLeaderForPartitionError,
    OutOfOrderSequenceNumber,
    ProducerClosed,
    ProducerFenced,
    RecordListTooLargeError,
    RequestTimedOutError,
    TopicAuthorizationFailedError,
    UnknownError,
    UnknownProducerId,
    UnknownTopicOrPartitionError,
)

from regsosek.messaging.outbox import RelayWakeup
from regsosek.messaging.relay import Action, OutboxRelay, ProducerUnusable, StallWatch, classify_error, send_batch
from regsosek.settings import ServiceSettings


def row(i: int, topic: str = "t", key: bytes = b"K") -> dict[str, Any]:
    return {"id": i, "topic": topic, "key": key, "value": b"v%d" % i, "header_keys": [b"ce_id"],
            "header_values": [b"%d" % i]}


class FakeProducer:
    """`outcomes[id]`: an exception the row's future fails with; `send_raises[id]`: one
    `send` itself raises; every other row is acknowledged."""

    def __init__(self, outcomes=None, send_raises=None) -> None:
        self.outcomes: dict[int, BaseException] = outcomes or {}
        self.send_raises: dict[int, BaseException] = send_raises or {}
        self.sent: list[int] = []
        self.started = self.stopped = False

    async def start(self) -> None:
        self.started = True

    async def stop(self) -> None:
        self.stopped = True

    async def send(self, topic, value=None, key=None, headers=None):
        i = int(dict(headers)["ce_id"])
        assert dict(headers)["ce_id"] == b"%d" % i and isinstance(next(iter(dict(headers))), str)
        if i in self.send_raises:
            raise self.send_raises[i]
        self.sent.append(i)
        fut = asyncio.get_running_loop().create_future()
        if i in self.outcomes:
            fut.set_exception(self.outcomes[i])
        else:
            fut.set_result(object())
        return fut


@pytest.mark.parametrize(
    "error,in_flight,action",
    [
        (MessageSizeTooLargeError(), True, Action.SET_ASIDE),
        (MessageSizeTooLargeError(), False, Action.SET_ASIDE),
        (RecordListTooLargeError(), True, Action.SET_ASIDE),
        (TopicAuthorizationFailedError("t"), False, Action.SET_ASIDE),
        (InvalidTopicError(), True, Action.SET_ASIDE),
        (OutOfOrderSequenceNumber(), True, Action.REBUILD),
        (UnknownProducerId(), True, Action.REBUILD),
        (ProducerFenced(), True, Action.REBUILD),
        (KafkaTimeoutError(), False, Action.REBUILD),
        (ProducerClosed(), False, Action.REBUILD),
        (UnknownError(), True, Action.REBUILD),  # unclassified broker refusal: never set aside on a guess
        (UnknownError(), False, Action.REBUILD),
        # an expired batch of a leaderless partition used a sequence number
        (NotLeaderForPartitionError(), True, Action.REBUILD),
        (UnknownTopicOrPartitionError(), False, Action.RETRY),  # topic not created yet
        (KafkaConnectionError(), False, Action.RETRY),
        (RequestTimedOutError(), False, Action.RETRY),
        (OSError("db away"), False, Action.RETRY),
        (TypeError("a bug"), False, Action.RETRY),
    ],
)
def test_error_actions(error, in_flight, action):
    assert classify_error(error, in_flight=in_flight) is action


async def test_all_acknowledged():
    p = FakeProducer()
    r = await send_batch(p, [row(1), row(2, key=b"L"), row(3)])
    assert (r.published, r.rejected, r.waiting, r.rebuild_for, r.stopped_by) == ([1, 2, 3], [], [], None, None)


async def test_refused_row_set_aside_later_rows_of_its_key_kept_for_a_new_producer():
    # 3 is too large for its topic; 4 (same key, same partition) comes back out of sequence
    # because aiokafka used a sequence number for 3; 5 is another key's and goes through.
    p = FakeProducer(outcomes={3: MessageSizeTooLargeError(), 4: OutOfOrderSequenceNumber()})
    r = await send_batch(p, [row(1), row(2, key=b"L"), row(3), row(4), row(5, key=b"L")])
    assert r.published == [1, 2, 5]
    assert [j.row["id"] for j in r.rejected] == [3]
    assert r.rejected[0].error_type == "MessageSizeTooLargeError"
    assert "MessageSizeTooLargeError" in r.rejected[0].reason
    assert r.waiting == [4]
    assert isinstance(r.rebuild_for, MessageSizeTooLargeError)
    assert r.removed == 4


async def test_refused_last_row_still_replaces_the_producer():
    # Nothing after it in this batch, but the next batch of its partition would be out of sequence.
    r = await send_batch(FakeProducer(outcomes={2: MessageSizeTooLargeError()}), [row(1), row(2)])
    assert r.published == [1] and [j.row["id"] for j in r.rejected] == [2]
    assert r.rebuild_for is not None


async def test_refused_before_queueing_needs_no_new_producer():
    # the producer's own size check (max_request_size) raises from send: no sequence number used
    p = FakeProducer(send_raises={2: MessageSizeTooLargeError("larger than max_request_size")})
    r = await send_batch(p, [row(1), row(2), row(3)])
    assert r.published == [1, 3] and [j.row["id"] for j in r.rejected] == [2]
    assert r.rebuild_for is None and r.stopped_by is None and r.waiting == []


async def test_illegal_topic_set_aside_without_sending():
    p = FakeProducer()
    r = await send_batch(p, [row(1), row(2, topic="bad topic/name"), row(3), row(4, topic="..")])
    assert p.sent == [1, 3]
    assert [(j.row["id"], j.error_type) for j in r.rejected] == [(2, "InvalidTopicError"), (4, "InvalidTopicError")]
    assert r.rebuild_for is None


async def test_transient_send_failure_stops_the_batch_keeps_the_producer():
    # topic 'x' has no metadata (not created yet): the rows from there on wait, in order
    p = FakeProducer(send_raises={2: UnknownTopicOrPartitionError()})
    r = await send_batch(p, [row(1), row(2, topic="x"), row(3), row(4, key=b"L")])
    assert p.sent == [1]
    assert r.published == [1] and r.waiting == [2, 3, 4] and r.rejected == []
    assert isinstance(r.stopped_by, UnknownTopicOrPartitionError) and r.rebuild_for is None


@pytest.mark.parametrize("error", [ProducerClosed(), KafkaTimeoutError(), ProducerFenced()])
async def test_unusable_producer_on_send_rebuilds(error):
    r = await send_batch(FakeProducer(send_raises={2: error}), [row(1), row(2), row(3)])
    assert r.published == [1] and r.waiting == [2, 3]
    assert r.rebuild_for is error and r.stopped_by is error


# ---------------------------------------------------------------- the relay with a fake database


class FakeConn:
    def __init__(self, rows: list[dict]) -> None:
        self.rows = rows
        self.rejected: list[tuple] = []
        self.deleted: list[int] = []
        self.in_transaction = 0

    async def fetch(self, sql: str, limit: int):
        return self.rows[:limit]

    async def executemany(self, sql: str, args):
        assert self.in_transaction and "insert into outbox_rejected" in sql
        self.rejected.extend(args)

    async def execute(self, sql: str, ids):
        assert self.in_transaction and sql.startswith("delete from outbox")
        self.deleted.extend(ids)
        self.rows = [r for r in self.rows if r["id"] not in ids]

    def transaction(self):
        conn = self

        class Tx:
            async def __aenter__(self):
                conn.in_transaction += 1

            async def __aexit__(self, *exc):
                conn.in_transaction -= 1

        return Tx()


def relay_with(*producers: FakeProducer) -> tuple[OutboxRelay, list[FakeProducer]]:
    made: list[FakeProducer] = []
    queue = list(producers)

    def factory():
        made.append(queue.pop(0))
        return made[-1]

    return OutboxRelay(ServiceSettings(service_name="unit"), lambda: None, RelayWakeup(), factory), made


async def test_relay_sets_aside_replaces_producer_and_resends_in_order():
    first = FakeProducer(outcomes={2: MessageSizeTooLargeError(), 3: OutOfOrderSequenceNumber()})
    second = FakeProducer()
    relay, made = relay_with(first, second)
    conn = FakeConn([row(1), row(2), row(3), row(4, key=b"L")])

    assert await relay.publish_once(conn) == 3  # 1 and 4 published, 2 set aside
    assert sorted(conn.deleted) == [1, 2, 4]
    assert [(a[0], a[1]) for a in conn.rejected] == [(2, "MessageSizeTooLargeError")]
    assert first.stopped and relay.producer is None  # replaced before the next batch

    assert await relay.publish_once(conn) == 1
    assert made == [first, second] and second.sent == [3]
    assert await relay.publish_once(conn) == 0 and conn.rows == []


async def test_relay_batch_without_progress_raises_after_dropping_the_producer():
    first = FakeProducer(outcomes={1: OutOfOrderSequenceNumber(), 2: OutOfOrderSequenceNumber()})
    relay, _ = relay_with(first, FakeProducer())
    conn = FakeConn([row(1), row(2)])
    with pytest.raises(ProducerUnusable):
        await relay.publish_once(conn)
    assert first.stopped and relay.producer is None and conn.deleted == []


async def test_relay_transient_failure_keeps_producer():
    p = FakeProducer(send_raises={1: UnknownTopicOrPartitionError()})
    relay, made = relay_with(p)
    conn = FakeConn([row(1, topic="missing")])
    with pytest.raises(UnknownTopicOrPartitionError):
        await relay.publish_once(conn)
    assert relay.producer is p and not p.stopped and conn.rows


async def test_relay_replaces_a_closed_producer_before_sending():
    first, second = FakeProducer(), FakeProducer()
    relay, made = relay_with(second)
    conn = FakeConn([row(1)])
    relay.producer = first
    first._closed = True  # aiokafka's flag once stopped
    assert await relay.publish_once(conn) == 1
    assert first.stopped and second.sent == [1]


# ---------------------------------------------------------------- stall detection


def test_stall_watch():
    w = StallWatch(stall_s=60, now=0)
    assert w.problem(10) is None  # starting
    w.observe(10, 0, None)
    assert w.problem(500) == "outbox not checked for 490s"  # the monitor stopped observing
    w.observe(500, 5, 100)
    assert w.problem(555) is None
    w.observe(555, 7, 100)  # new rows arrive, the oldest does not leave
    assert w.problem(561) == "stalled 61s with 7 rows waiting"
    w.observe(562, 6, 101)  # it left: progress
    assert w.problem(563) is None and w.stalled_for(563) == 1
    w.observe(700, 0, None)  # emptied
    assert w.problem(700) is None and w.stalled_for(700) == 0
    w.failed(OSError())
    assert w.problem(800) == "outbox not checked for 100s (OSError)"

