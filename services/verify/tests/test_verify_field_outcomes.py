"""Field outcomes the form records (docs/DOMAIN.md): non-responses, split-off families, member
presence, on the in-memory store and the fake unit of work, and as pure rules. The same flows on
Kafka and PostgreSQL: tests/integration/test_field_outcomes.py."""

from __future__ import annotations

import pytest
from test_verify_handlers import SLS, Verify, document, family, kk, only, resolution, roster

from regsosek.contracts import (
    FamilyInterview,
    FlagReason,
    InterviewFlagged,
    InterviewVerified,
    RosterStatus,
    SlsCompleted,
    SupervisorDecision,
    pseudonymise_interview,
)
from regsosek.messaging import PermanentError
from regsosek.pseudonyms import DEVELOPMENT_NIK_HASH_KEY as KEY
from verify.domain import Decided, RosterEntry, decide, progress


def submitted(doc: dict):
    return pseudonymise_interview(FamilyInterview.model_validate(doc), KEY)


def refusal(building: int = 2, result: str = "refused"):
    doc = document(building=building)
    doc.update(result=result, members=[])
    del doc["housing"]
    return submitted(doc)


def with_presence(doc: dict, *codes: str) -> dict:
    for m, code in zip(doc["members"], codes, strict=False):
        m["presence"] = code
    return doc


def split_off(building: int, parent_building: int):
    """A family in `building` with a new KK, split from the KK prelisted in `parent_building`."""
    doc = document(building=building)
    doc["location"].update(kk_number=f"{SLS[:8]}{building:04d}9999", kk_status="split_off",
                           parent_kk_number=kk(SLS, parent_building))
    return submitted(doc)


@pytest.fixture
def verify() -> Verify:
    return Verify()


# ---------------------------------------------------------------- non-responses


@pytest.mark.parametrize("result", ["refused", "moved", "not_found", "no_competent_respondent"])
async def test_a_non_response_completes_its_sls_without_a_verdict(verify, result):
    await verify.send(roster(family(1), family(2)))
    uow = await verify.send(submitted(document(building=1)))
    assert uow.events(SlsCompleted) == []
    iv = refusal(2, result)
    uow = await verify.send(iv)
    assert uow.events(InterviewVerified) == [] and uow.events(InterviewFlagged) == []
    done = only(uow, SlsCompleted)
    assert (done.expected, done.interviewed, done.verified, done.flagged, done.absent) == (2, 1, 1, 0, 1)
    assert done.non_response == 1  # of absent: the console counts it by the form's result instead
    assert verify.state(iv.family_id) == ("non_response", result, 1)
    (revision, p) = verify.store.progress[SLS]
    assert (p.non_response, p.absent, p.outstanding, p.complete) == (1, 0, 0, True)


async def test_a_non_response_is_not_resolvable_by_a_supervisor(verify):
    await verify.send(roster(family(2)))
    iv = refusal(2)
    await verify.send(iv)
    with pytest.raises(PermanentError, match="did not respond"):
        await verify.send(resolution(iv.family_id, SupervisorDecision.VERIFY))


async def test_a_revisit_after_a_refusal_is_decided_as_a_new_version(verify):
    await verify.send(roster(family(2)))
    await verify.send(refusal(2))
    revisit = submitted({**document(building=2), "version": 2})
    uow = await verify.send(revisit)
    assert only(uow, InterviewVerified).decision_seq == 2
    assert verify.state(revisit.family_id) == ("verified", "verified", 2)


async def test_a_later_roster_keeps_a_non_response_accounted_for(verify):
    await verify.send(roster(family(2)))
    iv = refusal(2)
    await verify.send(iv)
    uow = await verify.send(roster(family(2), family(3, RosterStatus.MOVED)))
    assert uow.events(InterviewFlagged) == [] and uow.events(InterviewVerified) == []
    done = only(uow, SlsCompleted)
    assert (done.absent, done.non_response) == (2, 1)  # one confirmed moved by the RT head, one refusal
    assert verify.state(iv.family_id) == ("non_response", "refused", 1)


