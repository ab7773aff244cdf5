"""Work deferred to just before commit (e.g. verify's recount that publishes sls-completed)
runs in the trace of the events that asked for it, so what it publishes carries their trace."""

from __future__ import annotations

from datetime import UTC, datetime
from uuid import uuid4

from opentelemetry.sdk.trace import TracerProvider

from regsosek.contracts import SlsCompleted
from regsosek.messaging import Outbox, UnitOfWork
from regsosek.telemetry import trace_id_of
from regsosek.topics import Topic

SLS = "64720100010001"
tracer = TracerProvider().get_tracer("test")


def _completed() -> SlsCompleted:
    return SlsCompleted(sls_id=SLS, roster_revision=1, roster_submission_id=uuid4(), expected=1, interviewed=1,
                        verified=1, flagged=0, absent=0, completed_at=datetime.now(UTC))


def _traceparent(outbox: Outbox) -> str | None:
    (record,) = outbox.pending
    return dict(record.headers).get("traceparent", b"").decode() or None


async def test_deferred_work_publishes_in_the_trace_of_the_event_that_asked_last():
    uow = UnitOfWork(conn=None, outbox=Outbox("/regsosek/test"))  # type: ignore[arg-type]

    async def recount() -> None:
        uow.outbox.publish(Topic.SLS_COMPLETED, SLS, _completed(), subject=SLS)

    trace_ids = []
    for _ in range(3):  # three events of one batch ask for the same recount
        with tracer.start_as_current_span("event") as span:
            trace_ids.append(format(span.get_span_context().trace_id, "032x"))
            uow.defer(("progress", SLS), recount)
    assert len(uow.deferred) == 1

    await uow.run_deferred()  # at commit time, outside every event's span

    assert trace_id_of(_traceparent(uow.outbox)) == trace_ids[-1]
    assert not uow.deferred


async def test_deferred_work_without_a_causing_trace_publishes_without_one():
    uow = UnitOfWork(conn=None, outbox=Outbox("/regsosek/test"))  # type: ignore[arg-type]

    async def recount() -> None:
        uow.outbox.publish(Topic.SLS_COMPLETED, SLS, _completed(), subject=SLS)

    uow.defer(("progress", SLS), recount)
    await uow.run_deferred()
    assert _traceparent(uow.outbox) is None


async def test_a_dead_lettered_event_leaves_no_deferred_work_or_cached_entries_behind():
    """The isolated retry undoes what a failing event changed outside its savepoint: entries it
    appended to a cached list that deferred work will read, and work it deferred."""
    from regsosek.messaging.consumer import EventConsumer, Parsed
    from regsosek.settings import ServiceSettings

    class _Tx:
        async def __aenter__(self):
            return self

        async def __aexit__(self, *exc):
            return False

    class _Conn:
        def transaction(self):
            return _Tx()

    uow = UnitOfWork(conn=_Conn(), outbox=Outbox("/regsosek/test"))  # type: ignore[arg-type]
    seen: list[list[str]] = []

    async def handler(u, msg):
        items = u.cache.setdefault("items", [])
        items.append(msg.envelope.id)

        async def work():
            seen.append(list(items))
        u.defer("items", work)
        if msg.envelope.id == "bad":
            raise RuntimeError("broken invariant")

    consumer = EventConsumer.__new__(EventConsumer)
    consumer.settings = ServiceSettings(service_name="test")
    consumer.handlers = {}
    from regsosek.envelope import Envelope

    def parsed(event_id):
        env = Envelope(id=event_id, type="t", source="s", time="", subject="")
        rec = type("R", (), {"topic": "t", "partition": 0, "offset": 0, "headers": (), "key": b"k", "value": b"{}"})()
        return Parsed(rec, envelope=env, data=None)

    consumer.handlers = {"t": handler}
    for event_id in ("good", "bad"):
        await consumer._apply_one(uow, parsed(event_id), True)
    await uow.run_deferred()
    assert seen == [["good"]]
