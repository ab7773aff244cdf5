"""The console's read model, pure: how each event moves a family's state, who may see what,
and how progress rows are ranked. No database, no broker, no clock: times come with the events.

A family's state is event-carried and order-tolerant: the console reads eight topics, each on
its own, so a family's `interview-verified` may arrive before its `interview-submitted`. Each
kind of fact keeps its own field, and decisions are ordered by their producer's `decision_seq`
(docs/ORDERING.md): verify's for verified/flagged, classify's for classified/eligibility. An event
older than what is applied changes nothing but still adds its step to the journey.

Only pseudonymous, minimal fields are kept: ids (family, SLS, submission), reason codes and the
readable detail verify writes for supervisors (never NIK, KK or names), welfare group, decile,
versions, times. What the console never receives it cannot show.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from enum import StrEnum
from zoneinfo import ZoneInfo

from regsosek.auth import Principal, Role
from regsosek.contracts import (
    EligibilityDecided,
    EligibilityDelivered,
    FamilyClassified,
    FkpAdjustment,
    FlagReason,
    InterviewFlagged,
    InterviewResult,
    InterviewSubmitted,
    InterviewVerified,
    RosterStatus,
    RosterSubmitted,
    SlsCompleted,
    SupervisorDecision,
    VerificationResolved,
)

NEVER = -1  # decision_seq of a family no decision has reached yet (0 is a legacy, unsequenced one)


class VerifyState(StrEnum):
    VERIFIED = "verified"
    FLAGGED = "flagged"


@dataclass(frozen=True)
class Step:
    """One entry of a family's journey."""

    step: str  # received | verified | flagged | resolution | fkp | classified | eligibility | delivered
    at: datetime
    submission_id: str | None = None
    detail: dict = field(default_factory=dict)


@dataclass(frozen=True)
class FamilyState:
    family_id: str
    sls_id: str
    submission_id: str | None = None
    version: int | None = None
    interviewed_at: datetime | None = None
    result: str | None = None  # the latest interview's result (InterviewResult): complete ... not_found
    verify_seq: int = NEVER
    verify_state: VerifyState | None = None
    verify_outcome: str | None = None  # verified / verified_added / verified_by_supervisor, or the flag reason
    verify_at: datetime | None = None
    flag_detail: str | None = None
    classify_seq: int = NEVER
    welfare_group: int | None = None
    decile: int | None = None
    model_version: str | None = None
    adjusted_by_fkp: bool = False
    classified_at: datetime | None = None
    rule_version: str | None = None
    eligible_programmes: tuple[str, ...] = ()
    decided_at: datetime | None = None
    delivered_at: datetime | None = None
    deliveries: int = 0
    resolution: str | None = None
    resolution_at: datetime | None = None

    @staticmethod
    def new(family_id: str, sls_id: str) -> FamilyState:
        return FamilyState(family_id=family_id, sls_id=sls_id)


def received_time(ce_time: str, fallback: datetime) -> datetime:
    """When intake accepted an event (its CloudEvents time), else the fallback."""
    try:
        t = datetime.fromisoformat(ce_time)
    except ValueError:
        return fallback
    return t if t.tzinfo else fallback


def _newer(seq: int, applied: int) -> bool:
    """A decision is applied when it is newer than the applied one; unsequenced (0) ones in arrival order."""
    return seq > applied or seq == applied == 0


@dataclass(frozen=True)
class Change:
    """What one event does to the read model: the family's new state (None: unchanged) and a step."""

    state: FamilyState | None
    step: Step | None


def on_interview(s: FamilyState, e: InterviewSubmitted, received_at: datetime) -> Change:
    step = Step("received", received_at, str(e.submission_id), {"version": e.version, "result": e.result.value})
    if s.version is not None and e.version < s.version:
        return Change(None, step)
    return Change(dataclasses.replace(s, submission_id=str(e.submission_id), version=e.version,
                                      interviewed_at=e.interviewed_at, result=e.result.value), step)


