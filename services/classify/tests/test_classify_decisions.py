"""The domain's one-call decisions, pure: what a verification, a flag or an FKP decision changes
for a family in a given state."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from classify.domain import (
    Classified,
    Config,
    FamilyState,
    FkpDecision,
    VerifyDecision,
    decide_fkp,
    decide_flag,
    decide_verification,
    latest_fkp,
)
from classify.model import DATA, PmtModel, PovertyLines, RuleSet
from classify.ranking import reference_placement
from regsosek.contracts import (
    FamilyInterview,
    FkpAdjustment,
    FlagReason,
    InterviewFlagged,
    InterviewVerified,
    WelfareGroup,
    household_profile,
)
from regsosek.examples import family_interview

CONFIG = Config(PmtModel.load(DATA / "pmt-illustrative-2022.1.yaml"), PovertyLines.load(DATA / "poverty-lines-2022.yaml"),
                RuleSet.load(DATA / "eligibility-2022.1.yaml"))
PLACEMENT = reference_placement(CONFIG.model.version, CONFIG.model.decile_cutpoints)
PROFILE = household_profile(FamilyInterview.model_validate(family_interview()))
FAMILY, SLS = PROFILE.family_id, PROFILE.sls_id
T0 = datetime(2026, 3, 1, tzinfo=UTC)


def verified(seq: int) -> InterviewVerified:
    return InterviewVerified(family_id=FAMILY, sls_id=SLS, outcome="verified", verified_at=T0, profile=PROFILE,
                             decision_seq=seq)


def flagged(seq: int, reason: FlagReason = FlagReason.NOT_ON_ROSTER) -> InterviewFlagged:
    return InterviewFlagged(family_id=FAMILY, sls_id=SLS, submission_id=str(uuid.uuid4()), version=1, reason=reason,
                            detail="d", flagged_at=T0, decision_seq=seq)


def fkp(group: WelfareGroup, at: datetime = T0) -> FkpAdjustment:
    return FkpAdjustment(submission_id=str(uuid.uuid4()), family_id=FAMILY, sls_id=SLS, welfare_group=group,
                         reason="r", decided_by="b", decided_at=at)


def order(seq: int, verified: bool = True) -> VerifyDecision:
    return VerifyDecision(seq, 1, T0, verified)


def test_verification_classifies_under_the_latest_fkp_group_and_records_its_order():
    state = FamilyState(FAMILY, fkp=FkpDecision("x", WelfareGroup.SANGAT_MISKIN, T0), order=order(1))
    d = decide_verification(CONFIG, state, verified(2), PLACEMENT)
    assert d.ignored is None and d.order == order(2) and d.publishes
    assert d.classification == CONFIG.classify(PROFILE, WelfareGroup.SANGAT_MISKIN, PLACEMENT)


def test_verification_of_an_erased_family_or_behind_a_newer_decision_is_ignored():
    assert decide_verification(CONFIG, FamilyState(FAMILY, erased=True), verified(9), PLACEMENT).ignored
    stale = decide_verification(CONFIG, FamilyState(FAMILY, order=order(3, verified=False)), verified(2), PLACEMENT)
    assert stale.ignored and not stale.publishes and stale.order is None


def test_flag_of_a_classified_family_withdraws_every_programme():
    last = Classified(SLS, WelfareGroup.MISKIN, 2)
    e = flagged(2)
    d = decide_flag(CONFIG, FamilyState(FAMILY, classified=last, order=order(1)), e)
    assert d.order == VerifyDecision(2, 1, T0, False) and d.withdrawal is not None and d.publishes
    assert d.withdrawal.last == last and d.withdrawal.flag == e
    assert [p.programme for p in d.withdrawal.decisions] == [r.programme for r in CONFIG.rules.rules]
    assert not any(p.eligible for p in d.withdrawal.decisions)


def test_flag_of_a_family_not_classified_only_records_the_order():
    d = decide_flag(CONFIG, FamilyState(FAMILY), flagged(1))
    assert d.ignored is None and d.order is not None and not d.publishes


def test_older_and_duplicate_interview_flags_are_ignored():
    classified = FamilyState(FAMILY, classified=Classified(SLS, WelfareGroup.MISKIN, 2), order=order(5))
    assert decide_flag(CONFIG, classified, flagged(4)).ignored
    assert decide_flag(CONFIG, classified, flagged(6, FlagReason.DUPLICATE_INTERVIEW)).ignored


def test_latest_fkp_by_decision_time_the_incoming_winning_ties_unless_already_kept():
    kept = FkpDecision("k", WelfareGroup.MISKIN, T0)
    later, same_time, earlier = (fkp(WelfareGroup.TIDAK_MISKIN, T0 + timedelta(hours=h)) for h in (1, 0, -1))
    assert latest_fkp(None, earlier, False).welfare_group is WelfareGroup.TIDAK_MISKIN
    assert latest_fkp(kept, later, False).welfare_group is WelfareGroup.TIDAK_MISKIN
    assert latest_fkp(kept, same_time, False).welfare_group is WelfareGroup.TIDAK_MISKIN  # arrived last
    assert latest_fkp(kept, earlier, False) == kept
    assert latest_fkp(kept, later, True) == kept  # a redelivery of one kept: the kept order stands


def test_fkp_decision_is_kept_reclassifies_a_classified_family_and_marks_its_regency():
    a = fkp(WelfareGroup.RENTAN_MISKIN)
    d = decide_fkp(CONFIG, FamilyState(FAMILY, profile=PROFILE), a, PLACEMENT)
    assert d.fkp == a and d.rerank_area == (SLS[:4], f"fkp {a.submission_id}")
    assert d.classification == CONFIG.classify(PROFILE, WelfareGroup.RENTAN_MISKIN, PLACEMENT)
    not_classified = decide_fkp(CONFIG, FamilyState(FAMILY), a, PLACEMENT)
    assert not_classified.fkp == a and not_classified.classification is None and not not_classified.publishes
    assert decide_fkp(CONFIG, FamilyState(FAMILY, erased=True), a, PLACEMENT).fkp is None
