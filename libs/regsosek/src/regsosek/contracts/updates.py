"""A living registry after the census (pemutakhiran, docs/DOMAIN.md): updates about a registered
family that arrive through the village or the social affairs office, and the event that carries a
field-checked update to verify.

An update is its own submission (`FamilyUpdate`, POST /v1/updates): one change of one family (a
birth, a death, a member who moved out, the whole family moved, a family missed by the census, a
housing change). It counts only once a supervisor has checked it in the field (`FieldCheck`,
POST /v1/field-checks: confirmed or not confirmed, with the date); a confirmed update, or the
correction a complaint ends in (regsosek.contracts.complaints), is published as `FamilyUpdated`
on `family-update`: pseudonymised like an interview (NIK and KK number as keyed hashes; no
names, address or GPS), with only what verify needs to apply the change to the family's stored
state. Verify then re-verifies the family and classify re-classifies it from the new profile.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time
from enum import StrEnum
from typing import Annotated

from pydantic import Field, StringConstraints, model_validator

from regsosek.contracts.base import Contract
from regsosek.contracts.identifiers import FamilyId, SlsId, SubmissionId, check_family_in_sls
from regsosek.contracts.interview import FamilyEconomy, FamilyInterview, Housing, Location, Member, MemberPresence
from regsosek.contracts.pseudonymous import InterviewSubmitted, PseudonymousMember, pseudonymise_interview
from regsosek.pseudonyms import nik_hash_hex

Actor = Annotated[str, StringConstraints(min_length=1, max_length=64)]


class UpdateKind(StrEnum):
    """What changed: birth = kelahiran, a new member born into the family; death = kematian, a member
    died; member_moved = a member moved out of the family (within Indonesia or abroad); family_moved = the
    whole family moved out of its SLS; new_family = a family missed by the census (keluarga tambahan);
    housing_change = the family's housing (Block III) changed."""

    BIRTH = "birth"
    DEATH = "death"
    MEMBER_MOVED = "member_moved"
    FAMILY_MOVED = "family_moved"
    NEW_FAMILY = "new_family"
    HOUSING_CHANGE = "housing_change"


class UpdateChannel(StrEnum):
    """Through whom the update arrived: village = the village office (desa/kelurahan); social_affairs = the
    regency's social affairs office (dinas sosial)."""

    VILLAGE = "village"
    SOCIAL_AFFAIRS = "social_affairs"


class MovedTo(StrEnum):
    """Where a member moved: within_indonesia = pindah dalam negeri; abroad = pindah ke luar negeri."""

    WITHIN_INDONESIA = "within_indonesia"
    ABROAD = "abroad"


class NewFamily(Contract):
    """A family missed by the census, as the form would record it: Block I, III, IV and V."""

    location: Location
    housing: Housing
    members: Annotated[list[Member], Field(min_length=1, max_length=40)]
    economy: FamilyEconomy = Field(default_factory=FamilyEconomy)


# The fields each kind of change carries; every other field must be absent.
_FIELDS_OF = {
    UpdateKind.BIRTH: {"member"},
    UpdateKind.DEATH: {"line_no"},
    UpdateKind.MEMBER_MOVED: {"line_no", "moved_to"},
    UpdateKind.FAMILY_MOVED: set(),
    UpdateKind.NEW_FAMILY: {"family"},
    UpdateKind.HOUSING_CHANGE: {"housing"},
}
_CHANGE_FIELDS = ("line_no", "moved_to", "member", "housing", "family")


def check_change_fields(kind: UpdateKind, present: set[str]) -> None:
    """A change carries exactly the fields of its kind (pure; ValueError names the field)."""
    wanted = _FIELDS_OF[kind]
    if missing := sorted(wanted - present):
        raise ValueError(f"a {kind.value} change needs {', '.join(missing)}")
    if extra := sorted(present - wanted):
        raise ValueError(f"a {kind.value} change carries no {', '.join(extra)}")


class FamilyChange(Contract):
    """One change of one family. `line_no` names the member (the member's row on the family's form) who
    died or moved; `member` is the new-born member (presence is recorded as new member); `housing` the
    family's housing as it is now; `family` the whole form of a family missed by the census."""

    kind: UpdateKind
    line_no: Annotated[int, Field(ge=1, le=99)] | None = None
    moved_to: MovedTo | None = None
    member: Member | None = None
    housing: Housing | None = None
    family: NewFamily | None = None

    @model_validator(mode="after")
    def _fields_of_kind(self) -> FamilyChange:
        check_change_fields(self.kind, {f for f in _CHANGE_FIELDS if getattr(self, f) is not None})
        return self


class FamilyUpdate(Contract):
    """An update about one family (pemutakhiran), as the village or the social affairs office reports it:
    POST /v1/updates. `occurred_on` is when the change happened (the birth, the death, the move)."""

    submission_id: SubmissionId
    family_id: FamilyId
    sls_id: SlsId
    channel: UpdateChannel
    reported_by: Actor  # replaced by the token's subject
    occurred_on: date
    change: FamilyChange

    @model_validator(mode="after")
    def _coherent(self) -> FamilyUpdate:
        check_family_in_sls(self.family_id, self.sls_id)
        if self.change.family is not None and self.change.family.location.family_id != self.family_id:
            raise ValueError("a new family's location must give its family_id (SLS, building and family serials)")
        return self


