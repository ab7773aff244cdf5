"""Reliability rule 3 of ARCHITECTURE.md on the real broker and database: the outbox
relay dies in the middle of a batch, after Kafka acknowledged part of it and before
the rows were deleted. On restart every row is published, each key's order is kept,
and the downstream consumer applies each event once.

And the relay heals itself without a restart: a row the broker refuses for good is
set aside (outbox_rejected) while the rows around it, of its key and others, are
published in order; a relay that cannot publish shows in readiness and metrics, and
recovers when the cause goes away.
"""

from __future__ import annotations

import asyncio
import uuid

import asyncpg
import httpx
import pytest
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from regsosek.topics import Topic

from itkit import (
    BOOTSTRAP,
    FAULT_EXIT_CODE,
    FAULT_RELAY_EXIT_AFTER_SENDS,
    Submitter,
    World,
    by_subject,
    eventually,
    family,
    family_id_of,
    header,
    new_sls_id,
    read_topic,
    roster,
)

pytestmark = pytest.mark.integration

SLS_COUNT = 3
FAMILIES_PER_SLS = 5
SENDS_BEFORE_CRASH = 8


async def test_relay_crash_mid_batch(stack):
    world = await World(["intake", "verify"]).setup()
    try:
        # While the test holds the relay's lock, intake accepts submissions into its
        # outbox but publishes nothing: the backlog becomes one relay batch.
        lock = await world.hold_relay_lock("intake")
        intake = world.process("intake", **{FAULT_RELAY_EXIT_AFTER_SENDS: str(SENDS_BEFORE_CRASH)}).start()
        verify = world.process("verify").start()
        await intake.wait_ready()
        await verify.wait_ready()

        slss = [new_sls_id() for _ in range(SLS_COUNT)]
        families = {s: [family(s, b) for b in range(1, FAMILIES_PER_SLS + 1)] for s in slss}
        # expected[(topic, key)] = event ids in the order intake accepted them
        expected: dict[tuple[str, str], list[str]] = {}
        async with httpx.AsyncClient(base_url=intake.url, timeout=10) as client:
            submitter = Submitter(client)
            for s in slss:
                receipt = await submitter.submit("/v1/rosters", roster(s, [e for e, _ in families[s]]))
                expected.setdefault((world.topic(Topic.SLS_ROSTER), s), []).append(receipt["event_id"])
            for i in range(FAMILIES_PER_SLS):  # interleaved over the keys
                for s in slss:
                    receipt = await submitter.submit("/v1/interviews", families[s][i][1])
                    assert receipt["status"] == "accepted"
                    expected.setdefault((world.topic(Topic.INTERVIEW_SUBMITTED), s), []).append(receipt["event_id"])
        # each interview also puts its members' sealed NIKs on member-identities (one relay batch with the rest)
        interviews = SLS_COUNT * FAMILIES_PER_SLS
        backlog = sum(len(v) for v in expected.values()) + interviews
        assert await world.fetchval("intake", "select count(*) from outbox") == backlog
        assert backlog > SENDS_BEFORE_CRASH

        await lock.close()
        rc = await intake.wait_exit(30)
        assert rc == FAULT_EXIT_CODE, f"intake should die at the relay fault point\n{intake.log_tail()}"

        async def published() -> list:
            return [r for t in (Topic.SLS_ROSTER, Topic.INTERVIEW_SUBMITTED, Topic.MEMBER_IDENTITIES)
                    for r in await read_topic(world.topic(t))]

        # Died mid-batch: part of it is on Kafka, yet every row is still in the outbox.
        assert len(await published()) == SENDS_BEFORE_CRASH
        assert await world.fetchval("intake", "select count(*) from outbox") == backlog

        intake = world.process("intake").start()
        await intake.wait_ready()
        await eventually(lambda: world.fetchval("intake", "select count(*) = 0 from outbox"), timeout=30,
                         what="intake's relay to drain the outbox after the restart")

        records = await published()
        # The acknowledged part was sent again (at least once), the rest once.
        assert len(records) == backlog + SENDS_BEFORE_CRASH
        for (topic, key), want in expected.items():
            seq = [header(r, "ce_id") for r in records if r.topic == topic and r.key == key.encode()]
            assert len({r.partition for r in records if r.topic == topic and r.key == key.encode()}) == 1
            first_seen = list(dict.fromkeys(seq))
            assert first_seen == want, f"{topic} key {key}: order {first_seen} != accepted order {want}"

        # Downstream, the redelivered events were applied once.
        all_fids = [family_id_of(doc) for s in slss for _, doc in families[s]]

        async def verify_done():
            rows = await world.fetch("verify", "select family_id, state from interviews")
            return len(rows) == len(all_fids) and all(r["state"] == "verified" for r in rows) and rows

        await eventually(verify_done, timeout=30, what="verify to verify every family")
        await eventually(lambda: world.fetchval("verify", "select count(*) = 0 from outbox"), timeout=30,
                         what="verify's outbox drained")
        assert sorted(r["family_id"] for r in await world.fetch("verify", "select family_id from interviews")) == \
            sorted(all_fids)
        revisions = await world.fetch("verify", "select sls_id, revision from rosters")
        assert {r["sls_id"]: r["revision"] for r in revisions} == {s: 1 for s in slss}, "a roster was applied twice"
        verified = by_subject(await read_topic(world.topic(Topic.INTERVIEW_VERIFIED)))
        assert {f: len(verified.get(f, [])) for f in all_fids} == {f: 1 for f in all_fids}
        assert set(verified) == set(all_fids)
        assert verify.alive and intake.alive
    finally:
        await world.teardown()


