"""Verify on the real broker and database, fed CloudEvents records straight on its topics,
with TWO instances in one consumer group sharing the partitions (as scaled in production):

- an interview before its roster is held, then decided when the roster comes;
- one NIK submitted in two SLS on partitions owned by different instances at the same
  moment: exactly one family wins, the other is flagged duplicate_nik;
- supervisor resolutions (verify and reject), kept with who and why;
- correction versions: v2 supersedes v1 downstream, a late v1 is ignored;
- a later roster re-verifies the decided families whose outcome changes, and only those;
- sls-completed is published once per SLS per roster revision; GET /v1/progress counts by prefix.
"""

from __future__ import annotations

import asyncio
import copy
import json
import random
import uuid
from datetime import datetime

import httpx
import pytest
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.coordinator.protocol import ConsumerProtocolMemberAssignment
from aiokafka.partitioner import murmur2

from regsosek.contracts import FamilyInterview, SlsRoster, VerificationResolved
from regsosek.topics import Topic

from itkit import (
    BOOTSTRAP,
    World,
    by_subject,
    cloud_event,
    eventually,
    family,
    family_id_of,
    partitions_of,
    read_topic,
    roster,
    token,
)

pytestmark = pytest.mark.integration

WAIT = 45  # seconds any one expected effect may take on a busy two-core machine


@pytest.fixture(scope="module")
async def world(stack):
    w = await World(["verify"]).setup()
    try:
        a, b = await w.start("verify", "verify")  # the second instance gets a port of its own
        assert a.port != b.port and a.alive and b.alive
        w.instances = (a, b)
        await eventually(lambda: _group_assignment(w.group("verify"), expected_members=2), timeout=WAIT,
                         what="both verify instances to hold partitions of one stable group")
        yield w
    finally:
        await w.teardown()


# ---------------------------------------------------------------- feeding verify and reading what it published

_villages: set[str] = set()


def fresh_sls() -> str:
    """An SLS id in a village no other test of this module uses (progress is counted by prefix)."""
    rng = random.Random()
    while True:
        village = f"6472{rng.randint(1, 999):03d}{rng.randint(1, 999):03d}"
        if village not in _villages:
            _villages.add(village)
            return f"{village}{rng.randint(1, 9999):04d}"


def partition_of(key: str, partitions: int) -> int:
    """The default (murmur2) partitioner of Kafka's clients."""
    return (murmur2(key.encode()) & 0x7FFFFFFF) % partitions


async def _group_assignment(group: str, expected_members: int) -> dict[str, set[tuple[str, int]]] | None:
    """member id -> its (topic, partition) set, once the group is stable with every member assigned."""
    admin = AIOKafkaAdminClient(bootstrap_servers=BOOTSTRAP)
    await admin.start()
    try:
        (response,) = await admin.describe_consumer_groups([group])
    finally:
        await admin.close()
    (_error, _gid, state, _ptype, _protocol, members, *_rest) = response.groups[0]
    if state != "Stable" or len(members) != expected_members:
        return None
    out = {}
    for member_id, _client, _host, _metadata, assignment, *_ in members:
        parts = ConsumerProtocolMemberAssignment.decode(assignment).partitions() if assignment else []
        out[member_id] = {(tp.topic, tp.partition) for tp in parts}
    return out if all(out.values()) else None


async def send(producer, w: World, topic: Topic, key: str, data, subject: str) -> int:
    _, value, headers = cloud_event(data, subject=subject)
    md = await producer.send_and_wait(w.topic(topic), value=value, key=key.encode(), headers=headers)
    return md.partition


async def send_roster(producer, w: World, sls: str, entries: list[dict]) -> SlsRoster:
    r = SlsRoster.model_validate(roster(sls, entries))
    await send(producer, w, Topic.SLS_ROSTER, sls, r, sls)
    return r


async def send_interview(producer, w: World, doc: dict) -> FamilyInterview:
    iv = FamilyInterview.model_validate(doc)
    await send(producer, w, Topic.INTERVIEW_SUBMITTED, iv.location.sls_id, iv, iv.family_id)
    return iv