# ---------------------------------------------------------------- split-off families (keluarga pecahan)


async def test_a_split_off_family_is_matched_to_its_prelisted_kk_not_flagged(verify):
    await verify.send(roster(family(1, members=4)))
    parent = submitted(with_presence(document(building=1, members=4), "lives_here", "lives_here",
                                     "moved_within_indonesia", "moved_within_indonesia"))
    uow = await verify.send(parent)
    assert only(uow, InterviewVerified).family_id == parent.family_id
    child = split_off(5, parent_building=1)
    uow = await verify.send(child)
    assert only(uow, InterviewVerified).family_id == child.family_id
    assert verify.store.interviews[child.family_id].matched == (1, 1)


async def test_without_the_split_off_status_a_new_kk_is_not_on_the_roster(verify):
    await verify.send(roster(family(1)))
    doc = document(building=5)
    doc["location"]["kk_number"] = f"{SLS[:8]}00059999"
    uow = await verify.send(submitted(doc))
    assert only(uow, InterviewFlagged).reason is FlagReason.NOT_ON_ROSTER


# ---------------------------------------------------------------- member presence


@pytest.mark.parametrize("codes", [("lives_here", "died"), ("lives_here", "moved_abroad"), ("lives_here", "not_found")])
async def test_a_member_who_left_explains_a_smaller_household(verify, codes):
    await verify.send(roster(family(1, members=2)))
    iv = submitted(with_presence(document(members=2), *codes))
    uow = await verify.send(iv)
    e = only(uow, InterviewVerified)
    assert len(e.profile.members) == 1  # the household is who lives with the family now


async def test_a_new_member_explains_a_larger_household(verify):
    await verify.send(roster(family(1, members=2)))
    iv = submitted(with_presence(document(members=3), "lives_here", "lives_here", "new_member"))
    e = only(await verify.send(iv), InterviewVerified)
    assert len(e.profile.members) == 3


async def test_a_count_the_codes_do_not_explain_is_still_flagged(verify):
    await verify.send(roster(family(1, members=3)))
    iv = submitted(with_presence(document(members=2), "lives_here", "died"))
    e = only(await verify.send(iv), InterviewFlagged)
    assert e.reason is FlagReason.MEMBER_COUNT_DIFFERS
    assert "2 prelisted members (1 living with the family)" in e.detail


async def test_a_member_who_moved_out_claims_no_nik_for_the_family(verify):
    """The member who moved may be on another family's form: that is no duplicate NIK."""
    await verify.send(roster(family(1), family(2)))
    left = submitted(with_presence(document(building=1), "lives_here", "moved_within_indonesia"))
    await verify.send(left)
    moved_nik = document(building=1)["members"][1]["nik"]
    doc = document(building=2, niks=(document(building=2)["members"][0]["nik"], moved_nik))
    uow = await verify.send(submitted(doc))
    assert only(uow, InterviewVerified).outcome == "verified"


# ---------------------------------------------------------------- the rules alone


def test_progress_counts_a_non_response_apart_and_an_interview_over_it_wins():
    roster_ = [RosterEntry(1, 1, None, 2, RosterStatus.PRESENT), RosterEntry(2, 1, None, 2, RosterStatus.PRESENT)]
    p = progress(roster_, [Decided(True, (1, 1)), Decided(False, (2, 1), non_response=True)])
    assert (p.interviewed, p.verified, p.non_response, p.outstanding, p.complete) == (1, 1, 1, 0, True)
    p = progress(roster_, [Decided(True, (1, 1)), Decided(False, (1, 1), non_response=True)])
    assert (p.non_response, p.outstanding, p.complete) == (0, 1, False)


def test_a_non_response_is_decided_without_a_roster_entry():
    d = decide(refusal(9), [])
    assert (d.verified, d.state, d.code) == (False, "non_response", "refused")


