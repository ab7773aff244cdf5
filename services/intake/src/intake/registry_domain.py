"""The living registry at intake, pure: updates (pemutakhiran) and their field check, complaints and
their outcomes (docs/DOMAIN.md, after the census).

An update is accepted like any submission (checked, idempotent, stored sealed) but does not count
yet: a supervisor checks it in the field. A confirmed check makes it count (`CountedUpdate`,
published on family-update for verify to apply); a check that does not confirm it ends it. A
complaint is filed and tracked to its outcome: a re-visit keeps it open; a correction closes it and
its change counts like a confirmed update; a rejection closes it with its reason.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time
from enum import StrEnum
from uuid import UUID

from pydantic import ValidationError

from intake.domain import Invalid, JourneyEntry, Problem, check_interview, difficulty_problems, known_sls_area
from regsosek.auth import Role
from regsosek.contracts import FamilyInterview, MemberIdentities
from regsosek.contracts.complaints import Complainant, Complaint, ComplaintOutcome, ComplaintResolution
from regsosek.contracts.identities import b64, identity_aad, identity_plaintext
from regsosek.contracts.updates import (
    FamilyChange,
    FamilyUpdate,
    FieldCheck,
    FieldCheckOutcome,
    UpdateBasis,
    UpdateChannel,
    UpdateKind,
)
from regsosek.crypto import Keyring


@dataclass(frozen=True)
class CountedUpdate:
    """An update that counts, as intake.publisher publishes it on family-update."""

    submission_id: UUID  # the update's, or the complaint outcome's that corrects the family
    family_id: str
    sls_id: str
    change: FamilyChange
    reported_by: str
    occurred_on: date
    basis: UpdateBasis
    confirmed_on: date


# ---------------------------------------------------------------- checks before anything is stored


def update_problems(u: FamilyUpdate, role: Role, collection_end: date) -> list[Problem]:
    """An update's problems beyond its contract: its village is in the area reference; it happened after the
    collection period (changes until then are recorded on the form); a village official reports through the
    village; a birth happened on the new member's birth date (and a newborn is not asked about functional
    difficulty); a new family's form passes the interview's checks."""
    problems = []
    if not known_sls_area(u.sls_id):
        problems.append(Problem("/sls_id", "SLS id's village is not in the area reference"))
    if u.occurred_on <= collection_end:
        problems.append(Problem("/occurred_on", f"not after the collection period (ended {collection_end}): "
                                                "changes until then are recorded on the family's form"))
    if role is Role.VILLAGE_OFFICIAL and u.channel is not UpdateChannel.VILLAGE:
        problems.append(Problem("/channel", "a village official reports through the village"))
    change = u.change
    born = change.member if change.kind is UpdateKind.BIRTH else None  # the contract requires it for a birth
    if born is not None and born.date_of_birth not in (None, u.occurred_on):
        problems.append(Problem("/change/member/date_of_birth", "a birth occurs on the new member's birth date"))
    if born is not None:
        problems += difficulty_problems(born, "/change/member", max(born.age_on(u.occurred_on), 0))
    if change.family is not None:
        f = change.family
        day = datetime.combine(u.occurred_on, time(12), tzinfo=UTC)
        form = FamilyInterview(submission_id=u.submission_id, officer_id=u.reported_by, interviewed_at=day,
                               location=f.location, housing=f.housing, members=f.members, economy=f.economy)
        errors, _ = check_interview(form, collection=(u.occurred_on, u.occurred_on))
        problems += [Problem("/change/family" + p.path, p.reason) for p in errors]
    return problems


def complaint_problems(c: Complaint, role: Role, programmes: tuple[str, ...]) -> list[Problem]:
    """A programme complains as a programme, about one of its own programmes' decisions; others do not
    complain as a programme."""
    if role is Role.PROGRAMME:
        if c.complainant is not Complainant.PROGRAMME:
            return [Problem("/complainant", "a programme's token files a programme's complaint")]
        if c.programme is None or c.programme not in programmes:
            return [Problem("/programme", "name one of the programmes the token acts for")]
    elif c.complainant is Complainant.PROGRAMME:
        return [Problem("/complainant", "a programme's complaint is filed with the programme's token")]
    return []


# ---------------------------------------------------------------- the field check


@dataclass(frozen=True)
class UpdateRecord:
    """An update as intake keeps it (its row locked), with its field check if it had one."""

    update_id: UUID
    family_id: str
    document: dict | None  # the update as received; None once its body expired or was erased
    check_id: UUID | None = None


@dataclass(frozen=True)
class Closed:
    """Refused (409) as in conflict with what is recorded: the update was checked already by another
    field check, or the complaint is closed."""

    reason: str


@dataclass(frozen=True)
class Checked:
    """The field check may be accepted: the step it adds to the update's journey, and what it makes count
    (None: not confirmed, or a repeat)."""

    step: JourneyEntry
    counted: CountedUpdate | None
    repeat: bool = False


def check_step(check: FieldCheck) -> JourneyEntry:
    """The field check as a step of the update's journey: checked (it counts) or not confirmed (it ends)."""
    step = "field_checked" if check.outcome is FieldCheckOutcome.CONFIRMED else "not_confirmed"
    return JourneyEntry(check.update_id, step, {"outcome": check.outcome.value, "checked_on": check.checked_on.isoformat(),
                                                "check_id": str(check.submission_id)}, str(check.submission_id))


