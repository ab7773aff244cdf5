"""Verification rules: an interview against its SLS roster (VK1), pure logic.

The field procedure: the officer confirms the prelist with the RT head first
(present / moved / dissolved / unknown / added); only families confirmed to live
in the SLS are verified. Everything else is flagged with a reason a supervisor
can act on. No personal data goes into the `detail` text.

What the form itself records is taken as the field found it (docs/DOMAIN.md, field outcomes):
a non-response (refused, moved, not found, no competent respondent) accounts for its roster
family without being verified or flagged (state `non_response`, nothing published); a family
split off a prelisted KK (keluarga pecahan) is matched to that KK; members who died, moved or
were not found explain a member count smaller than the roster's, new members a larger one.

SLS changes during listing (form PSLS: a split, merge or rename) move families to the roster of
another SLS of the same village. A family whose own SLS's roster no longer lists it is matched by
its KK on that other roster (`Roster.village`), whichever of the two rosters comes first: the
new roster re-checks the families its KKs name that were flagged "not on roster" meanwhile
(`RosterState.strays`), and its progress counts them (`Progress.relocated`). The family keeps
its family id (its old SLS's) everywhere downstream.

Each handler loads one state value from the store (`InterviewState`, `RosterState`,
`ResolutionState`, `HoldState`) and one function here decides on it (`on_interview`,
`on_roster`, `on_resolution`, `on_hold_expired`), returning an `Outcome`: what to store
(held interview, NIK claims, roster revision, decisions with their sequence numbers,
refreshed roster matches, a kept resolution) and what to publish.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from enum import StrEnum
from uuid import UUID

from regsosek.contracts import (
    FlagReason,
    InterviewResult,
    InterviewSubmitted,
    KkStatus,
    RosterStatus,
    RosterSubmitted,
    SupervisorDecision,
    VerificationOutcome,
    VerificationResolved,
    family_id,
)
from regsosek.contracts import details as dt
from regsosek.contracts.updates import FamilyUpdated, UpdateWait

# What verify decides on: the pseudonymised interview (v2): NIK and KK as keyed hashes, no names
Interview = InterviewSubmitted

# The RT head's statuses that mean the family does not (or no longer) live in the SLS.
ABSENT = frozenset({RosterStatus.MOVED, RosterStatus.DISSOLVED, RosterStatus.UNKNOWN})

Key = tuple[int, int]  # (building serial, family serial): a roster entry's identity within its SLS


@dataclass(frozen=True)
class RosterEntry:
    building_no: int
    family_no: int
    kk_hash: str | None  # the KK number's keyed hash (hex), as intake publishes it
    member_count: int
    status: RosterStatus

    @property
    def key(self) -> Key:
        return (self.building_no, self.family_no)


@dataclass(frozen=True)
class VillageEntry:
    """A roster entry with a KK of another SLS of the same village (as its current roster lists it)."""

    sls_id: str
    entry: RosterEntry


@dataclass(frozen=True)
class Roster:
    """The current revision of an SLS roster, with the KK-bearing entries of the other SLS of its
    village: an SLS split, merged or renamed during listing (form PSLS) moves families to another
    SLS's roster, where a family interviewed under its old SLS is still matched by its KK."""

    sls_id: str
    revision: int
    submission_id: UUID
    entries: list[RosterEntry]
    village: tuple[VillageEntry, ...] = ()


NON_RESPONSE = "non_response"  # the stored state of a family accounted for by a non-response
# States after which nothing is decided on the interview's body any more but a new version:
# its body may be emptied once old (REGSOSEK_INTERVIEW_BODY_RETENTION_DAYS). A flagged family
# waits for its supervisor, a held one for its roster: they keep it.
FINAL_STATES = ("verified", "rejected", NON_RESPONSE)
# Whose interview body the retention rule empties (REGSOSEK_INTERVIEW_BODY_RETENTION_DAYS after the
# decision): a supervisor's rejection and a non-response form. A verified family's body stays while the
# family is registered: the living registry's updates and complaints' corrections apply to it
# (verify.updates), as classify keeps its profile; erasure removes it.
BODY_EXPIRES = ("rejected", NON_RESPONSE)