async def send_resolution(producer, w: World, family_id: str, decision: str, supervisor: str, reason: str):
    r = VerificationResolved(submission_id=uuid.uuid4(), family_id=family_id, sls_id=family_id[:14],
                             decision=decision, supervisor_id=supervisor, reason=reason,
                             decided_at="2022-10-25T09:00:00+08:00")
    await send(producer, w, Topic.VERIFICATION_RESOLVED, family_id[:14], r, family_id)
    return r


async def outcomes(w: World) -> dict[str, list[tuple[str, str, int]]]:
    """family id -> every (kind, outcome or reason, version) verify published for it, in the order
    verify decided them (its verified_at / flagged_at stamps)."""
    out: dict[str, list] = {}
    for topic, kind in ((Topic.INTERVIEW_VERIFIED, "verified"), (Topic.INTERVIEW_FLAGGED, "flagged")):
        for r in await read_topic(w.topic(topic)):
            body = json.loads(r.value)
            if kind == "verified":
                entry = (body["verified_at"], kind, body["outcome"], body["profile"]["version"])
            else:
                entry = (body["flagged_at"], kind, body["reason"], body["version"])
            out.setdefault(body["family_id"], []).append(entry)
    return {fid: [e[1:] for e in sorted(evs, key=lambda e: datetime.fromisoformat(e[0]))] for fid, evs in out.items()}


async def wait_outcomes(w: World, wanted: dict[str, int], what: str) -> dict[str, list[tuple[str, str, int]]]:
    """Polls until each family has at least `wanted[family]` published outcomes."""
    async def probe():
        got = await outcomes(w)
        return got if all(len(got.get(f, [])) >= n for f, n in wanted.items()) else None
    return await eventually(probe, timeout=WAIT, interval=0.5, what=what)


async def drained(w: World) -> None:
    await eventually(lambda: w.fetchval("verify", "select count(*) = 0 from outbox"), timeout=WAIT,
                     what="verify's outbox to be published")


async def completions(w: World, sls: str) -> list[dict]:
    return [json.loads(r.value) for r in await read_topic(w.topic(Topic.SLS_COMPLETED)) if r.key == sls.encode()]


async def state(w: World, fid: str) -> str | None:
    return await w.fetchval("verify", "select state from interviews where family_id = $1", fid)


# ---------------------------------------------------------------- tests


async def test_interview_before_roster_is_held_then_decided(world, producer):
    sls = fresh_sls()
    (e1, iv1), (e2, iv2) = family(sls, 1), family(sls, 2)
    e2["status"] = "moved"
    f1, f2 = family_id_of(iv1), family_id_of(iv2)
    await send_interview(producer, world, iv1)
    await send_interview(producer, world, iv2)

    await eventually(lambda: world.fetchval(
        "verify", "select count(*) = 2 from interviews where sls_id = $1 and state = 'held'", sls),
        timeout=WAIT, what="both interviews held while the SLS has no roster")
    assert not (await outcomes(world)).get(f1) and not (await outcomes(world)).get(f2), "decided without a roster"

    await send_roster(producer, world, sls, [e1, e2])
    got = await wait_outcomes(world, {f1: 1, f2: 1}, "the held interviews decided when the roster came")
    assert got[f1] == [("verified", "verified", 1)]
    assert got[f2] == [("flagged", "roster_says_moved", 1)]
    assert await state(world, f1) == "verified" and await state(world, f2) == "flagged"
    history = await world.fetch("verify", "select family_id, cause, outcome from verification_history "
                                          "where sls_id = $1 order by id", sls)
    assert {(r["family_id"], r["cause"], r["outcome"]) for r in history} == {
        (f1, "roster", "verified"), (f2, "roster", "roster_says_moved")}


