"""Hostile records on every topic a service consumes, on the real broker and database:
each is dead-lettered by each service that consumes the topic, with a reason naming what is
wrong and the service, and ordinary traffic of the same SLS (same key, same partitions,
written after them) still completes end to end.

All hostile records are written up front into one world with the four services, so the
run stays short; the per-(kind, topic, service) checks share that world.
"""

from __future__ import annotations

import struct

import httpx
import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.partitioner import DefaultPartitioner
from aiokafka.record.util import calc_crc32c

from regsosek import contracts
from regsosek.contracts import EVENT_TYPES, FamilyInterview
from regsosek.examples import family_interview
from regsosek.topics import Topic, specs

from itkit import (
    BOOTSTRAP,
    Submitter,
    World,
    cloud_event,
    eventually,
    family,
    header,
    new_sls_id,
    partitions_of,
    read_topic,
    roster,
    start_producer,
)

pytestmark = pytest.mark.integration

SERVICES = ("intake", "verify", "classify", "notify")
CONSUMERS = {  # topic -> the services consuming it (each service's app.py)
    Topic.SLS_ROSTER: ("verify",), Topic.INTERVIEW_SUBMITTED: ("verify",), Topic.VERIFICATION_RESOLVED: ("verify",),
    Topic.INTERVIEW_VERIFIED: ("classify", "intake"), Topic.INTERVIEW_FLAGGED: ("classify", "intake"),
    Topic.FKP_ADJUSTMENT: ("classify",), Topic.FAMILY_CLASSIFIED: ("intake",),
    Topic.ELIGIBILITY_DECIDED: ("intake", "notify"), Topic.ELIGIBILITY_DELIVERED: ("intake",),
}
BAD_KEY = b"\xff\xfe-not-utf8"
TOO_LARGE = 1024 * 1024 + 4096  # above the default consumer_max_record_bytes (1 MiB)

# kind -> the text the dead letter's reason must contain
KINDS = {
    "null traceparent value": "header traceparent has a null value",
    "non-UTF-8 header key": "a header key is not UTF-8",
    "NUL in header key": "a header key is not UTF-8 text without NUL",
    "non-UTF-8 ce_source value": "header ce_source is not UTF-8",
    "NUL in ce_subject value": "header ce_subject contains NUL",
    "missing ce_id": "missing CloudEvents header(s): ce_id",
    "repeated ce_type": "header ce_type is repeated",
    "null record key": "record has no key",
    "value not JSON": "invalid body: value is not JSON",
    "value too large": "record too large",
    "unknown ce_type": "unknown event type",
}


def _event_type_of(topic: Topic) -> str:
    """The CloudEvents type the topic carries (topics.yaml names its contract)."""
    (spec,) = [t for t in specs() if t.name == topic.value]
    return EVENT_TYPES[getattr(contracts, spec.contract)]


def _hostile(kind: str, topic: Topic, sls: str, n: int) -> tuple[bytes | None, bytes, list[tuple[str, bytes | None]]]:
    """(key, value, headers) of one hostile record; `it_kind` marks it for the assertions."""
    data = FamilyInterview.model_validate(family_interview())
    _, value, headers = cloud_event(data, subject=f"hostile-{n}", traceparent=f"00-{'1' * 32}-{'2' * 16}-01")
    key: bytes | None = sls.encode()

    def replace(name, v):
        return [(k, v if k == name else old) for k, old in headers]

    if kind == "null traceparent value":
        headers = replace("traceparent", None)
    elif kind == "non-UTF-8 header key":
        headers = headers + [("\x01" + "P" * (len(BAD_KEY) - 2) + "\x02", b"x")]  # patched on the wire
    elif kind == "NUL in header key":
        headers = headers + [("x\x00y", b"x")]
    elif kind == "non-UTF-8 ce_source value":
        headers = replace("ce_source", b"\xff\xfe")
    elif kind == "NUL in ce_subject value":
        headers = replace("ce_subject", b"a\x00b")
    elif kind == "missing ce_id":
        headers = [h for h in headers if h[0] != "ce_id"]
    elif kind == "repeated ce_type":
        headers = headers + [("ce_type", b"id.go.bps.regsosek.other.v1")]
    elif kind == "null record key":
        key = None
    elif kind == "value not JSON":  # with the type its consumers handle: only the body is wrong
        headers = replace("ce_type", _event_type_of(topic).encode())
        value = b"\x00\xff{not json"
    elif kind == "value too large":
        value = b" " * TOO_LARGE
    elif kind == "unknown ce_type":
        headers = replace("ce_type", b"id.go.bps.regsosek.nothing.v9")
    return key, value, headers + [("it_kind", kind.encode())]


