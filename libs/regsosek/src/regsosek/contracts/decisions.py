"""Events that carry decisions downstream: verification, classification, eligibility,
supervisor resolutions and village consultation (FKP) adjustments."""

from __future__ import annotations

from datetime import datetime
from enum import IntEnum, StrEnum
from typing import Annotated
from uuid import UUID

from pydantic import Field, StringConstraints, model_validator

from regsosek.contracts.base import Contract
from regsosek.contracts.household import HouseholdProfile, household_profile
from regsosek.contracts.identifiers import FamilyId, SlsId, SubmissionId
from regsosek.contracts.interview import FamilyInterview

Text = Annotated[str, StringConstraints(max_length=500)]

# The producer's per-family decision sequence (docs/ORDERING.md): strictly increasing over every
# decision the producer makes about one family, so a consumer keeps the highest it has applied and
# ignores anything lower, whatever topic or order it arrived in. 0 = an event from before sequences
# existed: older than every sequenced event of the family (ordered among themselves as before).
DecisionSeq = Annotated[int, Field(ge=0)]


class VerificationOutcome(StrEnum):
    VERIFIED = "verified"  # on the roster, confirmed present
    VERIFIED_ADDED = "verified_added"  # added to the roster by the RT head
    VERIFIED_BY_SUPERVISOR = "verified_by_supervisor"
    UPDATED = "updated"  # a registered family changed by a field-checked update or a complaint's correction


class FlagReason(StrEnum):
    NOT_ON_ROSTER = "not_on_roster"
    ROSTER_SAYS_MOVED = "roster_says_moved"
    ROSTER_SAYS_DISSOLVED = "roster_says_dissolved"
    ROSTER_SAYS_UNKNOWN = "roster_says_unknown"
    MEMBER_COUNT_DIFFERS = "member_count_differs"
    DUPLICATE_NIK = "duplicate_nik"
    DUPLICATE_INTERVIEW = "duplicate_interview"
    NO_ROSTER = "no_roster"
    REJECTED_BY_SUPERVISOR = "rejected_by_supervisor"
    # an update (or a complaint's correction) that cannot apply to the family as verify holds it: no
    # decision about the family (it carries the family's current sequence; consumers leave the family as it is)
    UPDATE_NOT_APPLICABLE = "update_not_applicable"


class InterviewVerified(Contract):
    """A family verified against its SLS roster, with what classify needs to classify it
    (event-carried state, so classify needs no call back) and nothing more.

    Minimal event: it carries the family's `HouseholdProfile` (ages at the interview date,
    coded answers, area and ids), not the interview: no name, NIK, KK number, address, GPS
    or birth date leaves verify on this topic. Its consumers need no more: classify reads the
    profile, intake's status view reads the outcome, time, sequence and submission id.

    Versioning: this is a breaking change of the payload (`interview` replaced by `profile`),
    so it is a new CloudEvents type, `interview.verified.v2`; verify produces only v2. The
    v1 shape stays readable as `InterviewVerifiedV1` (consumed, never produced) because v1
    records remain on the topic for its retention (topics.yaml) after the rollout, and v1 dead
    letters may be re-driven later: classify turns a v1 record into a profile on arrival
    (`household_profile`) and keeps only that; intake reads its ids. Remove the v1 reading
    once neither the topic nor the dead-letter topic holds v1 records.
    """

    family_id: FamilyId
    sls_id: SlsId
    outcome: VerificationOutcome
    verified_at: datetime
    profile: HouseholdProfile  # classify's input: the PMT view of the interview, no identifying data
    decision_seq: DecisionSeq = 0  # verify's decision sequence of the family

    @model_validator(mode="after")
    def _same_family(self) -> InterviewVerified:
        if (self.profile.family_id, self.profile.sls_id) != (self.family_id, self.sls_id):
            raise ValueError("profile.family_id and profile.sls_id must be the event's family_id and sls_id")
        return self


class InterviewVerifiedV1(Contract):
    """`interview.verified.v1`, the shape before minimal events: the whole interview. Read
    only (records still on the topic, re-driven dead letters); no service produces it. Its
    consumers convert it on arrival (classify: `household_profile(interview)`) and keep
    nothing else of it."""

    family_id: FamilyId
    sls_id: SlsId
    outcome: VerificationOutcome
    verified_at: datetime
    interview: FamilyInterview
    decision_seq: DecisionSeq = 0

    def upgraded(self) -> InterviewVerified:
        """The same decision as a v2 event: the interview reduced to its profile."""
        return InterviewVerified(family_id=self.family_id, sls_id=self.sls_id, outcome=self.outcome,
                                 verified_at=self.verified_at, profile=household_profile(self.interview),
                                 decision_seq=self.decision_seq)


class InterviewFlagged(Contract):
    family_id: FamilyId
    sls_id: SlsId
    submission_id: SubmissionId
    version: int
    reason: FlagReason
    detail: Text  # readable by a supervisor (a template of regsosek.contracts.details); never NIK/KK/names
    flagged_at: datetime
    # verify's decision sequence of the family; a duplicate-interview flag (a second submission of
    # the same version) is no decision about the family and carries the family's current one
    decision_seq: DecisionSeq = 0


class SupervisorDecision(StrEnum):
    """A supervisor's decision on a flagged family: verify = accept it as living in the SLS; reject = it does not belong there."""

    VERIFY = "verify"
    REJECT = "reject"


