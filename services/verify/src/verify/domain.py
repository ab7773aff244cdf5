"""Verification rules: an interview against its SLS roster (VK1), pure logic.

The field procedure: the officer confirms the prelist with the RT head first
(present / moved / dissolved / unknown / added); only families confirmed to live
in the SLS are verified. Everything else is flagged with a reason a supervisor
can act on. No personal data goes into the `detail` text.
"""

from __future__ import annotations

from dataclasses import dataclass

from regsosek.contracts import FamilyInterview, FlagReason, RosterStatus, VerificationOutcome


@dataclass(frozen=True)
class RosterEntry:
    building_no: int
    family_no: int
    kk_number: str | None
    member_count: int
    status: RosterStatus


@dataclass(frozen=True)
class Decision:
    verified: bool
    outcome: VerificationOutcome | None = None
    reason: FlagReason | None = None
    detail: str = ""


_STATUS_FLAGS = {
    RosterStatus.MOVED: (FlagReason.ROSTER_SAYS_MOVED, "the RT head confirmed this family moved out of the SLS"),
    RosterStatus.DISSOLVED: (FlagReason.ROSTER_SAYS_DISSOLVED, "the RT head confirmed this family dissolved or its head died"),
    RosterStatus.UNKNOWN: (FlagReason.ROSTER_SAYS_UNKNOWN, "the RT head does not know this family"),
}


def find_entry(iv: FamilyInterview, roster: list[RosterEntry]) -> RosterEntry | None:
    """Match by KK number first, else by building and family serials."""
    kk = iv.location.kk_number
    if kk:
        for e in roster:
            if e.kk_number == kk:
                return e
    for e in roster:
        if (e.building_no, e.family_no) == (iv.location.building_no, iv.location.family_no):
            return e
    return None


def decide(iv: FamilyInterview, roster: list[RosterEntry]) -> Decision:
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


def duplicate_nik(conflicting_lines: list[int]) -> Decision:
    lines = ", ".join(str(n) for n in conflicting_lines)
    return Decision(False, reason=FlagReason.DUPLICATE_NIK,
                    detail=f"NIK of member line(s) {lines} already belongs to another family")


def duplicate_interview() -> Decision:
    return Decision(False, reason=FlagReason.DUPLICATE_INTERVIEW,
                    detail="this family was already interviewed with the same version; submit a correction as a higher version")


def no_roster(hours: float) -> Decision:
    return Decision(False, reason=FlagReason.NO_ROSTER, detail=f"no SLS roster arrived within {hours:.0f} h of the interview")
