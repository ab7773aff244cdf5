"""All of the console's SQL: the read model's tables (migrations/001_console.sql).

Every read takes the reader's area scope (`domain.area_scope`: None for every area) and filters
by it in SQL, so a page can never show a family outside the signed-in person's areas.
"""

from __future__ import annotations

import dataclasses
import json
from datetime import date, datetime
from typing import Any

import asyncpg

from console.consultation import CheckRow, DecisionRow, ForumRow, ForumView
from console.domain import (
    FAMILY_FIGURES,
    PROGRESS_FIELDS,
    ROSTER_OUTCOMES,
    CountsChange,
    FamilyState,
    Progress,
    RosterCount,
    Step,
    VerifyState,
)
from regsosek import audit

Scope = tuple[str, ...] | None

_FIELDS = [f.name for f in dataclasses.fields(FamilyState)]
_COLUMNS = ", ".join(_FIELDS)
# the reader's areas as LIKE patterns; NULL reads every area
_IN_SCOPE = "($1::text[] is null or sls_id like any($1::text[]))"


def _patterns(scope: Scope) -> list[str] | None:
    return None if scope is None else [a + "%" for a in scope]


def _family(row: asyncpg.Record) -> FamilyState:
    d: dict[str, Any] = dict(row)
    d["submission_id"] = str(d["submission_id"]) if d["submission_id"] else None
    d["verify_state"] = VerifyState(d["verify_state"]) if d["verify_state"] else None
    d["eligible_programmes"] = tuple(d["eligible_programmes"] or ())
    return FamilyState(**d)


_FORUM = ("select forum_id, village_id, sls_ids, held_on, participants, status, decisions, added_families, at "
          "from fkp_forums")


def _forum(row: asyncpg.Record) -> ForumRow:
    participants = row["participants"]
    participants = json.loads(participants) if isinstance(participants, str) else participants
    return ForumRow(row["forum_id"], row["village_id"], tuple(row["sls_ids"]), row["held_on"],
                    tuple((role, int(n)) for role, n in participants), row["status"], row["decisions"],
                    row["added_families"], row["at"])


def _values(s: FamilyState) -> list[Any]:
    out = []
    for name in _FIELDS:
        v = getattr(s, name)
        out.append(list(v) if isinstance(v, tuple) else v.value if isinstance(v, VerifyState) else v)
    return out


