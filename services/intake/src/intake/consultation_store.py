"""All SQL of intake's village consultation (migration 005): forums, their decisions and the ground
checks of added families, on one connection inside the caller's transaction. Every write to a
forum first locks its row (`forum_for_update`), so a decision and the forum's close never cross."""

from __future__ import annotations

from uuid import UUID

import asyncpg

from intake.consultation import (
    CheckRecord,
    CheckState,
    DecisionIn,
    DecisionRecord,
    DecisionState,
    ForumOpening,
    ForumRecord,
    GroundCheckIn,
)
from regsosek.contracts import FkpDecisionKind, GroundCheckOutcome

_VILLAGE_LOCK = 7316012  # advisory lock class: (this, hashtext(village_id)) while a forum is opened

_FORUM = """select f.forum_id, f.village_id, f.sls_ids, f.held_on, f.participants, f.content_hash, f.opened_by,
       f.opened_at, f.closed_at, f.closed_by,
       (select count(*) from fkp_decisions d where d.forum_id = f.forum_id) decisions,
       (select count(*) from fkp_decisions d where d.forum_id = f.forum_id and d.kind = 'added') added_families,
       (select count(*) from fkp_decisions d where d.forum_id = f.forum_id and d.kind = 'added'
          and not exists (select 1 from fkp_ground_checks c where c.forum_id = d.forum_id
                          and c.family_id = d.family_id)) pending_ground_checks
  from fkp_forums f"""

_DECISION = """select d.decision_id, d.forum_id, d.family_id, d.sls_id, d.kind, d.welfare_group, d.reason, d.content_hash,
       d.decided_by, d.decided_at, c.outcome ground_check
  from fkp_decisions d left join fkp_ground_checks c on c.forum_id = d.forum_id and c.family_id = d.family_id"""


def _forum(r: asyncpg.Record | None) -> ForumRecord | None:
    if r is None:
        return None
    return ForumRecord(r["forum_id"], r["village_id"], list(r["sls_ids"]), r["held_on"], list(r["participants"]),
                       bytes(r["content_hash"]), r["opened_by"], r["opened_at"], r["closed_at"], r["closed_by"],
                       r["decisions"], r["added_families"], r["pending_ground_checks"])


def _decision(r: asyncpg.Record | None) -> DecisionRecord | None:
    if r is None:
        return None
    return DecisionRecord(r["decision_id"], r["forum_id"], r["family_id"], r["sls_id"], FkpDecisionKind(r["kind"]),
                          r["welfare_group"], r["reason"], bytes(r["content_hash"]), r["decided_by"], r["decided_at"],
                          r["ground_check"])


def _check(r: asyncpg.Record | None) -> CheckRecord | None:
    if r is None:
        return None
    return CheckRecord(r["forum_id"], r["family_id"], GroundCheckOutcome(r["outcome"]), r["checked_on"],
                       r["checked_by"], bytes(r["content_hash"]), r["submission_id"], r["checked_at"])


