"""Intake's service layer (intake.handlers) on the in-memory store and a fake unit of work: what
is stored, answered, published and audited for submissions, repeats, conflicts, erasures and the
status view. No database, no broker: milliseconds per test. The real stack proves the same
through HTTP in tests/integration (test_intake_api, test_actor_from_token, test_erasure)."""

from __future__ import annotations

import base64
import inspect
import uuid
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

import orjson
import pytest

from intake import domain
from intake.domain import Conflict, Erased, Invalid, Receipt
from intake.handlers import Caller, Denied, ErasureDone, IntakeHandlers
from intake.publisher import IntakePublisher
from intake.settings import IntakeSettings
from intake.store import IntakeStore
from regsosek.auth import Principal, Role
from regsosek.contracts import (
    EligibilityDecided,
    FamilyErased,
    FamilyInterview,
    FkpAdjustment,
    InterviewFlagged,
    InterviewSubmitted,
    InterviewVerified,
    MemberIdentities,
    RosterSubmitted,
    SlsRoster,
    VerificationResolved,
    household_profile,
)
from regsosek.contracts.identities import identity_aad, parse_identity_plaintext, unb64
from regsosek.crypto import CannotOpen, parse_keys
from regsosek.examples import family_interview
from regsosek.testing import FakeUnitOfWork

from intake_fakes import InMemoryIntakeStore, transaction_of

SLS = "64720100010001"
FAMILY = f"{SLS}-0001-001"
NIK_KEY = "test-nik-hash-key-of-at-least-32-bytes"
T0 = datetime(2022, 10, 20, 3, 0, tzinfo=UTC)
IDENTITY_KEYS = parse_keys("feed1:" + base64.b64encode(b"i" * 32).decode())


class World:
    """The handlers over one in-memory store; each call in its own fake unit of work."""

    def __init__(self) -> None:
        self.store = InMemoryIntakeStore(now=lambda: T0)
        publisher = IntakePublisher(NIK_KEY, IDENTITY_KEYS)
        self.handlers = IntakeHandlers(IntakeSettings(env="local"), lambda uow: self.store, publisher)
        self.uows: list[FakeUnitOfWork] = []

    def transaction(self):
        """A handler's Transaction: each block a new fake unit of work, kept for its events."""

        def opened():
            self.uows.append(FakeUnitOfWork("intake"))
            return transaction_of(self.uows[-1])()

        return opened

    @property
    def published(self) -> list:
        return [p for u in self.uows for p in u.published]

    def events(self, kind) -> list:
        return [e for u in self.uows for e in u.events(kind)]

    async def submit(self, data, caller=None):
        return await self.handlers.submit(self.transaction(), data, caller or officer())

    async def consume(self, handler, event, event_id: str) -> None:
        uow = FakeUnitOfWork("intake")
        await handler(uow, SimpleNamespace(data=event, envelope=SimpleNamespace(id=event_id)))
        await uow.commit()


def caller(subject: str, role: Role, areas=("64",)) -> Caller:
    return Caller(Principal(subject, role, tuple(areas)), "req-1", None)


def officer(subject: str = "OFC-1") -> Caller:
    return caller(subject, Role.OFFICER)


def interview(**changes) -> FamilyInterview:
    return FamilyInterview.model_validate({**family_interview(), **changes})


def roster(kk: str = "6472010101220001") -> SlsRoster:
    return SlsRoster.model_validate({
        "submission_id": str(uuid.uuid4()), "sls_id": SLS, "officer_id": "OFC-1", "confirmed_by": "Pak RT",
        "confirmed_at": "2022-10-16T08:00:00+08:00",
        "families": [{"building_no": 1, "family_no": 1, "kk_number": kk, "head_name": "Budi", "member_count": 3,
                      "status": "present"}]})


def resolution(**changes) -> VerificationResolved:
    return VerificationResolved.model_validate({
        "submission_id": str(uuid.uuid4()), "family_id": FAMILY, "sls_id": SLS, "decision": "verify",
        "supervisor_id": "SPV-1", "reason": "seen by Pak Budi", "decided_at": "2022-11-01T10:00:00+08:00", **changes})


