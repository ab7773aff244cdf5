"""What intake's status view reads of the downstream decisions: for each event it consumes, only the
fields a journey step keeps (regsosek.messaging.reads). The consumer decodes a record as its view:
the fields left out (the household profile, the explanation, the member decisions, ...) are skipped
unread, and those read are validated with the contract's own types and constraints
(tests/test_journey_events.py holds every field to its contract). A record whose body is not JSON,
or whose read fields are missing or invalid, is dead-lettered with the reason, as before."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from regsosek.contracts.decisions import DecisionSeq, FlagReason, Text, VerificationOutcome, WelfareGroup
from regsosek.contracts.identifiers import SubmissionId


class View(BaseModel):
    """A part of a contract, read by one consumer; whatever else the record holds is ignored."""

    model_config = ConfigDict(extra="ignore", frozen=True)


class Ids(View):
    """The submission a carried document (a profile, a v1 interview) belongs to."""

    submission_id: SubmissionId


class Verified(View):
    """Of interview-verified (v2): its outcome, time and sequence, and the profile's submission id."""

    outcome: VerificationOutcome
    verified_at: datetime
    profile: Ids
    decision_seq: DecisionSeq = 0


class VerifiedV1(View):
    """Of a v1 interview-verified: the same, the submission id read from the interview it carries."""

    outcome: VerificationOutcome
    verified_at: datetime
    interview: Ids
    decision_seq: DecisionSeq = 0


class Flagged(View):
    submission_id: SubmissionId
    reason: FlagReason
    detail: Text
    flagged_at: datetime
    decision_seq: DecisionSeq = 0


class Classified(View):
    """Of family-classified: the group and decile, not the explanation or the predicted value."""

    submission_id: SubmissionId
    welfare_group: WelfareGroup
    decile: Annotated[int, Field(ge=1, le=10)]
    model_version: str
    classified_at: datetime
    decision_seq: DecisionSeq = 0


class ProgrammeOutcome(View):
    programme: str
    eligible: bool


class Eligibility(View):
    """Of eligibility-decided: which programmes the family is eligible for, not the reasons or the
    per-member decisions."""

    submission_id: SubmissionId
    rule_version: str
    decisions: list[ProgrammeOutcome]
    decided_at: datetime
    decision_seq: DecisionSeq = 0


class Delivered(View):
    submission_id: SubmissionId
    subscriber: Annotated[str, StringConstraints(min_length=1, max_length=200)]
    delivered_at: datetime