class ConsultationStore:
    def __init__(self, conn: asyncpg.Connection) -> None:
        self.conn = conn

    # ------------------------------------------------------------ forums

    async def forum(self, forum_id: UUID) -> ForumRecord | None:
        return _forum(await self.conn.fetchrow(f"{_FORUM} where f.forum_id = $1", forum_id))

    async def forum_for_update(self, forum_id: UUID) -> ForumRecord | None:
        """The forum, its row locked for the transaction (every write to a forum takes it first)."""
        await self.conn.execute("select 1 from fkp_forums where forum_id = $1 for update", forum_id)
        return await self.forum(forum_id)

    async def opening_state(self, forum_id: UUID, village_id: str) -> tuple[ForumRecord | None, ForumRecord | None]:
        """The forum stored under this id, and the village's forum; the village locked while it is opened."""
        await self.conn.execute("select pg_advisory_xact_lock($1, hashtext($2))", _VILLAGE_LOCK, village_id)
        same = _forum(await self.conn.fetchrow(f"{_FORUM} where f.forum_id = $1", forum_id))
        of_village = _forum(await self.conn.fetchrow(f"{_FORUM} where f.village_id = $1", village_id))
        return same, of_village

    async def save_forum(self, o: ForumOpening, content_hash: bytes, opened_by: str) -> ForumRecord:
        await self.conn.execute(
            "insert into fkp_forums (forum_id, village_id, sls_ids, held_on, participants, content_hash, opened_by) "
            "values ($1, $2, $3, $4, $5::jsonb, $6, $7)", o.forum_id, o.village_id, list(o.sls_ids), o.held_on,
            [p.model_dump(mode="json") for p in o.participants], content_hash, opened_by)
        forum = await self.forum(o.forum_id)
        assert forum is not None
        return forum

    async def close_forum(self, forum_id: UUID, closed_by: str) -> ForumRecord:
        await self.conn.execute("update fkp_forums set closed_at = now(), closed_by = $2 where forum_id = $1 "
                                "and closed_at is null", forum_id, closed_by)
        forum = await self.forum(forum_id)
        assert forum is not None
        return forum

    # ------------------------------------------------------------ decisions

    async def decision_state(self, forum_id: UUID, decision_id: UUID, family_id: str) -> DecisionState:
        """The forum (locked), a decision of this id, the forum's decision about the family, and whether
        the census interviewed a family of this id (an interview submission)."""
        forum = await self.forum_for_update(forum_id)
        if forum is None:
            return DecisionState(None)
        same_id = _decision(await self.conn.fetchrow(f"{_DECISION} where d.decision_id = $1", decision_id))
        same_family = _decision(await self.conn.fetchrow(f"{_DECISION} where d.forum_id = $1 and d.family_id = $2",
                                                         forum_id, family_id))
        interviewed = await self.conn.fetchval(
            "select exists (select 1 from submissions where family_id = $1 and kind = 'interview')", family_id)
        return DecisionState(forum, same_id, same_family, interviewed)

    async def save_decision(self, forum_id: UUID, d: DecisionIn, content_hash: bytes, decided_by: str) -> DecisionRecord:
        await self.conn.execute(
            "insert into fkp_decisions (decision_id, forum_id, family_id, sls_id, kind, welfare_group, reason, "
            "content_hash, decided_by) values ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
            d.decision_id, forum_id, d.family_id, d.family_id[:14], d.kind.value,
            None if d.welfare_group is None else int(d.welfare_group), d.reason, content_hash, decided_by)
        saved = _decision(await self.conn.fetchrow(f"{_DECISION} where d.decision_id = $1", d.decision_id))
        assert saved is not None
        return saved

    async def decisions_of(self, forum_id: UUID) -> list[DecisionRecord]:
        rows = await self.conn.fetch(f"{_DECISION} where d.forum_id = $1 order by d.decided_at, d.decision_id",
                                     forum_id)
        return [d for d in map(_decision, rows) if d is not None]

    # ------------------------------------------------------------ ground checks

    async def check_state(self, forum_id: UUID, family_id: str) -> CheckState:
        forum = await self.forum_for_update(forum_id)
        if forum is None:
            return CheckState(None)
        added = _decision(await self.conn.fetchrow(
            f"{_DECISION} where d.forum_id = $1 and d.family_id = $2 and d.kind = 'added'", forum_id, family_id))
        earlier = _check(await self.conn.fetchrow(
            "select * from fkp_ground_checks where forum_id = $1 and family_id = $2", forum_id, family_id))
        return CheckState(forum, added, earlier)

    async def save_check(self, forum_id: UUID, family_id: str, c: GroundCheckIn, content_hash: bytes,
                         checked_by: str, submission_id: UUID | None) -> CheckRecord:
        row = await self.conn.fetchrow(
            "insert into fkp_ground_checks (forum_id, family_id, outcome, checked_on, checked_by, content_hash, "
            "submission_id) values ($1, $2, $3, $4, $5, $6, $7) returning *",
            forum_id, family_id, c.outcome.value, c.checked_on, checked_by, content_hash, submission_id)
        saved = _check(row)
        assert saved is not None
        return saved

    # ------------------------------------------------------------ erasure

    async def erase_reasons(self, family_id: str) -> int:
        """An erased family's decisions keep their kind and group, not the forum's free-text reason
        (it may describe the family); how many were emptied."""
        status = await self.conn.execute("update fkp_decisions set reason = '' where family_id = $1 and reason <> ''",
                                         family_id)
        return int(status.rsplit(" ", 1)[-1])
