"""Verify's handlers on the in-memory store and the fake unit of work: matching, holds, NIK
claims, decision sequences, later rosters, resolutions and erasure, in milliseconds. The same
flows against Kafka and PostgreSQL: tests/integration/test_verify_procedure.py and others."""

from __future__ import annotations

import copy
import logging
import uuid
from datetime import UTC, datetime

import pytest

from regsosek.contracts import (
    ErasureReason,
    FamilyErased,
    FamilyInterview,
    FlagReason,
    InterviewFlagged,
    InterviewSubmitted,
    InterviewVerified,
    RosterStatus,
    RosterSubmitted,
    SlsCompleted,
    SupervisorDecision,
    VerificationResolved,
    pseudonymise_interview,
)
from regsosek.contracts.pseudonymous import PseudonymousRosterFamily
from regsosek.envelope import new_envelope
from regsosek.messaging import Incoming, PermanentError
from regsosek.pseudonyms import DEVELOPMENT_NIK_HASH_KEY, kk_hash_hex
from regsosek.testing import FakeUnitOfWork
from regsosek.topics import Topic
from verify.handlers import VerifyHandlers
from verify.publisher import Publisher
from verify.settings import VerifySettings

from verify_fakes import InMemoryVerifyStore

KEY = DEVELOPMENT_NIK_HASH_KEY  # what intake hashes with outside production
AT = datetime(2022, 10, 21, 8, 0, tzinfo=UTC)
SLS = "64720100010001"
OTHER_SLS = "64720100010002"
HOLD_S = 3600.0

MEMBER = {"sex": "female", "date_of_birth": "1985-06-05", "relationship": "spouse", "marital_status": "married",
          "school": "not_anymore", "highest_diploma": "sd", "worked_last_week": False}
HEAD = {**MEMBER, "sex": "male", "date_of_birth": "1980-05-05", "relationship": "head"}
HOUSING = {"tenure": "owned", "floor_area_m2": 36, "floor": "wood_plank", "wall": "wood_board", "roof": "zinc",
           "drinking_water": "refill", "lighting": "pln_metered", "installed_power": "450",
           "cooking_fuel": "lpg_3kg", "toilet": "own", "faeces_disposal": "septic_tank"}


def nik(sls: str, building: int, line: int) -> str:
    return f"{sls[:6]}{building:04d}{line:02d}{sls[-4:]}"


def kk(sls: str, building: int) -> str:
    return f"{sls[:8]}{building:04d}{sls[-4:]}"


def document(sls: str = SLS, building: int = 1, *, members: int = 2, niks: tuple[str, ...] | None = None,
             version: int = 1) -> dict:
    niks = niks or tuple(nik(sls, building, line) for line in range(1, members + 1))
    people = [dict(HEAD if line == 1 else MEMBER, line_no=line, name=f"Person {line}", nik=niks[line - 1])
              for line in range(1, members + 1)]
    return {"submission_id": str(uuid.uuid4()), "officer_id": "OFC-1", "version": version,
            "interviewed_at": "2022-10-20T10:00:00+08:00",
            "location": {"sls_id": sls, "building_no": building, "family_no": 1, "kk_number": kk(sls, building)},
            "housing": HOUSING, "members": people}


def interview(sls: str = SLS, building: int = 1, **kw) -> InterviewSubmitted:
    return pseudonymise_interview(FamilyInterview.model_validate(document(sls, building, **kw)), KEY)


def again(iv: InterviewSubmitted, **update) -> InterviewSubmitted:
    return InterviewSubmitted.model_validate({**copy.deepcopy(iv.model_dump(mode="json")), **update})


def family(building: int, status: RosterStatus = RosterStatus.PRESENT, *, sls: str = SLS, members: int = 2,
           with_kk: bool = True) -> PseudonymousRosterFamily:
    return PseudonymousRosterFamily(building_no=building, family_no=1, member_count=members, status=status,
                                    kk_hash=kk_hash_hex(KEY, kk(sls, building)) if with_kk else None)