# Per the topic registry, interview-submitted takes records up to 2 MiB
# (max.message.bytes); the relay's producer sends up to 4 MiB (max_request_size), so
# the producer sends this one and the broker refuses it.
OVERSIZED = 3 * 1024 * 1024
MONITOR = {"REGSOSEK_RELAY_MONITOR_INTERVAL_S": "0.3"}


async def insert_outbox(world: World, service: str, rows: list[tuple[str, bytes, bytes, str]]) -> None:
    """(topic, key, value, ce_id) rows into `service`'s outbox, in one transaction (so its
    relay sees them together, as one batch)."""
    conn = await asyncpg.connect(world.dsn(service))
    try:
        async with conn.transaction():
            await conn.executemany(
                "insert into outbox (topic, key, value, header_keys, header_values) values ($1, $2, $3, $4, $5)",
                [(t, k, v, [b"ce_id"], [ce_id.encode()]) for t, k, v, ce_id in rows])
    finally:
        await conn.close()


async def readiness(proc) -> tuple[int, dict]:
    async with httpx.AsyncClient(timeout=5) as client:
        r = await client.get(proc.url + "/healthz")
    return r.status_code, r.json()


async def test_relay_sets_aside_a_refused_row_and_keeps_going(stack):
    world = await World(["intake"]).setup()
    try:
        intake = world.process("intake", REGSOSEK_RELAY_STALL_S="20", **MONITOR).start()
        await intake.wait_ready()
        topic = world.topic(Topic.INTERVIEW_SUBMITTED)
        k, other = new_sls_id().encode(), new_sls_id().encode()
        tag = uuid.uuid4().hex[:6]
        small = b'{"n": 1}'
        rows = [(topic, k, small, f"{tag}-k1"), (topic, other, small, f"{tag}-o1"),
                (topic, k, b"x" * OVERSIZED, f"{tag}-k2-oversized"),
                (topic, k, small, f"{tag}-k3"), (topic, other, small, f"{tag}-o2"),
                (topic, k, small, f"{tag}-k4"), (topic, other, small, f"{tag}-o3")]
        await insert_outbox(world, "intake", rows)

        await eventually(lambda: world.fetchval("intake", "select count(*) = 0 from outbox"), timeout=60,
                         what="intake's relay to empty its outbox past the refused row")
        rejected = await world.fetch("intake", "select id, topic, key, length(value) as size, header_values, "
                                               "error_type, reason, rejected_at from outbox_rejected")
        assert len(rejected) == 1, rejected
        (r,) = rejected
        assert (r["topic"], r["key"], r["size"], r["header_values"]) == (topic, k, OVERSIZED, [f"{tag}-k2-oversized".encode()])
        assert r["error_type"] == "MessageSizeTooLargeError" and "MessageSizeTooLarge" in r["reason"]

        records = [x for x in await read_topic(topic) if (header(x, "ce_id") or "").startswith(tag)]
        for key, want in ((k, ["k1", "k3", "k4"]), (other, ["o1", "o2", "o3"])):
            seq = [header(x, "ce_id").removeprefix(f"{tag}-") for x in records if x.key == key]
            assert list(dict.fromkeys(seq)) == want, f"key order {seq} != {want}"
        assert not any(x.value and len(x.value) > 1000 for x in records)

        # Without a restart: the backlog metric is back to 0 on the instance, the refusal is
        # counted, the producer was replaced (aiokafka's sequence for the partition was
        # spent on the refused record), and readiness says all is well.
        await eventually(lambda: _metric_is(intake, "regsosek_outbox_backlog", 0), timeout=10, what="backlog 0")
        await eventually(lambda: _metric_is(intake, "regsosek_outbox_rejected_rows", 1), timeout=10,
                         what="rejected rows gauge 1")
        assert await intake.metric("regsosek_outbox_rejected_total") == 1
        assert await intake.metric("regsosek_relay_producer_rebuilds_total") >= 1
        assert await intake.metric("regsosek_relay_stalled") == 0
        assert await intake.metric("regsosek_relay_last_progress_timestamp_seconds") > 0
        status, body = await readiness(intake)
        assert status == 200 and body["ready"] is True and body["checks"]["relay"] == "ok", body
        assert intake.alive, intake.log_tail()
    finally:
        await world.teardown()