@dataclass(frozen=True)
class Decision:
    verified: bool
    outcome: VerificationOutcome | None = None
    reason: FlagReason | None = None
    detail: str = ""
    non_response: InterviewResult | None = None  # the form's result when the family did not respond
    roster_sls: str | None = None  # matched on the roster of this other SLS of the village (SLS changed)

    @property
    def state(self) -> str:
        """The family's state in verify's store: verified, flagged, rejected (by a supervisor), or
        non_response (accounted for, neither verified nor flagged)."""
        if self.verified:
            return "verified"
        if self.non_response is not None:
            return NON_RESPONSE
        return "rejected" if self.reason is FlagReason.REJECTED_BY_SUPERVISOR else "flagged"

    @property
    def code(self) -> str:
        code = self.outcome or self.reason or self.non_response
        if code is None:
            raise ValueError("a decision has an outcome, a flag reason or a non-response result")
        return code.value


_STATUS_FLAGS = {
    RosterStatus.MOVED: (FlagReason.ROSTER_SAYS_MOVED, dt.ROSTER_SAYS_MOVED()),
    RosterStatus.DISSOLVED: (FlagReason.ROSTER_SAYS_DISSOLVED, dt.ROSTER_SAYS_DISSOLVED()),
    RosterStatus.UNKNOWN: (FlagReason.ROSTER_SAYS_UNKNOWN, dt.ROSTER_SAYS_UNKNOWN()),
}


_NON_RESPONSE_DETAIL = {
    InterviewResult.NO_COMPETENT_RESPONDENT: dt.NO_COMPETENT_RESPONDENT(),
    InterviewResult.REFUSED: dt.REFUSED(),
    InterviewResult.MOVED: dt.OFFICER_FOUND_MOVED(),
    InterviewResult.NOT_FOUND: dt.OFFICER_NOT_FOUND(),
}


def entry_by_kk(iv: Interview, roster: Iterable[RosterEntry]) -> RosterEntry | None:
    """The entry listing the family's KK (its keyed hash), else, for a family split off a
    prelisted KK (keluarga pecahan), the KK it split from."""
    loc = iv.location
    roster = list(roster)
    kks = [loc.kk_hash, loc.parent_kk_hash if loc.kk_status is KkStatus.SPLIT_OFF else None]
    for kk in filter(None, kks):
        for e in roster:
            if e.kk_hash == kk:
                return e
    return None


def find_entry(iv: Interview, roster: list[RosterEntry]) -> RosterEntry | None:
    """Match by KK (entry_by_kk) first, else by building and family serials."""
    entry = entry_by_kk(iv, roster)
    if entry is not None:
        return entry
    for e in roster:
        if (e.building_no, e.family_no) == (iv.location.building_no, iv.location.family_no):
            return e
    return None


def split_off(iv: Interview, entry: RosterEntry) -> bool:
    """The interview is a family split from this (prelisted) roster entry's KK."""
    loc = iv.location
    return loc.kk_status is KkStatus.SPLIT_OFF and loc.parent_kk_hash is not None and entry.kk_hash == loc.parent_kk_hash \
        and entry.kk_hash != loc.kk_hash


def member_count_problem(iv: Interview, entry: RosterEntry) -> str | None:
    """The roster counts the prelisted family's members; the form lists each of them with its
    presence (lives here, died, moved, not found) and adds new members. A count that differs
    only by these codes is explained; a split-off family's count is not the roster entry's
    (that is its parent family's)."""
    if split_off(iv, entry):
        return None
    prelisted = sum(1 for m in iv.members if m.presence.prelisted)
    if entry.member_count == prelisted:
        return None
    if prelisted == len(iv.members) and len(iv.residents) == len(iv.members):
        return dt.MEMBERS_DIFFER(roster=entry.member_count, interview=len(iv.members))
    return dt.PRELISTED_DIFFER(roster=entry.member_count, prelisted=prelisted, residents=len(iv.residents))


