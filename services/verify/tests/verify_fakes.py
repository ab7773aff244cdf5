"""An in-memory VerifyStore for fast tests of verify's handlers: the same public methods and
signatures as verify.store.VerifyStore (test_verify_store_parity keeps them in step), the same
rules (one roster revision after another, held interviews first in arrival order, NIK claims
nation-wide, erasure), no database.

`now` stands for the database clock (seconds; a test moves it on to expire holds), and
`taken_meanwhile` lets a test play a concurrent family that claims a NIK between the load
and the save, as another instance's transaction can."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime

import asyncpg

from regsosek import audit
from regsosek.contracts import FamilyErased, RosterSubmitted, VerificationResolved
from regsosek.contracts.details import read_detail
from regsosek.contracts.updates import FamilyUpdated, UpdateWait
from verify.domain import (
    BODY_EXPIRES,
    Claim,
    ClaimsRaced,
    Decided,
    FamilyId,
    HoldState,
    Interview,
    InterviewState,
    Key,
    NewRoster,
    NikHash,
    Outcome,
    Progress,
    ResolutionState,
    Roster,
    RosterState,
    Stored,
    Verdict,
    VillageEntry,
)
from verify.updates import UpdateState, claimed_niks


@dataclass
class Row:
    """One family's row of the interviews table."""

    family_id: str
    sls_id: str
    version: int
    submission_id: str
    interview: Interview | None
    state: str = "held"
    outcome: str | None = None
    detail: str | None = None
    decision_seq: int = 0
    held_since: float | None = None
    arrival: int = 0  # order of holding / deciding, as the table's timestamps order them
    traceparent: str | None = None
    matched: Key | None = None
    roster_revision: int | None = None
    decided_at: float | None = None  # the store's clock (seconds) when last decided
    kk_hash: str | None = None  # the interview's KK hash, kept when the body expires (not when erased)

    def stored(self, *, with_body: bool = True) -> Stored:
        return Stored(self.family_id, self.sls_id, self.version, self.submission_id, self.state, self.outcome,
                      self.detail, self.decision_seq, self.interview if with_body else None, self.traceparent)


@dataclass
class History:
    family_id: str
    state: str
    outcome: str
    detail: str
    cause: str
    roster_revision: int | None
    decision_seq: int
    submission_id: str = ""


