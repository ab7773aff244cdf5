"""The village consultation at intake (intake.consultation, intake.consultation_handlers) on the
in-memory stores and a fake unit of work: a forum opened once per village, decisions one per family
while it is open, an added family's ground check bringing its interview, the close; every repeat
answered with what was recorded, every refusal with its status or JSON pointers. The real stack:
tests/integration/test_fkp_forum.py."""

from __future__ import annotations

import base64
import inspect
import uuid
from datetime import UTC, date, datetime

import pytest

from intake import domain
from intake.consultation import DecisionIn, ForumOpening, GroundCheckIn, Refused
from intake.consultation_handlers import ConsultationHandlers, Recorded
from intake.consultation_store import ConsultationStore
from intake.domain import Invalid
from intake.handlers import Caller
from intake.publisher import IntakePublisher
from regsosek.auth import Principal, Role
from regsosek.contracts import FamilyInterview, FkpDecisionRecorded, FkpForum, FkpGroundChecked, ForumStatus, MemberIdentities
from regsosek.contracts.identities import identity_aad, parse_identity_plaintext, unb64
from regsosek.contracts.interview import Relationship
from regsosek.crypto import parse_keys
from regsosek.examples import family_interview
from regsosek.testing import FakeUnitOfWork

from intake_fakes import InMemoryConsultationStore, InMemoryIntakeStore, transaction_of

SLS = "64720100010001"
VILLAGE = SLS[:10]
NIK_KEY = "test-nik-hash-key-of-at-least-32-bytes"
IDENTITY_KEYS = parse_keys("feed1:" + base64.b64encode(b"i" * 32).decode())
T0 = datetime(2023, 5, 8, 3, 0, tzinfo=UTC)


class World:
    def __init__(self) -> None:
        self.store = InMemoryConsultationStore(now=lambda: T0)
        self.intake = InMemoryIntakeStore(now=lambda: T0)
        self.handlers = ConsultationHandlers(lambda uow: self.store, lambda uow: self.intake,
                                             IntakePublisher(NIK_KEY, IDENTITY_KEYS))
        self.uows: list[FakeUnitOfWork] = []

    def tx(self):
        def opened():
            self.uows.append(FakeUnitOfWork("intake"))
            return transaction_of(self.uows[-1])()

        return opened

    def events(self, kind) -> list:
        return [e for u in self.uows for e in u.events(kind)]


def official(areas=(VILLAGE,)) -> Caller:
    return Caller(Principal("DESA-1", Role.VILLAGE_OFFICIAL, tuple(areas)), "req-1", None)


def opening(**changes) -> ForumOpening:
    return ForumOpening.model_validate({
        "forum_id": str(uuid.uuid4()), "village_id": VILLAGE, "sls_ids": [SLS, VILLAGE + "0002"],
        "held_on": "2023-05-08", "participants": [{"role": "village_head", "count": 1}, {"role": "sls_head", "count": 2}],
        **changes})


def decision(family_id: str, kind: str, **changes) -> DecisionIn:
    return DecisionIn.model_validate({"decision_id": str(uuid.uuid4()), "family_id": family_id, "kind": kind,
                                      "reason": "musyawarah", **changes})


def added_interview(building: int = 77) -> FamilyInterview:
    doc = family_interview()
    doc["submission_id"] = str(uuid.uuid4())
    doc["interviewed_at"] = "2023-05-10T09:00:00+08:00"
    doc["location"] = {**doc["location"], "building_no": building, "family_no": 1}
    return FamilyInterview.model_validate(doc)


@pytest.fixture
async def world_with_forum():
    w = World()
    o = opening()
    answer = await w.handlers.open_forum(w.tx(), o, official())
    assert isinstance(answer, Recorded) and not answer.replayed
    return w, o


def test_the_in_memory_store_has_the_real_stores_methods_and_signatures():
    def public(cls):
        return {n: inspect.signature(f) for n, f in inspect.getmembers(cls, inspect.isfunction) if not n.startswith("_")}

    assert public(InMemoryConsultationStore) == public(ConsultationStore)


async def test_a_forum_opens_once_per_village_and_a_repeat_gets_the_same_answer(world_with_forum):
    w, o = world_with_forum
    [forum] = w.events(FkpForum)
    assert forum.status is ForumStatus.OPEN and forum.sls_id == SLS and forum.village_id == VILLAGE
    again = await w.handlers.open_forum(w.tx(), o, official())
    assert isinstance(again, Recorded) and again.replayed and len(w.events(FkpForum)) == 1
    assert await w.handlers.open_forum(w.tx(), opening(), official()) == Refused(
        409, "the village has its forum already: one forum per village")
    changed = o.model_copy(update={"held_on": date(2023, 5, 9)})
    assert (await w.handlers.open_forum(w.tx(), changed, official())).status == 409


