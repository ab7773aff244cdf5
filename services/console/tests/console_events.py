"""Small valid events of one family for the console's unit tests."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from regsosek.contracts import (
    EligibilityDecided,
    FamilyClassified,
    FamilyInterview,
    InterviewFlagged,
    InterviewSubmitted,
    InterviewVerified,
    ProgrammeDecision,
    VerificationResolved,
    household_profile,
    pseudonymise_interview,
)
from regsosek.contracts.details import NOT_ON_ROSTER
from regsosek.examples import family_interview

T0 = datetime(2022, 10, 20, 2, 0, tzinfo=UTC)
INTERVIEW = FamilyInterview.model_validate(family_interview())
FAMILY, SLS = INTERVIEW.family_id, INTERVIEW.location.sls_id
SUBMITTED = pseudonymise_interview(INTERVIEW, "k" * 32)


def at(minutes: int) -> datetime:
    return T0 + timedelta(minutes=minutes)


def verified(seq: int, minutes: int = 1, outcome: str = "verified") -> InterviewVerified:
    return InterviewVerified(family_id=FAMILY, sls_id=SLS, outcome=outcome, verified_at=at(minutes),
                             profile=household_profile(INTERVIEW), decision_seq=seq)


def flagged(seq: int, minutes: int = 1, reason: str = "not_on_roster") -> InterviewFlagged:
    return InterviewFlagged(family_id=FAMILY, sls_id=SLS, submission_id=INTERVIEW.submission_id, version=1,
                            reason=reason, detail=NOT_ON_ROSTER(building=1, family=1),
                            flagged_at=at(minutes), decision_seq=seq)


def resolution(minutes: int, decision: str = "verify") -> VerificationResolved:
    return VerificationResolved(submission_id=uuid.uuid4(), family_id=FAMILY, sls_id=SLS, decision=decision,
                                supervisor_id="SPV-1", reason="accept: seen", decided_at=at(minutes))


def classified(seq: int, group: int = 2, decile: int = 3, minutes: int = 2) -> FamilyClassified:
    return FamilyClassified(family_id=FAMILY, sls_id=SLS, submission_id=INTERVIEW.submission_id, version=1,
                            predicted_monthly_per_capita=500_000.0, welfare_group=group, decile=decile,
                            decile_basis="reference-2022", model_version="pmt-1", explanation=[],
                            classified_at=at(minutes), decision_seq=seq)


def eligibility(seq: int, group: int = 2, minutes: int = 2) -> EligibilityDecided:
    return EligibilityDecided(family_id=FAMILY, sls_id=SLS, submission_id=INTERVIEW.submission_id, version=1,
                              welfare_group=group, decile=3, model_version="pmt-1", rule_version="rules-1",
                              decisions=[ProgrammeDecision(programme="pkh", eligible=True, rule_version="rules-1", reasons=[]),
                                         ProgrammeDecision(programme="pip", eligible=False, rule_version="rules-1",
                                                           reasons=["no school-age child"])],
                              decided_at=at(minutes), decision_seq=seq)


def non_response(result: str = "refused", version: int = 2) -> InterviewSubmitted:
    """The family's form recording a non-response (no housing, no members living with it)."""
    doc = SUBMITTED.model_dump(mode="json") | {"result": result, "housing": None, "members": [], "version": version,
                                                 "submission_id": str(uuid.uuid4())}
    return InterviewSubmitted.model_validate(doc)