def on_verified(s: FamilyState, e: InterviewVerified) -> Change:
    step = Step("verified", e.verified_at, str(e.profile.submission_id), {"outcome": e.outcome.value})
    if not _newer(e.decision_seq, s.verify_seq):
        return Change(None, step)
    return Change(dataclasses.replace(s, verify_seq=e.decision_seq, verify_state=VerifyState.VERIFIED,
                                      verify_outcome=e.outcome.value, verify_at=e.verified_at, flag_detail=None,
                                      submission_id=s.submission_id or str(e.profile.submission_id)), step)


def on_flagged(s: FamilyState, e: InterviewFlagged) -> Change:
    step = Step("flagged", e.flagged_at, str(e.submission_id), {"reason": e.reason.value, "detail": e.detail})
    # a second submission of the same version is no decision about the family (it carries the current sequence)
    if e.reason is FlagReason.DUPLICATE_INTERVIEW or not _newer(e.decision_seq, s.verify_seq):
        return Change(None, step)
    return Change(dataclasses.replace(s, verify_seq=e.decision_seq, verify_state=VerifyState.FLAGGED,
                                      verify_outcome=e.reason.value, verify_at=e.flagged_at, flag_detail=e.detail,
                                      submission_id=s.submission_id or str(e.submission_id)), step)


def on_resolution(s: FamilyState, e: VerificationResolved) -> Change:
    step = Step("resolution", e.decided_at, str(e.submission_id), {"decision": e.decision.value, "reason": e.reason})
    if s.resolution_at is not None and e.decided_at < s.resolution_at:
        return Change(None, step)
    return Change(dataclasses.replace(s, resolution=e.decision.value, resolution_at=e.decided_at), step)


def on_fkp(e: FkpAdjustment) -> Change:
    return Change(None, Step("fkp", e.decided_at, str(e.submission_id),
                             {"welfare_group": int(e.welfare_group), "reason": e.reason}))


def on_classified(s: FamilyState, e: FamilyClassified) -> Change:
    step = Step("classified", e.classified_at, str(e.submission_id),
                {"welfare_group": int(e.welfare_group), "decile": e.decile, "model_version": e.model_version,
                 "adjusted_by_fkp": e.adjusted_by_fkp})
    if e.decision_seq < s.classify_seq:  # the eligibility published with it shares its sequence
        return Change(None, step)
    return Change(dataclasses.replace(s, classify_seq=e.decision_seq, welfare_group=int(e.welfare_group),
                                      decile=e.decile, model_version=e.model_version,
                                      adjusted_by_fkp=e.adjusted_by_fkp, classified_at=e.classified_at), step)


def on_eligibility(s: FamilyState, e: EligibilityDecided) -> Change:
    eligible = tuple(sorted(d.programme for d in e.decisions if d.eligible))
    step = Step("eligibility", e.decided_at, str(e.submission_id),
                {"eligible": list(eligible), "rule_version": e.rule_version})
    if e.decision_seq < s.classify_seq:
        return Change(None, step)
    return Change(dataclasses.replace(s, classify_seq=e.decision_seq, welfare_group=int(e.welfare_group),
                                      decile=e.decile, model_version=e.model_version, rule_version=e.rule_version,
                                      eligible_programmes=eligible, decided_at=e.decided_at), step)


def on_delivered(s: FamilyState, e: EligibilityDelivered) -> Change:
    # the subscriber's name is a programme system's, not a person's; kept on the step only
    step = Step("delivered", e.delivered_at, str(e.submission_id), {"subscriber": e.subscriber})
    first = min(s.delivered_at, e.delivered_at) if s.delivered_at else e.delivered_at
    return Change(dataclasses.replace(s, deliveries=s.deliveries + 1, delivered_at=first), step)


# ---------------------------------------------------------------- rosters


