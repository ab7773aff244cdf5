"""Classify's decisions, pure (no database, no broker, no clock).

- Classifying one family (`classify`, `Config.classify`): from its profile (classify's
  input, `HouseholdProfile`: no names, NIKs or birth dates), the versioned model, poverty
  lines and rules, and where the family stands among the others (its decile placement,
  see ranking.py).
- What one incoming event changes for a family (`decide_verification`, `decide_flag`,
  `decide_fkp`): from the family's state as the store loaded it (`FamilyState`), one call
  returns one `Decision` that the handler saves and publishes: the order of verify's
  decisions (`supersedes`, docs/ORDERING.md), withdrawals, FKP adjustments.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from classify.model import PmtModel, PovertyLines, RuleSet, components, features
from classify.ranking import Placement, rank_value, reference_placement
from regsosek.contracts import (
    FkpAdjustment,
    FlagReason,
    HouseholdProfile,
    InterviewFlagged,
    InterviewVerified,
    WelfareGroup,
)
from regsosek.contracts import details as dt

TOP_FACTORS = 5
FKP_NOTE = dt.BASIS_WITHIN_FKP_GROUP.text.replace("{basis}", "").replace("{group}", "{}")


def fkp_note(basis: str) -> str:
    """The FKP part of a decile basis ('' if none)."""
    i = basis.find(FKP_NOTE.split("{}")[0])
    return basis[i:] if i >= 0 else ""


# What a classification decides, as plain values: built for every classified family (a family has
# ~5 factors, 5 programme decisions and a member decision per member and individual programme), so
# they are not validated models; the publisher writes them as the contracts' `Contribution`,
# `ProgrammeDecision` and `MemberDecision` (classify.publisher; its tests hold the JSON to the contracts).


@dataclass(frozen=True, slots=True)
class Factor:
    """One of the top contributing factors of the PMT (a `Contribution` on the wire)."""

    factor: str
    effect: float  # contribution to log per-capita consumption


@dataclass(frozen=True, slots=True)
class ProgrammeOutcome:
    """A programme's decision for the family, with its reasons (a `ProgrammeDecision` on the wire)."""

    programme: str
    eligible: bool
    rule_version: str
    reasons: list[str]


@dataclass(frozen=True, slots=True)
class MemberOutcome:
    """One member's decision for an individual programme (a `MemberDecision` on the wire): the member
    named by form row (`line_no`), never by name or NIK."""

    line_no: int
    programme: str
    eligible: bool
    rule_version: str
    reasons: list[str]


@dataclass(frozen=True)
class Classification:
    predicted: float
    welfare_group: WelfareGroup
    decile: int
    explanation: list[Factor]
    decisions: list[ProgrammeOutcome]
    adjusted_by_fkp: bool
    rank_value: float = 0.0
    decile_basis: str = ""
    member_decisions: list[MemberOutcome] = field(default_factory=list)  # individual programmes, per member

    @property
    def eligibility(self) -> dict[str, bool]:
        return {d.programme: d.eligible for d in self.decisions}

    @property
    def member_eligibility(self) -> dict[str, bool]:
        """The member-level decisions as "programme:line_no" -> eligible (stored with the family)."""
        return {f"{m.programme}:{m.line_no}": m.eligible for m in self.member_decisions}

    def outcome(self) -> tuple[int, int, dict[str, bool], dict[str, bool]]:
        """What a re-rank or replay compares: a family is re-published only when this changes (a
        member's eligibility included)."""
        return int(self.welfare_group), self.decile, self.eligibility, self.member_eligibility