async def test_duplicate_nik_in_two_sls_on_different_partitions_at_once(world, producer):
    topic = world.topic(Topic.INTERVIEW_SUBMITTED)
    n_partitions = len(await partitions_of(topic))
    assignment = await eventually(lambda: _group_assignment(world.group("verify"), expected_members=2),
                                  timeout=WAIT, what="a stable group of two verify instances")
    owner = {p: m for m, tps in assignment.items() for t, p in tps if t == topic}
    assert len(set(owner.values())) == 2, f"the interview partitions are not shared by two instances: {owner}"
    # Two SLS whose interviews land on partitions owned by different instances.
    sls_a = fresh_sls()
    while True:
        sls_b = fresh_sls()
        if owner[partition_of(sls_b, n_partitions)] != owner[partition_of(sls_a, n_partitions)]:
            break

    pairs = 8
    fam_a = [family(sls_a, b) for b in range(1, pairs + 1)]
    fam_b = [family(sls_b, b) for b in range(1, pairs + 1)]
    for (_, a), (_, b) in zip(fam_a, fam_b, strict=True):
        b["members"][0]["nik"] = a["members"][0]["nik"]  # the same person (head) in both families
    await send_roster(producer, world, sls_a, [e for e, _ in fam_a])
    await send_roster(producer, world, sls_b, [e for e, _ in fam_b])
    await eventually(lambda: world.fetchval("verify", "select count(*) = 2 from rosters where sls_id = any($1)",
                                            [sls_a, sls_b]), timeout=WAIT, what="both rosters stored")

    # All at once: SLS B's families in the opposite order, so the two instances' batches claim
    # the shared NIKs in opposite orders (a deadlock between them must cost a retry, nothing else).
    docs_a = [iv for _, iv in fam_a]
    docs_b = [iv for _, iv in reversed(fam_b)]
    ivs = [FamilyInterview.model_validate(d) for d in docs_a + docs_b]
    records = [(iv.location.sls_id, *cloud_event(iv, subject=iv.family_id)[1:]) for iv in ivs]
    futures = [await producer.send(topic, value=v, key=k.encode(), headers=h) for k, v, h in records]
    metadata = await asyncio.gather(*futures)
    parts = {md.partition for md in metadata}
    assert parts == {partition_of(sls_a, n_partitions), partition_of(sls_b, n_partitions)} and len(parts) == 2

    fids_a = [family_id_of(d) for d in docs_a]
    fids_b = [family_id_of(iv) for _, iv in fam_b]
    got = await wait_outcomes(world, {f: 1 for f in fids_a + fids_b}, "every family of both SLS decided")
    await drained(world)
    got = await outcomes(world)
    for fa, fb in zip(fids_a, fids_b, strict=True):
        pair = sorted([got[fa], got[fb]])
        assert pair == [[("flagged", "duplicate_nik", 1)], [("verified", "verified", 1)]], f"{fa} / {fb}: {pair}"
        holders = await world.fetch("verify", "select family_id from nik_claims where family_id = any($1)", [fa, fb])
        winner = fa if got[fa][0][0] == "verified" else fb
        # the winner holds both its NIKs; the loser only its own spouse's NIK, never the shared one
        assert sorted(r["family_id"] for r in holders) == sorted([winner, winner, fb if winner == fa else fa])
    flagged = {json.loads(r.value)["family_id"]: json.loads(r.value)
               for r in await read_topic(world.topic(Topic.INTERVIEW_FLAGGED))}
    for f in fids_a + fids_b:
        if f in flagged and flagged[f]["reason"] == "duplicate_nik":
            assert flagged[f]["detail"] == "NIK of member line(s) 1 already belongs to another family"


