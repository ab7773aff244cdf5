"""Updates of a registered family (verify.updates) on the in-memory store and the fake unit of work:
a death, a birth, a move, a housing change and a new family applied to the stored interview and
decided again; updates that cannot apply leave the family as it was. The same flow against Kafka
and PostgreSQL: tests/integration/test_living_registry.py."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime, timedelta

from test_verify_handlers import (
    HOUSING,
    KEY,
    SLS,
    Verify,
    document,
    family,
    interview,
    nik,
    only,
    resolution,
    roster,
)

from regsosek.contracts import (
    FamilyErased,
    FamilyInterview,
    InterviewFlagged,
    InterviewVerified,
    RosterStatus,
    SupervisorDecision,
    pseudonymise_interview,
)
from regsosek.contracts.pseudonymous import PseudonymousMember
from regsosek.contracts.updates import FamilyUpdated, PseudonymousChange, UpdateHeld
from regsosek.pseudonyms import nik_hash_hex
from regsosek.testing import FakeUnitOfWork

NEWBORN = {"line_no": 3, "sex": "male", "date_of_birth": "2023-02-01", "relationship": "child",
           "marital_status": "never_married", "school": "never", "highest_diploma": "none",
           "worked_last_week": False, "presence": "new_member"}


def updated(family_id: str, kind: str, **change) -> FamilyUpdated:
    return FamilyUpdated(submission_id=uuid.uuid4(), family_id=family_id, sls_id=family_id[:14],
                         occurred_on=date(2023, 3, 1), basis="field_check", confirmed_on=date(2023, 3, 6),
                         change=PseudonymousChange(kind=kind, **change))


async def verified_family(v: Verify, **kw):
    iv = interview(**kw)
    await v.send(roster(family(1, members=len(iv.members))))
    await v.send(iv)
    assert v.state(iv.family_id)[0] == "verified"
    return iv


async def test_a_death_leaves_the_member_out_of_the_household_and_reverifies_as_updated():
    v = Verify()
    iv = await verified_family(v, members=2)
    e = updated(iv.family_id, "death", line_no=2)
    uow = await v.send(e)
    event = only(uow, InterviewVerified)
    assert event.outcome.value == "updated" and event.decision_seq == 2
    assert event.profile.submission_id == e.submission_id and event.profile.version == 2
    assert [m.line_no for m in event.profile.members] == [1]
    stored = v.store.interviews[iv.family_id].interview
    assert [m.presence.value for m in stored.members] == ["lives_here", "died"]
    assert stored.interviewed_at.date() == date(2023, 3, 1)  # the date the stored state describes
    assert v.causes(iv.family_id)[-1] == ("update", "updated", 2)


async def test_the_same_update_again_changes_nothing():
    v = Verify()
    iv = await verified_family(v)
    e = updated(iv.family_id, "death", line_no=2)
    await v.send(e)
    uow = await v.send(e.model_copy())  # a redelivery (the relay sends it again)
    assert uow.published == [] and v.state(iv.family_id)[2] == 2


async def test_when_the_head_dies_the_spouse_heads_the_family():
    v = Verify()
    iv = await verified_family(v)
    event = only(await v.send(updated(iv.family_id, "death", line_no=1)), InterviewVerified)
    assert [(m.line_no, m.relationship.value) for m in event.profile.members] == [(2, "head")]


async def test_a_birth_adds_a_new_member_and_claims_its_nik():
    v = Verify()
    iv = await verified_family(v)
    baby_nik = nik(SLS, 1, 3)
    member = PseudonymousMember(**NEWBORN, nik_hash=nik_hash_hex(KEY, baby_nik))
    event = only(await v.send(updated(iv.family_id, "birth", member=member)), InterviewVerified)
    assert [(m.line_no, m.age) for m in event.profile.members] == [(1, 42), (2, 37), (3, 0)]
    assert v.store.claims[bytes.fromhex(member.nik_hash)] == iv.family_id


async def test_a_birth_whose_nik_another_family_holds_is_not_applied():
    v = Verify()
    iv = await verified_family(v)
    taken = sorted(iv.nik_hashes())[0]
    v.store.claims[taken] = "64720100010001-0009-001"
    member = PseudonymousMember(**NEWBORN, nik_hash=taken.hex())
    uow = await v.send(updated(iv.family_id, "birth", member=member))
    flag = only(uow, InterviewFlagged)
    assert flag.reason.value == "update_not_applicable" and flag.decision_seq == 1  # no decision about the family
    assert v.state(iv.family_id) == ("verified", "verified", 1)


async def test_a_member_who_moved_and_a_housing_change_are_applied():
    v = Verify()
    iv = await verified_family(v)
    moved = only(await v.send(updated(iv.family_id, "member_moved", line_no=2, moved_to="abroad")), InterviewVerified)
    assert [m.line_no for m in moved.profile.members] == [1]
    housing = {**HOUSING, "floor_area_m2": 12, "floor": "earth"}
    event = only(await v.send(updated(iv.family_id, "housing_change", housing=housing)), InterviewVerified)
    assert event.profile.housing.floor_area_m2 == 12 and [m.line_no for m in event.profile.members] == [1]
    assert event.decision_seq == 3


async def test_a_family_that_moved_out_or_has_nobody_left_is_flagged():
    v = Verify()
    iv = await verified_family(v)
    flag = only(await v.send(updated(iv.family_id, "family_moved")), InterviewFlagged)
    assert flag.reason.value == "roster_says_moved" and v.state(iv.family_id)[0] == "flagged"

    v = Verify()
    iv = await verified_family(v, members=1)
    flag = only(await v.send(updated(iv.family_id, "death", line_no=1)), InterviewFlagged)
    assert flag.reason.value == "roster_says_dissolved" and flag.decision_seq == 2


async def test_updates_that_cannot_apply_leave_the_family_as_it_was():
    v = Verify()
    iv = await verified_family(v)
    e = updated(iv.family_id, "death", line_no=7)  # no such member
    flag = only(await v.send(e), InterviewFlagged)
    assert flag.reason.value == "update_not_applicable" and flag.submission_id == e.submission_id
    assert v.state(iv.family_id) == ("verified", "verified", 1) and v.store.updates_held == {}


# ---------------------------------------------------------------- an update before its family is verified


async def test_an_update_before_the_family_is_known_is_kept_and_applied_when_it_is_verified():
    v = Verify()
    iv = interview(members=2)
    e = updated(iv.family_id, "death", line_no=2)
    uow = await v.send(e)  # the family's interview is still on its way
    held = only(uow, UpdateHeld)
    assert (held.submission_id, held.waits_for.value) == (e.submission_id, "family_not_registered")
    assert held.expires_at - held.held_at == timedelta(days=30)
    assert uow.events(InterviewVerified) == uow.events(InterviewFlagged) == []
    assert list(v.store.updates_held) == [str(e.submission_id)]
    assert (await v.send(e.model_copy())).published == [], "a redelivery of a kept update changes nothing"
    await v.send(roster(family(1, members=2)))
    uow = await v.send(iv)  # verified, and in the same transaction the kept death applied
    census, death = uow.events(InterviewVerified)
    assert (census.outcome.value, census.decision_seq) == ("verified", 1)
    assert (death.outcome.value, death.decision_seq, death.profile.submission_id) == ("updated", 2, e.submission_id)
    assert [m.line_no for m in death.profile.members] == [1] and v.store.updates_held == {}
    assert v.causes(iv.family_id) == [("interview", "verified", 1), ("update", "updated", 2)]


async def test_an_update_of_a_held_family_waits_for_the_roster_and_two_apply_in_order():
    v = Verify()
    iv = interview(members=2)
    await v.send(iv)  # held: no roster yet
    first, second = updated(iv.family_id, "death", line_no=2), updated(iv.family_id, "housing_change",
                                                                          housing={**HOUSING, "floor_area_m2": 12})
    for e in (first, second):
        assert only(await v.send(e), UpdateHeld).waits_for.value == "interview_held"
    uow = await v.send(roster(family(1, members=2)))
    assert [(e.outcome.value, e.decision_seq) for e in uow.events(InterviewVerified)] == [
        ("verified", 1), ("updated", 2), ("updated", 3)]
    last = uow.events(InterviewVerified)[-1].profile
    assert last.submission_id == second.submission_id and last.housing.floor_area_m2 == 12
    assert [m.line_no for m in last.members] == [1], "the second update applies on top of the first"
    assert v.store.updates_held == {}


async def test_an_update_of_a_flagged_family_applies_when_a_supervisor_verifies_it():
    v = Verify()
    iv = interview(members=2)
    await v.send(roster(family(1, RosterStatus.MOVED, members=2)))
    await v.send(iv)
    assert v.state(iv.family_id)[0] == "flagged"
    e = updated(iv.family_id, "death", line_no=2)
    assert only(await v.send(e), UpdateHeld).waits_for.value == "family_flagged"
    uow = await v.send(resolution(iv.family_id, SupervisorDecision.VERIFY))
    assert [(x.outcome.value, x.decision_seq) for x in uow.events(InterviewVerified)] == [
        ("verified_by_supervisor", 2), ("updated", 3)]
    assert v.store.updates_held == {}


async def test_a_kept_update_is_flagged_once_the_update_hold_timeout_passed_and_erasure_drops_it():
    v = Verify(update_hold_timeout_s=3600)
    waiting = updated("64720100010001-0042-001", "death", line_no=1)
    await v.send(waiting)
    v.store.now += 3601
    for e in await v.store.expired_update_holds(3600):
        uow = FakeUnitOfWork("verify")
        await v.handlers.on_update_hold_expired(uow, e)
        await uow.commit()
        flag = only(uow, InterviewFlagged)
        assert flag.reason.value == "update_not_applicable" and flag.submission_id == waiting.submission_id
        assert "never reached verify; not verified within 0.0416667 days" in flag.detail
    assert v.store.updates_held == {}

    iv = interview(members=2)
    await v.send(iv)
    await v.send(updated(iv.family_id, "death", line_no=2))
    counts = await v.store.erase_family(FamilyErased(erasure_id=uuid.uuid4(), family_id=iv.family_id, sls_id=SLS,
                                                     reason="data_subject_request", erased_at=datetime.now(UTC)))
    assert counts["held_updates"] == 1 and v.store.updates_held == {}


async def test_an_update_of_a_rejected_family_is_not_kept():
    v = Verify()
    iv = interview(members=2)
    await v.send(roster(family(1, RosterStatus.MOVED, members=2)))
    await v.send(iv)
    await v.send(resolution(iv.family_id, SupervisorDecision.REJECT))
    flag = only(await v.send(updated(iv.family_id, "death", line_no=2)), InterviewFlagged)
    assert flag.reason.value == "update_not_applicable" and "rejected, not verified" in flag.detail
    assert v.store.updates_held == {}


async def test_a_new_family_is_registered_verified_and_its_id_taken_only_once():
    v = Verify()
    doc = document(building=5)
    form = pseudonymise_interview(FamilyInterview.model_validate(doc), KEY)
    event = only(await v.send(updated(form.family_id, "new_family", family=form)), InterviewVerified)
    assert event.outcome.value == "updated" and event.decision_seq == 1
    flag = only(await v.send(updated(form.family_id, "new_family", family=form)), InterviewFlagged)
    assert flag.reason.value == "update_not_applicable"
