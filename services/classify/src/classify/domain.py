"""Classifying one family: the whole decision, pure, from an interview and the
versioned model, poverty lines and rules."""

from __future__ import annotations

from dataclasses import dataclass

from regsosek.contracts import Contribution, FamilyInterview, ProgrammeDecision, WelfareGroup

from classify.model import PmtModel, PovertyLines, RuleSet, components, features

TOP_FACTORS = 5


@dataclass(frozen=True)
class Classification:
    predicted: float
    welfare_group: WelfareGroup
    decile: int
    explanation: list[Contribution]
    decisions: list[ProgrammeDecision]
    adjusted_by_fkp: bool


def classify(iv: FamilyInterview, model: PmtModel, lines: PovertyLines, rules: RuleSet,
             fkp_group: WelfareGroup | None = None) -> Classification:
    regency = iv.location.sls_id[:4]
    predicted, contrib = model.predict(features(iv), regency)
    group = fkp_group if fkp_group is not None else lines.group(predicted, regency)
    decile = model.provisional_decile(predicted)
    top = sorted(((k, v) for k, v in contrib.items() if v != 0.0), key=lambda kv: -abs(kv[1]))[:TOP_FACTORS]
    explanation = [Contribution(factor=k, effect=round(v, 4)) for k, v in top]
    comps = components(iv)
    decisions = []
    for rule in rules.rules:
        ok, reasons = rule.decide(decile, group, comps)
        if fkp_group is not None:
            reasons.append(f"welfare group {int(fkp_group)} set by village consultation (FKP)")
        decisions.append(ProgrammeDecision(programme=rule.programme, eligible=ok, rule_version=rules.version, reasons=reasons))
    return Classification(predicted, group, decile, explanation, decisions, fkp_group is not None)
