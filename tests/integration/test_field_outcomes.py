"""Field outcomes on the real stack (intake's HTTP API, Kafka, verify on PostgreSQL), as the
form records them (docs/DOMAIN.md):

- a refusal is accepted without housing or members, and its SLS completes (the refused
  family accounted for, neither verified nor flagged);
- a family split off a prelisted KK (keluarga pecahan) is matched to that KK and verified,
  not flagged "not on roster";
- a member who died explains a household smaller than the roster's: verified, and the
  household profile classify receives holds only the members living with the family;
- verify's retention rule empties final interview bodies and keeps flagged ones.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import asyncpg
import httpx
import pytest

from regsosek.topics import Topic
from verify.store import VerifyStore

from itkit import Submitter, World, eventually, family, family_id_of, new_sls_id, other_sls_of_village, read_topic, roster

pytestmark = pytest.mark.integration

WAIT = 60  # seconds any one expected effect may take on a busy two-core machine


@pytest.fixture(scope="module")
async def census(stack):
    world = await World(["intake", "verify"]).setup()
    try:
        intake, _verify = await world.start("intake", "verify")
        async with httpx.AsyncClient(base_url=intake.url, timeout=10) as c:
            yield world, Submitter(c)
    finally:
        await world.teardown()


async def published(world: World, topic: Topic, key: str) -> list[dict]:
    return [json.loads(r.value) for r in await read_topic(world.topic(topic)) if r.key == key.encode()]


async def verified(world: World, family_id: str) -> dict | None:
    for e in await published(world, Topic.INTERVIEW_VERIFIED, family_id[:14]):
        if e["family_id"] == family_id:
            return e
    return None


async def verify_state(world: World, family_id: str) -> tuple[str, str] | None:
    rows = await world.fetch("verify", "select state, outcome from interviews where family_id = $1", family_id)
    return (rows[0]["state"], rows[0]["outcome"]) if rows else None


async def test_a_refusal_completes_its_sls(census):
    world, s = census
    sls = new_sls_id()
    (e1, iv1), (e2, iv2) = family(sls, 1), family(sls, 2)
    await s.submit("/v1/rosters", roster(sls, [e1, e2]), retry_for=30)
    await s.submit("/v1/interviews", iv1, retry_for=30)
    refusal = {k: v for k, v in iv2.items() if k != "housing"} | {"result": "refused", "members": []}
    receipt = await s.submit("/v1/interviews", refusal, retry_for=30)
    assert receipt["status"] == "accepted", receipt

    async def completed():
        return await published(world, Topic.SLS_COMPLETED, sls) or None

    (done,) = await eventually(completed, timeout=WAIT, what="the SLS with a refusal to complete")
    assert {k: done[k] for k in ("expected", "interviewed", "verified", "flagged", "absent")} == {
        "expected": 2, "interviewed": 1, "verified": 1, "flagged": 0, "absent": 1}
    assert await verify_state(world, family_id_of(iv2)) == ("non_response", "refused")
    flags = await published(world, Topic.INTERVIEW_FLAGGED, sls)
    assert [f for f in flags if f["family_id"] == family_id_of(iv2)] == []
    (progress,) = await world.fetch("verify", "select non_response, outstanding, complete from sls_progress "
                                              "where sls_id = $1", sls)
    assert dict(progress) == {"non_response": 1, "outstanding": 0, "complete": True}


async def test_a_split_off_family_is_matched_to_its_prelisted_kk(census):
    world, s = census
    sls = new_sls_id()
    (parent_entry, parent), (_, child) = family(sls, 1), family(sls, 2)
    await s.submit("/v1/rosters", roster(sls, [parent_entry]), retry_for=30)
    child["location"].update(kk_status="split_off", parent_kk_number=parent_entry["kk_number"])
    assert child["location"]["kk_number"] != parent_entry["kk_number"]
    await s.submit("/v1/interviews", child, retry_for=30)
    e = await eventually(lambda: verified(world, family_id_of(child)), timeout=WAIT,
                         what="the split-off family to be verified")
    assert e["outcome"] == "verified"
    (row,) = await world.fetch("verify", "select roster_building_no, roster_family_no from interviews "
                                         "where family_id = $1", family_id_of(child))
    assert (row["roster_building_no"], row["roster_family_no"]) == (1, 1)  # the parent family's roster entry
    await s.submit("/v1/interviews", parent, retry_for=30)
    await eventually(lambda: verified(world, family_id_of(parent)), timeout=WAIT, what="the parent family verified")


async def test_a_member_who_died_explains_a_smaller_member_count(census):
    world, s = census
    sls = new_sls_id()
    entry, iv = family(sls, 1)
    assert entry["member_count"] == len(iv["members"]) == 3
    iv["members"][2]["presence"] = "died"
    await s.submit("/v1/rosters", roster(sls, [entry]), retry_for=30)
    await s.submit("/v1/interviews", iv, retry_for=30)
    e = await eventually(lambda: verified(world, family_id_of(iv)), timeout=WAIT,
                         what="the family with a member who died to be verified")
    assert e["outcome"] == "verified"
    assert len(e["profile"]["members"]) == 2  # the household is who lives with the family now


async def test_non_response_bodies_expire_and_verified_and_flagged_ones_stay(census):
    """Verify's retention rule (its SQL, run as the retention task runs it, with a cut-off in the
    future standing in for REGSOSEK_INTERVIEW_BODY_RETENTION_DAYS having passed): a non-response
    form's body goes; a verified family's stays while it is registered (updates apply to it), and a
    flagged one's until it is final."""
    world, s = census
    sls = new_sls_id()
    (e1, iv1), (e2, iv2), (e3, iv3) = family(sls, 1), family(sls, 2), family(sls, 3)
    e2["member_count"] = 5  # the interview lists 3: flagged, waiting for a supervisor
    refusal = {k: v for k, v in iv3.items() if k != "housing"} | {"result": "refused", "members": []}
    await s.submit("/v1/rosters", roster(sls, [e1, e2, e3]), retry_for=30)
    for doc in (iv1, iv2, refusal):
        await s.submit("/v1/interviews", doc, retry_for=30)

    async def decided():
        rows = await world.fetch("verify", "select family_id, state from interviews where sls_id = $1", sls)
        states = {r["family_id"]: r["state"] for r in rows}
        return states if sorted(states.values()) == ["flagged", "non_response", "verified"] else None

    await eventually(decided, timeout=WAIT, what="one family verified, one flagged, one refusal")
    conn = await asyncpg.connect(world.dsn("verify"), timeout=10)
    try:
        while await VerifyStore(conn).expire_bodies(datetime.now(UTC) + timedelta(days=1), 1000):
            pass
    finally:
        await conn.close()
    rows = await world.fetch("verify", "select family_id, state, outcome, body is null as emptied, "
                                       "body_expired_at is not null as stamped from interviews where sls_id = $1", sls)
    got = {r["family_id"]: (r["state"], r["outcome"], r["emptied"], r["stamped"]) for r in rows}
    assert got == {family_id_of(iv1): ("verified", "verified", False, False),
                   family_id_of(iv2): ("flagged", "member_count_differs", False, False),
                   family_id_of(iv3): ("non_response", "refused", True, True)}