# ---------------------------------------------------------------- the fake stays the real store's twin


def _public_methods(cls) -> dict[str, inspect.Signature]:
    return {n: inspect.signature(f) for n, f in inspect.getmembers(cls, inspect.isfunction) if not n.startswith("_")}


def test_in_memory_store_has_the_real_stores_methods_and_signatures():
    real, fake = _public_methods(IntakeStore), _public_methods(InMemoryIntakeStore)
    assert real.keys() == fake.keys()
    assert {n: str(s) for n, s in real.items()} == {n: str(s) for n, s in fake.items()}


# ---------------------------------------------------------------- interviews: new, repeat, conflict


async def test_a_new_interview_is_stored_and_published_once_pseudonymised():
    w = World()
    iv = interview()
    r = await w.submit(iv)
    assert isinstance(r, Receipt) and not r.replayed and r.as_dict()["status"] == "accepted"
    p, ids = w.published
    assert (p.topic.endswith("interview-submitted"), p.key, p.subject) == (True, SLS, iv.family_id)
    assert isinstance(p.event, InterviewSubmitted) and p.event.submission_id == iv.submission_id
    wire = orjson.dumps(p.event.model_dump(mode="json"))
    assert b"6472010505800001" not in wire and b"Budi" not in wire  # NIK and name never published in clear
    kept = w.store.submissions[iv.submission_id]
    assert kept.document == iv.model_dump(mode="json") and kept.received.event_id == r.event_id
    assert w.uows[0].published[0].event.location.kk_hash is not None
    # the members' NIKs go to the identity feed only, sealed under its key and bound to the submission
    assert (ids.topic.endswith("member-identities"), ids.key, ids.subject) == (True, SLS, iv.family_id)
    assert isinstance(ids.event, MemberIdentities) and ids.event.submission_id == iv.submission_id
    assert b"6472010505800001" not in orjson.dumps(ids.event.model_dump(mode="json"))
    opened = IDENTITY_KEYS.open(unb64(ids.event.sealed), identity_aad(iv.family_id, iv.submission_id))
    assert parse_identity_plaintext(opened) == {m.line_no: m.nik for m in iv.members if m.nik}
    assert ids.event.members == len([m for m in iv.members if m.nik]) > 0
    with pytest.raises(CannotOpen):  # bound to its family and submission: not replayable onto another
        IDENTITY_KEYS.open(unb64(ids.event.sealed), identity_aad(iv.family_id, uuid.uuid4()))


async def test_the_same_id_and_body_again_is_a_replay_with_the_first_receipt_and_no_second_event():
    w = World()
    iv = interview()
    first = await w.submit(iv)
    again = await w.submit(interview())
    assert isinstance(again, Receipt) and again.replayed
    assert again.as_dict() == {**first.as_dict(), "status": "duplicate_of_earlier_receipt"}
    assert len(w.events(InterviewSubmitted)) == 1


async def test_the_same_id_with_another_body_is_a_conflict_and_changes_nothing():
    w = World()
    iv = interview()
    await w.submit(iv)
    other = interview(officer_id="OFC-1", interviewed_at="2022-10-21T10:00:00+08:00")
    assert await w.submit(other) == Conflict(iv.submission_id)
    assert len(w.events(InterviewSubmitted)) == 1
    assert w.store.submissions[iv.submission_id].document == iv.model_dump(mode="json")


async def test_an_invalid_interview_is_refused_with_every_problem_before_any_transaction():
    w = World()
    r = await w.submit(interview(interviewed_at="2023-01-05T10:00:00+08:00"))
    assert isinstance(r, Invalid) and [p.path for p in r.problems] == ["/interviewed_at"]
    assert w.uows == [] and w.store.submissions == {}


async def test_the_actor_recorded_is_the_token_subject_with_a_warning():
    w = World()
    r = await w.submit(interview(officer_id="SOMEONE-ELSE"), officer("OFC-REAL"))
    assert isinstance(r, Receipt)
    assert {"path": "/officer_id", "reason": "replaced by the token's subject: the actor recorded is the "
            "authenticated caller"} in r.warnings
    assert w.store.submissions[r.submission_id].document["officer_id"] == "OFC-REAL"
    assert w.events(InterviewSubmitted)[0].officer_id == "OFC-REAL"