class ConsoleStore:
    """The read model over one connection (a consumed batch's transaction, or a page's read)."""

    def __init__(self, conn: asyncpg.Connection) -> None:
        self.conn = conn

    # ------------------------------------------------------------ projection (handlers)

    async def family(self, family_id: str) -> FamilyState | None:
        row = await self.conn.fetchrow(f"select {_COLUMNS} from families where family_id = $1", family_id)
        return _family(row) if row else None

    async def save_family(self, s: FamilyState) -> None:
        params = ", ".join(f"${i}" for i in range(1, len(_FIELDS) + 1))
        updates = ", ".join(f"{n} = excluded.{n}" for n in _FIELDS if n != "family_id")
        await self.conn.execute(f"insert into families ({_COLUMNS}) values ({params}) "
                                f"on conflict (family_id) do update set {updates}", *_values(s))

    async def add_step(self, event_id: str, family_id: str, step: Step) -> None:
        await self.conn.execute(
            "insert into journey_steps (event_id, family_id, submission_id, step, at, detail) "
            "values ($1, $2, $3, $4, $5, $6) on conflict (event_id) do nothing",
            event_id, family_id, step.submission_id, step.step, step.at, json.dumps(step.detail))

    async def roster(self, sls_id: str) -> RosterCount | None:
        row = await self.conn.fetchrow("select sls_id, expected, absent, as_of, revision, outcomes, non_response "
                                       "from sls_rosters where sls_id = $1", sls_id)
        if row is None:
            return None
        d = dict(row)
        d["outcomes"] = json.loads(d["outcomes"]) if isinstance(d["outcomes"], str) else d["outcomes"]
        return RosterCount(**d)

    async def save_roster(self, r: RosterCount) -> None:
        await self.conn.execute(
            "insert into sls_rosters (sls_id, expected, absent, as_of, revision, outcomes, non_response) "
            "values ($1, $2, $3, $4, $5, $6::jsonb, $7) on conflict (sls_id) do update set expected = excluded.expected, "
            "absent = excluded.absent, as_of = excluded.as_of, revision = excluded.revision, "
            "outcomes = excluded.outcomes, non_response = excluded.non_response", r.sls_id, r.expected, r.absent,
            r.as_of, r.revision, r.outcomes, r.non_response)  # the pool's jsonb codec encodes the dict

    async def change_counts(self, c: CountsChange) -> None:
        """Adds a family's change to its SLS's counters and interviews per day (the projection's transaction)."""
        columns = ", ".join(FAMILY_FIGURES)
        params = ", ".join(f"${i}" for i in range(2, len(FAMILY_FIGURES) + 2))
        adds = ", ".join(f"{f} = sls_progress.{f} + excluded.{f}" for f in FAMILY_FIGURES)
        await self.conn.execute(
            f"insert into sls_progress (sls_id, {columns}) values ($1, {params}) on conflict (sls_id) do update set {adds}",
            c.sls_id, *(c.figures.get(f, 0) for f in FAMILY_FIGURES))
        for day, n in sorted(c.days.items()):
            await self.conn.execute(
                "insert into sls_days (sls_id, day, interviews) values ($1, $2, $3) on conflict (sls_id, day) "
                "do update set interviews = sls_days.interviews + excluded.interviews", c.sls_id, day, n)

    async def note_versions(self, at: datetime, versions: dict[str, str]) -> None:
        for kind, version in versions.items():
            await self.conn.execute(
                "insert into versions_seen (kind, version, first_seen, last_seen, decisions) values ($1, $2, $3, $3, 1) "
                "on conflict (kind, version) do update set decisions = versions_seen.decisions + 1, "
                "first_seen = least(versions_seen.first_seen, excluded.first_seen), "
                "last_seen = greatest(versions_seen.last_seen, excluded.last_seen)", kind, version, at)

    async def erase_family(self, family_id: str) -> dict[str, int]:
        """Deletes the family and its journey; how many rows of each went."""
        steps = await self.conn.fetchval("with d as (delete from journey_steps where family_id = $1 returning 1) "
                                         "select count(*) from d", family_id)
        families = await self.conn.fetchval("with d as (delete from families where family_id = $1 returning 1) "
                                            "select count(*) from d", family_id)
        return {"families": families, "journey_steps": steps}

    # ------------------------------------------------------------ village consultation (console.consultation)

    async def forum(self, forum_id: str) -> ForumRow | None:
        row = await self.conn.fetchrow(f"{_FORUM} where forum_id = $1", forum_id)
        return None if row is None else _forum(row)

    async def save_forum(self, f: ForumRow) -> None:
        await self.conn.execute(
            "insert into fkp_forums (forum_id, village_id, sls_ids, held_on, participants, status, decisions, "
            "added_families, at) values ($1, $2, $3, $4, $5::jsonb, $6, $7, $8, $9) on conflict (forum_id) do update "
            "set sls_ids = excluded.sls_ids, held_on = excluded.held_on, participants = excluded.participants, "
            "status = excluded.status, decisions = excluded.decisions, added_families = excluded.added_families, "
            "at = excluded.at", f.forum_id, f.village_id, list(f.sls_ids), f.held_on,
            [list(p) for p in f.participants], f.status, f.decisions, f.added_families, f.at)

    async def save_forum_decision(self, d: DecisionRow) -> None:
        await self.conn.execute(
            "insert into fkp_forum_decisions (decision_id, forum_id, family_id, sls_id, kind, welfare_group, reason, "
            "decided_at) values ($1, $2, $3, $4, $5, $6, $7, $8) on conflict do nothing", d.decision_id, d.forum_id,
            d.family_id, d.sls_id, d.kind, d.welfare_group, d.reason, d.decided_at)

    async def save_ground_check(self, c: CheckRow) -> None:
        await self.conn.execute(
            "insert into fkp_ground_checks (forum_id, family_id, outcome, checked_on) values ($1, $2, $3, $4) "
            "on conflict do nothing", c.forum_id, c.family_id, c.outcome, c.checked_on)

    async def forums_of(self, area: str, scope: Scope) -> list[ForumView]:
        """The forums of the villages within `area` that cover an SLS of the reader's areas, each with its
        decisions about families of those areas (oldest first), an added family with its ground check."""
        forums = await self.conn.fetch(
            f"{_FORUM} where village_id like $2 || '%' and ($1::text[] is null or exists "
            f"(select 1 from unnest(sls_ids) s where s like any($1::text[]))) order by held_on, forum_id",
            _patterns(scope), area[:10])
        rows = await self.conn.fetch(
            f"select d.decision_id, d.forum_id, d.family_id, d.sls_id, d.kind, d.welfare_group, d.reason, d.decided_at, "
            f"c.outcome ground_check from fkp_forum_decisions d left join fkp_ground_checks c "
            f"on c.forum_id = d.forum_id and c.family_id = d.family_id where d.forum_id = any($2::text[]) "
            f"and {_IN_SCOPE} order by d.decided_at, d.decision_id", _patterns(scope), [f["forum_id"] for f in forums])
        views = {f["forum_id"]: ForumView(_forum(f)) for f in forums}
        for r in rows:
            views[r["forum_id"]].decisions.append(DecisionRow(**dict(r)))
        return list(views.values())

    async def erase_forum_decisions(self, family_id: str) -> int:
        """An erased family's forum decisions and ground check leave the read model; how many rows went."""
        decisions = await self.conn.fetchval("with d as (delete from fkp_forum_decisions where family_id = $1 "
                                             "returning 1) select count(*) from d", family_id)
        checks = await self.conn.fetchval("with d as (delete from fkp_ground_checks where family_id = $1 "
                                          "returning 1) select count(*) from d", family_id)
        return decisions + checks

    async def record_audit(self, entry: audit.Entry) -> None:
        """Who read or erased what (ids only), in the shared audit_log (regsosek.audit)."""
        await audit.record(self.conn, entry)

    # ------------------------------------------------------------ reads (pages)

    async def progress(self, area: str, scope: Scope, code_length: int) -> list[Progress]:
        """One row per area code of `code_length` digits within `area`, summed from the per-SLS counters
        (README, "Field outcomes": how each figure is counted)."""
        reasons = sorted(set(ROSTER_OUTCOMES.values()))
        roster_reasons = ", ".join(f"sum(coalesce((outcomes->>'{o}')::int, 0)) r_{o}" for o in reasons)
        rows = await self.conn.fetch(
            f"""with f as (select substr(sls_id, 1, $3) area, count(*) sls, sum(interviewed) interviewed,
                       sum(verified) verified, sum(flagged) flagged, sum(refused) refused, sum(moved) moved,
                       sum(not_found) not_found, sum(no_respondent) no_respondent
                  from sls_progress where sls_id like $2 and {_IN_SCOPE} group by 1),
                r as (select substr(sls_id, 1, $3) area, count(*) sls, sum(expected) expected,
                       sum(greatest(absent - non_response, 0)) absent, {roster_reasons}
                  from sls_rosters where sls_id like $2 and {_IN_SCOPE} group by 1),
                j as (select coalesce(f.area, r.area) area, greatest(f.sls, r.sls, 0) sls, coalesce(r.expected, 0) expected,
                       coalesce(f.interviewed, 0) interviewed, coalesce(f.verified, 0) verified,
                       coalesce(f.flagged, 0) flagged, coalesce(f.refused, 0) refused, coalesce(r.absent, 0) absent,
                       coalesce(f.moved, 0) f_moved, coalesce(f.not_found, 0) f_not_found,
                       coalesce(f.no_respondent, 0) no_respondent, coalesce(r.r_moved, 0) r_moved,
                       coalesce(r.r_dissolved, 0) dissolved, coalesce(r.r_not_found, 0) r_not_found
                  from f full join r on f.area = r.area
                 where r.area is not null or f.interviewed + f.refused + f.moved + f.not_found + f.no_respondent <> 0)
            select area, sls, expected, interviewed, verified, flagged, refused,
                   absent + f_moved + f_not_found + no_respondent not_reached, absent, r_moved + f_moved moved,
                   dissolved, r_not_found + f_not_found not_found, no_respondent
              from j order by 1""",
            _patterns(scope), area + "%", code_length)
        return [Progress(area=r["area"], sls=int(r["sls"]), **{f: int(r[f]) for f in PROGRESS_FIELDS}) for r in rows]

    async def daily_interviews(self, area: str, scope: Scope) -> list[tuple[date, int]]:
        """Interviews per fieldwork day (the interview's own date, WITA), summed from the per-SLS day counters."""
        rows = await self.conn.fetch(
            f"select day d, sum(interviews) n from sls_days where sls_id like $2 and {_IN_SCOPE} group by 1 "
            f"having sum(interviews) <> 0 order by 1", _patterns(scope), area + "%")
        return [(r["d"], int(r["n"])) for r in rows]

    async def worklist(self, scope: Scope, limit: int = 200) -> list[FamilyState]:
        rows = await self.conn.fetch(
            f"select {_COLUMNS} from families where verify_state = 'flagged' and verify_outcome <> 'rejected_by_supervisor' "
            f"and {_IN_SCOPE} order by verify_at, family_id limit $2", _patterns(scope), limit)
        return [_family(r) for r in rows]

    async def recently_resolved(self, scope: Scope, limit: int = 20) -> list[FamilyState]:
        """Families a supervisor decided on, newest decision first, with the pipeline's answer."""
        rows = await self.conn.fetch(
            f"select {_COLUMNS} from families where resolution_at is not null and {_IN_SCOPE} "
            f"order by resolution_at desc limit $2", _patterns(scope), limit)
        return [_family(r) for r in rows]

    async def family_by_id(self, any_id: str, scope: Scope) -> tuple[FamilyState | None, list[Step]]:
        """A family by its family id or by one of its submissions' ids, with its journey."""
        family_id = any_id
        if "-" in any_id and len(any_id) == 36:
            family_id = await self.conn.fetchval(
                "select family_id from journey_steps where submission_id = $1::uuid limit 1", any_id) or ""
        row = await self.conn.fetchrow(f"select {_COLUMNS} from families where family_id = $2 and {_IN_SCOPE}",
                                       _patterns(scope), family_id)
        if row is None:
            return None, []
        steps = await self.conn.fetch("select step, at, submission_id, detail from journey_steps where family_id = $1 "
                                      "order by at, event_id", family_id)
        return _family(row), [Step(s["step"], s["at"], str(s["submission_id"]) if s["submission_id"] else None,
                                   json.loads(s["detail"])) for s in steps]

    async def families_of(self, area: str, scope: Scope, limit: int = 500) -> list[FamilyState]:
        rows = await self.conn.fetch(f"select {_COLUMNS} from families where sls_id like $2 and {_IN_SCOPE} "
                                     f"order by family_id limit $3", _patterns(scope), area + "%", limit)
        return [_family(r) for r in rows]

    async def distributions(self, area: str, scope: Scope) -> dict[str, dict[str, list[int]]]:
        """Per regency: families by welfare group (1-4) and by decile (1-10)."""
        rows = await self.conn.fetch(
            f"select substr(sls_id, 1, 4) regency, welfare_group, decile, count(*) n from families "
            f"where welfare_group is not null and sls_id like $2 and {_IN_SCOPE} group by 1, 2, 3",
            _patterns(scope), area + "%")
        out: dict[str, dict[str, list[int]]] = {}
        for r in rows:
            d = out.setdefault(r["regency"], {"groups": [0] * 4, "deciles": [0] * 10})
            d["groups"][r["welfare_group"] - 1] += r["n"]
            d["deciles"][r["decile"] - 1] += r["n"]
        return dict(sorted(out.items()))

    async def versions(self) -> list[dict[str, Any]]:
        rows = await self.conn.fetch("select kind, version, first_seen, last_seen, decisions from versions_seen "
                                     "order by kind, last_seen desc")
        return [dict(r) for r in rows]