class FieldCheckOutcome(StrEnum):
    """The field check of an update: confirmed = the change was found as reported; not_confirmed = it was not
    (the update does not count)."""

    CONFIRMED = "confirmed"
    NOT_CONFIRMED = "not_confirmed"


class FieldCheck(Contract):
    """A supervisor's check of an update in the field (POST /v1/field-checks): its outcome and date."""

    submission_id: SubmissionId  # of this check
    update_id: SubmissionId  # the update checked
    family_id: FamilyId
    sls_id: SlsId
    outcome: FieldCheckOutcome
    checked_on: date
    checked_by: Actor  # replaced by the token's subject

    @model_validator(mode="after")
    def _family_in_sls(self) -> FieldCheck:
        check_family_in_sls(self.family_id, self.sls_id)
        return self


# ---------------------------------------------------------------- what verify receives


class UpdateBasis(StrEnum):
    """Why the update counts: field_check = confirmed in a field check; complaint_correction = the correction
    a complaint ended in."""

    FIELD_CHECK = "field_check"
    COMPLAINT_CORRECTION = "complaint_correction"


class PseudonymousChange(Contract):
    """A FamilyChange without direct identifiers: the new-born member without name and with the NIK's keyed
    hash; a new family as a pseudonymised interview (`interview.submitted.v2`'s shape)."""

    kind: UpdateKind
    line_no: Annotated[int, Field(ge=1, le=99)] | None = None
    moved_to: MovedTo | None = None
    member: PseudonymousMember | None = None
    housing: Housing | None = None
    family: InterviewSubmitted | None = None

    @model_validator(mode="after")
    def _fields_of_kind(self) -> PseudonymousChange:
        check_change_fields(self.kind, {f for f in _CHANGE_FIELDS if getattr(self, f) is not None})
        return self


class FamilyUpdated(Contract):
    """`family.updated.v1`: an update that counts (field-checked, or a complaint's correction), for verify
    to apply to the family's stored state. `submission_id` is the update's (or the complaint outcome's):
    the family's next verification and classification carry it, so its journey shows them."""

    submission_id: SubmissionId
    family_id: FamilyId
    sls_id: SlsId
    occurred_on: date
    basis: UpdateBasis
    confirmed_on: date  # the field check's date, or the complaint decision's
    change: PseudonymousChange

    @model_validator(mode="after")
    def _family_in_sls(self) -> FamilyUpdated:
        check_family_in_sls(self.family_id, self.sls_id)
        return self


class UpdateWait(StrEnum):
    """Why verify keeps an update that counts instead of applying it: the family is not verified yet.
    family_not_registered = its interview has not reached verify yet; interview_held = its interview waits
    for the SLS roster; family_flagged = it is flagged until a supervisor (or a later roster) decides it."""

    FAMILY_NOT_REGISTERED = "family_not_registered"
    INTERVIEW_HELD = "interview_held"
    FAMILY_FLAGGED = "family_flagged"


class UpdateHeld(Contract):
    """`family.update.held.v1`: verify keeps an update that counts (`submission_id`, the update's or the
    complaint outcome's) until its family is verified, and applies it then (interview-verified with outcome
    `updated`, under the same submission id). Still waiting at `expires_at`, it gets an
    `update_not_applicable` flag instead. For the update's journey at intake; ids and codes only."""

    submission_id: SubmissionId
    family_id: FamilyId
    sls_id: SlsId
    waits_for: UpdateWait
    held_at: datetime
    expires_at: datetime

    @model_validator(mode="after")
    def _family_in_sls(self) -> UpdateHeld:
        check_family_in_sls(self.family_id, self.sls_id)
        return self


def pseudonymise_change(change: FamilyChange, *, submission_id: SubmissionId, reported_by: str,
                        occurred_on: date, key: str) -> PseudonymousChange:
    """The change as verify receives it (pure): names left out, NIK and KK numbers as keyed hashes. A new
    family becomes the interview the census would have made of it (version 1, taken on `occurred_on`)."""
    member = None
    if change.member is not None:
        m = change.member
        member = PseudonymousMember(**m.model_dump(exclude={"name", "nik", "presence"}), presence=MemberPresence.NEW_MEMBER,
                                    nik_hash=nik_hash_hex(key, m.nik))
    family = None
    if change.family is not None:
        f = change.family
        family = pseudonymise_interview(FamilyInterview(
            submission_id=submission_id, officer_id=reported_by,
            interviewed_at=datetime.combine(occurred_on, time(12), tzinfo=UTC), location=f.location,
            housing=f.housing, members=f.members, economy=f.economy), key)
    return PseudonymousChange(kind=change.kind, line_no=change.line_no, moved_to=change.moved_to, member=member,
                              housing=change.housing, family=family)