async def test_a_batch_answers_each_item_alone_in_order():
    w = World()
    a, bad = interview(), interview(submission_id=str(uuid.uuid4()), interviewed_at="2023-01-05T10:00:00+08:00")
    clash = interview(interviewed_at="2022-10-21T10:00:00+08:00")  # a's id, other content
    answers = await w.handlers.submit_interviews(w.transaction(), [a, bad, interview(), clash], officer())
    assert [type(x) for x in answers] == [Receipt, Invalid, Receipt, Conflict]
    assert not answers[0].replayed and answers[2].replayed and answers[2].event_id == answers[0].event_id
    assert len(w.events(InterviewSubmitted)) == 1


async def test_a_batch_of_invalid_items_opens_no_transaction():
    w = World()
    answers = await w.handlers.submit_interviews(
        w.transaction(), [interview(interviewed_at="2023-01-05T10:00:00+08:00")], officer())
    assert [type(x) for x in answers] == [Invalid] and w.uows == []


async def test_an_id_stored_by_a_concurrent_request_after_the_read_is_answered_against_it():
    """Between the read of what is stored and the insert another request with the same id
    commits first: its row wins; this one is answered as a repeat of it, and not published."""
    w = World()
    iv = interview()
    real_state = w.store.intake_state

    async def state_read_before_the_other_commit(subs):
        state = await real_state(subs)
        if not w.store.submissions:
            await w.store.save_submissions([domain.checked_submission(iv, "OFC-1", collection=w.handlers.collection)])
        return state

    w.store.intake_state = state_read_before_the_other_commit
    r = await w.submit(iv)
    assert isinstance(r, Receipt) and r.replayed
    assert w.published == []


# ---------------------------------------------------------------- rosters, resolutions, FKP results


async def test_a_roster_is_published_pseudonymised_under_its_sls():
    w = World()
    ro = roster()
    r = await w.submit(ro)
    assert isinstance(r, Receipt) and (r.kind, r.family_id, r.version) == ("roster", None, None)
    (p,) = w.published
    assert p.topic.endswith("sls-roster") and (p.key, p.subject) == (SLS, SLS)
    assert isinstance(p.event, RosterSubmitted) and p.event.families[0].kk_hash
    assert b"6472010101220001" not in orjson.dumps(p.event.model_dump(mode="json"))
    assert w.store.submissions[ro.submission_id].document["families"][0]["kk_number"] == "6472010101220001"


async def test_a_roster_of_an_unknown_village_is_misplaced():
    ro = SlsRoster.model_validate({**roster().model_dump(mode="json"), "sls_id": "99990100010001"})
    assert [p.path for p in domain.placement_problems(ro)] == ["/sls_id"]


async def test_a_resolution_is_published_as_received_and_audited_with_the_family():
    w = World()
    res = resolution()
    spv = caller("SPV-1", Role.SUPERVISOR)
    r = await w.submit(res, spv)
    assert isinstance(r, Receipt) and not r.replayed
    (p,) = w.published
    assert p.topic.endswith("verification-resolved") and p.subject == FAMILY and p.event == res
    assert await w.submit(resolution(submission_id=str(res.submission_id)), spv) == Receipt.of(
        w.store.submissions[res.submission_id].received, replayed=True)
    assert [(e.action, e.object_id, e.outcome, e.detail) for e in w.store.audit_log] == [
        ("resolution.submit", FAMILY, "ok", {"submission_id": str(res.submission_id)}),
        ("resolution.submit", FAMILY, "replayed", {"submission_id": str(res.submission_id)})]
    assert len(w.published) == 1


async def test_a_conflicting_fkp_result_is_not_audited():
    w = World()
    doc = {"submission_id": str(uuid.uuid4()), "family_id": FAMILY, "sls_id": SLS, "welfare_group": 2,
           "reason": "consultation", "decided_by": "Musdes", "decided_at": "2023-05-03T10:00:00+08:00"}
    village = caller("Musdes", Role.VILLAGE_OFFICIAL)
    assert isinstance(await w.submit(FkpAdjustment.model_validate(doc), village), Receipt)
    other = FkpAdjustment.model_validate({**doc, "welfare_group": 3})
    assert await w.submit(other, village) == Conflict(other.submission_id)
    assert [e.outcome for e in w.store.audit_log] == ["ok"]
    assert [p.topic.endswith("fkp-adjustment") for p in w.published] == [True]


