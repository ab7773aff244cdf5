"""Classify's one publisher: every event classify emits is built here and put in the unit of
work's outbox (keyed by SLS, subject the family id, under the family's decision sequence).

The events of a classification (family-classified, eligibility-decided) and of a withdrawal are
written straight to their contracts' JSON from the domain's values (`family_classified_json`,
`eligibility_decided_json`), not built as validated models first: every value comes from classify's
own code or from a profile validated on arrival, and the rules, whose reasons the decisions carry,
are checked against the contracts' limits when loaded (classify.model.RuleSet.load). Building and
validating the models was a large share of classify's Python per family in the profiles
(BENCHMARKS.md, round 3). The tests (services/classify/tests/test_classify_publisher.py) hold the
JSON to the contracts: byte for byte the models' own serialisation, every field in the models'
order, valid against the models and the published JSON Schemas."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, datetime

import orjson

from classify.domain import Classification, Config, Factor, MemberOutcome, ProgrammeOutcome, Withdrawal
from regsosek.contracts import EligibilityDecided, FamilyClassified, HouseholdProfile, WelfareGroup
from regsosek.messaging import Outbox
from regsosek.topics import Topic

# pydantic writes an aware UTC datetime with "Z"; orjson does too with this option. No other option:
# orjson's defaults (UUIDs and enums by value, floats, key order as written) are the models' JSON.
_JSON_OPTIONS = orjson.OPT_UTC_Z


def utc_now() -> datetime:
    return datetime.now(UTC)


def _factors(explanation: Sequence[Factor]) -> list[dict]:
    return [{"factor": f.factor, "effect": f.effect} for f in explanation]


def _decisions(decisions: Sequence[ProgrammeOutcome]) -> list[dict]:
    return [{"programme": d.programme, "eligible": d.eligible, "rule_version": d.rule_version, "reasons": d.reasons}
            for d in decisions]


def _member_decisions(members: Sequence[MemberOutcome]) -> list[dict]:
    return [{"line_no": m.line_no, "programme": m.programme, "eligible": m.eligible, "rule_version": m.rule_version,
             "reasons": m.reasons} for m in members]


def family_classified_json(p: HouseholdProfile, c: Classification, model_version: str, at: datetime,
                           decision_seq: int) -> bytes:
    """The `FamilyClassified` of a classification, as its JSON (the fields in the model's order)."""
    return orjson.dumps({
        "family_id": p.family_id, "sls_id": p.sls_id, "submission_id": p.submission_id, "version": p.version,
        "predicted_monthly_per_capita": round(c.predicted, 0), "welfare_group": c.welfare_group,
        "decile": c.decile, "decile_basis": c.decile_basis, "model_version": model_version,
        "adjusted_by_fkp": c.adjusted_by_fkp, "explanation": _factors(c.explanation), "classified_at": at,
        "decision_seq": decision_seq}, option=_JSON_OPTIONS)


def eligibility_decided_json(*, family_id: str, sls_id: str, submission_id: object, version: int,
                             welfare_group: WelfareGroup, decile: int, model_version: str, rule_version: str,
                             decisions: Sequence[ProgrammeOutcome], at: datetime, decision_seq: int,
                             member_decisions: Sequence[MemberOutcome] = ()) -> bytes:
    """An `EligibilityDecided`, as its JSON (the fields in the model's order)."""
    return orjson.dumps({
        "family_id": family_id, "sls_id": sls_id, "submission_id": submission_id, "version": version,
        "welfare_group": welfare_group, "decile": decile, "model_version": model_version,
        "rule_version": rule_version, "decisions": _decisions(decisions), "decided_at": at,
        "decision_seq": decision_seq, "member_decisions": _member_decisions(member_decisions)},
        option=_JSON_OPTIONS)


class Publisher:
    def __init__(self, config: Config, clock: Callable[[], datetime] = utc_now) -> None:
        self.config = config
        self.clock = clock

    def classified(self, outbox: Outbox, p: HouseholdProfile, c: Classification, decision_seq: int) -> None:
        """family-classified and eligibility-decided for one family."""
        cfg, now, sls = self.config, self.clock(), p.sls_id
        outbox.publish_encoded(Topic.FAMILY_CLASSIFIED, sls, FamilyClassified,
                               family_classified_json(p, c, cfg.model.version, now, decision_seq), subject=p.family_id)
        outbox.publish_encoded(Topic.ELIGIBILITY_DECIDED, sls, EligibilityDecided, eligibility_decided_json(
            family_id=p.family_id, sls_id=sls, submission_id=p.submission_id, version=p.version,
            welfare_group=c.welfare_group, decile=c.decile, model_version=cfg.model.version,
            rule_version=cfg.rules.version, decisions=c.decisions, at=now, decision_seq=decision_seq,
            member_decisions=c.member_decisions), subject=p.family_id)

    def withdrawn(self, outbox: Outbox, w: Withdrawal, decision_seq: int) -> None:
        """eligibility-decided, every programme not eligible: the family is no longer verified."""
        cfg, e, sls = self.config, w.flag, w.last.sls_id
        outbox.publish_encoded(Topic.ELIGIBILITY_DECIDED, sls, EligibilityDecided, eligibility_decided_json(
            family_id=e.family_id, sls_id=sls, submission_id=e.submission_id, version=e.version,
            welfare_group=w.last.welfare_group, decile=w.last.decile, model_version=cfg.model.version,
            rule_version=cfg.rules.version, decisions=w.decisions, at=self.clock(), decision_seq=decision_seq),
            subject=e.family_id)
