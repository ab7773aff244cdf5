"""Event contracts shared by every service, and the CloudEvents type of each."""

from regsosek.contracts.base import Contract
from regsosek.contracts.consultation import (
    FkpDecisionKind,
    FkpDecisionRecorded,
    FkpForum,
    FkpGroundChecked,
    ForumStatus,
    GroundCheckOutcome,
    ParticipantRole,
    Participants,
)
from regsosek.contracts.decisions import (
    Contribution,
    EligibilityDecided,
    EligibilityDelivered,
    FamilyClassified,
    FkpAdjustment,
    FlagReason,
    InterviewFlagged,
    InterviewVerified,
    InterviewVerifiedV1,
    MemberDecision,
    ProgrammeDecision,
    SlsCompleted,
    SupervisorDecision,
    VerificationOutcome,
    VerificationResolved,
    WelfareGroup,
)
from regsosek.contracts.household import HouseholdProfile, household_profile
from regsosek.contracts.identities import MemberIdentities
from regsosek.contracts.interview import (
    FamilyInterview,
    InterviewResult,
    KkStatus,
    MemberPresence,
    SupervisorCheck,
    SupervisorCheckOutcome,
    family_id,
)
from regsosek.contracts.pseudonymous import (
    ErasureReason,
    FamilyErased,
    InterviewSubmitted,
    PseudonymousMember,
    RosterSubmitted,
    pseudonymise_interview,
    pseudonymise_roster,
)
from regsosek.contracts.roster import RosterFamily, RosterStatus, SlsRoster
from regsosek.contracts.updates import FamilyUpdated, UpdateHeld

_PREFIX = "id.go.bps.regsosek"

# CloudEvents type of each contract. A breaking change gets a new `.vN` type.
EVENT_TYPES: dict[type[Contract], str] = {
    RosterSubmitted: f"{_PREFIX}.sls.roster.v2",  # v2: KK numbers as keyed hashes, no names
    InterviewSubmitted: f"{_PREFIX}.interview.submitted.v2",  # v2: NIK/KK as keyed hashes, no names/address/GPS
    VerificationResolved: f"{_PREFIX}.verification.resolved.v1",
    FkpAdjustment: f"{_PREFIX}.fkp.adjustment.v1",
    InterviewVerified: f"{_PREFIX}.interview.verified.v2",  # v2: a HouseholdProfile, not the interview
    InterviewFlagged: f"{_PREFIX}.interview.flagged.v1",
    FamilyClassified: f"{_PREFIX}.family.classified.v1",
    EligibilityDecided: f"{_PREFIX}.eligibility.decided.v1",
    SlsCompleted: f"{_PREFIX}.sls.completed.v1",
    EligibilityDelivered: f"{_PREFIX}.eligibility.delivered.v1",
    FamilyErased: f"{_PREFIX}.family.erased.v1",
    MemberIdentities: f"{_PREFIX}.member.identities.v1",  # sealed member NIKs, for notify only
    FamilyUpdated: f"{_PREFIX}.family.updated.v1",  # a field-checked update or a complaint's correction
    UpdateHeld: f"{_PREFIX}.family.update.held.v1",  # such an update kept by verify until the family is verified
    # the village consultation as held (contracts/consultation.py)
    FkpForum: f"{_PREFIX}.fkp.forum.v1",
    FkpDecisionRecorded: f"{_PREFIX}.fkp.decision.v1",
    FkpGroundChecked: f"{_PREFIX}.fkp.groundchecked.v1",
}
# Types no service produces any more but consumers still read (records retained on a topic,
# re-driven dead letters); each is converted on arrival. See InterviewVerified's docstring.
LEGACY_EVENT_TYPES: dict[type[Contract], str] = {
    InterviewVerifiedV1: f"{_PREFIX}.interview.verified.v1",
    # the documents as received, identifiers in clear (before pseudonymised events); verify
    # upgrades one on arrival (regsosek.contracts.pseudonymous)
    SlsRoster: f"{_PREFIX}.sls.roster.v1",
    FamilyInterview: f"{_PREFIX}.interview.submitted.v1",
}
# Every type a consumer can be given a handler for: the produced ones and the legacy ones.
CONSUMABLE_EVENT_TYPES: dict[type[Contract], str] = {**EVENT_TYPES, **LEGACY_EVENT_TYPES}
MODELS_BY_TYPE: dict[str, type[Contract]] = {v: k for k, v in CONSUMABLE_EVENT_TYPES.items()}

__all__ = [
    "CONSUMABLE_EVENT_TYPES",
    "EVENT_TYPES",
    "LEGACY_EVENT_TYPES",
    "MODELS_BY_TYPE",
    "Contract",
    "Contribution",
    "EligibilityDecided",
    "EligibilityDelivered",
    "ErasureReason",
    "FamilyErased",
    "FamilyClassified",
    "FamilyInterview",
    "FamilyUpdated",
    "UpdateHeld",
    "FkpAdjustment",
    "FkpDecisionKind",
    "FkpDecisionRecorded",
    "FkpForum",
    "FkpGroundChecked",
    "ForumStatus",
    "GroundCheckOutcome",
    "ParticipantRole",
    "Participants",
    "FlagReason",
    "HouseholdProfile",
    "InterviewFlagged",
    "InterviewSubmitted",
    "InterviewVerified",
    "InterviewVerifiedV1",
    "InterviewResult",
    "KkStatus",
    "MemberDecision",
    "MemberIdentities",
    "MemberPresence",
    "ProgrammeDecision",
    "RosterFamily",
    "RosterStatus",
    "RosterSubmitted",
    "PseudonymousMember",
    "SlsCompleted",
    "SlsRoster",
    "SupervisorCheck",
    "SupervisorCheckOutcome",
    "SupervisorDecision",
    "VerificationOutcome",
    "VerificationResolved",
    "WelfareGroup",
    "family_id",
    "household_profile",
    "pseudonymise_interview",
    "pseudonymise_roster",
]
