"""Classifying one family: the whole decision, pure, from its profile (classify's input,
`HouseholdProfile`: no names, NIKs or birth dates) and the
versioned model, poverty lines and rules, and where the family stands among the
others (its decile placement, see ranking.py)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from classify.model import PmtModel, PovertyLines, RuleSet, components, features
from classify.ranking import Placement, rank_value, reference_placement
from regsosek.contracts import Contribution, FlagReason, HouseholdProfile, ProgrammeDecision, WelfareGroup

TOP_FACTORS = 5
FKP_NOTE = "; ranked within welfare group {} set by village consultation (FKP)"


def fkp_note(basis: str) -> str:
    """The FKP part of a decile basis ('' if none)."""
    i = basis.find(FKP_NOTE.split("{}")[0])
    return basis[i:] if i >= 0 else ""


@dataclass(frozen=True)
class Classification:
    predicted: float
    welfare_group: WelfareGroup
    decile: int
    explanation: list[Contribution]
    decisions: list[ProgrammeDecision]
    adjusted_by_fkp: bool
    rank_value: float = 0.0
    decile_basis: str = ""

    @property
    def eligibility(self) -> dict[str, bool]:
        return {d.programme: d.eligible for d in self.decisions}

    def outcome(self) -> tuple[int, int, dict[str, bool]]:
        """What a re-rank or replay compares: a family is re-published only when this changes."""
        return int(self.welfare_group), self.decile, self.eligibility


def classify(p: HouseholdProfile, model: PmtModel, lines: PovertyLines, rules: RuleSet,
             fkp_group: WelfareGroup | None = None, placement: Placement | None = None) -> Classification:
    regency = p.regency
    predicted, contrib = model.predict(features(p), regency)
    group = fkp_group if fkp_group is not None else lines.group(predicted, regency)
    value = rank_value(predicted, fkp_group, regency, lines)
    placement = placement or reference_placement(model.version, model.decile_cutpoints)
    decile, basis = placement.place(value)
    if fkp_group is not None:
        basis = basis.removesuffix(fkp_note(basis)) + FKP_NOTE.format(int(fkp_group))
    top = sorted(((k, v) for k, v in contrib.items() if v != 0.0), key=lambda kv: -abs(kv[1]))[:TOP_FACTORS]
    explanation = [Contribution(factor=k, effect=round(v, 4)) for k, v in top]
    comps = components(p)
    decisions = []
    for rule in rules.rules:
        ok, reasons = rule.decide(decile, group, comps)
        if fkp_group is not None:
            reasons.append(f"welfare group {int(fkp_group)} set by village consultation (FKP)")
        decisions.append(ProgrammeDecision(programme=rule.programme, eligible=ok, rule_version=rules.version, reasons=reasons))
    return Classification(predicted, group, decile, explanation, decisions, fkp_group is not None, value, basis)


# ---------------------------------------------------------------- the order of verify's decisions


@dataclass(frozen=True)
class VerifyDecision:
    """One of verify's decisions about a family (a verified or a flagged event), as classify orders
    them: by verify's decision sequence; among events from before sequences existed (sequence 0,
    older than any sequenced one) by interview version, then by when verify decided."""

    seq: int
    version: int
    at: datetime
    verified: bool

    @property
    def order(self) -> tuple[int, int, datetime]:
        return self.seq, self.version, self.at


def supersedes(incoming: VerifyDecision, stored: VerifyDecision | None) -> bool:
    """Whether verify's decision `incoming` is newer than the newest one applied for the family
    (`stored`, kept even when the family was never classified or has been withdrawn). Only a newer
    one is applied: a verification older than a flag already seen is stale (flag before verified ⇒
    not eligible), and an older flag never undoes a newer verification. The same decision again
    (equal order) is not newer."""
    return stored is None or incoming.order > stored.order


def is_family_decision(reason: FlagReason) -> bool:
    """A duplicate-interview flag is about a second submission of the version already decided,
    not about the family: it never changes the family's verification."""
    return reason is not FlagReason.DUPLICATE_INTERVIEW