def roster(*families: PseudonymousRosterFamily, sls: str = SLS) -> RosterSubmitted:
    return RosterSubmitted(submission_id=uuid.uuid4(), sls_id=sls, officer_id="OFC-1", confirmed_at=AT,
                           families=list(families))


def resolution(family_id: str, decision: SupervisorDecision) -> VerificationResolved:
    return VerificationResolved(submission_id=uuid.uuid4(), family_id=family_id, sls_id=family_id[:14],
                                decision=decision, supervisor_id="SPV-1", reason="checked on site", decided_at=AT)


def erasure(family_id: str) -> FamilyErased:
    return FamilyErased(erasure_id=uuid.uuid4(), family_id=family_id, sls_id=family_id[:14],
                        reason=ErasureReason.DATA_SUBJECT_REQUEST, erased_at=AT)


class Verify:
    """The handlers over one in-memory store; `send` applies one event in its own unit of work."""

    def __init__(self, **settings) -> None:
        self.store = InMemoryVerifyStore()
        config = VerifySettings(env="local", hold_timeout_s=HOLD_S, **settings)
        self.handlers = VerifyHandlers(config, lambda uow: self.store, Publisher(config.update_hold_timeout_s),
                                       clock=lambda: AT)

    async def send(self, data) -> FakeUnitOfWork:
        uow = FakeUnitOfWork("verify")
        handler = self.handlers.by_event_type()[type(data)]
        subject = getattr(data, "family_id", None) or data.sls_id
        await handler(uow, Incoming(new_envelope(data, source="/test", subject=subject), data, None))
        await uow.commit()
        return uow

    async def expire_holds(self) -> list[FakeUnitOfWork]:
        self.store.now += HOLD_S + 1
        done = []
        for family_id, sls_id in await self.store.expired_holds(HOLD_S):
            uow = FakeUnitOfWork("verify")
            await self.handlers.on_hold_expired(uow, family_id, sls_id)
            await uow.commit()
            done.append(uow)
        return done

    def state(self, family_id: str) -> tuple[str, str | None, int]:
        row = self.store.interviews[family_id]
        return row.state, row.outcome, row.decision_seq

    def causes(self, family_id: str) -> list[tuple[str, str, int]]:
        return [(h.cause, h.outcome, h.decision_seq) for h in self.store.history if h.family_id == family_id]


def only(uow: FakeUnitOfWork, kind: type):
    (event,) = uow.events(kind)
    return event


@pytest.fixture
def verify() -> Verify:
    return Verify()


# ---------------------------------------------------------------- matching against the roster


async def test_an_interview_on_the_roster_is_verified_and_completes_the_sls(verify):
    await verify.send(roster(family(1)))
    iv = interview()
    uow = await verify.send(iv)
    e = only(uow, InterviewVerified)
    assert (e.family_id, e.outcome, e.decision_seq, e.verified_at) == (iv.family_id, "verified", 1, AT)
    assert [(p.topic, p.key, p.subject) for p in uow.published if isinstance(p.event, InterviewVerified)] == [
        (Topic.INTERVIEW_VERIFIED.wire, SLS, iv.family_id)]
    done = only(uow, SlsCompleted)
    assert (done.expected, done.interviewed, done.verified, done.roster_revision) == (1, 1, 1, 1)
    assert verify.state(iv.family_id) == ("verified", "verified", 1)
    assert sorted(verify.store.claims.values()) == [iv.family_id, iv.family_id]
    assert verify.causes(iv.family_id) == [("interview", "verified", 1)]


async def test_an_interview_not_on_the_roster_is_flagged_and_the_sls_stays_open(verify):
    await verify.send(roster(family(1)))
    uow = await verify.send(interview(building=7))
    e = only(uow, InterviewFlagged)
    assert (e.reason, e.decision_seq) == (FlagReason.NOT_ON_ROSTER, 1)
    assert "building 7" in e.detail
    assert not uow.events(SlsCompleted)
    assert verify.store.progress[SLS][1].outstanding == 1