async def test_an_sls_split_during_listing_keeps_the_families_already_verified(census):
    """PSLS: after two families of an SLS were verified, the SLS is split: a new SLS of the same
    village lists one of them (same KK), and the old SLS's roster is revised without it."""
    world, s = census
    sls = new_sls_id()
    new_sls = other_sls_of_village(sls)
    (e1, iv1), (e2, iv2) = family(sls, 1), family(sls, 2)
    await s.submit("/v1/rosters", roster(sls, [e1, e2]), retry_for=30)
    for doc in (iv1, iv2):
        await s.submit("/v1/interviews", doc, retry_for=30)
    await eventually(lambda: verified(world, family_id_of(iv2)), timeout=WAIT, what="family 2 verified")
    await s.submit("/v1/rosters", roster(new_sls, [e2 | {"building_no": 7}]), retry_for=30)

    async def completed(sls_id: str):
        return await published(world, Topic.SLS_COMPLETED, sls_id) or None

    (done,) = await eventually(lambda: completed(new_sls), timeout=WAIT, what="the new SLS to complete")
    assert (done["expected"], done["interviewed"], done["absent"]) == (1, 0, 1)
    await s.submit("/v1/rosters", roster(sls, [e1]), retry_for=30)  # the old SLS revised without family 2

    async def revised():
        rows = await world.fetch("verify", "select roster_revision from interviews where family_id = $1",
                                 family_id_of(iv1))
        return rows and rows[0]["roster_revision"] == 2

    await eventually(revised, timeout=WAIT, what="the old SLS's revision to be applied")
    assert await verify_state(world, family_id_of(iv2)) == ("verified", "verified")
    flags = await published(world, Topic.INTERVIEW_FLAGGED, sls)
    assert [f for f in flags if f["family_id"] == family_id_of(iv2)] == []


async def test_a_family_flagged_by_the_old_sls_revision_is_verified_when_the_new_sls_roster_comes(census):
    world, s = census
    sls = new_sls_id()
    new_sls = other_sls_of_village(sls)
    (e1, _), (e2, iv2) = family(sls, 1), family(sls, 2)
    await s.submit("/v1/rosters", roster(sls, [e1, e2]), retry_for=30)
    await s.submit("/v1/interviews", iv2, retry_for=30)
    await eventually(lambda: verified(world, family_id_of(iv2)), timeout=WAIT, what="family 2 verified")
    await s.submit("/v1/rosters", roster(sls, [e1]), retry_for=30)  # revised before the new SLS's roster came

    async def flagged():
        return await verify_state(world, family_id_of(iv2)) == ("flagged", "not_on_roster")

    await eventually(flagged, timeout=WAIT, what="family 2 flagged not on roster meanwhile")
    await s.submit("/v1/rosters", roster(new_sls, [e2 | {"building_no": 3}]), retry_for=30)

    async def verified_again():
        return await verify_state(world, family_id_of(iv2)) == ("verified", "verified")

    await eventually(verified_again, timeout=WAIT, what="family 2 verified on the new SLS's roster")
    (done,) = await eventually(lambda: published_or_none(world, new_sls), timeout=WAIT, what="the new SLS complete")
    assert (done["expected"], done["absent"]) == (1, 1)


async def published_or_none(world: World, sls_id: str) -> list[dict] | None:
    return await published(world, Topic.SLS_COMPLETED, sls_id) or None
