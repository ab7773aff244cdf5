"""Reliability rules 1, 2 and 4 of docs/ARCHITECTURE.md on the real broker and database,
through the verify service fed directly with CloudEvents records:

- a crash between the database commit and the Kafka offset commit redelivers the
  batch, and the inbox makes the redelivery change nothing;
- the same event id twice changes nothing;
- poison records go to the dead-letter topic with their original bytes and a reason,
  and the partition keeps flowing past them.
"""

from __future__ import annotations

import uuid

import pytest
from aiokafka import TopicPartition

from regsosek.contracts import CONSUMABLE_EVENT_TYPES as EVENT_TYPES  # v1 (legacy) types
from regsosek.contracts import FamilyInterview, SlsRoster
from regsosek.topics import Topic

from itkit import (
    FAULT_EXIT_AFTER_DB_COMMIT,
    FAULT_EXIT_CODE,
    World,
    by_subject,
    cloud_event,
    committed_offsets,
    end_offsets,
    eventually,
    family,
    family_id_of,
    header,
    headers_of,
    new_sls_id,
    read_topic,
    roster,
    start_producer,
)

pytestmark = pytest.mark.integration

INTERVIEW_TYPE = EVENT_TYPES[FamilyInterview]


@pytest.fixture(scope="module")
async def verify_world(stack):
    """A verify service of its own, shared by the tests that need no fault."""
    world = await World(["verify"]).setup()
    try:
        (verify,) = await world.start("verify")
        yield world, verify
    finally:
        await world.teardown()


async def _send(producer, topic: str, key: str, value: bytes | None, headers) -> TopicPartition:
    md = await producer.send_and_wait(topic, value=value, key=key.encode(), headers=headers)
    return TopicPartition(topic, md.partition), md.offset


async def _caught_up(group: str, tps: list[TopicPartition]) -> bool:
    committed = await committed_offsets(group)
    ends = await end_offsets(tps)
    return all(committed.get(tp, -1) >= ends[tp] for tp in tps)


async def test_consumer_crash_after_db_commit(stack, producer):
    world = await World(["verify"]).setup()
    try:
        sls = new_sls_id()
        entry, iv_doc = family(sls, 1)
        fid = family_id_of(iv_doc)
        roster_id, roster_value, roster_headers = cloud_event(SlsRoster.model_validate(roster(sls, [entry])), subject=sls)
        iv_id, iv_value, iv_headers = cloud_event(FamilyInterview.model_validate(iv_doc), subject=fid)
        # Both records are in the log before verify starts, so its first batch holds both.
        roster_tp, _ = await _send(producer, world.topic(Topic.SLS_ROSTER), sls, roster_value, roster_headers)
        iv_tp, _ = await _send(producer, world.topic(Topic.INTERVIEW_SUBMITTED), sls, iv_value, iv_headers)
        tps = [roster_tp, iv_tp]

        # Keep verify's relay off the outbox, so what the crashed run left is observable.
        lock = await world.hold_relay_lock("verify")
        crashing = world.process("verify", **{FAULT_EXIT_AFTER_DB_COMMIT: "1"}).start()
        rc = await crashing.wait_exit(60)
        assert rc == FAULT_EXIT_CODE, f"verify should die at the fault point\n{crashing.log_tail()}"

        # The transaction committed: inbox, effect and outgoing event are in the database ...
        inbox = {r["event_id"] for r in await world.fetch("verify", "select event_id from inbox")}
        assert {roster_id, iv_id} <= inbox, f"the first batch should hold both records; inbox: {inbox}"
        assert await world.fetchval("verify", "select state from interviews where family_id = $1", fid) == "verified"
        pending = await world.fetchval("verify", "select count(*) from outbox where topic = $1",
                                       world.topic(Topic.INTERVIEW_VERIFIED))
        assert pending == 1
        # ... but the offsets were not committed, and nothing was published.
        committed = await committed_offsets(world.group("verify"))
        assert all(committed.get(tp, 0) == 0 for tp in tps), f"offsets committed before the crash: {committed}"
        assert not await read_topic(world.topic(Topic.INTERVIEW_VERIFIED))

        await lock.close()
        (verify,) = await world.start("verify")

        # The restarted consumer gets the batch again and commits past it ...
        await eventually(lambda: _caught_up(world.group("verify"), tps), timeout=30,
                         what="verify's group to commit past the redelivered batch")
        assert await verify.metric("regsosek_events_consumed_total") >= 2, "the batch was not redelivered"
        await eventually(lambda: world.fetchval("verify", "select count(*) = 0 from outbox"), timeout=30,
                         what="verify's relay to drain the outbox")

        # ... and applying it again changed nothing.
        assert await world.fetchval("verify", "select count(*) from inbox where event_id = any($1::text[])",
                                    [roster_id, iv_id]) == 2
        assert await world.fetchval("verify", "select count(*) from interviews where family_id = $1", fid) == 1
        assert await world.fetchval("verify", "select revision from rosters where sls_id = $1", sls) == 1, \
            "the roster was applied twice"
        assert await world.fetchval("verify", "select count(*) from roster_history where sls_id = $1", sls) == 1
        verified = by_subject(await read_topic(world.topic(Topic.INTERVIEW_VERIFIED)))
        assert len(verified.get(fid, [])) == 1, f"interview-verified records for {fid}: {len(verified.get(fid, []))}"
        assert verify.alive
    finally:
        await world.teardown()