class VerificationResolved(Contract):
    submission_id: SubmissionId  # of this resolution
    family_id: FamilyId
    sls_id: SlsId
    decision: SupervisorDecision
    supervisor_id: Annotated[str, StringConstraints(min_length=1, max_length=64)]
    reason: Annotated[str, StringConstraints(min_length=1, max_length=500)]
    decided_at: datetime


class WelfareGroup(IntEnum):
    """Welfare group (kelompok kesejahteraan): 1 sangat miskin (very/extreme poor); 2 miskin (poor); 3 rentan miskin
    (vulnerable); 4 tidak miskin (not poor)."""

    SANGAT_MISKIN = 1  # very / extreme poor
    MISKIN = 2  # poor
    RENTAN_MISKIN = 3  # vulnerable
    TIDAK_MISKIN = 4  # not poor


class Contribution(Contract):
    factor: str
    effect: float  # contribution to log per-capita consumption


class FamilyClassified(Contract):
    family_id: FamilyId
    sls_id: SlsId
    submission_id: SubmissionId
    version: int
    predicted_monthly_per_capita: float  # rupiah
    welfare_group: WelfareGroup
    decile: Annotated[int, Field(ge=1, le=10)]
    decile_basis: Text  # e.g. provisional reference cut-points of the model
    model_version: str
    adjusted_by_fkp: bool = False
    explanation: list[Contribution]  # top contributing factors, largest first
    classified_at: datetime
    decision_seq: DecisionSeq = 0  # classify's decision sequence of the family (shared with eligibility-decided)


class ProgrammeDecision(Contract):
    programme: str
    eligible: bool
    rule_version: str
    reasons: list[Text]


class MemberDecision(Contract):
    """One member's decision for an individual programme (PBI-JKN is decided per person, PIP per
    student: docs/DOMAIN.md), with the member's own reasons.

    The member is named by `line_no`, the member's row in Block IV of the family's form (its 1-based
    position among the profile's members), which with the event's family id points at one person
    without carrying a name, NIK or birth date. Reasons hold coded facts (age bands, school
    participation, welfare group), never identifiers."""

    line_no: Annotated[int, Field(ge=1, le=40)]
    programme: Annotated[str, StringConstraints(min_length=1, max_length=40)]
    eligible: bool
    rule_version: str
    reasons: list[Text]


class EligibilityDecided(Contract):
    family_id: FamilyId
    sls_id: SlsId
    submission_id: SubmissionId
    version: int
    welfare_group: WelfareGroup
    decile: Annotated[int, Field(ge=1, le=10)]
    model_version: str
    rule_version: str
    decisions: list[ProgrammeDecision]
    decided_at: datetime
    # classify's decision sequence of the family: the newest decision is the one with the highest
    # (re-classification, re-rank, replay and withdrawal each take the next); same value as the
    # family-classified published with it
    decision_seq: DecisionSeq = 0
    # Additive, optional: the per-member decisions of individual programmes (PBI-JKN, PIP), in member
    # order; empty for events from before them (readers that do not know the field ignore it). A
    # programme's family-level entry in `decisions` says whether any member is eligible; a withdrawal
    # (every programme not eligible) carries none: its family-level decisions cover every member.
    member_decisions: list[MemberDecision] = Field(default_factory=list, max_length=400)


class FkpAdjustment(Contract):
    """A village consultation (Forum Konsultasi Publik) decision for one family."""

    submission_id: SubmissionId
    family_id: FamilyId
    sls_id: SlsId
    welfare_group: WelfareGroup
    reason: Annotated[str, StringConstraints(min_length=1, max_length=500)]
    decided_by: Annotated[str, StringConstraints(min_length=1, max_length=120)]
    decided_at: datetime


class SlsCompleted(Contract):
    """Every family on an SLS roster is accounted for: interviewed (verified or flagged), or
    confirmed absent by the RT head (moved, dissolved, unknown) and not interviewed.

    Published once per SLS per roster revision. `expected` counts the roster's families;
    `interviewed` = `verified` + `flagged` counts the decided interviews of the SLS (families
    interviewed but not on the roster included); `absent` counts roster families confirmed
    absent that were not interviewed. Village and regency progress are prefixes of `sls_id`.
    `non_response`: of `absent`, the roster families accounted for by a form recording a
    non-response (refused, moved, not found, no competent respondent); 0 on events from before.
    """

    sls_id: SlsId
    roster_revision: Annotated[int, Field(ge=1)]
    roster_submission_id: SubmissionId
    expected: Annotated[int, Field(ge=0)]
    interviewed: Annotated[int, Field(ge=0)]
    verified: Annotated[int, Field(ge=0)]
    flagged: Annotated[int, Field(ge=0)]
    absent: Annotated[int, Field(ge=0)]
    completed_at: datetime
    non_response: Annotated[int, Field(ge=0)] = 0

    @model_validator(mode="after")
    def _counts_add_up(self) -> SlsCompleted:
        if self.verified + self.flagged != self.interviewed:
            raise ValueError("verified + flagged must equal interviewed")
        if self.absent > self.expected:
            raise ValueError("absent cannot exceed expected")
        if self.non_response > self.absent:
            raise ValueError("non_response is part of absent and cannot exceed it")
        return self


class EligibilityDelivered(Contract):
    """A programme system acknowledged an eligibility event of this family (notify's webhook
    got its ACK). Lets intake show "notified" in the submission's journey."""

    family_id: FamilyId
    sls_id: SlsId
    submission_id: SubmissionId
    version: int
    eligibility_event_id: Annotated[str, StringConstraints(min_length=1, max_length=200)]
    subscription_id: UUID
    subscriber: Annotated[str, StringConstraints(min_length=1, max_length=200)]
    delivered_at: datetime