def village_entry(iv: Interview, village: Iterable[VillageEntry]) -> VillageEntry | None:
    """The entry of another SLS of the village that lists the family's KK (or the KK it split
    from): where an SLS split, merge or rename moved the family. By KK only: serials are per SLS."""
    village = list(village)
    found = entry_by_kk(iv, [v.entry for v in village])
    return next((v for v in village if v.entry is found), None)


def decide(iv: Interview, roster: list[RosterEntry], village: Iterable[VillageEntry] = ()) -> Decision:
    if not iv.result.responded:
        return Decision(False, detail=_NON_RESPONSE_DETAIL[iv.result], non_response=iv.result)
    entry = find_entry(iv, roster)
    if entry is None:
        moved = village_entry(iv, village)
        if moved is not None:  # decided as on its own roster: a re-check after the SLS change changes nothing
            return replace(decide(iv, [moved.entry]), roster_sls=moved.sls_id)
        return Decision(False, reason=FlagReason.NOT_ON_ROSTER,
                        detail=dt.NOT_ON_ROSTER(building=iv.location.building_no, family=iv.location.family_no))
    if entry.status in _STATUS_FLAGS:
        reason, detail = _STATUS_FLAGS[entry.status]
        return Decision(False, reason=reason, detail=detail)
    problem = member_count_problem(iv, entry)
    if problem is not None:
        return Decision(False, reason=FlagReason.MEMBER_COUNT_DIFFERS, detail=problem)
    if entry.status is RosterStatus.ADDED:
        return Decision(True, outcome=VerificationOutcome.VERIFIED_ADDED)
    return Decision(True, outcome=VerificationOutcome.VERIFIED)


def duplicate_nik(conflicting_lines: list[int]) -> Decision:
    return Decision(False, reason=FlagReason.DUPLICATE_NIK,
                    detail=dt.DUPLICATE_NIK(lines=", ".join(str(n) for n in conflicting_lines)))


def duplicate_interview() -> Decision:
    return Decision(False, reason=FlagReason.DUPLICATE_INTERVIEW,
                    detail=dt.DUPLICATE_INTERVIEW())


def no_roster(hours: float) -> Decision:
    return Decision(False, reason=FlagReason.NO_ROSTER, detail=dt.NO_ROSTER(hours=f"{hours:.0f}"))


class Arrival(StrEnum):
    """What an interview meets in verify's store."""

    NEW = "new"  # the family's first interview, or a newer version: held, then decided
    SUPERSEDED = "superseded"  # an older version than the stored one: ignored
    REPEATED = "repeated"  # the stored submission again (a redelivery): ignored
    DUPLICATE = "duplicate"  # another submission of the stored version: flagged alone, the family unchanged


def interview_arrival(stored: tuple[int, str] | None, iv: Interview) -> Arrival:
    """Versions, not arrival order, decide: `stored` is the (version, submission id) verify holds
    for the family. Only NEW leads to a decision about the family, which takes the family's next
    decision sequence, so a newer version's decision always carries a higher sequence than any
    decision about an older one; a DUPLICATE flag changes nothing about the family and carries
    its current sequence (consumers do not take it as a decision about the family)."""
    if stored is None:
        return Arrival.NEW
    version, submission_id = stored
    if version > iv.version:
        return Arrival.SUPERSEDED
    if version == iv.version:
        return Arrival.REPEATED if submission_id == str(iv.submission_id) else Arrival.DUPLICATE
    return Arrival.NEW


def matched_key(iv: Interview, roster: list[RosterEntry]) -> Key | None:
    """The roster entry this interview accounts for (whatever its outcome), if any."""
    e = find_entry(iv, roster)
    return None if e is None else e.key


# ---------------------------------------------------------------- later rosters


def decided_by_supervisor(state: str, outcome: str | None) -> bool:
    """A supervisor's decision stands until a new interview version: a later roster does not undo it."""
    return state == "rejected" or outcome == VerificationOutcome.VERIFIED_BY_SUPERVISOR.value


def changed(state: str, outcome: str | None, detail: str | None, d: Decision) -> bool:
    """Whether a re-verification differs from what was last published for the family."""
    return (state, outcome, detail or "") != (d.state, d.code, d.detail)


# ---------------------------------------------------------------- supervisor resolutions


