"""Classify's one publisher: every event classify emits is built here and put in the unit of
work's outbox (keyed by SLS, subject the family id, under the family's decision sequence)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

from classify.domain import Classification, Config, Withdrawal
from regsosek.contracts import EligibilityDecided, FamilyClassified, HouseholdProfile
from regsosek.messaging import Outbox
from regsosek.topics import Topic


def utc_now() -> datetime:
    return datetime.now(UTC)


class Publisher:
    def __init__(self, config: Config, clock: Callable[[], datetime] = utc_now) -> None:
        self.config = config
        self.clock = clock

    def classified(self, outbox: Outbox, p: HouseholdProfile, c: Classification, decision_seq: int) -> None:
        """family-classified and eligibility-decided for one family."""
        cfg, now, sls = self.config, self.clock(), p.sls_id
        outbox.publish(Topic.FAMILY_CLASSIFIED, sls, FamilyClassified(
            family_id=p.family_id, sls_id=sls, submission_id=p.submission_id, version=p.version,
            predicted_monthly_per_capita=round(c.predicted, 0), welfare_group=c.welfare_group, decile=c.decile,
            decile_basis=c.decile_basis, model_version=cfg.model.version, adjusted_by_fkp=c.adjusted_by_fkp,
            explanation=c.explanation, classified_at=now, decision_seq=decision_seq), subject=p.family_id)
        outbox.publish(Topic.ELIGIBILITY_DECIDED, sls, EligibilityDecided(
            family_id=p.family_id, sls_id=sls, submission_id=p.submission_id, version=p.version,
            welfare_group=c.welfare_group, decile=c.decile, model_version=cfg.model.version,
            rule_version=cfg.rules.version, decisions=c.decisions, decided_at=now, decision_seq=decision_seq,
            member_decisions=c.member_decisions),
            subject=p.family_id)

    def withdrawn(self, outbox: Outbox, w: Withdrawal, decision_seq: int) -> None:
        """eligibility-decided, every programme not eligible: the family is no longer verified."""
        cfg, e, sls = self.config, w.flag, w.last.sls_id
        outbox.publish(Topic.ELIGIBILITY_DECIDED, sls, EligibilityDecided(
            family_id=e.family_id, sls_id=sls, submission_id=e.submission_id, version=e.version,
            welfare_group=w.last.welfare_group, decile=w.last.decile, model_version=cfg.model.version,
            rule_version=cfg.rules.version, decisions=w.decisions, decided_at=self.clock(),
            decision_seq=decision_seq), subject=e.family_id)