async def test_supervisor_resolutions_verify_and_reject(world, producer):
    sls = fresh_sls()
    (e1, iv1), (_, iv2), (e3, iv3) = family(sls, 1), family(sls, 2), family(sls, 3)
    e1["member_count"] = 4  # member count differs: a supervisor will verify it
    f1, f2, f3 = family_id_of(iv1), family_id_of(iv2), family_id_of(iv3)
    await send_roster(producer, world, sls, [e1, e3])  # family 2 is not on the roster: to be rejected
    for doc in (iv1, iv2, iv3):
        await send_interview(producer, world, doc)
    got = await wait_outcomes(world, {f1: 1, f2: 1, f3: 1}, "the three interviews decided")
    assert got[f1] == [("flagged", "member_count_differs", 1)]
    assert got[f2] == [("flagged", "not_on_roster", 1)]
    assert got[f3] == [("verified", "verified", 1)]

    v = await send_resolution(producer, world, f1, "verify", "SPV-7", "household split counted twice on VK1")
    r = await send_resolution(producer, world, f2, "reject", "SPV-7", "family lives in the next RT")
    got = await wait_outcomes(world, {f1: 2, f2: 2}, "both resolutions applied")
    assert got[f1][1] == ("verified", "verified_by_supervisor", 1)
    assert got[f2][1] == ("flagged", "rejected_by_supervisor", 1)
    assert await state(world, f1) == "verified" and await state(world, f2) == "rejected"
    kept = {row["family_id"]: row for row in await world.fetch(
        "verify", "select family_id, submission_id, decision, supervisor_id, reason, version from resolutions "
                  "where family_id = any($1)", [f1, f2])}
    assert (kept[f1]["decision"], kept[f1]["supervisor_id"], kept[f1]["reason"], kept[f1]["version"]) == \
        ("verify", "SPV-7", v.reason, 1)
    assert (kept[f2]["decision"], kept[f2]["reason"], kept[f2]["submission_id"]) == ("reject", r.reason, r.submission_id)
    flagged = [json.loads(x.value) for x in by_subject(await read_topic(world.topic(Topic.INTERVIEW_FLAGGED)))[f2]]
    assert flagged[-1]["detail"] == "rejected by supervisor SPV-7: family lives in the next RT"

    # A resolution of a family verify never saw is dead-lettered, not applied.
    ghost = f"{sls}-0099-001"
    await send_resolution(producer, world, ghost, "verify", "SPV-7", "no such family")

    async def dead_lettered():
        return [x for x in await read_topic(world.topic(Topic.DEAD_LETTER)) if ghost.encode() in (x.value or b"")]
    (dl,) = await eventually(dead_lettered, timeout=WAIT, what="the resolution of an unknown family dead-lettered")
    assert b"no interview" in dict(dl.headers)["dlq_reason"]
    assert ghost not in await outcomes(world)


async def test_correction_versions(world, producer):
    sls = fresh_sls()
    (e1, v1), (e2, sentinel) = family(sls, 1), family(sls, 2)
    fid = family_id_of(v1)
    await send_roster(producer, world, sls, [e1, e2])
    await send_interview(producer, world, v1)
    await wait_outcomes(world, {fid: 1}, "version 1 verified")

    v2 = copy.deepcopy(v1)
    v2.update(submission_id=str(uuid.uuid4()), version=2)
    v2["housing"]["floor_area_m2"] = 54
    await send_interview(producer, world, v2)
    got = await wait_outcomes(world, {fid: 2}, "version 2 verified")
    assert got[fid] == [("verified", "verified", 1), ("verified", "verified", 2)]
    verified = [json.loads(x.value) for x in by_subject(await read_topic(world.topic(Topic.INTERVIEW_VERIFIED)))[fid]]
    assert verified[-1]["profile"]["housing"]["floor_area_m2"] == 54
    assert verified[-1]["profile"]["submission_id"] == v2["submission_id"]
    assert "interview" not in verified[-1]  # the profile only, never the interview (minimal events)

    # A late version 1 (another device's copy), then a second version 2 from a different submission,
    # then a sentinel family on the same partition: when the sentinel is decided, both were processed.
    late_v1 = copy.deepcopy(v1)
    late_v1["submission_id"] = str(uuid.uuid4())
    other_v2 = copy.deepcopy(v2)
    other_v2["submission_id"] = str(uuid.uuid4())
    await send_interview(producer, world, late_v1)
    await send_interview(producer, world, other_v2)
    await send_interview(producer, world, sentinel)
    await wait_outcomes(world, {family_id_of(sentinel): 1}, "the sentinel decided")
    await drained(world)
    got = await outcomes(world)
    assert got[fid] == [("verified", "verified", 1), ("verified", "verified", 2), ("flagged", "duplicate_interview", 2)]
    row = (await world.fetch("verify", "select version, submission_id, state from interviews where family_id = $1",
                             fid))[0]
    assert (row["version"], str(row["submission_id"]), row["state"]) == (2, v2["submission_id"], "verified")
    # each decision about the family takes its next decision sequence, across versions; the duplicate
    # interview is no decision about the family and carries the current one (docs/ORDERING.md)
    published = [x for t in (Topic.INTERVIEW_VERIFIED, Topic.INTERVIEW_FLAGGED)
                 for x in by_subject(await read_topic(world.topic(t))).get(fid, [])]
    seqs = sorted((json.loads(x.value)["decision_seq"], x.topic.removeprefix(world.prefix)) for x in published)
    assert seqs == [(1, "interview-verified"), (2, "interview-flagged"), (2, "interview-verified")]