def decide_field_check(update: UpdateRecord | None, check: FieldCheck) -> Checked | Invalid | Closed:
    """A field check of an update: problems (no such update of this family; checked before the change
    occurred; checked by whoever reported it), a conflict (the update was checked already, by another
    check), or accepted: a confirmed check makes the update count."""
    if update is None or update.family_id != check.family_id:
        return Invalid([Problem("/update_id", "no update of this family has this id")])
    if update.check_id is not None:
        if update.check_id != check.submission_id:
            return Closed("the update was checked already (by another field check)")
        return Checked(check_step(check), None, repeat=True)
    if update.document is None:
        return Invalid([Problem("/update_id", "the update's content is no longer kept")])
    try:
        u = FamilyUpdate.model_validate(update.document)
    except ValidationError:  # an erased family's update lost its identifiers
        return Invalid([Problem("/update_id", "the update's content is no longer kept in full")])
    if check.checked_on < u.occurred_on:
        return Invalid([Problem("/checked_on", "before the change occurred")])
    if check.checked_by == u.reported_by:
        return Invalid([Problem("/checked_by", "the field check is made by someone other than who reported the update")])
    if check.outcome is not FieldCheckOutcome.CONFIRMED:
        return Checked(check_step(check), None)
    return Checked(check_step(check), CountedUpdate(u.submission_id, u.family_id, u.sls_id, u.change, u.reported_by,
                                                    u.occurred_on, UpdateBasis.FIELD_CHECK, check.checked_on))


# ---------------------------------------------------------------- complaints


class ComplaintStatus(StrEnum):
    """filed = waiting for its outcome; revisit = the family is visited again; corrected; rejected."""

    FILED = "filed"
    REVISIT = "revisit"
    CORRECTED = "corrected"
    REJECTED = "rejected"


STATUS_AFTER = {ComplaintResolution.REVISIT: ComplaintStatus.REVISIT,
                ComplaintResolution.CORRECTION: ComplaintStatus.CORRECTED,
                ComplaintResolution.REJECTED: ComplaintStatus.REJECTED}


@dataclass(frozen=True)
class ComplaintRecord:
    """A complaint as intake tracks it (its row locked): ids, codes, status and its outcomes' ids."""

    complaint_id: UUID
    family_id: str
    sls_id: str
    complainant: str
    subject: str
    programme: str | None
    status: str
    filed_at: datetime
    outcome_ids: tuple[UUID, ...] = ()


@dataclass(frozen=True)
class Resolved:
    """The outcome may be accepted: the complaint's new status, and the correction that counts (if one)."""

    status: ComplaintStatus
    counted: CountedUpdate | None
    repeat: bool = False


def decide_complaint_outcome(c: ComplaintRecord | None, o: ComplaintOutcome) -> Resolved | Invalid | Closed:
    """An outcome of a complaint: problems (no such complaint of this family; decided before it was filed),
    a conflict (the complaint is closed: corrected or rejected), or accepted with the complaint's new status;
    a correction's change counts like a field-checked update of the family."""
    if c is None or c.family_id != o.family_id:
        return Invalid([Problem("/complaint_id", "no complaint about this family has this id")])
    if o.submission_id in c.outcome_ids:
        return Resolved(ComplaintStatus(c.status), None, repeat=True)
    if c.status in (ComplaintStatus.CORRECTED, ComplaintStatus.REJECTED):
        return Closed("the complaint is closed (corrected or rejected)")
    if o.decided_on < c.filed_at.date():
        return Invalid([Problem("/decided_on", "before the complaint was filed")])
    counted = None
    if o.correction is not None:
        counted = CountedUpdate(o.submission_id, o.family_id, o.sls_id, o.correction, o.decided_by, o.decided_on,
                                UpdateBasis.COMPLAINT_CORRECTION, o.decided_on)
    return Resolved(STATUS_AFTER[o.outcome], counted)


@dataclass(frozen=True)
class RecordedOutcome:
    """One outcome of a complaint, for its status: the code, its date, the rejection's reason, and for a
    correction the journey of the change (verified or flagged, classified, eligibility, notified)."""

    submission_id: UUID
    outcome: str
    decided_on: date
    reason: str
    journey: list[dict]


@dataclass(frozen=True)
class ComplaintView:
    complaint: ComplaintRecord
    outcomes: list[RecordedOutcome]

    def as_dict(self) -> dict:
        c = self.complaint
        return {"complaint_id": str(c.complaint_id), "family_id": c.family_id, "sls_id": c.sls_id,
                "complainant": c.complainant, "subject": c.subject, "programme": c.programme, "status": c.status,
                "filed_at": c.filed_at.isoformat(),
                "outcomes": [{"submission_id": str(o.submission_id), "outcome": o.outcome,
                              "decided_on": o.decided_on.isoformat(), "reason": o.reason, "journey": o.journey}
                             for o in self.outcomes]}


def update_identities(u: CountedUpdate, base: dict[int, str], identity_keys: Keyring) -> MemberIdentities:
    """The identity-feed record of an update that counts (its decision carries the update's submission
    id, so notify waits for a list of that id): the NIKs of the family's latest interview (`base`), with
    a new-born's, or a new family's own members'; sealed as member_identities does."""
    if u.change.family is not None:
        niks = {m.line_no: m.nik for m in u.change.family.members if m.nik}
    else:
        niks = dict(base)
        if u.change.member is not None and u.change.member.nik:
            niks[u.change.member.line_no] = u.change.member.nik
    sealed = identity_keys.seal(identity_plaintext(niks), identity_aad(u.family_id, u.submission_id))
    return MemberIdentities(family_id=u.family_id, sls_id=u.sls_id, submission_id=u.submission_id,
                            members=len(niks), sealed=b64(sealed))