@dataclass(frozen=True)
class RosterCount:
    """An SLS's expected families (from its roster) and those the RT head confirmed absent; with the roster,
    its absent families per reason (ROSTER_OUTCOMES; None from sls-completed, which carries no breakdown).
    `non_response`: of `absent`, the families verify found accounted for by a non-response form (sls-completed
    only), which the console counts by the forms' results instead."""

    sls_id: str
    expected: int
    absent: int
    as_of: datetime
    revision: int = 0  # verify's roster revision when it comes from sls-completed; 0 from the roster itself
    outcomes: dict[str, int] | None = None
    non_response: int = 0

    @property
    def confirmed_absent(self) -> int:
        """Roster families not reached by any form: confirmed absent by the RT head (or relocated by an SLS change)."""
        return max(0, self.absent - self.non_response)


ABSENT = frozenset({RosterStatus.MOVED, RosterStatus.DISSOLVED, RosterStatus.UNKNOWN})

# Why the RT head confirmed a prelisted family absent (its roster status), as the console names it.
ROSTER_OUTCOMES: dict[str, str] = {
    RosterStatus.MOVED.value: "moved",
    RosterStatus.DISSOLVED.value: "dissolved",
    RosterStatus.UNKNOWN.value: "not_found",
}

# The family's result on its latest form (InterviewResult, docs/DOMAIN.md) to the progress figure it counts in:
# interviewed = complete or partly complete; a refusal is `refused`; a family moved, not found or without a
# competent respondent is not reached (each its own figure, part of `not_reached`).
RESULT_FIGURES: dict[str, str] = {
    InterviewResult.COMPLETE.value: "interviewed",
    InterviewResult.PARTLY_COMPLETE.value: "interviewed",
    InterviewResult.REFUSED.value: "refused",
    InterviewResult.MOVED.value: "moved",
    InterviewResult.NOT_FOUND.value: "not_found",
    InterviewResult.NO_COMPETENT_RESPONDENT.value: "no_respondent",
}
FORM_NOT_REACHED = ("moved", "not_found", "no_respondent")  # a form's results counted as not reached

# The reasons a family was not reached, in the order pages show them: the RT head's (moved, dissolved, unknown)
# and the forms' (moved, not found, no competent respondent).
OUTCOMES = ("moved", "dissolved", "not_found", "no_respondent")


def field_outcome(entry: object) -> str | None:
    """The reason a roster entry was not reached (its status as confirmed by the RT head); None when present or added."""
    code = getattr(entry, "status", None)
    return ROSTER_OUTCOMES.get(str(getattr(code, "value", code)))


def roster_count(e: RosterSubmitted) -> RosterCount:
    absent = sum(1 for f in e.families if f.status in ABSENT)
    outcomes = dict.fromkeys(ROSTER_OUTCOMES.values(), 0)
    for f in e.families:
        if (o := field_outcome(f)) is not None:
            outcomes[o] += 1
    return RosterCount(e.sls_id, expected=len(e.families), absent=absent, as_of=e.confirmed_at, outcomes=outcomes)


def completed_count(e: SlsCompleted) -> RosterCount:
    return RosterCount(e.sls_id, expected=e.expected, absent=e.absent, as_of=e.completed_at, revision=e.roster_revision,
                       non_response=e.non_response)


def merged_roster(current: RosterCount | None, incoming: RosterCount) -> RosterCount | None:
    """What to keep of an SLS's roster count after `incoming` (None: nothing changes). The counts follow
    newer_roster; the outcomes come from the latest roster confirmation (sls-completed carries none)."""
    if current is None:
        return incoming
    newer = newer_roster(current, incoming)
    if incoming.outcomes is None:
        return dataclasses.replace(incoming, outcomes=current.outcomes) if newer else None
    if newer:
        return incoming
    # an older count (verify's revision wins), but this roster's outcomes are newer than the kept ones
    return dataclasses.replace(current, outcomes=incoming.outcomes)


def newer_roster(current: RosterCount | None, incoming: RosterCount) -> bool:
    """verify's count of a later revision wins; between rosters themselves, the later confirmation."""
    if current is None:
        return True
    return (incoming.revision, incoming.as_of) >= (current.revision, current.as_of)