async def test_later_roster_reverifies_only_changed_families(world, producer):
    sls = fresh_sls()
    fams = [family(sls, b) for b in range(1, 6)]
    (e1, iv1), (e2, iv2), (e3, iv3), (e4, iv4), (e5, iv5) = fams
    f1, f2, f3, f4, f5 = (family_id_of(iv) for _, iv in fams)
    e4["member_count"] = 5
    # Revision 1: family 2 is missing, family 5 is "unknown" to the RT head, family 4's count differs.
    await send_roster(producer, world, sls, [e1, e3, e4, e5 | {"status": "unknown"}])
    for _, iv in fams:
        await send_interview(producer, world, iv)
    got = await wait_outcomes(world, {f: 1 for f in (f1, f2, f3, f4, f5)}, "revision 1 decisions")
    assert [got[f][0][1] for f in (f1, f2, f3, f4, f5)] == [
        "verified", "not_on_roster", "verified", "member_count_differs", "roster_says_unknown"]
    await send_resolution(producer, world, f4, "verify", "SPV-9", "newborn not yet on the KK")
    await wait_outcomes(world, {f4: 2}, "family 4 verified by the supervisor")

    # Revision 2: family 1 moved, family 2 added, family 5 confirmed present; 3 unchanged; 4 says moved
    # but a supervisor's decision stands.
    await send_roster(producer, world, sls, [e1 | {"status": "moved"}, e2 | {"status": "added"}, e3,
                                             e4 | {"status": "moved"}, e5])
    got = await wait_outcomes(world, {f1: 2, f2: 2, f5: 2}, "revision 2 re-verification")
    await drained(world)
    got = await outcomes(world)
    assert got[f1] == [("verified", "verified", 1), ("flagged", "roster_says_moved", 1)]
    assert got[f2] == [("flagged", "not_on_roster", 1), ("verified", "verified_added", 1)]
    assert got[f3] == [("verified", "verified", 1)], "an unchanged outcome was published again"
    assert got[f4] == [("flagged", "member_count_differs", 1), ("verified", "verified_by_supervisor", 1)]
    assert got[f5] == [("flagged", "roster_says_unknown", 1), ("verified", "verified", 1)]

    assert await world.fetchval("verify", "select revision from rosters where sls_id = $1", sls) == 2
    revisions = await world.fetch("verify", "select revision, body from roster_history where sls_id = $1 "
                                            "order by revision", sls)
    assert [r["revision"] for r in revisions] == [1, 2]
    assert json.loads(revisions[0]["body"])["families"][0]["status"] == "present"
    assert json.loads(revisions[1]["body"])["families"][0]["status"] == "moved"
    history = await world.fetch("verify", "select outcome, cause, roster_revision from verification_history "
                                          "where family_id = $1 order by id", f1)
    assert [(h["outcome"], h["cause"], h["roster_revision"]) for h in history] == [
        ("verified", "interview", 1), ("roster_says_moved", "roster_revision", 2)]
    assert await world.fetchval("verify", "select count(*) from verification_history where family_id = $1", f3) == 1