@dataclass
class InMemoryVerifyStore:
    now: float = 0.0
    interviews: dict[FamilyId, Row] = field(default_factory=dict)
    rosters: dict[str, Roster] = field(default_factory=dict)
    roster_history: list[RosterSubmitted] = field(default_factory=list)
    claims: dict[NikHash, FamilyId] = field(default_factory=dict)
    history: list[History] = field(default_factory=list)
    resolutions: dict[str, tuple[VerificationResolved, int]] = field(default_factory=dict)
    progress: dict[str, tuple[int, Progress]] = field(default_factory=dict)
    completions: set[tuple[str, int]] = field(default_factory=set)
    erased: dict[FamilyId, str] = field(default_factory=dict)
    audit_log: list[audit.Entry] = field(default_factory=list)
    taken_meanwhile: dict[NikHash, FamilyId] = field(default_factory=dict)
    preloaded: dict[tuple[FamilyId, str], InterviewState] = field(default_factory=dict)
    # updates kept until their family is verified: id -> (update, why, held since, order)
    updates_held: dict[str, tuple[FamilyUpdated, UpdateWait, float, int]] = field(default_factory=dict)
    _order: itertools.count = field(default_factory=itertools.count)

    # ---------------------------------------------------------------- loading one state value

    async def preload_interview_states(self, interviews: Sequence[Interview]) -> None:
        for iv in interviews:
            self.preloaded[(iv.family_id, iv.submission_id)] = self._interview_state(iv)

    async def interview_state(self, iv: Interview) -> InterviewState:
        preloaded = self.preloaded.pop((iv.family_id, iv.submission_id), None)
        return preloaded if preloaded is not None else self._interview_state(iv)

    def _interview_state(self, iv: Interview) -> InterviewState:
        if iv.family_id in self.erased:
            return InterviewState(erased=True, stored=None, roster=None)
        row = self.interviews.get(iv.family_id)
        roster = self._current(iv.location.sls_id)
        holders = self._holders(iv.nik_hashes()) if roster is not None else {}
        return InterviewState(False, None if row is None else row.stored(with_body=False), roster, holders)

    async def roster_state(self, r: RosterSubmitted) -> RosterState:
        current = self.rosters.get(r.sls_id)
        rows = sorted((row for row in self.interviews.values() if row.sls_id == r.sls_id and row.interview),
                      key=lambda row: (row.state != "held", row.arrival, row.family_id))
        interviews = tuple(row.stored() for row in rows)
        holders = self._holders({h: 0 for s in interviews for h in s.interview.nik_hashes()})
        kks = {f.kk_hash for f in r.families if f.kk_hash}
        strays = tuple(row.stored() for row in sorted(self.interviews.values(), key=lambda row: row.family_id)
                       if row.kk_hash in kks and row.sls_id[:10] == r.sls_id[:10] and row.sls_id != r.sls_id
                       and row.state == "flagged" and row.outcome == "not_on_roster" and row.interview)
        holders = self._holders({h: 0 for s in interviews + strays for h in s.interview.nik_hashes()})
        return RosterState(r.sls_id, current.revision if current else 0,
                           frozenset(f for f, sls in self.erased.items() if sls == r.sls_id), interviews, holders,
                           self._village(r.sls_id), strays)

    async def resolution_state(self, r: VerificationResolved) -> ResolutionState:
        row = self.interviews.get(r.family_id)
        return ResolutionState(None if row is None else row.stored(), self._current(r.family_id[:14]))

    async def hold_state(self, family_id: FamilyId, sls_id: str, timeout_s: float) -> HoldState:
        row = self.interviews.get(family_id)
        if row is None or row.state != "held" or row.interview is None or row.held_since >= self.now - timeout_s:
            return HoldState(None, None)
        roster = self._current(sls_id)
        return HoldState(row.stored(), roster, self._holders(row.interview.nik_hashes()) if roster else {})

    async def update_state(self, e: FamilyUpdated) -> UpdateState:
        row = self.interviews.get(e.family_id)
        applied = any(h.family_id == e.family_id and h.submission_id == str(e.submission_id) for h in self.history)
        return UpdateState(e.family_id in self.erased, None if row is None else row.stored(), applied,
                           self._current(e.sls_id), self._holders(dict.fromkeys(claimed_niks(e), 0)),
                           str(e.submission_id) in self.updates_held)

    async def roster(self, sls_id: str) -> Roster | None:
        return self._current(sls_id)

    async def rosters_of(self, sls_ids: Sequence[str]) -> dict[str, Roster | None]:
        return {s: self._current(s) for s in sls_ids}

    def _current(self, sls_id: str) -> Roster | None:
        roster = self.rosters.get(sls_id)
        return None if roster is None else replace(roster, village=self._village(sls_id))

    def _village(self, sls_id: str) -> tuple[VillageEntry, ...]:
        return tuple(VillageEntry(other, e) for other, r in sorted(self.rosters.items())
                     if other != sls_id and other[:10] == sls_id[:10] for e in r.entries if e.kk_hash)

    def _holders(self, niks: dict[NikHash, int]) -> dict[NikHash, FamilyId]:
        return {h: self.claims[h] for h in niks if h in self.claims}

    # ---------------------------------------------------------------- saving one outcome

    async def save(self, outcome: Outcome, *, traceparent: str | None = None) -> None:
        for claim in outcome.claims:
            self._claim(claim)
        if outcome.held is not None:
            iv = outcome.held
            before = self.interviews.get(iv.family_id)
            self.interviews[iv.family_id] = Row(
                iv.family_id, iv.location.sls_id, iv.version, str(iv.submission_id), iv, held_since=self.now,
                arrival=next(self._order), traceparent=traceparent, decision_seq=before.decision_seq if before else 0,
                kk_hash=iv.location.kk_hash)
        if outcome.roster is not None:
            self._save_roster(outcome.roster)
        for v in outcome.verdicts:
            self._verdict(v)
        for m in outcome.rematches:
            row = self.interviews[m.family_id]
            row.matched, row.roster_revision = m.matched, m.roster_revision
        if outcome.resolution is not None:
            r, version = outcome.resolution
            self.resolutions.setdefault(str(r.submission_id), (r, version))
        if outcome.held_update is not None:
            e, why = outcome.held_update
            self.updates_held.setdefault(str(e.submission_id), (e, why, self.now, next(self._order)))
        if outcome.update_done is not None:
            self.updates_held.pop(str(outcome.update_done), None)

    async def save_together(self, outcomes: Sequence[tuple[Outcome, str | None]]) -> set[FamilyId]:
        raced: set[FamilyId] = set()
        for outcome, traceparent in outcomes:
            try:
                await self.save(outcome, traceparent=traceparent)
            except ClaimsRaced as e:  # only the claims are written (as the real store's one statement)
                raced.add(str(e))
        return raced

    def _claim(self, claim: Claim) -> None:
        for h, family in list(self.taken_meanwhile.items()):
            if h in claim.niks:  # another instance's family claimed it first
                self.claims.setdefault(h, family)
                del self.taken_meanwhile[h]
        mine = {h for h, f in self.claims.items() if f == claim.family_id}
        for h in mine - set(claim.niks):
            del self.claims[h]
        for h in claim.niks:
            self.claims.setdefault(h, claim.family_id)
        clashes = tuple(sorted(line for h, line in claim.niks.items() if self.claims[h] != claim.family_id))
        if clashes != claim.clashes:
            raise ClaimsRaced(claim.family_id)

    def _save_roster(self, new: NewRoster) -> None:
        current = self.rosters.get(new.received.sls_id)
        if new.roster.revision != (current.revision if current else 0) + 1:
            raise RuntimeError(f"roster revision {new.roster.revision} decided on, not the next one")
        self.rosters[new.roster.sls_id] = new.roster
        self.roster_history.append(new.received)

    def _verdict(self, v: Verdict) -> None:
        d = v.decision
        # every detail verify writes is one the console can word (regsosek.contracts.details)
        assert not d.detail or read_detail(d.detail) is not None, f"no detail template reads {d.detail!r}"
        self.history.append(History(v.interview.family_id, d.state, d.code, d.detail, v.cause, v.roster_revision,
                                    v.decision_seq, str(v.interview.submission_id)))
        if not v.changes_family:
            return
        row = self.interviews[v.interview.family_id]
        row.state, row.outcome, row.detail, row.decision_seq = d.state, d.code, d.detail, v.decision_seq
        row.held_since, row.arrival, row.decided_at = None, next(self._order), self.now
        row.matched, row.roster_revision = v.matched, v.roster_revision

    # ---------------------------------------------------------------- holds and progress

    async def expired_holds(self, timeout_s: float, limit: int = 500) -> list[tuple[FamilyId, str]]:
        held = sorted((r for r in self.interviews.values() if r.state == "held" and r.held_since < self.now - timeout_s),
                      key=lambda r: r.held_since)
        return [(r.family_id, r.sls_id) for r in held[:limit]]

    async def held_updates(self, families: Sequence[FamilyId]) -> list[FamilyUpdated]:
        kept = sorted(self.updates_held.values(), key=lambda k: (k[2], k[3]))
        return [e for e, _why, _since, _n in kept if e.family_id in families]

    async def expired_update_holds(self, timeout_s: float, limit: int = 500) -> list[FamilyUpdated]:
        kept = sorted(self.updates_held.values(), key=lambda k: (k[2], k[3]))
        return [e for e, _why, since, _n in kept if since < self.now - timeout_s][:limit]

    async def decided_in(self, sls_ids: Sequence[str]) -> dict[str, list[Decided]]:
        return {s: [Decided(r.state == "verified", r.matched, r.state == "non_response")
                    for r in self.interviews.values() if r.sls_id == s and r.state != "held"] for s in sls_ids}

    async def relocated_in(self, sls_ids: Sequence[str]) -> dict[str, list[Key]]:
        out: dict[str, list[Key]] = {}
        for sls_id in sls_ids:
            roster = self.rosters.get(sls_id)
            kks = {r.kk_hash for r in self.interviews.values() if r.state != "held" and r.kk_hash
                   and r.sls_id != sls_id and r.sls_id[:10] == sls_id[:10]}
            out[sls_id] = [e.key for e in (roster.entries if roster else []) if e.kk_hash and e.kk_hash in kks]
        return out

    async def save_progress(self, counts: Sequence[tuple[Roster, Progress]]) -> set[str]:
        first = set()
        for roster, p in counts:
            self.progress[roster.sls_id] = (roster.revision, p)
            if p.complete and (roster.sls_id, roster.revision) not in self.completions:
                self.completions.add((roster.sls_id, roster.revision))
                first.add(roster.sls_id)
        return first

    async def progress_by_prefix(self, prefix: str, length: int) -> list[dict[str, str | int]]:
        groups: dict[str, dict[str, str | int]] = {}
        names = ("sls", "sls_complete", "expected", "interviewed", "verified", "flagged", "absent", "outstanding",
                 "non_response", "held")

        def group(sls_id: str) -> dict[str, str | int]:
            return groups.setdefault(sls_id[:length], {"grp": sls_id[:length], **dict.fromkeys(names, 0)})

        for sls_id, (_, p) in self.progress.items():
            if sls_id.startswith(prefix):
                g = group(sls_id)
                g["sls"] += 1
                g["sls_complete"] += p.complete
                for k in ("expected", "interviewed", "verified", "flagged", "absent", "outstanding", "non_response"):
                    g[k] += getattr(p, k)
        for r in self.interviews.values():
            if r.state == "held" and r.sls_id.startswith(prefix):
                group(r.sls_id)["held"] += 1
        return [groups[k] for k in sorted(groups)]

    # ---------------------------------------------------------------- erasure and the audit log

    async def expire_bodies(self, before: datetime, limit: int) -> int:
        due = sorted((r for r in self.interviews.values() if r.interview is not None and r.state in BODY_EXPIRES
                      and r.decided_at is not None and r.decided_at < before.timestamp()), key=lambda r: r.decided_at)
        for r in due[:limit]:
            r.interview, r.traceparent = None, None
        return len(due[:limit])

    async def erase_family(self, e: FamilyErased) -> dict[str, int]:
        key = (int(e.family_id[15:19]), int(e.family_id[20:23]))
        counts = dict.fromkeys(("nik_claims", "held", "bodies", "roster_entries", "roster_revisions", "resolutions",
                                "held_updates"), 0)
        for h in [h for h, f in self.claims.items() if f == e.family_id]:
            del self.claims[h]
            counts["nik_claims"] += 1
        row = self.interviews.get(e.family_id)
        if row is not None and row.state == "held":
            del self.interviews[e.family_id]
            counts["held"] = 1
        elif row is not None and row.interview is not None:
            row.interview, row.traceparent, row.kk_hash = None, None, None
            counts["bodies"] = 1
        roster = self.rosters.get(e.sls_id)
        if roster is not None and any(x.key == key and x.kk_hash for x in roster.entries):
            self.rosters[e.sls_id] = Roster(roster.sls_id, roster.revision, roster.submission_id, [
                type(x)(x.building_no, x.family_no, None, x.member_count, x.status) if x.key == key else x
                for x in roster.entries])
            counts["roster_entries"] = 1
        for i, r in enumerate(self.roster_history):
            if r.sls_id == e.sls_id and any((f.building_no, f.family_no) == key and f.kk_hash for f in r.families):
                self.roster_history[i] = r.model_copy(update={"families": [
                    f.model_copy(update={"kk_hash": None}) if (f.building_no, f.family_no) == key else f
                    for f in r.families]})
                counts["roster_revisions"] += 1
        for sid, (res, version) in list(self.resolutions.items()):
            if res.family_id == e.family_id and res.reason:
                self.resolutions[sid] = (res.model_copy(update={"reason": ""}), version)
                counts["resolutions"] += 1
        for sid in [sid for sid, kept in self.updates_held.items() if kept[0].family_id == e.family_id]:
            del self.updates_held[sid]
            counts["held_updates"] += 1
        self.erased.setdefault(e.family_id, e.sls_id)
        return counts

    async def record_audit(self, entry: audit.Entry) -> None:
        self.audit_log.append(entry)

    # ---------------------------------------------------------------- rows stored before pseudonymised events

    async def legacy_rows(self, limit: int) -> dict[str, list[asyncpg.Record]]:
        return {"interviews": [], "roster_history": [], "roster_families": [], "rosters": []}  # none: v2 only here

    async def replace_legacy(self, interviews: list[tuple[str, dict]],
                             revisions: list[tuple[str, int, dict]], entries: list[tuple[str, int, int, str]],
                             rosters: list[str]) -> None:
        if interviews or revisions or entries or rosters:
            raise AssertionError("the in-memory store holds no legacy rows to replace")

    async def vacuum_legacy_tables(self) -> None:
        return None