class NotResolvable(Exception):
    """A resolution that can never apply to the family's current interview."""


def resolve(state: str, r: VerificationResolved) -> Decision | None:
    """What a supervisor's resolution does to a decided family; None when it changes nothing
    (verify on a verified family, reject on a rejected one). The resolution is kept either way."""
    if state == "held":
        raise NotResolvable(f"family {r.family_id} is held (no roster yet), not decided; nothing to resolve")
    if state == NON_RESPONSE:
        raise NotResolvable(f"family {r.family_id} did not respond (accounted for, not decided); "
                            "a revisit is submitted as a new interview version")
    if r.decision is SupervisorDecision.VERIFY:
        if state == "verified":
            return None
        return Decision(True, outcome=VerificationOutcome.VERIFIED_BY_SUPERVISOR,
                        detail=dt.VERIFIED_BY_SUPERVISOR(supervisor=r.supervisor_id)[:500])
    if state == "rejected":
        return None
    return Decision(False, reason=FlagReason.REJECTED_BY_SUPERVISOR,
                    detail=dt.REJECTED_BY_SUPERVISOR(supervisor=r.supervisor_id, reason=r.reason)[:500])


# ---------------------------------------------------------------- SLS completeness


@dataclass(frozen=True)
class Decided:
    """One decided interview of an SLS, as completeness sees it."""

    verified: bool
    matched: Key | None  # the roster entry it accounts for; None when not on the roster
    non_response: bool = False  # refused, moved, not found, no competent respondent


@dataclass(frozen=True)
class Progress:
    expected: int  # families on the roster
    interviewed: int  # decided interviews in the SLS (verified + flagged, incl. families not on the roster)
    verified: int
    flagged: int  # flagged or rejected
    absent: int  # roster families confirmed moved/dissolved/unknown and not interviewed
    outstanding: int  # roster families neither interviewed nor confirmed absent nor non-responding
    non_response: int = 0  # roster families accounted for only by a non-response (refused, moved, not found, ...)
    relocated: int = 0  # roster families accounted for by an interview under another SLS of the village (SLS changes)

    @property
    def complete(self) -> bool:
        return self.outstanding == 0


def progress(roster: list[RosterEntry], decided: Iterable[Decided], relocated: Iterable[Key] = ()) -> Progress:
    """Every roster family is accounted for when it was interviewed (verified or flagged, by
    whichever interview matched it), when its form records a non-response (refused, moved, not
    found, no competent respondent), when a decided interview under another SLS of the village
    carries its KK (`relocated`: the SLS was split, merged or renamed after the interview), or
    when the RT head confirmed it absent and nobody interviewed it."""
    decided = list(decided)
    relocated = set(relocated)
    responded = [d for d in decided if not d.non_response]
    interviewed_keys = {d.matched for d in responded if d.matched is not None}
    non_response_keys = {d.matched for d in decided if d.non_response and d.matched is not None}
    verified = sum(1 for d in responded if d.verified)
    absent = outstanding = non_response = moved_here = 0
    for e in roster:
        if e.key in interviewed_keys:
            continue
        if e.key in relocated:
            moved_here += 1
        elif e.key in non_response_keys:
            non_response += 1
        elif e.status in ABSENT:
            absent += 1
        else:
            outstanding += 1
    return Progress(expected=len(roster), interviewed=len(responded), verified=verified,
                    flagged=len(responded) - verified, absent=absent, outstanding=outstanding,
                    non_response=non_response, relocated=moved_here)


# ---------------------------------------------------------------- state in, outcome out

FamilyId = str
NikHash = bytes


@dataclass(frozen=True)
class Stored:
    """A family's interview as verify holds it (its row locked for the transaction)."""

    family_id: FamilyId
    sls_id: str
    version: int
    submission_id: str
    state: str  # held, verified, flagged or rejected
    outcome: str | None
    detail: str | None
    decision_seq: int  # of the family's last decision; 0 before the first
    interview: Interview | None  # None once erased (body dropped, outcome kept), or not loaded (InterviewState)
    traceparent: str | None = None  # the trace of the interview while it is held

    @property
    def body(self) -> Interview:
        """The interview of a row loaded with its body (the store's `body is not null` states)."""
        if self.interview is None:
            raise ValueError("the stored interview's body is not loaded (erased, or not asked for)")
        return self.interview