# ---------------------------------------------------------------- the status view


async def test_the_status_view_weighs_verify_decisions_by_sequence_not_arrival():
    w = World()
    iv = interview()
    await w.submit(iv)
    h = w.handlers
    verified = InterviewVerified(family_id=iv.family_id, sls_id=SLS, outcome="verified_added", verified_at=T0,
                                 profile=household_profile(iv), decision_seq=5)
    older_flag = InterviewFlagged(family_id=iv.family_id, sls_id=SLS, submission_id=iv.submission_id,
                                  version=1, reason="duplicate_nik", detail="seen", flagged_at=T0, decision_seq=3)
    await w.consume(h.on_verified, verified, "evt-v")
    await w.consume(h.on_flagged, older_flag, "evt-f3")  # arrives after the verification it preceded
    eligible = EligibilityDecided.model_validate({
        "family_id": iv.family_id, "sls_id": SLS, "submission_id": str(iv.submission_id), "version": 1,
        "welfare_group": 1, "decile": 1, "model_version": "m1", "rule_version": "r1",
        "decided_at": T0.isoformat(), "decision_seq": 6, "decisions": []})
    await w.consume(h.on_eligibility, eligible, "evt-e")
    journey = await h.journey(w.transaction(), iv.submission_id, officer())
    assert [s.step for s in journey.steps] == ["verified", "flagged", "eligibility"]
    assert journey.final == "decided"  # the older flag does not stand
    newer_flag = InterviewFlagged.model_validate({**older_flag.model_dump(mode="json"), "decision_seq": 7})
    await w.consume(h.on_flagged, newer_flag, "evt-f7")
    await w.consume(h.on_flagged, newer_flag, "evt-f7")  # a redelivery: recorded once
    journey = await h.journey(w.transaction(), iv.submission_id, officer())
    assert journey.final == "flagged" and [s.step for s in journey.steps].count("flagged") == 2


async def test_a_journey_read_is_audited_and_another_areas_read_denied():
    w = World()
    iv = interview()
    await w.submit(iv)
    outsider = caller("OFC-9", Role.OFFICER, areas=("11",))
    assert await w.handlers.journey(w.transaction(), iv.submission_id, outsider) == Denied(SLS)
    assert await w.handlers.journey(w.transaction(), uuid.uuid4(), officer()) is None
    await w.handlers.journey(w.transaction(), iv.submission_id, officer())
    assert [(e.actor, e.action, e.outcome, e.detail) for e in w.store.audit_log] == [
        ("OFC-9", "submission.read", "denied", {}),
        ("OFC-1", "submission.read", "ok", {"family_id": iv.family_id})]


# ---------------------------------------------------------------- erasure


async def test_erasure_redacts_every_body_publishes_family_erased_once_and_refuses_later_submissions():
    w = World()
    iv, ro, res = interview(), roster(), resolution()
    for data in (iv, ro):
        await w.submit(data)
    await w.submit(res, caller("SPV-1", Role.SUPERVISOR))
    admin = caller("ADM-1", Role.ADMIN)
    done = await w.handlers.erase_family(w.transaction(), FAMILY, "data_subject_request", "CASE-7", admin)
    assert isinstance(done, ErasureDone) and not done.replayed and done.erased_at == T0
    (erased,) = w.events(FamilyErased)
    assert (erased.family_id, erased.sls_id, erased.erasure_id) == (FAMILY, SLS, done.erasure_id)
    assert [p.subject for p in w.published if isinstance(p.event, FamilyErased)] == [FAMILY]
    bodies = {k: w.store.submissions[s.submission_id].document for k, s in
              (("interview", iv), ("roster", ro), ("resolution", res))}
    text = orjson.dumps(bodies)
    assert b"Budi" not in text and b"6472010505800001" not in text and b"6472010101220001" not in text
    assert bodies["resolution"]["reason"] == ""
    assert w.store.audit_log[-1].detail == {"erasure_id": str(done.erasure_id), "reason": "data_subject_request",
                                            "reference": "CASE-7", "interview_bodies": 1, "resolution_bodies": 1,
                                            "roster_bodies": 1}
    assert await w.submit(interview(submission_id=str(uuid.uuid4()))) == Erased(FAMILY)
    assert await w.submit(interview()) == Erased(FAMILY)  # a repeat of its interview too

    again = await w.handlers.erase_family(w.transaction(), FAMILY, "other", None, admin)
    assert again.replayed and (again.erasure_id, again.reason) == (done.erasure_id, "data_subject_request")
    assert len(w.events(FamilyErased)) == 1 and w.store.audit_log[-1].outcome == "replayed"


