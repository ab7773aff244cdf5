"""Verification rules: an interview against its SLS roster (VK1), pure logic.

The field procedure: the officer confirms the prelist with the RT head first
(present / moved / dissolved / unknown / added); only families confirmed to live
in the SLS are verified. Everything else is flagged with a reason a supervisor
can act on. No personal data goes into the `detail` text.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from uuid import UUID

from regsosek.contracts import (
    FlagReason,
    InterviewSubmitted,
    InterviewVerified,
    RosterStatus,
    SupervisorDecision,
    VerificationOutcome,
    VerificationResolved,
    household_profile,
)

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
class Roster:
    """The current revision of an SLS roster."""

    sls_id: str
    revision: int
    submission_id: UUID
    entries: list[RosterEntry]


@dataclass(frozen=True)
class Decision:
    verified: bool
    outcome: VerificationOutcome | None = None
    reason: FlagReason | None = None
    detail: str = ""

    @property
    def state(self) -> str:
        """The family's state in verify's store: verified, flagged, or rejected (by a supervisor)."""
        if self.verified:
            return "verified"
        return "rejected" if self.reason is FlagReason.REJECTED_BY_SUPERVISOR else "flagged"

    @property
    def code(self) -> str:
        return (self.outcome or self.reason).value


_STATUS_FLAGS = {
    RosterStatus.MOVED: (FlagReason.ROSTER_SAYS_MOVED, "the RT head confirmed this family moved out of the SLS"),
    RosterStatus.DISSOLVED: (FlagReason.ROSTER_SAYS_DISSOLVED, "the RT head confirmed this family dissolved or its head died"),
    RosterStatus.UNKNOWN: (FlagReason.ROSTER_SAYS_UNKNOWN, "the RT head does not know this family"),
}


def find_entry(iv: Interview, roster: list[RosterEntry]) -> RosterEntry | None:
    """Match by KK number (its keyed hash) first, else by building and family serials."""
    kk = iv.location.kk_hash
    if kk:
        for e in roster:
            if e.kk_hash == kk:
                return e
    for e in roster:
        if (e.building_no, e.family_no) == (iv.location.building_no, iv.location.family_no):
            return e
    return None


def decide(iv: Interview, roster: list[RosterEntry]) -> Decision:
    entry = find_entry(iv, roster)
    if entry is None:
        return Decision(False, reason=FlagReason.NOT_ON_ROSTER,
                        detail=f"building {iv.location.building_no} family {iv.location.family_no} and its KK are not on the SLS roster")
    if entry.status in _STATUS_FLAGS:
        reason, detail = _STATUS_FLAGS[entry.status]
        return Decision(False, reason=reason, detail=detail)
    if entry.member_count != len(iv.members):
        return Decision(False, reason=FlagReason.MEMBER_COUNT_DIFFERS,
                        detail=f"roster lists {entry.member_count} members, interview has {len(iv.members)}")
    if entry.status is RosterStatus.ADDED:
        return Decision(True, outcome=VerificationOutcome.VERIFIED_ADDED)
    return Decision(True, outcome=VerificationOutcome.VERIFIED)


def verified_event(iv: Interview, d: Decision, at: datetime, decision_seq: int) -> InterviewVerified:
    """The interview-verified event of a verified family: its outcome and, for classify, the
    family's `HouseholdProfile` (ages computed here at the interview date; no name, NIK, KK
    number, address, GPS or birth date leaves verify). Pure."""
    if not d.verified:
        raise ValueError("only a verified family has an interview-verified event")
    return InterviewVerified(family_id=iv.family_id, sls_id=iv.location.sls_id, outcome=d.outcome,
                             verified_at=at, profile=household_profile(iv), decision_seq=decision_seq)


def duplicate_nik(conflicting_lines: list[int]) -> Decision:
    lines = ", ".join(str(n) for n in conflicting_lines)
    return Decision(False, reason=FlagReason.DUPLICATE_NIK,
                    detail=f"NIK of member line(s) {lines} already belongs to another family")


def duplicate_interview() -> Decision:
    return Decision(False, reason=FlagReason.DUPLICATE_INTERVIEW,
                    detail="this family was already interviewed with the same version; submit a correction as a higher version")


def no_roster(hours: float) -> Decision:
    return Decision(False, reason=FlagReason.NO_ROSTER, detail=f"no SLS roster arrived within {hours:.0f} h of the interview")


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
    if r.decision is SupervisorDecision.VERIFY:
        if state == "verified":
            return None
        return Decision(True, outcome=VerificationOutcome.VERIFIED_BY_SUPERVISOR,
                        detail=f"verified by supervisor {r.supervisor_id}"[:500])
    if state == "rejected":
        return None
    return Decision(False, reason=FlagReason.REJECTED_BY_SUPERVISOR,
                    detail=f"rejected by supervisor {r.supervisor_id}: {r.reason}"[:500])


# ---------------------------------------------------------------- SLS completeness


@dataclass(frozen=True)
class Decided:
    """One decided interview of an SLS, as completeness sees it."""

    verified: bool
    matched: Key | None  # the roster entry it accounts for; None when not on the roster


@dataclass(frozen=True)
class Progress:
    expected: int  # families on the roster
    interviewed: int  # decided interviews in the SLS (verified + flagged, incl. families not on the roster)
    verified: int
    flagged: int  # flagged or rejected
    absent: int  # roster families confirmed moved/dissolved/unknown and not interviewed
    outstanding: int  # roster families neither interviewed nor confirmed absent

    @property
    def complete(self) -> bool:
        return self.outstanding == 0


def progress(roster: list[RosterEntry], decided: Iterable[Decided]) -> Progress:
    """Every roster family is accounted for when it was interviewed (verified or flagged, by
    whichever interview matched it) or the RT head confirmed it absent and nobody interviewed it."""
    decided = list(decided)
    interviewed_keys = {d.matched for d in decided if d.matched is not None}
    verified = sum(1 for d in decided if d.verified)
    absent = outstanding = 0
    for e in roster:
        if e.key in interviewed_keys:
            continue
        if e.status in ABSENT:
            absent += 1
        else:
            outstanding += 1
    return Progress(expected=len(roster), interviewed=len(decided), verified=verified,
                    flagged=len(decided) - verified, absent=absent, outstanding=outstanding)


# ---------------------------------------------------------------- progress queries

LEVELS = {"province": 2, "regency": 4, "district": 7, "village": 10, "sls": 14}


def group_length(prefix: str, by: str | None) -> int:
    """Length of the SLS id prefix to group by: the level asked for, or the prefix itself."""
    if by is None:
        return len(prefix)
    n = LEVELS[by]
    if n < len(prefix):
        raise ValueError(f"cannot group prefix {prefix!r} by {by}: a {by} code has only {n} digits")
    return n