async def test_a_member_count_that_differs_from_the_roster_is_flagged(verify):
    await verify.send(roster(family(1, members=4)))
    e = only(await verify.send(interview(members=2)), InterviewFlagged)
    assert e.reason is FlagReason.MEMBER_COUNT_DIFFERS
    assert e.detail == "roster lists 4 members, interview has 2"


async def test_the_rt_heads_status_flags_a_family_that_moved(verify):
    await verify.send(roster(family(1, RosterStatus.MOVED), family(2)))
    uow = await verify.send(interview(building=1))
    assert only(uow, InterviewFlagged).reason is FlagReason.ROSTER_SAYS_MOVED


async def test_a_nik_claimed_by_a_family_in_another_sls_flags_the_second(verify):
    await verify.send(roster(family(1)))
    await verify.send(roster(family(1, sls=OTHER_SLS), sls=OTHER_SLS))
    first = interview()
    shared = nik(SLS, 1, 1)
    second = interview(OTHER_SLS, niks=(shared, nik(OTHER_SLS, 1, 2)))
    only(await verify.send(first), InterviewVerified)
    e = only(await verify.send(second), InterviewFlagged)
    assert (e.reason, e.detail) == (FlagReason.DUPLICATE_NIK, "NIK of member line(s) 1 already belongs to another family")
    # the first keeps both its NIKs; the second holds only its own spouse's
    assert sorted(verify.store.claims.values()) == sorted([first.family_id] * 2 + [second.family_id])


async def test_a_nik_taken_by_a_concurrent_family_is_decided_again_on_fresh_state(verify, caplog):
    caplog.set_level(logging.INFO, logger="verify")
    await verify.send(roster(family(1)))
    iv = interview()
    shared = next(iter(iv.nik_hashes()))
    verify.store.taken_meanwhile[shared] = "64720100010009-0001-001"  # another instance's family, just committed
    uow = await verify.send(iv)
    assert not uow.events(InterviewVerified), "the decision made before the claim was lost must not be published"
    e = only(uow, InterviewFlagged)
    assert (e.reason, e.decision_seq) == (FlagReason.DUPLICATE_NIK, 1)
    assert verify.causes(iv.family_id) == [("interview", "duplicate_nik", 1)]
    assert [r.getMessage() for r in caplog.records] == ["a NIK was claimed by a concurrent family; deciding again"]


# ---------------------------------------------------------------- holds


async def test_an_interview_before_its_roster_is_held_and_the_roster_decides_it(verify):
    iv = interview()
    uow = await verify.send(iv)
    assert uow.published == [] and verify.state(iv.family_id) == ("held", None, 0)
    assert verify.store.claims == {}, "a held interview claims no NIK yet"
    uow = await verify.send(roster(family(1), family(2)))
    assert only(uow, InterviewVerified).decision_seq == 1
    assert verify.causes(iv.family_id) == [("roster", "verified", 1)]
    assert not uow.events(SlsCompleted)  # family 2 not interviewed yet
    uow = await verify.send(interview(building=2))
    assert only(uow, SlsCompleted).interviewed == 2


async def test_held_families_sharing_a_nik_are_decided_in_arrival_order(verify, caplog):
    caplog.set_level(logging.INFO, logger="verify")
    first = interview(building=1)
    second = interview(building=2, niks=(nik(SLS, 1, 1), nik(SLS, 2, 2)))
    await verify.send(first)
    await verify.send(second)
    uow = await verify.send(roster(family(1), family(2)))
    assert [e.family_id for e in uow.events(InterviewVerified)] == [first.family_id]
    assert [(e.family_id, e.reason) for e in uow.events(InterviewFlagged)] == [(second.family_id, FlagReason.DUPLICATE_NIK)]
    assert caplog.records == [], "decided in one go: the domain saw the first family's claim"