# ---------------------------------------------------------------- scope


class Page(StrEnum):
    OPERATIONS = "operations"
    WORKLIST = "worklist"
    JOURNEY = "journey"
    VILLAGE = "village"
    POLICY = "policy"
    INTEGRATOR = "integrator"


PAGES_OF_ROLE: dict[Role, tuple[Page, ...]] = {
    Role.ADMIN: tuple(Page),
    Role.SUPERVISOR: (Page.OPERATIONS, Page.WORKLIST, Page.JOURNEY, Page.VILLAGE, Page.POLICY),
    Role.OFFICER: (Page.OPERATIONS, Page.JOURNEY),
    Role.VILLAGE_OFFICIAL: (Page.VILLAGE, Page.JOURNEY, Page.OPERATIONS),
    # a programme system sees its subscriptions through notify, never the census read model
    Role.PROGRAMME: (Page.INTEGRATOR,),
}


def may_open(p: Principal, page: Page) -> bool:
    return page in PAGES_OF_ROLE[p.role]


def area_scope(p: Principal) -> tuple[str, ...] | None:
    """The SLS id prefixes every read is filtered by; None = every area (operations/admin)."""
    return None if p.role is Role.ADMIN else p.areas


def may_see(p: Principal, sls_id: str) -> bool:
    scope = area_scope(p)
    return scope is None or any(sls_id.startswith(a) for a in scope)


def home_area(p: Principal) -> str:
    """Where a person's pages start: their one area, the longest prefix all their areas share, or the country."""
    scope = area_scope(p)
    if not scope:
        return ""
    first, last = min(scope), max(scope)
    common = next((i for i, (a, b) in enumerate(zip(first, last, strict=False)) if a != b), min(len(first), len(last)))
    return clip_to_level(first[:common])


# ---------------------------------------------------------------- areas and progress

LEVELS = (0, 2, 4, 7, 10, 14)  # country, province, regency, district, village, SLS
LEVEL_NAMES = ("country", "province", "regency", "district", "village", "sls")


def clip_to_level(prefix: str) -> str:
    """The longest area level code that `prefix` holds (a 5-digit prefix is its regency)."""
    return prefix[:max(n for n in LEVELS if n <= len(prefix))]


def child_length(area: str) -> int | None:
    """The code length of the level below `area` (None below SLS)."""
    later = [n for n in LEVELS if n > len(area)]
    return later[0] if later else None


def level_name(area: str) -> str:
    return LEVEL_NAMES[LEVELS.index(len(area))]


def child_level_name(area: str) -> str | None:
    n = child_length(area)
    return None if n is None else LEVEL_NAMES[LEVELS.index(n)]


def valid_area(area: str) -> bool:
    return area == "" or (len(area) in LEVELS and area.isascii() and area.isdigit())


@dataclass(frozen=True)
class Progress:
    """An area's figures (README, "Field outcomes", says how each is counted). `absent`: roster families the RT
    head confirmed absent that no form accounts for; `not_reached` = absent + forms moved, not found or without
    a competent respondent; the reasons (OUTCOMES) add the RT head's and the forms'. `sls`: SLS counted."""

    area: str
    expected: int = 0
    interviewed: int = 0
    verified: int = 0
    flagged: int = 0
    refused: int = 0
    not_reached: int = 0
    absent: int = 0
    moved: int = 0
    dissolved: int = 0
    not_found: int = 0
    no_respondent: int = 0
    sls: int = 0

    @property
    def accounted_for(self) -> int:
        """Families interviewed, refused or not reached."""
        return self.interviewed + self.refused + self.not_reached

    @property
    def to_interview(self) -> int:
        """Roster families still to visit: expected, less those accounted for."""
        return max(0, self.expected - self.accounted_for)

    @property
    def completion(self) -> float:
        """Share of the roster accounted for (interviewed, refused or not reached), 0..1; 0 without a roster."""
        if self.expected <= 0:
            return 1.0 if self.accounted_for else 0.0
        return min(1.0, self.accounted_for / self.expected)