async def _metric_is(proc, name: str, value: float) -> bool:
    return await proc.metric(name) == value


async def test_relay_stall_shows_in_readiness_and_recovers(stack):
    """A realistic stall: rows for a topic that does not exist on the broker (not yet
    created by the deployment, or deleted; the broker does not auto-create topics).
    The relay's own lock is held by itself, the producer is fine, the rows are fine:
    only the topic is missing, so the relay waits for it (a retriable error) and the
    outbox does not move. Readiness must say so, and recover once the topic exists."""
    world = await World(["intake"]).setup()
    missing = world.prefix + "not-created-yet"
    admin = AIOKafkaAdminClient(bootstrap_servers=BOOTSTRAP)
    await admin.start()
    try:
        intake = world.process("intake", REGSOSEK_RELAY_STALL_S="3", **MONITOR).start()
        await intake.wait_ready()
        status, body = await readiness(intake)
        assert status == 200 and body["checks"]["relay"] == "ok", body
        topic = world.topic(Topic.INTERVIEW_SUBMITTED)
        key = new_sls_id().encode()
        tag = uuid.uuid4().hex[:6]
        await insert_outbox(world, "intake", [(missing, key, b"{}", f"{tag}-1"), (topic, key, b"{}", f"{tag}-2")])

        async def unready():
            status, body = await readiness(intake)
            return status == 503 and body["ready"] is False and body["checks"]["relay"].startswith("stalled") and body

        body = await eventually(unready, timeout=20, what="readiness to report the stalled relay")
        assert "2 rows waiting" in body["checks"]["relay"], body
        assert await intake.metric("regsosek_relay_stalled") == 1
        assert await intake.metric("regsosek_relay_stall_seconds") >= 3
        assert await intake.metric("regsosek_outbox_backlog") == 2
        assert intake.alive

        await admin.create_topics([NewTopic(name=missing, num_partitions=1, replication_factor=1)])
        await eventually(lambda: world.fetchval("intake", "select count(*) = 0 from outbox"), timeout=60,
                         what="the relay to publish once the topic exists")

        async def ready():
            status, body = await readiness(intake)
            return status == 200 and body["checks"]["relay"] == "ok"

        await eventually(ready, timeout=10, what="readiness back to ready")
        assert await intake.metric("regsosek_relay_stalled") == 0
        assert [header(x, "ce_id") for x in await read_topic(missing)] == [f"{tag}-1"]
        assert [header(x, "ce_id") for x in await read_topic(topic)] == [f"{tag}-2"]
        assert await world.fetchval("intake", "select count(*) from outbox_rejected") == 0
    finally:
        try:
            if missing in set(await admin.list_topics()):
                await admin.delete_topics([missing])
        finally:
            await admin.close()
            await world.teardown()


async def test_a_row_another_process_writes_after_a_quiet_spell_leaves_within_the_longest_poll(stack):
    """The idle relay asks the outbox less and less often while it stays empty (up to
    REGSOSEK_RELAY_IDLE_POLL_MAX_S), yet a row another process writes then is still published (the
    test allows that longest wait and room for a loaded machine), and so is one written right after it."""
    world = await World(["intake"]).setup()
    try:
        intake = world.process("intake", REGSOSEK_RELAY_IDLE_POLL_S="0.05", REGSOSEK_RELAY_IDLE_POLL_MAX_S="2").start()
        await intake.wait_ready()
        topic = world.topic(Topic.INTERVIEW_SUBMITTED)
        tag = uuid.uuid4().hex[:6]
        await asyncio.sleep(6)  # quiet: the relay's wait has grown to its longest
        for n in (1, 2):
            await insert_outbox(world, "intake", [(topic, b"K", b'{"n": 1}', f"{tag}-{n}")])
            # the longest wait (2 s) plus room for a loaded machine; a relay that stopped asking never gets there
            await eventually(lambda: world.fetchval("intake", "select count(*) = 0 from outbox"), timeout=20,
                             what=f"row {n} written by another process to leave intake's outbox")
        records = [x for x in await read_topic(topic) if (header(x, "ce_id") or "").startswith(tag)]
        assert [header(x, "ce_id") for x in records] == [f"{tag}-1", f"{tag}-2"]
    finally:
        await world.teardown()