async def test_a_roster_after_an_erasure_is_stored_without_the_erased_family():
    w = World()
    await w.handlers.erase_family(w.transaction(), FAMILY, "court_order", None, caller("ADM-1", Role.ADMIN))
    ro = roster()
    r = await w.submit(ro)
    assert isinstance(r, Receipt) and not r.replayed
    family = w.store.submissions[ro.submission_id].document["families"][0]
    assert "kk_number" not in family and "head_name" not in family
    assert (await w.submit(SlsRoster.model_validate(ro.model_dump(mode="json")))).replayed  # same content hash


def erasure_while_waiting(w: World) -> None:
    """The family's erasure commits after a submission's state was read (the state's statement
    waited for the erasure's lock and reads with its earlier snapshot): the state is stale."""
    read = w.store.intake_state

    async def stale_state(subs):
        state = await read(subs)
        if not w.store.erasures:
            await w.handlers.erase_family(w.transaction(), FAMILY, "court_order", None, caller("ADM-1", Role.ADMIN))
        return state

    w.store.intake_state = stale_state


async def test_an_interview_whose_family_is_erased_while_it_waits_is_refused_not_stored():
    w = World()
    erasure_while_waiting(w)
    iv = interview()
    assert await w.submit(iv) == Erased(FAMILY)
    assert iv.submission_id not in w.store.submissions and not w.events(InterviewSubmitted)


async def test_a_roster_whose_family_is_erased_while_it_waits_is_stored_without_it():
    w = World()
    erasure_while_waiting(w)
    ro = roster()
    assert isinstance(await w.submit(ro), Receipt)
    family = w.store.submissions[ro.submission_id].document["families"][0]
    assert "kk_number" not in family and "head_name" not in family


# ---------------------------------------------------------------- retention


@pytest.mark.parametrize("steps,expired", [([], 0), (["eligibility"], 1), (["flagged"], 1)])
async def test_an_interviews_body_expires_only_once_its_journey_is_final(steps, expired):
    w = World()
    iv = interview()
    await w.submit(iv)
    await w.store.save_steps([domain.JourneyEntry(iv.submission_id, s, {}, f"e-{s}", 1) for s in steps])
    assert await w.handlers.expire_bodies(w.store, T0 + timedelta(days=1), 100) == expired
    assert (w.store.submissions[iv.submission_id].document is None) == bool(expired)
    assert await w.handlers.expire_bodies(w.store, T0, 100) == 0  # received at T0: not before it


async def test_a_roster_after_an_erasure_publishes_no_pseudonym_of_the_erased_family():
    """The erased family's KK hash is not published again by a later roster (verify would hold it
    again); the SLS's other families keep theirs."""
    w = World()
    await w.handlers.erase_family(w.transaction(), FAMILY, "court_order", None, caller("ADM-1", Role.ADMIN))
    doc = roster().model_dump(mode="json")
    doc["families"].append({**doc["families"][0], "family_no": 2, "kk_number": "6472010101220002"})
    ro = SlsRoster.model_validate(doc)
    await w.submit(ro)
    (event,) = w.events(RosterSubmitted)
    kk = {(f.building_no, f.family_no): f.kk_hash for f in event.families}
    assert kk[(1, 1)] is None and kk[(1, 2)] is not None
    assert ro.families[0].kk_number == "6472010101220001"  # what was received is not changed