async def test_duplicate_redelivery_is_harmless(verify_world, producer):
    world, verify = verify_world
    sls = new_sls_id()
    entry_a, iv_a = family(sls, 1)
    entry_b, iv_b = family(sls, 2)
    fid_a, fid_b = family_id_of(iv_a), family_id_of(iv_b)
    roster_id, roster_value, roster_headers = cloud_event(
        SlsRoster.model_validate(roster(sls, [entry_a, entry_b])), subject=sls)
    a_id, a_value, a_headers = cloud_event(FamilyInterview.model_validate(iv_a), subject=fid_a)
    _, b_value, b_headers = cloud_event(FamilyInterview.model_validate(iv_b), subject=fid_b)
    roster_topic, iv_topic = world.topic(Topic.SLS_ROSTER), world.topic(Topic.INTERVIEW_SUBMITTED)

    # The same event twice in a row (one batch, most likely) ...
    for _ in range(2):
        await _send(producer, roster_topic, sls, roster_value, roster_headers)
    for _ in range(2):
        await _send(producer, iv_topic, sls, a_value, a_headers)
    await eventually(lambda: world.fetchval("verify", "select state = 'verified' from interviews where family_id = $1",
                                            fid_a), timeout=30, what="family A verified")
    # ... and once more after it was applied, followed by a sentinel on the same partition.
    await _send(producer, roster_topic, sls, roster_value, roster_headers)
    await _send(producer, iv_topic, sls, a_value, a_headers)
    iv_tp, sentinel_offset = await _send(producer, iv_topic, sls, b_value, b_headers)
    await eventually(lambda: world.fetchval("verify", "select state = 'verified' from interviews where family_id = $1",
                                            fid_b), timeout=30, what="sentinel family B verified")
    await eventually(lambda: _caught_up(world.group("verify"), [iv_tp]), timeout=30, what="offsets past the sentinel")
    await eventually(lambda: world.fetchval("verify", "select count(*) = 0 from outbox"), timeout=30,
                     what="verify's outbox drained")

    assert await world.fetchval("verify", "select revision from rosters where sls_id = $1", sls) == 1
    assert await world.fetchval("verify", "select count(*) from roster_history where sls_id = $1", sls) == 1
    assert await world.fetchval("verify", "select count(*) from inbox where event_id = any($1::text[])",
                                [roster_id, a_id]) == 2
    verified = by_subject(await read_topic(world.topic(Topic.INTERVIEW_VERIFIED)))
    assert len(verified.get(fid_a, [])) == 1, "a redelivered interview was verified again"
    assert len(verified.get(fid_b, [])) == 1
    assert sentinel_offset >= 3  # the duplicates really were on the partition before the sentinel