async def test_a_hold_that_times_out_is_flagged_no_roster_and_a_later_roster_still_decides(verify):
    iv = interview()
    await verify.send(iv)
    (uow,) = await verify.expire_holds()
    e = only(uow, InterviewFlagged)
    assert (e.reason, e.decision_seq, e.detail) == (FlagReason.NO_ROSTER, 1, "no SLS roster arrived within 1 h of the interview")
    assert await verify.expire_holds() == [], "flagged once"
    uow = await verify.send(roster(family(1)))
    assert only(uow, InterviewVerified).decision_seq == 2
    assert verify.causes(iv.family_id) == [("hold_timeout", "no_roster", 1), ("roster_revision", "verified", 2)]


async def test_a_hold_whose_roster_came_after_all_is_decided_against_it(verify):
    iv = interview()
    await verify.send(iv)
    verify.store.now += HOLD_S + 1
    expired = await verify.store.expired_holds(HOLD_S)
    await verify.send(roster(family(1)))  # arrives between the sweep's query and its transaction
    uow = FakeUnitOfWork("verify")
    assert await verify.handlers.on_hold_expired(uow, *expired[0]) is False
    assert uow.published == [] and verify.causes(iv.family_id) == [("roster", "verified", 1)]


# ---------------------------------------------------------------- versions and decision sequences


async def test_versions_not_arrival_order_decide_and_sequences_only_grow(verify):
    await verify.send(roster(family(1)))
    v1 = interview()
    v2 = again(v1, version=2, submission_id=str(uuid.uuid4()), members=v1.model_dump(mode="json")["members"][:1])
    assert only(await verify.send(v2), InterviewFlagged).decision_seq == 1  # one member: count differs
    assert (await verify.send(v1)).published == [], "an older version changes nothing"
    assert (await verify.send(v2)).published == [], "a redelivery changes nothing"
    v3 = again(v1, version=3, submission_id=str(uuid.uuid4()))
    assert only(await verify.send(v3), InterviewVerified).decision_seq == 2
    assert verify.state(v1.family_id) == ("verified", "verified", 2)


async def test_a_second_submission_of_the_same_version_is_flagged_alone_with_the_current_sequence(verify):
    await verify.send(roster(family(1)))
    iv = interview()
    await verify.send(iv)
    dup = again(iv, submission_id=str(uuid.uuid4()))
    e = only(await verify.send(dup), InterviewFlagged)
    assert (e.reason, e.decision_seq, e.submission_id) == (FlagReason.DUPLICATE_INTERVIEW, 1, dup.submission_id)
    assert verify.state(iv.family_id) == ("verified", "verified", 1), "the family is unchanged"
    assert verify.causes(iv.family_id)[-1] == ("duplicate_interview", "duplicate_interview", 1)


# ---------------------------------------------------------------- later rosters and resolutions


async def test_a_later_roster_publishes_only_changed_outcomes(verify):
    await verify.send(roster(family(1), family(2)))
    a, b = interview(building=1), interview(building=2)
    await verify.send(a)
    await verify.send(b)
    uow = await verify.send(roster(family(1, RosterStatus.MOVED), family(2)))
    assert [(e.family_id, e.reason, e.decision_seq) for e in uow.events(InterviewFlagged)] == [
        (a.family_id, FlagReason.ROSTER_SAYS_MOVED, 2)]
    assert not uow.events(InterviewVerified)
    assert verify.store.interviews[b.family_id].roster_revision == 2, "the unchanged family's match is refreshed"
    assert verify.causes(b.family_id) == [("interview", "verified", 1)]


async def test_a_supervisors_decision_stands_against_a_later_roster(verify):
    await verify.send(roster(family(1, RosterStatus.MOVED)))
    iv = interview()
    await verify.send(iv)
    e = only(await verify.send(resolution(iv.family_id, SupervisorDecision.VERIFY)), InterviewVerified)
    assert (e.outcome, e.decision_seq) == ("verified_by_supervisor", 2)
    assert (await verify.send(roster(family(1, RosterStatus.DISSOLVED)))).events(InterviewFlagged) == []
    assert verify.state(iv.family_id) == ("verified", "verified_by_supervisor", 2)


