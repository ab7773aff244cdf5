"""Event contracts shared by every service, and the CloudEvents type of each."""

from regsosek.contracts.base import Contract
from regsosek.contracts.decisions import (
    Contribution,
    EligibilityDecided,
    EligibilityDelivered,
    FamilyClassified,
    FkpAdjustment,
    FlagReason,
    InterviewFlagged,
    InterviewVerified,
    ProgrammeDecision,
    SlsCompleted,
    SupervisorDecision,
    VerificationOutcome,
    VerificationResolved,
    WelfareGroup,
)
from regsosek.contracts.interview import FamilyInterview, family_id
from regsosek.contracts.roster import RosterFamily, RosterStatus, SlsRoster

_PREFIX = "id.go.bps.regsosek"

# CloudEvents type of each contract. A breaking change gets a new `.vN` type.
EVENT_TYPES: dict[type[Contract], str] = {
    SlsRoster: f"{_PREFIX}.sls.roster.v1",
    FamilyInterview: f"{_PREFIX}.interview.submitted.v1",
    VerificationResolved: f"{_PREFIX}.verification.resolved.v1",
    FkpAdjustment: f"{_PREFIX}.fkp.adjustment.v1",
    InterviewVerified: f"{_PREFIX}.interview.verified.v1",
    InterviewFlagged: f"{_PREFIX}.interview.flagged.v1",
    FamilyClassified: f"{_PREFIX}.family.classified.v1",
    EligibilityDecided: f"{_PREFIX}.eligibility.decided.v1",
    SlsCompleted: f"{_PREFIX}.sls.completed.v1",
    EligibilityDelivered: f"{_PREFIX}.eligibility.delivered.v1",
}
MODELS_BY_TYPE: dict[str, type[Contract]] = {v: k for k, v in EVENT_TYPES.items()}

__all__ = [
    "EVENT_TYPES",
    "MODELS_BY_TYPE",
    "Contract",
    "Contribution",
    "EligibilityDecided",
    "EligibilityDelivered",
    "FamilyClassified",
    "FamilyInterview",
    "FkpAdjustment",
    "FlagReason",
    "InterviewFlagged",
    "InterviewVerified",
    "ProgrammeDecision",
    "RosterFamily",
    "RosterStatus",
    "SlsCompleted",
    "SlsRoster",
    "SupervisorDecision",
    "VerificationOutcome",
    "VerificationResolved",
    "WelfareGroup",
    "family_id",
]