@dataclass(frozen=True)
class Claim:
    """The NIKs a judged interview claims for its family, nation-wide, and the member lines the
    decision took as held by another family. The store claims them before anything else is
    saved and reports whether another family took one meanwhile (`ClaimsRaced`)."""

    family_id: FamilyId
    niks: Mapping[NikHash, int]  # NIK hash -> member line
    clashes: tuple[int, ...]


# Causes of a published flag that decides nothing about the family (history only, current sequence).
NO_FAMILY_DECISION = ("duplicate_interview", "update_not_applicable")


@dataclass(frozen=True)
class Verdict:
    """One decision about a family: stored under `decision_seq` with its history line (`cause`)
    and published. A duplicate interview's flag (`cause` duplicate_interview) is no decision about
    the family: it carries the family's current sequence and changes nothing stored but history."""

    interview: Interview
    decision: Decision
    cause: str
    decision_seq: int
    matched: Key | None = None  # the roster entry the interview accounts for
    roster_revision: int | None = None
    traceparent: str | None = None  # the held interview's trace, to publish in

    @property
    def changes_family(self) -> bool:
        return self.cause not in NO_FAMILY_DECISION


@dataclass(frozen=True)
class Rematch:
    """A later roster revision, same outcome: only which entry the family accounts for changes."""

    family_id: FamilyId
    matched: Key | None
    roster_revision: int


@dataclass(frozen=True)
class NewRoster:
    """A roster revision to store: as received (an erased family's KK hash left out) and as
    verify matches against it."""

    received: RosterSubmitted
    roster: Roster


@dataclass(frozen=True)
class Outcome:
    """Everything one event changes, in the order the store saves it: claims first (so a claim
    lost to a concurrent family is found before anything else is written), then the held
    interview, the roster, the decisions, the refreshed matches and the resolution."""

    claims: tuple[Claim, ...] = ()
    held: Interview | None = None
    roster: NewRoster | None = None
    verdicts: tuple[Verdict, ...] = ()
    rematches: tuple[Rematch, ...] = ()
    resolution: tuple[VerificationResolved, int] | None = None  # with the version it resolved
    recount: str | None = None  # the SLS whose progress to recount before commit
    # the living registry (verify.updates): an update kept until its family is verified, with why it
    # waits; and the update decided now (applied or not), no longer waiting
    held_update: tuple[FamilyUpdated, UpdateWait] | None = None
    update_done: UUID | None = None


@dataclass(frozen=True)
class InterviewState:
    """What an arriving interview is decided on."""

    erased: bool  # the family was erased: nothing of it is taken again
    stored: Stored | None
    roster: Roster | None
    nik_holders: Mapping[NikHash, FamilyId] = field(default_factory=dict)  # for the interview's NIKs


@dataclass(frozen=True)
class RosterState:
    """What a roster revision is decided on: the SLS's interviews (held ones first, in arrival
    order, then the decided ones; erased ones without a body left out) and their NIKs' holders."""

    sls_id: str
    revision: int  # the stored roster's revision, 0 before the first
    erased: frozenset[FamilyId]
    interviews: tuple[Stored, ...]
    nik_holders: Mapping[NikHash, FamilyId] = field(default_factory=dict)
    village: tuple[VillageEntry, ...] = ()  # the other SLS's KK-bearing entries (Roster.village)
    # families of other SLS of the village flagged "not on roster" whose KK this roster lists: an SLS
    # change whose new roster came after the old SLS's revision (locked like the SLS's own)
    strays: tuple[Stored, ...] = ()


@dataclass(frozen=True)
class ResolutionState:
    stored: Stored | None
    roster: Roster | None


@dataclass(frozen=True)
class HoldState:
    """A held interview whose hold timed out (None when decided meanwhile or not yet expired)."""

    stored: Stored | None
    roster: Roster | None
    nik_holders: Mapping[NikHash, FamilyId] = field(default_factory=dict)