async def test_resolutions_that_cannot_apply_are_permanent_errors(verify):
    with pytest.raises(PermanentError, match="no interview"):
        await verify.send(resolution(f"{SLS}-0001-001", SupervisorDecision.VERIFY))
    iv = interview()
    await verify.send(iv)
    with pytest.raises(PermanentError, match="held"):
        await verify.send(resolution(iv.family_id, SupervisorDecision.REJECT))
    assert verify.store.resolutions == {}


async def test_a_resolution_that_changes_nothing_is_kept_and_publishes_nothing(verify):
    await verify.send(roster(family(1)))
    iv = interview()
    await verify.send(iv)
    r = resolution(iv.family_id, SupervisorDecision.VERIFY)
    assert (await verify.send(r)).published == []
    assert verify.store.resolutions[str(r.submission_id)] == (r, 1)


# ---------------------------------------------------------------- erasure


async def test_erasure_forgets_the_family_and_nothing_brings_it_back(verify):
    await verify.send(roster(family(1), family(2)))
    iv = interview()
    await verify.send(iv)
    uow = await verify.send(erasure(iv.family_id))
    assert uow.published == []
    row = verify.store.interviews[iv.family_id]
    assert (row.interview, row.state, row.outcome) == (None, "verified", "verified"), "ids and outcome only"
    assert verify.store.claims == {}
    assert verify.store.rosters[SLS].entries[0].kk_hash is None
    (entry,) = verify.store.audit_log
    assert (entry.action, entry.object_id, entry.detail["nik_claims"], entry.detail["bodies"]) == (
        "family.erase", iv.family_id, 2, 1)
    # a retained or re-driven interview of it, and a roster listing it again, change nothing of it
    assert (await verify.send(again(iv, version=2, submission_id=str(uuid.uuid4())))).published == []
    await verify.send(roster(family(1), family(2)))
    assert verify.store.rosters[SLS].entries[0].kk_hash is None
    assert verify.store.roster_history[-1].families[0].kk_hash is None
    assert verify.store.roster_history[-1].families[1].kk_hash is not None
    with pytest.raises(PermanentError, match="erased"):
        await verify.send(resolution(iv.family_id, SupervisorDecision.REJECT))


async def test_erasing_a_held_family_drops_its_interview(verify):
    iv = interview()
    await verify.send(iv)
    await verify.send(erasure(iv.family_id))
    assert iv.family_id not in verify.store.interviews
    assert (await verify.send(roster(family(1)))).published == []


# ---------------------------------------------------------------- records of the v1 shape


async def test_a_v1_interview_is_pseudonymised_on_arrival_with_the_legacy_key(verify):
    await verify.send(roster(family(1)))
    v1 = FamilyInterview.model_validate(document())
    only(await verify.send(v1), InterviewVerified)
    kept = verify.store.interviews[v1.family_id].interview
    assert isinstance(kept, InterviewSubmitted) and kept == pseudonymise_interview(v1, KEY)


async def test_without_the_legacy_key_a_v1_interview_is_a_permanent_error(verify, monkeypatch):
    monkeypatch.setattr(VerifySettings, "legacy_key", lambda self: None)  # production without the key
    with pytest.raises(PermanentError, match="REGSOSEK_LEGACY_NIK_HASH_KEY"):
        await verify.send(FamilyInterview.model_validate(document()))
    assert verify.store.interviews == {}


# ---------------------------------------------------------------- a batch's interviews, loaded together


def as_incoming(data) -> Incoming:
    return Incoming(new_envelope(data, source="/test", subject=data.family_id), data, None)  # type: ignore[arg-type]


def test_only_a_batch_of_interviews_each_family_once_is_loaded_together():
    from verify.handlers import preloadable

    a, b = interview(), interview(building=2)
    assert [m.data for m in preloadable([as_incoming(a), as_incoming(b)])] == [a, b]
    assert [m.data for m in preloadable([as_incoming(a), as_incoming(again(a, version=2)), as_incoming(b)])] == [b]
    assert preloadable([as_incoming(a), Incoming(new_envelope(roster(family(1)), source="/test", subject=SLS),
                                                 roster(family(1)), None)]) == []  # type: ignore[arg-type]


