"""Complaints and appeals (sanggahan / pengaduan, docs/DOMAIN.md): a family, a village or a programme
complains about a decision or an omission; a supervisor tracks it to an outcome.

`Complaint` (POST /v1/complaints) files one; its submission id is the complaint id, and
GET /v1/complaints/{id} answers its status. `ComplaintOutcome` (POST /v1/complaint-outcomes) records
what was done: a re-visit (the complaint stays open until its result is recorded), a correction (the
change found, which becomes an update of the family: verify re-verifies and classify re-classifies
it, regsosek.contracts.updates), or a rejection with its reason. Complaints stay with intake: no
complaint travels on a topic, only a correction's change does (`FamilyUpdated`).
"""

from __future__ import annotations

from datetime import date, datetime
from enum import StrEnum
from typing import Annotated

from pydantic import StringConstraints, model_validator

from regsosek.contracts.base import Contract
from regsosek.contracts.identifiers import FamilyId, SlsId, SubmissionId, check_family_in_sls
from regsosek.contracts.updates import Actor, FamilyChange


class Complainant(StrEnum):
    """Who complains: family = the family itself (through its village or the social affairs office);
    village = the village office; programme = a programme that receives the family's decisions."""

    FAMILY = "family"
    VILLAGE = "village"
    PROGRAMME = "programme"


class ComplaintSubject(StrEnum):
    """What the complaint is about: decision = a decision about the family (its welfare group, a programme's
    eligibility); omission = the family is missing from the registry, or something about it is."""

    DECISION = "decision"
    OMISSION = "omission"


class Complaint(Contract):
    """A complaint about one family (the family id of a family missing from the registry is the one it
    would have: SLS, building and family serials)."""

    submission_id: SubmissionId  # the complaint id
    family_id: FamilyId
    sls_id: SlsId
    complainant: Complainant
    subject: ComplaintSubject
    programme: Annotated[str, StringConstraints(min_length=1, max_length=40)] | None = None  # the decision's programme
    description: Annotated[str, StringConstraints(min_length=1, max_length=1000)]  # stays with intake (sealed)
    filed_by: Actor  # replaced by the token's subject
    filed_at: datetime

    @model_validator(mode="after")
    def _family_in_sls(self) -> Complaint:
        check_family_in_sls(self.family_id, self.sls_id)
        return self


class ComplaintResolution(StrEnum):
    """What a complaint led to: revisit = the family is visited again (the complaint stays open); correction =
    the registry is corrected (the change is applied as an update); rejected = rejected, with its reason."""

    REVISIT = "revisit"
    CORRECTION = "correction"
    REJECTED = "rejected"

    @property
    def closes(self) -> bool:
        return self is not ComplaintResolution.REVISIT


class ComplaintOutcome(Contract):
    """A supervisor's outcome of a complaint: a correction carries the change; a rejection its reason."""

    submission_id: SubmissionId  # of this outcome
    complaint_id: SubmissionId
    family_id: FamilyId
    sls_id: SlsId
    outcome: ComplaintResolution
    reason: Annotated[str, StringConstraints(max_length=500)] = ""  # required for a rejection; stays with intake
    correction: FamilyChange | None = None
    decided_by: Actor  # replaced by the token's subject
    decided_on: date

    @model_validator(mode="after")
    def _coherent(self) -> ComplaintOutcome:
        check_family_in_sls(self.family_id, self.sls_id)
        if (self.correction is not None) != (self.outcome is ComplaintResolution.CORRECTION):
            raise ValueError("a correction carries its change (correction), and only a correction does")
        if self.outcome is ComplaintResolution.REJECTED and not self.reason.strip():
            raise ValueError("a rejection gives its reason")
        return self