def classify(p: HouseholdProfile, model: PmtModel, lines: PovertyLines, rules: RuleSet,
             fkp_group: WelfareGroup | None = None, placement: Placement | None = None) -> Classification:
    regency = p.regency
    predicted, contrib = model.predict(features(p), regency)
    group = fkp_group if fkp_group is not None else lines.group(predicted, p.sls_id)
    value = rank_value(predicted, fkp_group, p.sls_id, lines)
    placement = placement or reference_placement(model.version, model.decile_cutpoints)
    decile, basis = placement.place(value)
    if fkp_group is not None:
        basis = basis.removesuffix(fkp_note(basis)) + FKP_NOTE.format(int(fkp_group))
    top = sorted(((k, v) for k, v in contrib.items() if v != 0.0), key=lambda kv: -abs(kv[1]))[:TOP_FACTORS]
    explanation = [Factor(k, round(v, 4)) for k, v in top]
    comps = components(p)
    fkp_reason = [] if fkp_group is None else [f"welfare group {int(fkp_group)} set by village consultation (FKP)"]
    decisions = []
    for rule in rules.rules:
        ok, reasons = rule.decide(decile, group, comps)
        decisions.append(ProgrammeOutcome(rule.programme, ok, rules.version, reasons + fkp_reason))
    return Classification(predicted, group, decile, explanation, decisions, fkp_group is not None, value, basis,
                          per_member_decisions(p, decile, group, rules, fkp_reason))


def per_member_decisions(p: HouseholdProfile, decile: int, group: WelfareGroup, rules: RuleSet,
                     extra_reasons: list[str]) -> list[MemberOutcome]:
    """Each member's decision for each individual programme (PBI-JKN, PIP: rules with `per_member`),
    in member order, with the member's own reasons."""
    return [MemberOutcome(line_no, rule.programme, ok, rules.version, reasons + extra_reasons)
            for rule in rules.rules for line_no, ok, reasons in rule.decide_members(p, decile, group)]


@dataclass(frozen=True)
class Config:
    """The configured model, poverty lines and rules: what every classification is computed with."""

    model: PmtModel
    lines: PovertyLines
    rules: RuleSet

    @property
    def versions(self) -> tuple[str, str, str]:
        return self.model.version, self.lines.version, self.rules.version

    def classify(self, p: HouseholdProfile, fkp: WelfareGroup | None, placement: Placement) -> Classification:
        return classify(p, self.model, self.lines, self.rules, fkp, placement)


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
    """A duplicate-interview flag is about a second submission of the version already decided, and an
    update-not-applicable flag about an update verify could not apply, not about the family: neither
    changes the family's verification."""
    return reason not in (FlagReason.DUPLICATE_INTERVIEW, FlagReason.UPDATE_NOT_APPLICABLE)


def verification(e: InterviewVerified) -> VerifyDecision:
    return VerifyDecision(e.decision_seq, e.profile.version, e.verified_at, verified=True)


def flag(e: InterviewFlagged) -> VerifyDecision:
    return VerifyDecision(e.decision_seq, e.version, e.flagged_at, verified=False)


# ---------------------------------------------------------------- a family's state and what an event changes


@dataclass(frozen=True)
class FkpDecision:
    """A village consultation (FKP) decision kept for a family."""

    submission_id: str
    welfare_group: WelfareGroup
    decided_at: datetime


@dataclass(frozen=True)
class Classified:
    """What a withdrawal needs of the family's current classification."""

    sls_id: str
    welfare_group: WelfareGroup
    decile: int


@dataclass(frozen=True)
class FamilyState:
    """What classify holds of one family, as loaded for one decision (each loader fills what its
    decision needs; its rows are locked for the transaction)."""

    family_id: str
    erased: bool = False
    classified: Classified | None = None  # None: not classified (never, withdrawn, or erased)
    profile: HouseholdProfile | None = None  # the stored profile of a classified family
    fkp: FkpDecision | None = None  # the latest FKP decision kept (by decided_at, then arrival)
    fkp_kept: bool = False  # the incoming FKP decision is kept already (a redelivery)
    order: VerifyDecision | None = None  # the newest of verify's decisions applied (None: none yet)

    @property
    def fkp_group(self) -> WelfareGroup | None:
        return None if self.fkp is None else self.fkp.welfare_group


@dataclass(frozen=True)
class StoredFamily:
    """A family's stored classification as re-rank and replay weigh it."""

    family_id: str
    sls_id: str
    rank_value: float
    decile: int
    decile_basis: str
    ranking_id: int | None
    welfare_group: int
    eligibility: dict[str, bool]
    versions: tuple[str, str, str]  # model, lines, rules
    member_eligibility: dict[str, bool] = field(default_factory=dict)  # "programme:line_no" -> eligible

    def outcome(self) -> tuple[int, int, dict[str, bool], dict[str, bool]]:
        """As `Classification.outcome`: a family is re-published only when this changes."""
        return self.welfare_group, self.decile, self.eligibility, self.member_eligibility


