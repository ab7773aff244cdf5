"""A family added at a village consultation (FKP; docs/CONSULTATION.md), pure logic: once an
officer's ground check found it, its interview is decided as a family the SLS head added to the
roster (`verified_added`), with every other check of an interview (versions, NIKs nation-wide,
the member count against what the form lists). The census roster does not list it, and is not
changed: the family counts among the SLS's interviewed families, not its expected ones."""

from __future__ import annotations

from dataclasses import replace

from regsosek.contracts import FkpGroundChecked, RosterStatus
from verify.domain import Interview, InterviewState, Outcome, Roster, RosterEntry, on_interview

CAUSE = "fkp_ground_check"


def added_entry(iv: Interview) -> RosterEntry:
    """The roster line the forum's addition stands for: the place the forum gave it, its KK, as many
    members as the form lists from before the interview."""
    loc = iv.location
    prelisted = sum(1 for m in iv.members if m.presence.prelisted)
    return RosterEntry(loc.building_no, loc.family_no, loc.kk_hash, prelisted, RosterStatus.ADDED)


def on_ground_check(state: InterviewState, check: FkpGroundChecked) -> Outcome:
    """A ground check: nothing for a family not found; a found family's interview decided against its
    SLS's roster with the forum's addition on it (the roster as stored when there is none)."""
    iv = check.interview
    if iv is None:
        return Outcome()
    stored = state.roster
    base = stored or Roster(iv.location.sls_id, 0, iv.submission_id, [])
    outcome = on_interview(replace(state, roster=replace(base, entries=[added_entry(iv), *base.entries])), iv)
    verdicts = tuple(replace(v, cause=CAUSE if v.cause == "interview" else v.cause, matched=None,
                             roster_revision=None if stored is None else stored.revision)
                     for v in outcome.verdicts)
    return replace(outcome, verdicts=verdicts, recount=None if stored is None else stored.sls_id)