# ---------------------------------------------------------------- SLS changes (PSLS: splits, merges, renames)

NEW_SLS = SLS[:10] + "0077"  # another SLS of the same village


def moved_family(building: int, *, to_building: int, members: int = 2):
    """The roster entry, on the new SLS's roster, of the family prelisted in `building` of SLS."""
    e = family(building, members=members)
    return e.model_copy(update={"building_no": to_building})


async def test_an_sls_split_keeps_families_already_verified(verify):
    await verify.send(roster(family(1), family(2)))
    first, second = submitted(document(building=1)), submitted(document(building=2))
    for iv in (first, second):
        await verify.send(iv)
    uow = await verify.send(roster(moved_family(2, to_building=1), sls=NEW_SLS))  # split: family 2 moves
    assert only(uow, SlsCompleted).absent == 1  # accounted for by its interview under the old SLS
    uow = await verify.send(roster(family(1)))  # the old SLS's revision without family 2
    assert uow.events(InterviewFlagged) == [] and uow.events(InterviewVerified) == []
    assert verify.state(second.family_id) == ("verified", "verified", 1)
    assert verify.store.interviews[second.family_id].matched is None  # no longer on its old SLS's roster
    (_, p) = verify.store.progress[NEW_SLS]
    assert (p.expected, p.relocated, p.outstanding, p.complete) == (1, 1, 0, True)


async def test_a_family_interviewed_under_its_old_sls_after_a_merge_is_matched_on_the_new_roster(verify):
    await verify.send(roster(moved_family(3, to_building=9), moved_family(4, to_building=10), sls=NEW_SLS))
    iv = submitted(document(building=3))  # the officer still used the old SLS: no roster there
    uow = await verify.send(iv)
    assert uow.events(InterviewVerified) == []  # held: its own SLS has no roster
    await verify.send(roster(family(5)))  # the old SLS's roster, without families 3 and 4
    assert verify.state(iv.family_id) == ("verified", "verified", 1)
    (_, p) = verify.store.progress[NEW_SLS]
    assert (p.relocated, p.outstanding) == (1, 1)  # family 4 still to be interviewed


async def test_a_family_moved_to_another_village_is_not_matched_by_kk(verify):
    other_village = "6472010002" + "0001"
    await verify.send(roster(moved_family(2, to_building=1), sls=other_village))
    await verify.send(roster(family(1)))
    uow = await verify.send(submitted(document(building=2)))
    assert only(uow, InterviewFlagged).reason is FlagReason.NOT_ON_ROSTER


async def test_a_new_roster_after_the_old_sls_revision_verifies_the_family_flagged_meanwhile(verify):
    await verify.send(roster(family(1), family(2)))
    second = submitted(document(building=2))
    await verify.send(second)
    uow = await verify.send(roster(family(1)))  # the old SLS revised first: family 2 is on no roster yet
    assert only(uow, InterviewFlagged).reason is FlagReason.NOT_ON_ROSTER
    uow = await verify.send(roster(moved_family(2, to_building=4), sls=NEW_SLS))
    e = only(uow, InterviewVerified)
    assert (e.family_id, e.outcome, e.decision_seq) == (second.family_id, "verified", 3)
    assert verify.causes(second.family_id)[-1] == ("sls_change", "verified", 3)
    (_, p) = verify.store.progress[NEW_SLS]
    assert (p.relocated, p.complete) == (1, True)


async def test_the_old_sls_is_recounted_when_its_family_is_verified_on_a_new_roster(verify):
    await verify.send(roster(family(1), family(2)))
    second = submitted(document(building=2))
    await verify.send(submitted(document(building=1)))
    await verify.send(second)
    await verify.send(roster(family(1)))
    (_, before) = verify.store.progress[SLS]
    await verify.send(roster(moved_family(2, to_building=4), sls=NEW_SLS))
    (_, after) = verify.store.progress[SLS]
    assert (before.verified, before.flagged) == (1, 1)
    assert (after.verified, after.flagged) == (2, 0)