async def test_an_opening_is_refused_with_a_pointer_for_each_problem():
    w = World()
    bad = opening(sls_ids=[SLS, "64010100010001", SLS],
                  participants=[{"role": "sls_head", "count": 1}, {"role": "sls_head", "count": 2}])
    answer = await w.handlers.open_forum(w.tx(), bad, official())
    assert isinstance(answer, Invalid)
    assert [p.path for p in answer.problems] == ["/sls_ids/1", "/sls_ids/2", "/participants/1/role"]
    assert w.events(FkpForum) == []


async def test_decisions_one_per_family_while_the_forum_is_open(world_with_forum):
    w, o = world_with_forum
    family = f"{SLS}-0001-001"
    change = decision(family, "group_change", welfare_group=1)
    assert isinstance(await w.handlers.record_decision(w.tx(), o.forum_id, change, official()), Recorded)
    [e] = w.events(FkpDecisionRecorded)
    assert (e.family_id, e.kind.value, int(e.welfare_group), e.decided_by) == (family, "group_change", 1, "DESA-1")
    again = await w.handlers.record_decision(w.tx(), o.forum_id, change, official())
    assert isinstance(again, Recorded) and again.replayed and len(w.events(FkpDecisionRecorded)) == 1
    assert (await w.handlers.record_decision(w.tx(), o.forum_id, decision(family, "confirmed"), official())).status == 409
    assert (await w.handlers.record_decision(w.tx(), uuid.uuid4(), decision(family, "moved"), official())).status == 404


@pytest.mark.parametrize("family_id,kind,changes,path", [
    ("64720100010009-0001-001", "moved", {}, "/family_id"),  # not an SLS of the forum
    (f"{SLS}-0002-001", "group_change", {}, "/welfare_group"),
    (f"{SLS}-0002-001", "confirmed", {"welfare_group": 2}, "/welfare_group"),
])
async def test_a_decision_is_refused_with_its_pointer(world_with_forum, family_id, kind, changes, path):
    w, o = world_with_forum
    answer = await w.handlers.record_decision(w.tx(), o.forum_id, decision(family_id, kind, **changes), official())
    assert isinstance(answer, Invalid) and [p.path for p in answer.problems] == [path]


async def test_a_family_the_census_interviewed_is_not_added(world_with_forum):
    w, o = world_with_forum
    w.store.interviewed.add(f"{SLS}-0003-001")
    answer = await w.handlers.record_decision(w.tx(), o.forum_id, decision(f"{SLS}-0003-001", "added"), official())
    assert isinstance(answer, Invalid) and answer.problems[0].path == "/family_id"


async def test_an_added_family_waits_for_its_ground_check_which_brings_its_interview(world_with_forum):
    w, o = world_with_forum
    iv = added_interview()
    officer = Caller(Principal("OFC-1", Role.OFFICER, (SLS,)), "req-2", None)
    await w.handlers.record_decision(w.tx(), o.forum_id, decision(iv.family_id, "added"), official())
    assert (await w.store.forum(o.forum_id)).pending_ground_checks == 1
    check = GroundCheckIn(outcome="found", checked_on=date(2023, 5, 10), interview=iv)
    answer = await w.handlers.ground_check(w.tx(), o.forum_id, iv.family_id, check, officer)
    assert isinstance(answer, Recorded) and answer.body["submission_id"] == str(iv.submission_id)
    [e] = w.events(FkpGroundChecked)
    assert e.interview is not None and e.interview.family_id == iv.family_id
    assert all(m.name not in e.model_dump_json() for m in iv.members), "the interview travels pseudonymised"
    assert w.intake.submissions[iv.submission_id].received.kind == "interview"
    assert (await w.store.forum(o.forum_id)).pending_ground_checks == 0
    again = await w.handlers.ground_check(w.tx(), o.forum_id, iv.family_id, check, officer)
    assert isinstance(again, Recorded) and again.replayed and len(w.events(FkpGroundChecked)) == 1
    # the found family's NIKs go to notify's identity feed, sealed, under the interview's id
    (ids,) = w.events(MemberIdentities)
    opened = IDENTITY_KEYS.open(unb64(ids.sealed), identity_aad(iv.family_id, iv.submission_id))
    assert parse_identity_plaintext(opened) == {m.line_no: m.nik for m in iv.members if m.nik}