@dataclass(frozen=True)
class Withdrawal:
    """A classified family flagged: out of the classified population, every programme not eligible."""

    flag: InterviewFlagged
    last: Classified
    decisions: list[ProgrammeOutcome]


@dataclass(frozen=True)
class Decision:
    """What one event changes for one family. The handler carries it out in this order: keep
    `fkp`, record `order`, save and publish `classification` or `withdrawal`, ask for `rerank_area`."""

    ignored: str | None = None  # why nothing changes
    order: VerifyDecision | None = None  # verify's decision, now the newest applied for the family
    classification: Classification | None = None  # the family's new classification, saved and published
    withdrawal: Withdrawal | None = None
    fkp: FkpAdjustment | None = None  # a village consultation decision to keep
    rerank_area: tuple[str, str] | None = None  # (regency, why): an FKP decision moves its families' ranks

    @property
    def publishes(self) -> bool:
        return self.classification is not None or self.withdrawal is not None


def decide_verification(cfg: Config, state: FamilyState, e: InterviewVerified, placement: Placement) -> Decision:
    """Classify the verified family, unless it was erased or a newer decision of verify's was
    applied already (a flag that arrived first, on its own topic, or a later verification): verify's
    decision sequence decides, never the order of arrival. The latest FKP decision applies."""
    if state.erased:
        return Decision(ignored="erased: a verification retained or re-driven from before does not classify it again")
    incoming = verification(e)
    if not supersedes(incoming, state.order):
        return Decision(ignored="stale: a newer verification or flag of this family was applied")
    return Decision(order=incoming, classification=cfg.classify(e.profile, state.fkp_group, placement))


def decide_flag(cfg: Config, state: FamilyState, e: InterviewFlagged) -> Decision:
    """The family is no longer (or not yet) verified: a classified family's eligibility is withdrawn;
    a family not classified keeps the flag, so the verification it withdraws, should it arrive later,
    is stale. An older flag changes nothing; a duplicate-interview flag is no decision about the family."""
    if not is_family_decision(e.reason):
        return Decision(ignored="duplicate interview: the family's verification is unchanged")
    incoming = flag(e)
    if not supersedes(incoming, state.order):
        return Decision(ignored="stale: a newer decision of verify's was applied")
    if state.classified is None:
        return Decision(order=incoming)
    reason = f"verification withdrawn ({e.reason.value}): {e.detail}"[:500]
    decisions = [ProgrammeOutcome(r.programme, False, cfg.rules.version, [reason]) for r in cfg.rules.rules]
    return Decision(order=incoming, withdrawal=Withdrawal(e, state.classified, decisions))


def latest_fkp(kept: FkpDecision | None, incoming: FkpAdjustment, already_kept: bool) -> FkpDecision:
    """The FKP decision that applies once `incoming` is kept: the latest by decided_at; among equal
    ones the last to arrive (`incoming`, unless it is a redelivery of one kept already)."""
    new = FkpDecision(str(incoming.submission_id), incoming.welfare_group, incoming.decided_at)
    if kept is None:
        return new
    if already_kept or incoming.decided_at < kept.decided_at:
        return kept
    return new


def decide_fkp(cfg: Config, state: FamilyState, a: FkpAdjustment, placement: Placement) -> Decision:
    """Keep a village consultation decision; a classified family is classified again under the latest
    one (otherwise it applies when the family is classified). The family's new rank moves others: its
    regency is re-ranked in the background. An erased family keeps nothing."""
    if state.erased:
        return Decision(ignored="erased: nothing is kept of it any more")
    group = latest_fkp(state.fkp, a, state.fkp_kept).welfare_group
    classification = None if state.profile is None else cfg.classify(state.profile, group, placement)
    return Decision(classification=classification, fkp=a, rerank_area=(a.sls_id[:4], f"fkp {a.submission_id}"))
