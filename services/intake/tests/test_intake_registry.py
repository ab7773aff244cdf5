"""The living registry at intake (intake.registry_handlers, intake.registry_domain) on the in-memory
store and a fake unit of work: an update counts only once confirmed in the field; a complaint is
tracked to its outcome and a correction counts like an update. The same through HTTP, Kafka and
every service: tests/integration/test_living_registry.py."""

from __future__ import annotations

import uuid
from datetime import date

from test_intake_handlers import FAMILY, IDENTITY_KEYS, NIK_KEY, SLS, World, caller, interview

from intake import domain
from intake.domain import Conflict, Invalid, Receipt, Step
from intake.handlers import Caller
from intake.registry_domain import Closed, update_problems
from intake.registry_handlers import RegistryHandlers
from regsosek.auth import Principal, Role
from regsosek.contracts import MemberIdentities
from regsosek.contracts.complaints import Complaint, ComplaintOutcome
from regsosek.contracts.identities import identity_aad, parse_identity_plaintext, unb64
from regsosek.contracts.updates import FamilyUpdate, FamilyUpdated, FieldCheck, UpdateHeld
from regsosek.pseudonyms import nik_hash_hex

VILLAGE = caller("VIL-1", Role.VILLAGE_OFFICIAL)
PML = caller("PML-1", Role.SUPERVISOR)
HOUSING = {"tenure": "owned", "floor_area_m2": 36, "floor": "wood_plank", "wall": "wood_board", "roof": "zinc",
           "drinking_water": "refill", "lighting": "pln_metered", "installed_power": "450",
           "cooking_fuel": "lpg_3kg", "toilet": "own", "faeces_disposal": "septic_tank"}
NEWBORN = {"line_no": 4, "name": "Bayi", "nik": "6472014102230001", "sex": "female", "date_of_birth": "2023-02-01",
           "relationship": "child", "marital_status": "never_married", "school": "never", "highest_diploma": "none",
           "worked_last_week": False}


def update(**changes) -> FamilyUpdate:
    return FamilyUpdate.model_validate({
        "submission_id": str(uuid.uuid4()), "family_id": FAMILY, "sls_id": SLS, "channel": "village",
        "reported_by": "VIL-1", "occurred_on": "2023-02-01", "change": {"kind": "birth", "member": NEWBORN},
        **changes})


def check(u: FamilyUpdate, outcome: str = "confirmed", **changes) -> FieldCheck:
    return FieldCheck.model_validate({
        "submission_id": str(uuid.uuid4()), "update_id": str(u.submission_id), "family_id": u.family_id,
        "sls_id": u.sls_id, "outcome": outcome, "checked_on": "2023-02-10", "checked_by": "PML-1", **changes})


def complaint() -> Complaint:
    return Complaint.model_validate({
        "submission_id": str(uuid.uuid4()), "family_id": FAMILY, "sls_id": SLS, "complainant": "family",
        "subject": "omission", "description": "our new baby is not counted", "filed_by": "VIL-1",
        "filed_at": "2023-03-01T09:00:00+08:00"})


def outcome(c: Complaint, kind: str, **more) -> ComplaintOutcome:
    return ComplaintOutcome.model_validate({
        "submission_id": str(uuid.uuid4()), "complaint_id": str(c.submission_id), "family_id": FAMILY,
        "sls_id": SLS, "outcome": kind, "decided_by": "PML-1", "decided_on": "2023-03-10", **more})


class Registry(World):
    def __init__(self) -> None:
        super().__init__()
        self.registry = RegistryHandlers(self.handlers)


