"""Decisions follow verify's decision sequence, not the order in which interview-verified and
interview-flagged (two topics) arrive: classify and intake's status view are fed the two orders
that arrival gets wrong (docs/ORDERING.md)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import httpx
import pytest

from regsosek.contracts import (
    EligibilityDecided,
    FamilyInterview,
    FlagReason,
    InterviewFlagged,
    InterviewVerified,
    household_profile,
)
from regsosek.topics import Topic

from itkit import Submitter, World, by_subject, cloud_event, eventually, family, new_sls_id, read_topic

pytestmark = pytest.mark.integration

T0 = datetime.now(UTC)


@pytest.fixture
async def world(stack):
    w = await World(["intake", "classify"]).setup()
    try:
        await w.start("intake", "classify")
        yield w
    finally:
        await w.teardown()


@pytest.fixture
async def sub(world):
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{world.ports['intake']}", timeout=20) as client:
        yield Submitter(client)


async def _submitted(sub: Submitter) -> FamilyInterview:
    """An interview stored by intake (so its status view knows the submission); no verify runs."""
    _, doc = family(new_sls_id(), 1)
    await sub.submit("/v1/interviews", doc)
    return FamilyInterview.model_validate(doc)


def _verified(iv: FamilyInterview, seq: int, outcome: str = "verified") -> InterviewVerified:
    return InterviewVerified(family_id=iv.family_id, sls_id=iv.location.sls_id, outcome=outcome,
                             verified_at=T0 + timedelta(seconds=seq), profile=household_profile(iv),
                             decision_seq=seq)


def _flagged(iv: FamilyInterview, seq: int) -> InterviewFlagged:
    return InterviewFlagged(family_id=iv.family_id, sls_id=iv.location.sls_id, submission_id=iv.submission_id,
                            version=iv.version, reason=FlagReason.MEMBER_COUNT_DIFFERS,
                            detail="roster lists 4 members, interview has 3",
                            flagged_at=T0 + timedelta(seconds=seq), decision_seq=seq)


async def _send_and_apply(producer, world: World, event) -> None:
    """Sends one of verify's events and waits until classify has applied (or ignored) it."""
    topic = Topic.INTERVIEW_VERIFIED if isinstance(event, InterviewVerified) else Topic.INTERVIEW_FLAGGED
    ce_id, value, headers = cloud_event(event, subject=event.family_id)
    await producer.send_and_wait(world.topic(topic), value=value, key=event.sls_id.encode(), headers=headers)

    async def done():
        seen = await world.fetchval("classify", "select count(*) from inbox where event_id = $1", ce_id)
        return seen and not await world.fetchval("classify", "select count(*) from outbox")

    await eventually(done, timeout=40, what=f"classify applying {type(event).__name__} {event.decision_seq}")


async def _decisions(world: World, family_id: str) -> list[EligibilityDecided]:
    records = by_subject(await read_topic(world.topic(Topic.ELIGIBILITY_DECIDED), timeout=10)).get(family_id, [])
    return [EligibilityDecided.model_validate_json(r.value) for r in records]


async def _final(sub: Submitter, iv: FamilyInterview, steps: int) -> str | None:
    """intake's final state once all `steps` have reached its status view."""
    async def arrived():
        status = await sub.status(str(iv.submission_id))
        return status if status and len(status["journey"]) >= steps else None

    return (await eventually(arrived, timeout=40, what=f"{steps} steps in the status view"))["final"]


async def test_flag_before_the_verification_it_withdraws(world, sub, producer):
    iv = await _submitted(sub)
    await _send_and_apply(producer, world, _flagged(iv, 2))
    await _send_and_apply(producer, world, _verified(iv, 1))  # older: arrives late on its own topic

    assert await _decisions(world, iv.family_id) == []  # never classified, so never eligible
    assert await world.fetchval("classify", "select count(*) from families where family_id = $1",
                                iv.family_id) == 0
    assert await _final(sub, iv, steps=2) == "flagged"


async def test_stale_flag_after_a_supervisors_verification(world, sub, producer):
    iv = await _submitted(sub)
    await _send_and_apply(producer, world, _verified(iv, 1))
    await _send_and_apply(producer, world, _verified(iv, 3, "verified_by_supervisor"))
    await _send_and_apply(producer, world, _flagged(iv, 2))  # decided before the supervisor's verification

    decisions = await _decisions(world, iv.family_id)
    assert [d.decision_seq for d in decisions] == [1, 2]  # no withdrawal after the two classifications
    assert not any("withdrawn" in r for d in decisions for p in d.decisions for r in p.reasons)
    assert await world.fetchval("classify", "select count(*) from families where family_id = $1",
                                iv.family_id) == 1
    # verified, classified, eligibility twice, then the flag: the classification stands
    assert await _final(sub, iv, steps=7) == "decided"
