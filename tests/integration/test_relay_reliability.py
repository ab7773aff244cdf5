"""Reliability rule 3 of ARCHITECTURE.md on the real broker and database: the outbox
relay dies in the middle of a batch, after Kafka acknowledged part of it and before
the rows were deleted. On restart every row is published, each key's order is kept,
and the downstream consumer applies each event once.
"""

from __future__ import annotations

import httpx
import pytest

from itkit import (
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
from regsosek.topics import Topic

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
        backlog = sum(len(v) for v in expected.values())
        assert await world.fetchval("intake", "select count(*) from outbox") == backlog
        assert backlog > SENDS_BEFORE_CRASH

        await lock.close()
        rc = await intake.wait_exit(30)
        assert rc == FAULT_EXIT_CODE, f"intake should die at the relay fault point\n{intake.log_tail()}"

        async def published() -> list:
            return [r for t in (Topic.SLS_ROSTER, Topic.INTERVIEW_SUBMITTED) for r in await read_topic(world.topic(t))]

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