def behind_first(rows: list[Progress]) -> list[Progress]:
    """Areas falling behind first: lowest completion, then most families still to interview."""
    return sorted(rows, key=lambda r: (r.completion, -r.to_interview, r.area))


PROGRESS_FIELDS = ("expected", "interviewed", "verified", "flagged", "refused", "not_reached", "absent", *OUTCOMES)


def total(area: str, rows: list[Progress]) -> Progress:
    return Progress(area=area, sls=sum(r.sls for r in rows), **{f: sum(getattr(r, f) for r in rows) for f in PROGRESS_FIELDS})


# ---------------------------------------------------------------- small counts (who sees exact figures)

SMALL = range(1, 5)
SLS_DIGITS = 14
# A figure that singles out a household when it is small in a cell of one SLS, and the figures withheld with it
# (those it could be recomputed from): flagged with verified (= interviewed - flagged); any non-response figure with
# all of them and the completion (the reasons add up to not_reached; completion x expected gives the sum back).
NON_RESPONSE = ("refused", "not_reached", "absent", *OUTCOMES, "completion")
WITHHELD_WITH: dict[str, tuple[str, ...]] = {"flagged": ("flagged", "verified"),
                                             **{f: NON_RESPONSE for f in NON_RESPONSE if f != "completion"}}


def exact_counts(p: Principal) -> bool:
    """Supervisors see exact figures: every read is already limited to their token's areas, where they assign and
    check the families' visits. Everyone else (operations, officers, village officials) gets small counts withheld."""
    return p.role is Role.SUPERVISOR


def covers_one_sls(p: Progress) -> bool:
    return len(p.area) >= SLS_DIGITS or p.sls <= 1


def withheld(p: Progress, also: frozenset[str] = frozenset()) -> frozenset[str]:
    """The figures of one cell not shown: in a cell covering one SLS, each figure of WITHHELD_WITH between 1 and 4
    with its companions; `also`, whatever their values (a total that would give back one row's withheld figure)."""
    out = set(also)
    if covers_one_sls(p):
        for f, companions in WITHHELD_WITH.items():
            if getattr(p, f) in SMALL:
                out.update(companions)
    return frozenset(out)


@dataclass(frozen=True)
class Disclosure:
    """What a page withholds: of the area's totals, and of each row (by area code)."""

    total: frozenset[str] = frozenset()
    rows: dict[str, frozenset[str]] = field(default_factory=dict)

    def of(self, area: str) -> frozenset[str]:
        return self.rows.get(area, frozenset())


def disclosure(overall: Progress, rows: list[Progress], exact: bool) -> Disclosure:
    """Small counts withheld for a reader without exact counts; the totals also withhold a figure exactly one row
    withheld (else the totals less the other rows give it back)."""
    if exact:
        return Disclosure()
    per_row = {r.area: withheld(r) for r in rows}
    once = frozenset(f for f in {*NON_RESPONSE, "flagged", "verified"} if sum(f in w for w in per_row.values()) == 1)
    return Disclosure(withheld(overall, once), per_row)


def shown(p: Progress, hidden: frozenset[str]) -> dict[str, float | int | None]:
    """A cell's figures for the JSON answer: a withheld figure is null."""
    values: dict[str, float | int | None] = {f: getattr(p, f) for f in PROGRESS_FIELDS}
    values["completion"] = round(p.completion, 4)
    return {f: None if f in hidden else v for f, v in values.items()}


# ---------------------------------------------------------------- per-SLS counters (maintained by the projection)

FIELDWORK_ZONE = ZoneInfo("Asia/Makassar")  # the fieldwork day of an interview (WITA)
FAMILY_FIGURES = ("interviewed", "verified", "flagged", "refused", *FORM_NOT_REACHED)  # columns of sls_progress


@dataclass(frozen=True)
class FamilyCounts:
    """What one family adds to its SLS's counters: one for the figure its latest form's result counts in
    (RESULT_FIGURES; a family known only from verify's or classify's events responded, for verify decides only on
    those), verified or flagged when it responded (its current verify state), and its form's fieldwork day (for the
    daily chart: every visit whatever its result)."""

    figures: dict[str, int] = field(default_factory=dict)
    day: date | None = None


