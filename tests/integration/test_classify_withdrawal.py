"""When verify flags a family it had verified (a later roster says it moved, a supervisor
rejects it, a flagged correction), classify withdraws its eligibility: one more
eligibility-decided with every programme not eligible, and the family leaves the ranking.
A stale verification arriving after the flag changes nothing; a new verification restores it."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest

from regsosek.contracts import EligibilityDecided, FlagReason, InterviewFlagged, InterviewVerified, household_profile
from regsosek.topics import Topic
from regsosek_tools.sample import generate

from itkit import World, by_subject, cloud_event, eventually, read_topic

pytestmark = pytest.mark.integration


@pytest.fixture
async def classify_world(stack):
    world = await World(["classify"]).setup()
    try:
        await world.start("classify")
        yield world
    finally:
        await world.teardown()


async def _send(producer, world: World, topic: Topic, event, subject: str, key: str) -> None:
    _, value, headers = cloud_event(event, subject=subject)
    await producer.send_and_wait(world.topic(topic), value=value, key=key.encode(), headers=headers)


async def _decisions(world: World, family_id: str, n: int) -> list[EligibilityDecided]:
    async def enough():
        records = by_subject(await read_topic(world.topic(Topic.ELIGIBILITY_DECIDED), timeout=5)).get(family_id, [])
        return records if len(records) >= n else None

    records = await eventually(enough, timeout=40, what=f"{n} eligibility events for {family_id}")
    return [EligibilityDecided.model_validate_json(r.value) for r in records]


async def test_flag_after_verification_withdraws_eligibility(classify_world, producer):
    world = classify_world
    iv = next(i for i in generate(11, 40).interviews)  # any family; its own eligibility does not matter
    fid, sls = iv.family_id, iv.location.sls_id
    t0 = datetime.now(UTC)
    verified = InterviewVerified(family_id=fid, sls_id=sls, outcome="verified", verified_at=t0,
                                 profile=household_profile(iv))
    await _send(producer, world, Topic.INTERVIEW_VERIFIED, verified, fid, sls)
    (first,) = await _decisions(world, fid, 1)

    # a second submission of the same version flagged as a duplicate interview is not a withdrawal
    dup = InterviewFlagged(family_id=fid, sls_id=sls, submission_id=uuid.uuid4(), version=iv.version,
                           reason=FlagReason.DUPLICATE_INTERVIEW, detail="interviewed twice", flagged_at=t0)
    await _send(producer, world, Topic.INTERVIEW_FLAGGED, dup, fid, sls)

    moved = InterviewFlagged(family_id=fid, sls_id=sls, submission_id=iv.submission_id, version=iv.version,
                             reason=FlagReason.ROSTER_SAYS_MOVED, detail="the RT head confirmed this family moved",
                             flagged_at=t0 + timedelta(seconds=1))
    await _send(producer, world, Topic.INTERVIEW_FLAGGED, moved, fid, sls)
    decisions = await _decisions(world, fid, 2)
    assert len(decisions) == 2  # the duplicate-interview flag published nothing
    withdrawal = decisions[1]
    assert not any(d.eligible for d in withdrawal.decisions)
    assert {d.programme for d in withdrawal.decisions} == {d.programme for d in first.decisions}
    assert all("roster_says_moved" in d.reasons[0] for d in withdrawal.decisions)
    assert await world.fetchval("classify", "select count(*) from families where family_id = $1", fid) == 0

    # the old verification arriving late (verified before the flag) changes nothing
    await _send(producer, world, Topic.INTERVIEW_VERIFIED, verified, fid, sls)  # new event id, same content
    # a supervisor verifying it afterwards restores it
    again = InterviewVerified(family_id=fid, sls_id=sls, outcome="verified_by_supervisor",
                              verified_at=t0 + timedelta(seconds=5), profile=household_profile(iv))
    await _send(producer, world, Topic.INTERVIEW_VERIFIED, again, fid, sls)
    async def settled():  # the last event applied and everything it wrote published
        applied = await world.fetchval("classify", "select count(*) from families where family_id = $1", fid)
        backlog = await world.fetchval("classify", "select count(*) from outbox")
        return applied == 1 and backlog == 0 or None

    await eventually(settled, timeout=40, what="the supervisor's verification applied and published")
    decisions = await _decisions(world, fid, 3)
    assert len(decisions) == 3  # the stale verification published nothing
    assert [d.eligible for d in decisions[2].decisions] == [d.eligible for d in first.decisions]
    assert await world.fetchval("classify", "select count(*) from withdrawals where family_id = $1", fid) == 0