async def apply_batch(verify: Verify, *events, isolated: bool = False) -> FakeUnitOfWork:
    """The events as one fetched batch in one unit of work, as the consumer applies them."""
    uow = FakeUnitOfWork("verify")
    uow.batch, uow.isolated = tuple(as_incoming(e) for e in events), isolated
    for m in uow.batch:
        await verify.handlers.by_event_type()[type(m.data)](uow, m)
    await uow.commit()
    return uow


async def test_families_of_one_batch_sharing_a_nik_are_decided_in_order_as_one_outcome(verify, caplog):
    caplog.set_level(logging.INFO, logger="verify")
    await verify.send(roster(family(1), family(2)))
    first = interview()
    second = interview(building=2, niks=(nik(SLS, 1, 1), nik(SLS, 2, 2)))
    uow = await apply_batch(verify, first, second)
    # decided together, the NIK holders carried from the first family to the second: the second sees
    # the shared NIK taken by the first without a claim that fails and a second decision
    assert [r.getMessage() for r in caplog.records] == []
    assert only(uow, InterviewFlagged).reason == FlagReason.DUPLICATE_NIK
    assert only(uow, InterviewVerified).family_id == first.family_id
    assert verify.state(first.family_id)[0] == "verified" and verify.state(second.family_id)[0] == "flagged"
    assert verify.store.claims[bytes.fromhex(first.members[0].nik_hash)] == first.family_id


async def test_a_family_of_a_batch_whose_nik_another_instance_took_is_decided_again_alone(verify, caplog):
    caplog.set_level(logging.INFO, logger="verify")
    await verify.send(roster(family(1), family(2), family(3)))
    a, b, c = interview(), interview(building=2), interview(building=3)
    verify.store.taken_meanwhile[bytes.fromhex(b.members[1].nik_hash)] = "64720100010009-0001-001"
    uow = await apply_batch(verify, a, b, c)
    assert "a NIK was claimed by a concurrent family; deciding again" in [r.getMessage() for r in caplog.records]
    assert {e.family_id for e in uow.events(InterviewVerified)} == {a.family_id, c.family_id}
    flagged = only(uow, InterviewFlagged)
    assert (flagged.family_id, flagged.reason) == (b.family_id, FlagReason.DUPLICATE_NIK)
    assert [cause for cause, _, _ in verify.causes(b.family_id)] == ["interview"]  # decided once, on fresh state


async def test_an_isolated_batch_decides_each_interview_alone(verify):
    await verify.send(roster(family(1), family(2)))
    first = interview()
    second = interview(building=2, niks=(nik(SLS, 1, 1), nik(SLS, 2, 2)))
    saved_together = []
    real = verify.store.save_together

    async def spy(outcomes):
        saved_together.append(len(outcomes))
        return await real(outcomes)

    verify.store.save_together = spy  # type: ignore[method-assign]
    uow = await apply_batch(verify, first, second, isolated=True)
    assert saved_together == []
    assert only(uow, InterviewFlagged).reason == FlagReason.DUPLICATE_NIK
    await apply_batch(verify, interview(building=3), interview(building=4))
    assert saved_together == [2]


async def test_every_sls_of_a_batch_is_recounted_at_once_and_each_completion_published(verify):
    await verify.send(roster(family(1)))
    await verify.send(roster(family(1, sls=OTHER_SLS), sls=OTHER_SLS))
    uow = await apply_batch(verify, interview(), interview(sls=OTHER_SLS))
    assert sorted(e.sls_id for e in uow.events(SlsCompleted)) == [SLS, OTHER_SLS]
    assert all(e.expected == e.verified == 1 for e in uow.events(SlsCompleted))
    assert sorted(verify.store.progress) == [SLS, OTHER_SLS]