async def test_poison_message_goes_to_dead_letter(verify_world, producer):
    world, verify = verify_world
    sls = new_sls_id()
    iv_topic = world.topic(Topic.INTERVIEW_SUBMITTED)
    entries, interviews = zip(*(family(sls, b) for b in (1, 2)), strict=True)

    def ce_headers(ce_type: str = INTERVIEW_TYPE, **override: bytes) -> list[tuple[str, bytes]]:
        h = {"ce_id": str(uuid.uuid4()).encode(), "ce_type": ce_type.encode(), "ce_source": b"/poison",
             "ce_specversion": b"1.0", "ce_time": b"2022-10-20T10:00:00+00:00", "ce_subject": b"nobody",
             "content-type": b"application/json"}
        h.update(override)
        return list(h.items())

    def marker(kind: str) -> bytes:
        return f'{{"poison": "{kind}", "nonce": "{uuid.uuid4()}"}}'.encode()

    # kind -> (headers, value, a fragment the reason must contain)
    poison = {
        "invalid_json": (ce_headers(), b'{"submission_id": "' + uuid.uuid4().hex.encode(), "invalid body"),
        "missing_headers": ([("content-type", b"application/json")], marker("missing_headers"),
                            "missing CloudEvents header"),
        "unknown_type": (ce_headers("id.go.bps.regsosek.no.such.event.v1"), marker("unknown_type"), "event type"),
        "non_utf8_header": (ce_headers(ce_source=b"\xff\xfe\xfd"), marker("non_utf8_header"), "UTF-8"),
        "schema_invalid": (ce_headers(), marker("schema_invalid"), "invalid body"),
        "no_value": (ce_headers(), None, "record has no value"),
    }
    offsets = {}
    for kind, (headers, value, _) in poison.items():
        _, offsets[kind] = await _send(producer, iv_topic, sls, value, headers)
    # Valid records after the poison: the roster, and two interviews on the same partition.
    _, roster_value, roster_headers = cloud_event(SlsRoster.model_validate(roster(sls, list(entries))), subject=sls)
    await _send(producer, world.topic(Topic.SLS_ROSTER), sls, roster_value, roster_headers)
    for doc in interviews:
        _, value, headers = cloud_event(FamilyInterview.model_validate(doc), subject=family_id_of(doc))
        iv_tp, last_offset = await _send(producer, iv_topic, sls, value, headers)
        assert last_offset > max(offsets.values())

    fids = [family_id_of(doc) for doc in interviews]

    async def all_verified():
        verified = by_subject(await read_topic(world.topic(Topic.INTERVIEW_VERIFIED)))
        return all(f in verified for f in fids) and verified

    verified = await eventually(all_verified, timeout=30, what="the valid interviews after the poison to be verified")
    assert all(len(verified[f]) == 1 for f in fids)

    def dead_letters_for(records, kind):
        headers, value, _ = poison[kind]
        if value is None:
            ce_id = dict(headers)["ce_id"]
            return [r for r in records if r.value is None and headers_of(r).get("ce_id") == ce_id]
        return [r for r in records if r.value == value]

    async def all_dead_lettered():
        records = await read_topic(world.topic(Topic.DEAD_LETTER))
        return all(dead_letters_for(records, k) for k in poison) and records

    dlq = await eventually(all_dead_lettered, timeout=30, what="every poison record on the dead-letter topic")
    for kind, (headers, value, fragment) in poison.items():
        found = dead_letters_for(dlq, kind)
        assert len(found) == 1, f"{kind}: {len(found)} dead letters"
        r = found[0]
        reason = header(r, "dlq_reason") or ""
        assert reason, f"{kind}: no dlq_reason"
        assert fragment.lower() in reason.lower(), f"{kind}: reason {reason!r}"
        assert r.key == sls.encode(), f"{kind}: dead letter lost the original key"
        assert r.value == value
        assert header(r, "dlq_topic") == iv_topic
        assert header(r, "dlq_service") == "verify"
        assert header(r, "dlq_offset") == str(offsets[kind])
        for k, v in headers:  # the original headers travel with it, bytes as they were
            assert (k, v) in list(r.headers), f"{kind}: original header {k} missing or changed"

    # The partition flowed past the poison: its offset is committed to the end.
    await eventually(lambda: _caught_up(world.group("verify"), [iv_tp]), timeout=30, what="offsets past the poison")
    assert verify.alive