async def test_an_update_counts_only_once_confirmed_in_the_field_and_travels_pseudonymised():
    w = Registry()
    u = update()
    receipt = await w.registry.report_update(w.transaction(), u, VILLAGE)
    assert isinstance(receipt, Receipt) and receipt.kind == "update" and not w.published

    await w.registry.check_update(w.transaction(), check(u), PML)
    (e,) = w.events(FamilyUpdated)
    assert e.submission_id == u.submission_id and e.basis.value == "field_check"
    assert e.change.member.nik_hash == nik_hash_hex(NIK_KEY, NEWBORN["nik"]) and "Bayi" not in e.model_dump_json()
    journey = await w.store.journey(u.submission_id)
    assert [s.step for s in journey.steps] == ["field_checked"] and journey.final is None  # verify has not answered

    # verify keeps it until the family is verified: the journey says so, still in progress
    held = UpdateHeld(submission_id=u.submission_id, family_id=FAMILY, sls_id=SLS, waits_for="interview_held",
                      held_at="2023-02-10T09:00:00+08:00", expires_at="2023-03-12T09:00:00+08:00")
    await w.consume(w.registry.consumers()[UpdateHeld], held, "held-1")
    journey = await w.store.journey(u.submission_id)
    assert [(s.step, s.detail.get("waits_for")) for s in journey.steps] == [
        ("field_checked", None), ("held", "interview_held")] and journey.final is None

    again = await w.registry.check_update(w.transaction(), check(u), PML)  # another check of the same update
    assert isinstance(again, Closed) and len(w.events(FamilyUpdated)) == 1


async def test_a_repeated_field_check_gets_its_receipt_again_and_publishes_nothing_more():
    w = Registry()
    u = update()
    await w.registry.report_update(w.transaction(), u, VILLAGE)
    c = check(u)
    await w.registry.check_update(w.transaction(), c, PML)
    repeat = await w.registry.check_update(w.transaction(), c, PML)
    assert isinstance(repeat, Receipt) and repeat.replayed and len(w.events(FamilyUpdated)) == 1


async def test_an_update_not_confirmed_ends_there():
    w = Registry()
    u = update()
    await w.registry.report_update(w.transaction(), u, VILLAGE)
    await w.registry.check_update(w.transaction(), check(u, "not_confirmed"), PML)
    assert not w.events(FamilyUpdated)
    assert (await w.store.journey(u.submission_id)).final == "not_confirmed"


async def test_field_checks_that_cannot_count_are_refused_with_their_pointer():
    w = Registry()
    u = update()
    await w.registry.report_update(w.transaction(), u, VILLAGE)
    cases = {
        "/update_id": check(u, update_id=str(uuid.uuid4())),
        "/checked_on": check(u, checked_on="2023-01-31"),
        "/checked_by": check(u, checked_by="VIL-1"),
    }
    for path, c in cases.items():
        who = caller("VIL-1", Role.SUPERVISOR) if path == "/checked_by" else PML
        result = await w.registry.check_update(w.transaction(), c, who)
        assert isinstance(result, Invalid) and [p.path for p in result.problems] == [path]
    assert not w.events(FamilyUpdated)


def test_update_problems_by_pointer():
    def problems(u: FamilyUpdate, role: Role = Role.VILLAGE_OFFICIAL) -> list[str]:
        return [p.path for p in update_problems(u, role, date(2022, 11, 20))]

    assert problems(update(occurred_on="2022-11-01")) == ["/occurred_on", "/change/member/date_of_birth"]
    assert problems(update(channel="social_affairs")) == ["/channel"]
    assert problems(update(channel="social_affairs"), Role.SUPERVISOR) == []
    headless = {"kind": "new_family", "family": {"location": {"sls_id": SLS, "building_no": 1, "family_no": 1},
                                                  "housing": HOUSING, "members": [{**NEWBORN, "nik": None}]}}
    assert problems(update(change=headless)) == ["/change/family/members"]


async def test_a_complaint_is_tracked_to_a_correction_that_counts_like_an_update():
    w = Registry()
    c = complaint()
    await w.registry.file_complaint(w.transaction(), c, VILLAGE)
    assert (await w.registry.complaint(w.transaction(), c.submission_id, VILLAGE)).complaint.status == "filed"

    await w.registry.decide_complaint(w.transaction(), outcome(c, "revisit"), PML)
    assert (await w.registry.complaint(w.transaction(), c.submission_id, VILLAGE)).complaint.status == "revisit"
    assert not w.events(FamilyUpdated)  # a re-visit changes nothing yet

    fix = outcome(c, "correction", correction={"kind": "birth", "member": {**NEWBORN, "date_of_birth": "2023-01-05"}})
    await w.registry.decide_complaint(w.transaction(), fix, PML)
    (e,) = w.events(FamilyUpdated)
    assert e.submission_id == fix.submission_id and e.basis.value == "complaint_correction"
    view = (await w.registry.complaint(w.transaction(), c.submission_id, VILLAGE)).as_dict()
    assert view["status"] == "corrected" and [o["outcome"] for o in view["outcomes"]] == ["revisit", "correction"]

    late = await w.registry.decide_complaint(w.transaction(), outcome(c, "rejected", reason="too late"), PML)
    assert isinstance(late, Closed)
    assert [a.action for a in w.store.audit_log].count("complaint.outcome") == 2