@pytest.mark.parametrize("changes,path", [
    ({"checked_on": date(2023, 5, 1)}, "/checked_on"),
    ({"interview": None}, "/interview"),
    ({"interview": "other place"}, "/interview/location"),
])
async def test_a_ground_check_is_refused_with_its_pointer(world_with_forum, changes, path):
    w, o = world_with_forum
    iv = added_interview()
    await w.handlers.record_decision(w.tx(), o.forum_id, decision(iv.family_id, "added"), official())
    if changes.get("interview") == "other place":
        changes = {"interview": added_interview(building=78)}
    check = GroundCheckIn.model_validate({"outcome": "found", "checked_on": date(2023, 5, 10), "interview": iv,
                                          **changes})
    officer = Caller(Principal("OFC-1", Role.OFFICER, (SLS,)), "req-2", None)
    answer = await w.handlers.ground_check(w.tx(), o.forum_id, iv.family_id, check, officer)
    assert isinstance(answer, Invalid) and path in [p.path for p in answer.problems]
    assert w.events(FkpGroundChecked) == []


async def test_a_found_familys_interview_is_checked_as_every_interview_and_needs_an_unused_id(world_with_forum):
    w, o = world_with_forum
    iv = added_interview()
    officer = Caller(Principal("OFC-1", Role.OFFICER, (SLS,)), "req-2", None)
    await w.handlers.record_decision(w.tx(), o.forum_id, decision(iv.family_id, "added"), official())
    no_head = iv.model_copy(update={"members": [m for m in iv.members if m.relationship is not Relationship.HEAD]})
    bad = await w.handlers.ground_check(w.tx(), o.forum_id, iv.family_id,
                                        GroundCheckIn(outcome="found", checked_on=date(2023, 5, 10),
                                                      interview=no_head), officer)
    assert isinstance(bad, Invalid) and all(p.path.startswith("/interview/") for p in bad.problems), bad
    earlier = family_interview()
    earlier["submission_id"] = str(iv.submission_id)  # an id a census interview used
    sub = domain.checked_submission(FamilyInterview.model_validate(earlier), "OFC-9", collection=(date.min, date.max))
    assert not isinstance(sub, Invalid) and await w.intake.save_submissions([sub])
    used = await w.handlers.ground_check(w.tx(), o.forum_id, iv.family_id, GroundCheckIn(
        outcome="found", checked_on=date(2023, 5, 10), interview=iv), officer)
    assert isinstance(used, Refused) and used.status == 409, used
    assert w.events(FkpGroundChecked) == [] and (await w.store.forum(o.forum_id)).pending_ground_checks == 1


async def test_closing_counts_the_decisions_once_and_refuses_later_ones(world_with_forum):
    w, o = world_with_forum
    await w.handlers.record_decision(w.tx(), o.forum_id, decision(f"{SLS}-0001-001", "confirmed"), official())
    await w.handlers.record_decision(w.tx(), o.forum_id, decision(f"{SLS}-0077-001", "added"), official())
    closed = await w.handlers.close_forum(w.tx(), o.forum_id, official(), official().principal.may_act_for)
    assert isinstance(closed, Recorded) and closed.body["status"] == "closed"
    [_, e] = w.events(FkpForum)
    assert (e.status, e.decisions, e.added_families, e.pending_ground_checks) == (ForumStatus.CLOSED, 2, 1, 1)
    again = await w.handlers.close_forum(w.tx(), o.forum_id, official(), official().principal.may_act_for)
    assert isinstance(again, Recorded) and again.replayed and len(w.events(FkpForum)) == 2
    late = await w.handlers.record_decision(w.tx(), o.forum_id, decision(f"{SLS}-0001-002", "moved"), official())
    assert late.status == 409
    other = official(areas=("6401",))
    assert (await w.handlers.close_forum(w.tx(), o.forum_id, other, other.principal.may_act_for)).status == 403


async def test_an_erasure_empties_the_forums_reasons(world_with_forum):
    w, o = world_with_forum
    await w.handlers.record_decision(w.tx(), o.forum_id, decision(f"{SLS}-0001-001", "confirmed"), official())
    assert await w.store.erase_reasons(f"{SLS}-0001-001") == 1
    assert [d.reason for d in await w.store.decisions_of(o.forum_id)] == [""]


async def test_reading_a_forum_is_for_its_village_and_audited(world_with_forum):
    w, o = world_with_forum
    view = await w.handlers.forum_view(w.tx(), o.forum_id, official())
    assert not isinstance(view, Refused) and view[0].forum_id == o.forum_id
    other = official(areas=("6401",))
    assert (await w.handlers.forum_view(w.tx(), o.forum_id, other)).status == 403
    assert [(e.action, e.outcome) for e in w.intake.audit_log if e.action == "fkp.forum.read"] == [
        ("fkp.forum.read", "ok"), ("fkp.forum.read", "denied")]
