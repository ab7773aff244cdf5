"""An in-memory ConsoleStore for fast tests: the same public methods and signatures as the real
store (test_console_store_shape keeps them equal), the same answers on the same data."""

from __future__ import annotations

from dataclasses import replace
from datetime import date, datetime
from typing import Any

from console.consultation import CheckRow, DecisionRow, ForumRow, ForumView
from console.domain import (
    FAMILY_FIGURES,
    FORM_NOT_REACHED,
    PROGRESS_FIELDS,
    CountsChange,
    FamilyState,
    Progress,
    RosterCount,
    Step,
    VerifyState,
)
from console.store import Scope
from regsosek import audit


def _in(scope: Scope, sls_id: str) -> bool:
    return scope is None or any(sls_id.startswith(a) for a in scope)


class InMemoryConsoleStore:
    def __init__(self) -> None:
        self.families: dict[str, FamilyState] = {}
        self.steps: dict[str, tuple[str, Step]] = {}  # event id -> (family id, step)
        self.rosters: dict[str, RosterCount] = {}
        self.counters: dict[str, dict[str, int]] = {}  # SLS -> FAMILY_FIGURES
        self.days: dict[tuple[str, date], int] = {}  # (SLS, fieldwork day) -> interviews
        self.seen: dict[tuple[str, str], dict[str, Any]] = {}
        self.audit: list[audit.Entry] = []
        self.forums: dict[str, ForumRow] = {}
        self.forum_decisions: dict[str, DecisionRow] = {}
        self.ground_checks: dict[tuple[str, str], CheckRow] = {}

    async def family(self, family_id: str) -> FamilyState | None:
        return self.families.get(family_id)

    async def save_family(self, s: FamilyState) -> None:
        self.families[s.family_id] = s

    async def add_step(self, event_id: str, family_id: str, step: Step) -> None:
        self.steps.setdefault(event_id, (family_id, step))

    async def roster(self, sls_id: str) -> RosterCount | None:
        return self.rosters.get(sls_id)

    async def save_roster(self, r: RosterCount) -> None:
        self.rosters[r.sls_id] = r

    async def change_counts(self, c: CountsChange) -> None:
        row = self.counters.setdefault(c.sls_id, dict.fromkeys(FAMILY_FIGURES, 0))
        for f in row:
            row[f] += c.figures.get(f, 0)
        for day, n in c.days.items():
            self.days[(c.sls_id, day)] = self.days.get((c.sls_id, day), 0) + n

    async def note_versions(self, at: datetime, versions: dict[str, str]) -> None:
        for kind, version in versions.items():
            row = self.seen.setdefault((kind, version), {"kind": kind, "version": version, "first_seen": at,
                                                         "last_seen": at, "decisions": 0})
            row.update(decisions=row["decisions"] + 1, first_seen=min(row["first_seen"], at),
                       last_seen=max(row["last_seen"], at))

    async def forum(self, forum_id: str) -> ForumRow | None:
        return self.forums.get(forum_id)

    async def save_forum(self, f: ForumRow) -> None:
        self.forums[f.forum_id] = f

    async def save_forum_decision(self, d: DecisionRow) -> None:
        self.forum_decisions.setdefault(d.decision_id, d)

    async def save_ground_check(self, c: CheckRow) -> None:
        self.ground_checks.setdefault((c.forum_id, c.family_id), c)

    async def forums_of(self, area: str, scope: Scope) -> list[ForumView]:
        forums = sorted((f for f in self.forums.values() if f.village_id.startswith(area[:10])
                         and (scope is None or any(_in(scope, s) for s in f.sls_ids))),
                        key=lambda f: (f.held_on, f.forum_id))
        out = []
        for f in forums:
            rows = sorted((d for d in self.forum_decisions.values() if d.forum_id == f.forum_id and _in(scope, d.sls_id)),
                          key=lambda d: (d.decided_at, d.decision_id))
            checks = [self.ground_checks.get((d.forum_id, d.family_id)) for d in rows]
            out.append(ForumView(f, [replace(d, ground_check=None if c is None else c.outcome)
                                     for d, c in zip(rows, checks, strict=True)]))
        return out

    async def erase_forum_decisions(self, family_id: str) -> int:
        gone = [k for k, d in self.forum_decisions.items() if d.family_id == family_id]
        checks = [k for k in self.ground_checks if k[1] == family_id]
        for k in gone:
            del self.forum_decisions[k]
        for c in checks:
            del self.ground_checks[c]
        return len(gone) + len(checks)

    async def erase_family(self, family_id: str) -> dict[str, int]:
        families = int(self.families.pop(family_id, None) is not None)
        kept = {k: v for k, v in self.steps.items() if v[0] != family_id}
        steps, self.steps = len(self.steps) - len(kept), kept
        return {"families": families, "journey_steps": steps}

    async def record_audit(self, entry: audit.Entry) -> None:
        self.audit.append(entry)

    async def progress(self, area: str, scope: Scope, code_length: int) -> list[Progress]:
        rows: dict[str, dict[str, int]] = {}
        sls: dict[str, list[int]] = {}  # area -> [SLS with counters, SLS with a roster]

        def row(sls_id: str, source: int) -> dict[str, int]:
            sls.setdefault(sls_id[:code_length], [0, 0])[source] += 1
            return rows.setdefault(sls_id[:code_length], dict.fromkeys(PROGRESS_FIELDS, 0))

        for sls_id, c in self.counters.items():
            if sls_id.startswith(area) and _in(scope, sls_id):
                r = row(sls_id, 0)
                for f in ("interviewed", "verified", "flagged", "refused", *FORM_NOT_REACHED):
                    r[f] += c[f]
                r["not_reached"] += sum(c[f] for f in FORM_NOT_REACHED)
        for c in self.rosters.values():
            if c.sls_id.startswith(area) and _in(scope, c.sls_id):
                r = row(c.sls_id, 1)
                r["expected"] += c.expected
                r["absent"] += c.confirmed_absent
                r["not_reached"] += c.confirmed_absent
                for o, n in (c.outcomes or {}).items():
                    if o in r and o != "refused":  # rosters from before migration 003 listed a refused count (0)
                        r[o] += n
        kept = {a: r for a, r in rows.items()
                if sls[a][1] or r["interviewed"] + r["refused"] + sum(r[f] for f in FORM_NOT_REACHED)}
        return [Progress(a, **r, sls=max(sls[a])) for a, r in sorted(kept.items())]

    async def daily_interviews(self, area: str, scope: Scope) -> list[tuple[date, int]]:
        days: dict[date, int] = {}
        for (sls_id, day), n in self.days.items():
            if sls_id.startswith(area) and _in(scope, sls_id):
                days[day] = days.get(day, 0) + n
        return sorted((d, n) for d, n in days.items() if n)

    async def worklist(self, scope: Scope, limit: int = 200) -> list[FamilyState]:
        flagged = [f for f in self.families.values() if f.verify_state is VerifyState.FLAGGED
                   and f.verify_outcome != "rejected_by_supervisor" and _in(scope, f.sls_id)]
        return sorted(flagged, key=lambda f: (f.verify_at, f.family_id))[:limit]

    async def recently_resolved(self, scope: Scope, limit: int = 20) -> list[FamilyState]:
        done = [f for f in self.families.values() if f.resolution_at and _in(scope, f.sls_id)]
        return sorted(done, key=lambda f: f.resolution_at, reverse=True)[:limit]

    async def family_by_id(self, any_id: str, scope: Scope) -> tuple[FamilyState | None, list[Step]]:
        family_id = next((fid for fid, s in self.steps.values() if s.submission_id == any_id), any_id)
        f = self.families.get(family_id)
        if f is None or not _in(scope, f.sls_id):
            return None, []
        steps = sorted(((e, s) for e, (fid, s) in self.steps.items() if fid == family_id), key=lambda x: (x[1].at, x[0]))
        return f, [s for _, s in steps]

    async def families_of(self, area: str, scope: Scope, limit: int = 500) -> list[FamilyState]:
        return sorted((f for f in self.families.values() if f.sls_id.startswith(area) and _in(scope, f.sls_id)),
                      key=lambda f: f.family_id)[:limit]

    async def distributions(self, area: str, scope: Scope) -> dict[str, dict[str, list[int]]]:
        out: dict[str, dict[str, list[int]]] = {}
        for f in self.families.values():
            if f.welfare_group and f.decile and f.sls_id.startswith(area) and _in(scope, f.sls_id):
                d = out.setdefault(f.sls_id[:4], {"groups": [0] * 4, "deciles": [0] * 10})
                d["groups"][f.welfare_group - 1] += 1
                d["deciles"][f.decile - 1] += 1
        return dict(sorted(out.items()))

    async def versions(self) -> list[dict[str, Any]]:
        return sorted(self.seen.values(), key=lambda r: (r["kind"], -r["last_seen"].timestamp()))