async def test_a_rejection_keeps_its_reason_and_an_unknown_complaint_is_refused():
    w = Registry()
    c = complaint()
    await w.registry.file_complaint(w.transaction(), c, VILLAGE)
    await w.registry.decide_complaint(w.transaction(), outcome(c, "rejected", reason="the baby is counted"), PML)
    view = await w.registry.complaint(w.transaction(), c.submission_id, VILLAGE)
    assert [(o.outcome, o.reason) for o in view.outcomes] == [("rejected", "the baby is counted")]
    unknown = outcome(c, "revisit", complaint_id=str(uuid.uuid4()))
    result = await w.registry.decide_complaint(w.transaction(), unknown, PML)
    assert isinstance(result, Invalid) and result.problems[0].path == "/complaint_id"
    other_area = await w.registry.complaint(w.transaction(), c.submission_id, caller("VIL-9", Role.VILLAGE_OFFICIAL,
                                                                                     ("6401",)))
    assert other_area.sls_id == SLS  # Denied


async def test_a_programme_complains_only_as_itself_about_its_own_programmes():
    w = Registry()
    pkh = Caller(Principal("PKH-1", Role.PROGRAMME, ("64",), ("pkh",)), "req-1", None)
    as_family = await w.registry.file_complaint(w.transaction(), complaint(), pkh)
    assert isinstance(as_family, Invalid) and as_family.problems[0].path == "/complainant"
    own = Complaint.model_validate({**complaint().model_dump(), "complainant": "programme", "programme": "pkh"})
    assert isinstance(await w.registry.file_complaint(w.transaction(), own, pkh), Receipt)


async def test_the_same_complaint_id_with_other_content_is_a_conflict():
    w = Registry()
    c = complaint()
    await w.registry.file_complaint(w.transaction(), c, VILLAGE)
    other = c.model_copy(update={"description": "something else"})
    assert isinstance(await w.registry.file_complaint(w.transaction(), other, VILLAGE), Conflict)


def test_erasure_removes_names_niks_and_free_text_from_registry_bodies():
    u = update().model_dump(mode="json")
    redacted = domain.redact_family("update", u, FAMILY)
    assert "name" not in redacted["change"]["member"] and "nik" not in redacted["change"]["member"]
    c = domain.redact_family("complaint", complaint().model_dump(mode="json"), FAMILY)
    assert c["description"] == ""


def test_an_update_is_final_once_not_confirmed_or_decided():
    assert domain.final_state("update", []) is None
    assert domain.final_state("update", [Step("not_confirmed")]) == "not_confirmed"
    assert domain.final_state("update", [Step("field_checked"), Step("verified", 2), Step("eligibility", 2)]) == "decided"


async def test_a_counted_update_brings_the_familys_identity_list_under_its_own_id():
    """Its decision carries the update's submission id: notify's by-name programmes get the NIKs of the
    family's latest interview with the new-born's, sealed for notify under that id."""
    w = Registry()
    iv = interview()
    await w.submit(iv)
    u = update()
    await w.registry.report_update(w.transaction(), u, VILLAGE)
    await w.registry.check_update(w.transaction(), check(u), PML)
    lists = w.events(MemberIdentities)
    assert [x.submission_id for x in lists] == [iv.submission_id, u.submission_id]
    opened = IDENTITY_KEYS.open(unb64(lists[1].sealed), identity_aad(FAMILY, u.submission_id))
    assert parse_identity_plaintext(opened) == {**{m.line_no: m.nik for m in iv.members if m.nik}, 4: NEWBORN["nik"]}