async def _send_with_raw_header_key(producer, topic: str, key: bytes, value: bytes, headers) -> None:
    """aiokafka writes header keys only from str (as UTF-8): build the batch with a placeholder
    key, swap in the non-UTF-8 bytes and fix the batch CRC, then send the batch as it is."""
    placeholder = next(k for k, _ in headers if k.startswith("\x01")).encode()
    batch = producer.create_batch()
    assert batch.append(key=key, value=value, timestamp=None, headers=headers) is not None
    buf = batch._build()
    at = buf.find(placeholder)
    buf[at:at + len(placeholder)] = BAD_KEY
    struct.pack_into(">I", buf, 17, calc_crc32c(bytes(buf[21:])))
    partitions = await partitions_of(topic)
    partition = DefaultPartitioner()(key, partitions, partitions)
    await (await producer.send_batch(batch, topic, partition=partition))


@pytest.fixture(scope="module")
async def hostile_world(stack):
    world = await World(list(SERVICES)).setup()
    try:
        sls = new_sls_id()
        producer = await start_producer(max_request_size=3 * 1024 * 1024)
        raw = None
        # not idempotent: its batches take no producer state, so a batch built by hand goes as it is
        raw = AIOKafkaProducer(bootstrap_servers=BOOTSTRAP, acks="all", linger_ms=0)
        await raw.start()
        try:
            n = 0
            for topic in CONSUMERS:
                for kind in KINDS:
                    n += 1
                    key, value, headers = _hostile(kind, topic, sls, n)
                    if kind == "non-UTF-8 header key":
                        await _send_with_raw_header_key(raw, world.topic(topic), key, value, headers)
                    else:
                        await producer.send_and_wait(world.topic(topic), key=key, value=value, headers=headers)
        finally:
            await producer.stop()
            if raw is not None:
                await raw.stop()
        procs = dict(zip(SERVICES, await world.start(*SERVICES), strict=True))
        # ordinary traffic of the same SLS, behind the hostile records on the same partitions
        entry, interview = family(sls, 1)
        async with httpx.AsyncClient(base_url=procs["intake"].url, timeout=10) as client:
            submitter = Submitter(client)
            await submitter.submit("/v1/rosters", roster(sls, [entry]), retry_for=30)
            await eventually(lambda: world.fetchval("verify", "select count(*) from rosters where sls_id = $1", sls),
                             timeout=90, what="verify to store the roster")
            await submitter.submit("/v1/interviews", interview, retry_for=30)

            async def decided():
                s = await submitter.status(interview["submission_id"])
                return s if s and s["final"] == "decided" else None

            status = await eventually(decided, timeout=120, what="the SLS's interview to be decided")
        expected = sum(len(services) for services in CONSUMERS.values()) * len(KINDS)

        async def all_dead_lettered():
            records = await read_topic(world.topic(Topic.DEAD_LETTER))
            return records if len(records) >= expected else None

        dead = await eventually(all_dead_lettered, timeout=120, interval=2, what=f"{expected} dead letters")
        yield world, status, dead
    finally:
        await world.teardown()


async def test_ordinary_traffic_completes_behind_hostile_records(hostile_world):
    _, status, _ = hostile_world
    assert status["final"] == "decided"


@pytest.mark.parametrize("kind", list(KINDS))
@pytest.mark.parametrize(("topic", "service"), [(t, s) for t, ss in CONSUMERS.items() for s in ss],
                         ids=lambda v: v.value if isinstance(v, Topic) else v)
async def test_hostile_record_is_dead_lettered(hostile_world, kind, topic, service):
    world, _, dead = hostile_world
    found = [r for r in dead if header(r, "it_kind") == kind and header(r, "dlq_topic") == world.topic(topic)
             and header(r, "dlq_service") == service]
    assert len(found) == 1, f"{kind} on {topic.value}: {len(found)} dead letters from {service}"
    r = found[0]
    reason = header(r, "dlq_reason") or ""
    assert KINDS[kind] in reason, f"{kind} on {topic.value}: reason {reason!r}"
    if kind == "null record key":
        assert r.key is None
    else:
        assert r.key is not None
    if kind == "value too large":
        assert len(r.value) == TOO_LARGE
    if kind == "non-UTF-8 header key":
        keys = [k for k, _ in r.headers]
        assert "dlq_key_hex:" + BAD_KEY.hex() in keys, keys
    if kind == "null traceparent value":
        assert ("traceparent", None) in list(r.headers)


async def test_nothing_else_dead_lettered(hostile_world):
    _, _, dead = hostile_world
    unmarked = [header(r, "dlq_reason") for r in dead if header(r, "it_kind") is None]
    assert not unmarked, f"ordinary traffic dead-lettered: {unmarked}"