def responded(s: FamilyState) -> bool:
    """The family answered (complete or partly complete), or is known only from verify's or classify's events."""
    return RESULT_FIGURES.get(s.result or "", "interviewed") == "interviewed"


def counts_of(s: FamilyState | None) -> FamilyCounts:
    if s is None:
        return FamilyCounts()
    figure = RESULT_FIGURES.get(s.result or "", "interviewed")
    figures = {figure: 1}
    if responded(s):
        figures["verified"] = int(s.verify_state is VerifyState.VERIFIED)
        figures["flagged"] = int(s.verify_state is VerifyState.FLAGGED)
    day = s.interviewed_at.astimezone(FIELDWORK_ZONE).date() if s.interviewed_at else None
    return FamilyCounts(figures, day)


@dataclass(frozen=True)
class CountsChange:
    """The change of an SLS's counters (and of its interviews per day) when a family goes from one state to another."""

    sls_id: str
    figures: dict[str, int]  # FAMILY_FIGURES -> change
    days: dict[date, int]

    @property
    def empty(self) -> bool:
        return not (any(self.figures.values()) or any(self.days.values()))


def counts_change(sls_id: str, before: FamilyState | None, after: FamilyState | None) -> CountsChange:
    b, a = counts_of(before), counts_of(after)
    figures = {f: a.figures.get(f, 0) - b.figures.get(f, 0) for f in FAMILY_FIGURES}
    days: dict[date, int] = {}
    if b.day != a.day:
        if b.day is not None:
            days[b.day] = -1
        if a.day is not None:
            days[a.day] = days.get(a.day, 0) + 1
    return CountsChange(sls_id, figures, days)


def daily_series(days: list[tuple[date, int]], start: date, end: date) -> list[tuple[date, int]]:
    """Interviews per day over the collection period (and any day outside it that has some), zeros filled in."""
    counts = dict(days)
    first, last = min([start, *counts]), max([end, *counts])
    return [(first + timedelta(d), counts.get(first + timedelta(d), 0)) for d in range((last - first).days + 1)]


def plan_per_day(expected: int, start: date, end: date) -> float:
    """The even plan: every expected family interviewed over the collection period."""
    days = (end - start).days + 1
    return expected / days if days > 0 else float(expected)


# ---------------------------------------------------------------- supervisor decisions

# What a supervisor decides in the console, and how it travels: the contract carries verify or reject;
# the kind of decision leads the reason so that verify's record and the journey keep it.
RESOLUTIONS: dict[str, SupervisorDecision] = {
    "accept": SupervisorDecision.VERIFY,
    "duplicate_resolved": SupervisorDecision.VERIFY,
    "reject": SupervisorDecision.REJECT,
    "moved": SupervisorDecision.REJECT,
}


def resolution_reason(kind: str, note: str) -> str:
    return f"{kind}: {note.strip()}" if note.strip() else kind


def resolution_parts(reason: str) -> tuple[str | None, str]:
    """(the console's kind of decision, the supervisor's note) of a resolution's reason that
    resolution_reason made; (None, the reason) for any other (one sent to intake directly)."""
    kind, sep, note = reason.partition(": ")
    if kind in RESOLUTIONS:
        return kind, note
    return (reason, "") if reason in RESOLUTIONS else (None, reason)


def awaiting_resolution(s: FamilyState) -> bool:
    """A supervisor's decision was sent and verify has not decided again since."""
    return s.resolution_at is not None and (s.verify_at is None or s.verify_at <= s.resolution_at)


def in_worklist(s: FamilyState) -> bool:
    """Flagged and still the supervisor's to decide (a rejection is a decision already)."""
    return s.verify_state is VerifyState.FLAGGED and s.verify_outcome != FlagReason.REJECTED_BY_SUPERVISOR.value