class ClaimsRaced(Exception):
    """A NIK taken by another family between loading its holders and claiming it: the event is
    decided again on fresh state (the other family's claim is then committed and seen)."""


def judge(iv: Interview, roster: Roster, holders: dict[NikHash, FamilyId],
          held: Iterable[NikHash] | None = None) -> tuple[Claim, Decision]:
    """The interview against its roster after claiming its members' NIKs; `holders` is updated
    as the store's claim will leave it (this family's NIKs it no longer lists released, the
    free ones taken), so that later families judged in the same outcome see it. `held`: the NIKs
    of `holders` this family holds, when the caller knows them (else `holders` is searched)."""
    niks, me = iv.nik_hashes(), iv.family_id
    held = [h for h, f in holders.items() if f == me] if held is None else held
    for h in [h for h in held if h not in niks and holders.get(h) == me]:
        del holders[h]
    clashes = tuple(sorted(line for h, line in niks.items() if holders.setdefault(h, me) != me))
    decision = duplicate_nik(list(clashes)) if clashes else decide(iv, roster.entries, roster.village)
    return Claim(me, niks, clashes), decision


def on_interview(state: InterviewState, iv: Interview, holders: dict[NikHash, FamilyId] | None = None,
                 held: Iterable[NikHash] | None = None) -> Outcome:
    """An arriving interview: ignored (erased family, older version, redelivery), flagged alone
    (another submission of the stored version), held (no roster yet), or decided. `holders`: the
    NIK holders to judge on and update (`on_interviews`), else the state's own; `held`: the NIKs of
    `holders` the family holds (see `judge`)."""
    stored = state.stored
    if state.erased:
        return Outcome()  # intake refuses its later submissions; an older record changes nothing
    arrival = interview_arrival(None if stored is None else (stored.version, stored.submission_id), iv)
    if arrival is Arrival.SUPERSEDED or arrival is Arrival.REPEATED:
        return Outcome()
    if arrival is Arrival.DUPLICATE and stored is not None:  # a duplicate is of the stored version
        return Outcome(verdicts=(Verdict(iv, duplicate_interview(), "duplicate_interview", stored.decision_seq),))
    if state.roster is None:
        return Outcome(held=iv)  # until the roster arrives (or the hold times out)
    seq = stored.decision_seq if stored is not None else 0
    claim, d = judge(iv, state.roster, dict(state.nik_holders) if holders is None else holders, held)
    verdict = Verdict(iv, d, "interview", seq + 1, matched_key(iv, state.roster.entries), state.roster.revision)
    return Outcome(claims=(claim,), held=iv, verdicts=(verdict,), recount=state.roster.sls_id)


def on_interviews(arrivals: Sequence[tuple[InterviewState, Interview]]) -> list[Outcome]:
    """A batch's arriving interviews (each family once, states loaded together), decided in order
    as one outcome: the NIK holders carried from family to family, as a roster revision does
    (`on_roster`), so that a NIK claimed by an earlier family of the batch is taken for a later
    one. One outcome per interview, in order; each as `on_interview` decides it on the states'
    holders as the earlier families' claims leave them."""
    holders: dict[NikHash, FamilyId] = {}
    for state, _ in arrivals:
        holders.update(state.nik_holders)
    # who held what before the batch: only a family's own judgement changes what it holds (each
    # family is in the batch once), so this stays true until it is judged; no search per family
    held: dict[FamilyId, list[NikHash]] = {}
    for h, f in holders.items():
        held.setdefault(f, []).append(h)
    return [on_interview(state, iv, holders, held.get(iv.family_id, ())) for state, iv in arrivals]


def roster_of(r: RosterSubmitted, revision: int) -> Roster:
    entries = [RosterEntry(f.building_no, f.family_no, f.kk_hash, f.member_count, f.status) for f in r.families]
    return Roster(r.sls_id, revision, r.submission_id, sorted(entries, key=lambda e: e.key))