async def test_event_id_the_database_cannot_store_goes_to_dead_letter(stack, producer):
    world = await World(["verify"]).setup()  # its own verify: a stalled partition must not leak into other tests
    try:
        await world.start("verify", REGSOSEK_RETRY_MAX_S="1")  # short pauses between the retries of a failed batch
        sls = new_sls_id()
        (entry_a, iv_a), (entry_b, iv_b) = family(sls, 1), family(sls, 2)
        _, roster_value, roster_headers = cloud_event(SlsRoster.model_validate(roster(sls, [entry_a, entry_b])),
                                                      subject=sls)
        await _send(producer, world.topic(Topic.SLS_ROSTER), sls, roster_value, roster_headers)
        iv_topic = world.topic(Topic.INTERVIEW_SUBMITTED)
        _, bad_value, bad_headers = cloud_event(FamilyInterview.model_validate(iv_a), subject=family_id_of(iv_a),
                                                event_id=f"nul\x00{uuid.uuid4()}")
        await _send(producer, iv_topic, sls, bad_value, bad_headers)
        _, value, headers = cloud_event(FamilyInterview.model_validate(iv_b), subject=family_id_of(iv_b))
        await _send(producer, iv_topic, sls, value, headers)

        async def dead_lettered():
            return [r for r in await read_topic(world.topic(Topic.DEAD_LETTER)) if r.value == bad_value]

        await eventually(dead_lettered, timeout=15, what="the record to be dead-lettered")
        await eventually(lambda: world.fetchval("verify", "select state = 'verified' from interviews "
                                                          "where family_id = $1", family_id_of(iv_b)),
                         timeout=15, what="the next record on the partition to be processed")
    finally:
        await world.teardown()


async def test_large_poison_record_goes_to_dead_letter(stack):
    world = await World(["verify"]).setup()
    big_producer = await start_producer(max_request_size=2_000_000)
    try:
        await world.start("verify")
        sls = new_sls_id()
        entry, iv = family(sls, 1)
        fid = family_id_of(iv)
        iv_topic = world.topic(Topic.INTERVIEW_SUBMITTED)
        poison = b'{"padding": "' + b"x" * 1_200_000 + b'"}'  # within the topic's limit
        await _send(big_producer, iv_topic, sls, poison, cloud_event(FamilyInterview.model_validate(iv),
                                                                     subject=fid)[2])
        _, roster_value, roster_headers = cloud_event(SlsRoster.model_validate(roster(sls, [entry])), subject=sls)
        await _send(big_producer, world.topic(Topic.SLS_ROSTER), sls, roster_value, roster_headers)
        _, value, headers = cloud_event(FamilyInterview.model_validate(iv), subject=fid)
        await _send(big_producer, iv_topic, sls, value, headers)

        async def dead_lettered():
            return [r for r in await read_topic(world.topic(Topic.DEAD_LETTER)) if r.value == poison]

        await eventually(dead_lettered, timeout=15, what="the large record to be dead-lettered")
        await eventually(lambda: read_topic(world.topic(Topic.INTERVIEW_VERIFIED)), timeout=15,
                         what="the valid interview after it to be published as verified")
    finally:
        await big_producer.stop()
        await world.teardown()