async def test_sls_completed_once_per_roster_revision_and_progress(world, producer):
    sls = fresh_sls()
    fams = [family(sls, b) for b in range(1, 6)]
    (e1, iv1), (e2, iv2), (e3, _), (e4, _), (e5, iv5) = fams
    entries = [e1, e2, e3 | {"status": "moved"}, e4 | {"status": "dissolved"}, e5 | {"status": "unknown"}]
    await send_roster(producer, world, sls, entries)
    for doc in (iv1, iv5):
        await send_interview(producer, world, doc)
    await wait_outcomes(world, {family_id_of(iv1): 1, family_id_of(iv5): 1}, "families 1 and 5 decided")

    verify_url = world.instances[0].url
    admin = {"authorization": f"Bearer {token('admin', 'ADM-IT')}"}  # progress needs a token (area-scoped)
    async with httpx.AsyncClient(base_url=verify_url, timeout=10, headers=admin) as client:
        async def progress(prefix: str, by: str | None = None) -> dict:
            r = await client.get("/v1/progress", params={"prefix": prefix, **({"by": by} if by else {})})
            assert r.status_code == 200, r.text
            return r.json()

        p = await eventually(lambda: _with(progress(sls), lambda j: j["totals"]["interviewed"] == 2),
                             timeout=WAIT, what="progress to count two interviews")
        assert {k: p["totals"][k] for k in ("sls", "sls_complete", "expected", "interviewed", "held")} == {
            "sls": 1, "sls_complete": 0, "expected": 5, "interviewed": 2, "held": 0}
        # One SLS with 1 flagged and 2 absent families: counts that could single out a household are
        # withheld, and so are those they could be recomputed from (verify.disclosure).
        withheld = ("verified", "flagged", "absent", "outstanding")
        assert {k: p["totals"][k] for k in withheld} == dict.fromkeys(withheld)
        assert set(withheld) <= set(p["totals"]["suppressed"])
        await drained(world)
        assert await completions(world, sls) == [], "complete while family 2 is outstanding"

        await send_interview(producer, world, iv2)
        (done,) = await eventually(lambda: completions(world, sls), timeout=WAIT, what="sls-completed")
        assert {k: done[k] for k in ("sls_id", "roster_revision", "expected", "interviewed", "verified", "flagged",
                                     "absent")} == {
            "sls_id": sls, "roster_revision": 1, "expected": 5, "interviewed": 3, "verified": 2, "flagged": 1,
            "absent": 2}

        # More changes under the same revision (a resolution, a correction) do not announce it again.
        await send_resolution(producer, world, family_id_of(iv5), "verify", "SPV-3", "RT head new in office")
        v2 = copy.deepcopy(iv1) | {"submission_id": str(uuid.uuid4()), "version": 2}
        await send_interview(producer, world, v2)
        await wait_outcomes(world, {family_id_of(iv5): 2, family_id_of(iv1): 2}, "resolution and correction")
        # A new roster revision (the same families) completes the SLS again, once.
        await send_roster(producer, world, sls, entries)
        await eventually(lambda: _with(completions(world, sls), lambda c: len(c) >= 2), timeout=WAIT,
                         what="sls-completed for revision 2")
        await drained(world)
        done = await completions(world, sls)
        assert [(c["roster_revision"], c["verified"], c["flagged"]) for c in done] == [(1, 2, 1), (2, 3, 0)]
        assert await world.fetchval("verify", "select count(*) from sls_completions where sls_id = $1", sls) == 2

        village, district = sls[:10], sls[:7]
        by_sls = await progress(village, "sls")
        assert by_sls["totals"]["sls_complete"] == 1 and by_sls["totals"]["expected"] == 5
        assert [g["prefix"] for g in by_sls["groups"]] == [sls]
        assert by_sls["groups"][0]["absent"] is None and by_sls["groups"][0]["flagged"] == 0  # 2 absent: withheld
        by_village = await progress(district, "village")
        assert village in [g["prefix"] for g in by_village["groups"]]
        regency = await progress(sls[:4])
        assert regency["totals"]["sls_complete"] >= 1 and regency["groups"] == []
        assert (await client.get("/v1/progress", params={"prefix": "64x"})).status_code == 422
        assert (await client.get("/v1/progress", params={"prefix": village, "by": "regency"})).status_code == 422


async def _with(awaitable, predicate):
    value = await awaitable
    return value if predicate(value) else None