def on_roster(state: RosterState, received: RosterSubmitted) -> Outcome:
    """A roster revision: stored (an erased family's KK hash is not kept again); the interviews
    held for it decided; the families already decided re-verified, with a new outcome only where
    it changed. A supervisor's decision stands (until a new interview version)."""
    if state.erased:
        received = received.model_copy(update={"families": [
            f.model_copy(update={"kk_hash": None}) if family_id(received.sls_id, f.building_no, f.family_no)
            in state.erased else f for f in received.families]})
    roster = replace(roster_of(received, state.revision + 1), village=state.village)
    holders = dict(state.nik_holders)
    claims: list[Claim] = []
    verdicts: list[Verdict] = []
    rematches: list[Rematch] = []
    for s in state.interviews:
        iv = s.body
        matched = matched_key(iv, roster.entries)
        if s.state == "held":
            claim, d = judge(iv, roster, holders)
            claims.append(claim)
            verdicts.append(Verdict(iv, d, "roster", s.decision_seq + 1, matched, roster.revision, s.traceparent))
            continue
        if not decided_by_supervisor(s.state, s.outcome):
            claim, d = judge(iv, roster, holders)
            claims.append(claim)
            if changed(s.state, s.outcome, s.detail, d):
                verdicts.append(Verdict(iv, d, "roster_revision", s.decision_seq + 1, matched, roster.revision))
                continue
        rematches.append(Rematch(s.family_id, matched, roster.revision))
    moved_here = tuple(VillageEntry(roster.sls_id, e) for e in roster.entries if e.kk_hash)
    for s in state.strays:  # flagged under their old SLS before this roster listed them
        claim, d = judge(s.body, Roster(s.sls_id, 0, roster.submission_id, [], moved_here), holders)
        claims.append(claim)
        if changed(s.state, s.outcome, s.detail, d):
            verdicts.append(Verdict(s.body, d, "sls_change", s.decision_seq + 1))
    return Outcome(claims=tuple(claims), roster=NewRoster(received, roster), verdicts=tuple(verdicts),
                   rematches=tuple(rematches), recount=roster.sls_id)


def on_resolution(state: ResolutionState, r: VerificationResolved) -> Outcome:
    """A supervisor's resolution of a decided family: kept, and applied when it changes the
    outcome. NotResolvable when it can never apply (no interview, held, erased)."""
    stored = state.stored
    if stored is None:
        raise NotResolvable(f"no interview for family {r.family_id} to resolve")
    d = resolve(stored.state, r)
    if stored.interview is None:
        raise NotResolvable(f"family {r.family_id} was erased or its interview expired; nothing to resolve")
    iv = stored.interview
    if d is None:
        return Outcome(resolution=(r, iv.version))  # already so; the resolution is kept
    roster = state.roster
    verdict = Verdict(iv, d, "resolution", stored.decision_seq + 1,
                      matched_key(iv, roster.entries) if roster else None, roster.revision if roster else None)
    return Outcome(verdicts=(verdict,), resolution=(r, iv.version), recount=roster.sls_id if roster else None)


def on_hold_expired(state: HoldState, timeout_s: float) -> Outcome:
    """A hold timed out: flagged "no roster"; should the roster be there after all, decided
    against it instead."""
    stored, roster = state.stored, state.roster
    if stored is None or stored.interview is None:
        return Outcome()
    iv, seq = stored.interview, stored.decision_seq + 1
    if roster is None:
        return Outcome(verdicts=(Verdict(iv, no_roster(timeout_s / 3600), "hold_timeout", seq,
                                         traceparent=stored.traceparent),))
    claim, d = judge(iv, roster, dict(state.nik_holders))
    verdict = Verdict(iv, d, "roster", seq, matched_key(iv, roster.entries), roster.revision, stored.traceparent)
    return Outcome(claims=(claim,), verdicts=(verdict,), recount=roster.sls_id)


# ---------------------------------------------------------------- progress queries

LEVELS = {"province": 2, "regency": 4, "district": 7, "village": 10, "sls": 14}


def group_length(prefix: str, by: str | None) -> int:
    """Length of the SLS id prefix to group by: the level asked for, or the prefix itself."""
    if by is None:
        return len(prefix)
    n = LEVELS[by]
    if n < len(prefix):
        raise ValueError(f"cannot group a prefix of {len(prefix)} digits by {by}: a {by} code has only {n} digits")
    return n
