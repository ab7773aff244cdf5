"""Dead letters can be re-driven, on the real broker and database (issue 10, item 3).

A roster is dead-lettered by verify because of a "bug" (the REGSOSEK_FAULT_REJECT_EVENT_TYPES
fault point: verify fails on every roster as a permanent handler error), so its interview
waits. After "the fix" (verify restarted without the fault) an operator lists, inspects and
re-drives it with `python -m regsosek.deadletters`: the roster is applied once (revision 1, the
interview decided and published once), and re-driving it a second time changes nothing.
Without the consumer forgetting a dead-lettered id, the first re-drive would be skipped as a
redelivery; without the inbox, the second would make roster revision 2.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys

import pytest
from aiokafka import TopicPartition

from regsosek.contracts import CONSUMABLE_EVENT_TYPES as EVENT_TYPES  # v1 (legacy) types
from regsosek.contracts import FamilyInterview, SlsRoster
from regsosek.messaging.faults import REJECT_EVENT_TYPES
from regsosek.topics import Topic

from itkit import (
    BOOTSTRAP,
    ROOT,
    World,
    by_subject,
    cloud_event,
    committed_offsets,
    end_offsets,
    eventually,
    family,
    family_id_of,
    header,
    new_sls_id,
    partitions_of,
    read_topic,
    roster,
)

pytestmark = pytest.mark.integration


async def deadletters(world: World, *args: str) -> tuple[int, str, str]:
    """The operator command as a process, in the world's environment: run by operator OPS-IT where verify
    runs (its database takes the audit entries)."""
    env = {**os.environ, "REGSOSEK_KAFKA_BOOTSTRAP": BOOTSTRAP, "REGSOSEK_TOPIC_PREFIX": world.prefix,
           "REGSOSEK_DATABASE_URL": world.dsn("verify"), "REGSOSEK_OPERATOR": "OPS-IT"}
    proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "regsosek.deadletters", *args, cwd=ROOT, env=env,
                                                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    return proc.returncode, out.decode(), err.decode()


async def test_dead_letter_redriven_after_fix_is_applied_exactly_once(stack, producer):
    world = await World(["verify"]).setup()
    try:
        (buggy,) = await world.start("verify", **{REJECT_EVENT_TYPES: EVENT_TYPES[SlsRoster]})
        sls = new_sls_id()
        entry, iv_doc = family(sls, 1)
        fid = family_id_of(iv_doc)
        roster_id, roster_value, roster_headers = cloud_event(SlsRoster.model_validate(roster(sls, [entry])),
                                                              subject=sls)
        iv_id, iv_value, iv_headers = cloud_event(FamilyInterview.model_validate(iv_doc), subject=fid)
        roster_topic = world.topic(Topic.SLS_ROSTER)
        await producer.send_and_wait(roster_topic, value=roster_value, key=sls.encode(), headers=roster_headers)
        await producer.send_and_wait(world.topic(Topic.INTERVIEW_SUBMITTED), value=iv_value, key=sls.encode(),
                                     headers=iv_headers)

        async def dead_letters():
            return [r for r in await read_topic(world.topic(Topic.DEAD_LETTER)) if header(r, "ce_id") == roster_id]

        (dead,) = await eventually(dead_letters, timeout=30, what="the roster to be dead-lettered")
        await eventually(lambda: world.fetchval("verify", "select state = 'held' from interviews where family_id = $1",
                                                fid), timeout=30, what="the interview to be held for its roster")
        inbox = {r["event_id"] for r in await world.fetch("verify", "select event_id from inbox")}
        assert iv_id in inbox and roster_id not in inbox, "a dead-lettered event's id must not stay in the inbox"
        await buggy.stop()

        # The fix is deployed.
        await world.start("verify", **{REJECT_EVENT_TYPES: ""})

        # The operator finds it, looks at it (no personal data), re-drives it.
        rc, out, err = await deadletters(world, "list", "--service", "verify", "--topic", "sls-roster", "--json")
        assert rc == 0, err
        (listed,) = [json.loads(line) for line in out.splitlines()]
        address = f"{dead.partition}:{dead.offset}"
        assert listed["address"] == address and listed["ce_id"] == roster_id
        assert listed["topic"] == roster_topic and "fault injected" in listed["reason"]
        rc, out, err = await deadletters(world, "list", "--service", "classify")
        assert rc == 0 and not out.strip(), out

        rc, out, err = await deadletters(world, "show", address)
        assert rc == 0, err
        assert entry["kk_number"] not in out + err and entry["head_name"] not in out + err
        assert '"kk_number": "<str len=16>"' in out and f'"sls_id": "{sls}"' in out and roster_id in out

        rc, out, err = await deadletters(world, "redrive", address)
        assert rc == 0, err
        assert f"re-driven {address} -> {roster_topic}" in out, out

        async def verified():
            return by_subject(await read_topic(world.topic(Topic.INTERVIEW_VERIFIED))).get(fid)

        await eventually(verified, timeout=30, what="the held interview to be verified once the roster is applied")
        assert await world.fetchval("verify", "select revision from rosters where sls_id = $1", sls) == 1

        # Re-driving it again changes nothing.
        rc, out, err = await deadletters(world, "redrive", "--topic", "sls-roster", "--reason-contains", "FAULT")
        assert rc == 0 and f"re-driven {address}" in out, out + err
        tps = [TopicPartition(roster_topic, p) for p in await partitions_of(roster_topic)]

        async def caught_up():
            committed, ends = await committed_offsets(world.group("verify")), await end_offsets(tps)
            return all(committed.get(tp, 0) >= ends[tp] for tp in tps)

        await eventually(caught_up, timeout=30, what="verify to consume the second re-drive")
        await eventually(lambda: world.fetchval("verify", "select count(*) = 0 from outbox"), timeout=30,
                         what="verify's outbox drained")
        assert await world.fetchval("verify", "select revision from rosters where sls_id = $1", sls) == 1
        assert await world.fetchval("verify", "select count(*) from roster_history where sls_id = $1", sls) == 1
        assert await world.fetchval("verify", "select count(*) from inbox where event_id = $1", roster_id) == 1
        assert len(await verified()) == 1, "the interview was published more than once"
        assert len(await dead_letters()) == 1, "the re-driven roster was dead-lettered again"

        # Who looked at it and who re-drove it is in verify's audit log: the address, never a value.
        audited = [(r["actor"], r["role"], r["action"], r["object_id"]) for r in await world.fetch(
            "verify", "select actor, role, action, object_id from audit_log where object_type = 'dead_letter' order by id")]
        assert audited == [("OPS-IT", "operator", "deadletter.show", address),
                           ("OPS-IT", "operator", "deadletter.redrive", address),
                           ("OPS-IT", "operator", "deadletter.redrive", address)], audited
    finally:
        await world.teardown()
