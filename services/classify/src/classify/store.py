"""Classify's database, all of its SQL: one row per family with its latest classification and
what it rests on (its HouseholdProfile, versions, rank value, decile basis), verify's decision
order per family, withdrawals, FKP decisions, erasures, rankings, replay runs and the queue of
regencies to re-rank.

`ClassifyStore` is what the handlers use (one family per decision); `RerankStore` adds what
re-rank, replay and the area re-rank queue use (families in batches). Both work on one
connection, inside the caller's transaction.

A family's row keeps its profile (classify's input: ages, coded answers, area, ids), never
the interview: no name, NIK, KK number, address, GPS or birth date (migration 005)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import asyncpg

from classify.consultation import ForumTally
from classify.domain import (
    Classification,
    Classified,
    Config,
    FamilyState,
    FkpDecision,
    StoredFamily,
    VerifyDecision,
    Withdrawal,
)
from classify.model import PmtModel
from classify.ranking import NATIONAL, CutPoints, Placement, reference_placement
from regsosek import audit
from regsosek.contracts import FamilyErased, FkpAdjustment, FkpDecisionRecorded, HouseholdProfile, WelfareGroup

LOCK = 7316101  # one re-rank or replay at a time in a classify database


def _iso(at: datetime) -> str:
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def scope_words(partition: str) -> str:
    return "national" if partition == NATIONAL else f"province {partition}"


def ranked_basis(partition: str, ranked_at: datetime, families: int, area: str | None) -> str:
    basis = f"ranked: {scope_words(partition)} at {_iso(ranked_at)} among {families} families"
    if area:
        basis += f" (area {area} re-ranked after village consultation)"
    return basis


def _aware(at: datetime) -> datetime:
    return at if at.tzinfo is not None else at.replace(tzinfo=UTC)  # '-infinity' reads as a naive datetime.min


_SAVE = """insert into families (family_id, sls_id, submission_id, version, profile, predicted, welfare_group,
                                 decile, model_version, rule_version, eligible, rank_value, decile_basis,
                                 lines_version, eligibility, ranking_id, member_eligibility)
           values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17)
           on conflict (family_id) do update set submission_id = excluded.submission_id,
             version = excluded.version, profile = excluded.profile, predicted = excluded.predicted,
             welfare_group = excluded.welfare_group, decile = excluded.decile,
             model_version = excluded.model_version, rule_version = excluded.rule_version,
             eligible = excluded.eligible, rank_value = excluded.rank_value, decile_basis = excluded.decile_basis,
             lines_version = excluded.lines_version, eligibility = excluded.eligibility,
             ranking_id = excluded.ranking_id, member_eligibility = excluded.member_eligibility,
             updated_at = now()"""


def _row(p: HouseholdProfile, c: Classification, cfg: Config, ranking_id: int | None,
         profile_doc: dict | None = None) -> tuple:
    """The row of one family; `profile_doc` spares re-serialising a profile read from the table."""
    return (p.family_id, p.sls_id, p.submission_id, p.version,
            profile_doc if profile_doc is not None else p.model_dump(mode="json"),
            c.predicted, int(c.welfare_group), c.decile, cfg.model.version, cfg.rules.version,
            [d.programme for d in c.decisions if d.eligible], c.rank_value, c.decile_basis, cfg.lines.version,
            c.eligibility, ranking_id, c.member_eligibility)


_LATEST_FKP = """select submission_id::text, welfare_group, decided_at from fkp_adjustments where family_id = $1
                 order by decided_at desc, received_at desc limit 1"""


def _order(row: asyncpg.Record) -> VerifyDecision | None:
    """The newest of verify's decisions applied, from a family_order row (None: none yet)."""
    if row["verified"] is None:
        return None
    return VerifyDecision(row["verify_seq"], row["verify_version"], _aware(row["verify_at"]), row["verified"])


def _fkp(r: asyncpg.Record) -> FkpDecision | None:
    if r["fkp_id"] is None:
        return None
    return FkpDecision(r["fkp_id"], WelfareGroup(r["fkp_group"]), r["fkp_at"])


_PENDING_ORDERS = "classify.pending_orders"  # cache keys: writes of preloaded families, made at `flush`
_PENDING_WITHDRAWALS_LIFTED = "classify.pending_lifted"
_PENDING_SAVES = "classify.pending_saves"


class ClassifyStore:
    """The handlers' store: one family's state for a decision, and saving what was decided.

    `cache` lives as long as the transaction (the unit of work's). Families preloaded together
    (`preload_verification_states`: a batch's verified families, each appearing once in it) are
    read in one go, and what is saved of them is written at `flush`, one statement per table for
    all of them, instead of five round trips per family."""

    def __init__(self, conn: asyncpg.Connection, *, cache: dict | None = None) -> None:
        self.conn = conn
        self.cache = {} if cache is None else cache

    # ------------------------------------------------------------ loading one family's state

    async def preload_verification_states(self, family_ids: Sequence[str]) -> None:
        """What `state_for_verification` reads and locks, for many families at once, in the same
        order (families rows, then verify's decision order; each in family id order), in two
        statements. Each state is then `state_for_verification`'s once, and the family's writes
        in `record_verify_decision` and `save_classification` wait for `flush`."""
        ids = sorted(set(family_ids))
        if not ids:
            return
        rows = await self.conn.fetch(
            """with cur as (select family_id from families where family_id = any($1::text[])
                            order by family_id for update)
               select f.id, exists (select 1 from erased_families e where e.family_id = f.id) as erased,
                      fkp.submission_id::text as fkp_id, fkp.welfare_group as fkp_group, fkp.decided_at as fkp_at
               from unnest($1::text[]) as f(id)
               left join lateral (select submission_id, welfare_group, decided_at from fkp_adjustments a
                                  where a.family_id = f.id order by decided_at desc, received_at desc limit 1) fkp on true
               where (select count(*) from cur) >= 0""", ids)
        erased = {r["id"] for r in rows if r["erased"]}
        live = [i for i in ids if i not in erased]
        orders = {r["family_id"]: r for r in await self.conn.fetch(
            "insert into family_order (family_id) select unnest($1::text[]) order by 1 "
            "on conflict (family_id) do update set family_id = excluded.family_id "
            "returning family_id, verify_seq, verify_version, verify_at, verified, decision_seq", live)} if live else {}
        for r in rows:
            fid = r["id"]
            if fid in erased:
                self.cache[("verification_state", fid)] = FamilyState(fid, erased=True)
                continue
            self.cache[("verification_state", fid)] = FamilyState(fid, fkp=_fkp(r), order=_order(orders[fid]))
            self.cache[("decision_seq", fid)] = orders[fid]["decision_seq"]

    async def state_for_verification(self, family_id: str) -> FamilyState:
        """Whether the family is erased, its latest FKP decision, and (unless erased) the order of
        verify's decisions; its row locked first, in the order re-rank and replay lock."""
        preloaded = self.cache.pop(("verification_state", family_id), None)
        if preloaded is not None:
            return preloaded
        r = await self.conn.fetchrow(
            f"""with cur as (select version from families where family_id = $1 for update),
                     fkp as ({_LATEST_FKP})
                select exists (select 1 from erased_families where family_id = $1) as erased,
                       (select submission_id from fkp) as fkp_id, (select welfare_group from fkp) as fkp_group,
                       (select decided_at from fkp) as fkp_at, exists (select 1 from cur) as classified""",
            family_id)
        if r["erased"]:
            return FamilyState(family_id, erased=True)
        return FamilyState(family_id, fkp=_fkp(r), order=await self._verify_order(family_id))

    async def state_for_flag(self, family_id: str) -> FamilyState:
        """The family's current classification (its row locked first) and the order of verify's decisions."""
        r = await self.conn.fetchrow(
            "select sls_id, welfare_group, decile from families where family_id = $1 for update", family_id)
        classified = None if r is None else Classified(r["sls_id"], WelfareGroup(r["welfare_group"]), r["decile"])
        return FamilyState(family_id, classified=classified, order=await self._verify_order(family_id))

    async def state_for_fkp(self, family_id: str, submission_id: str) -> FamilyState:
        """Whether the family is erased, its stored profile (None: not classified; its row locked),
        its latest FKP decision and whether the decision `submission_id` is kept already."""
        r = await self.conn.fetchrow(
            f"""with cur as (select profile from families where family_id = $1 for update),
                     fkp as ({_LATEST_FKP})
                select exists (select 1 from erased_families where family_id = $1) as erased,
                       (select profile from cur) as profile,
                       (select submission_id from fkp) as fkp_id, (select welfare_group from fkp) as fkp_group,
                       (select decided_at from fkp) as fkp_at,
                       exists (select 1 from fkp_adjustments where submission_id = $2::uuid) as kept""",
            family_id, submission_id)
        if r["erased"]:
            return FamilyState(family_id, erased=True)
        profile = None if r["profile"] is None else HouseholdProfile.model_validate(r["profile"])
        return FamilyState(family_id, profile=profile, fkp=_fkp(r), fkp_kept=r["kept"])

    async def state_for_forum_decision(self, family_id: str, decision_id: str) -> FamilyState:
        """A village consultation decision's family: whether it is erased, its stored profile and
        classification (None: not classified; its row locked), its latest FKP decision and whether
        the decision `decision_id` is kept already."""
        r = await self.conn.fetchrow(
            f"""with cur as (select profile, sls_id, welfare_group, decile from families where family_id = $1 for update),
                     fkp as ({_LATEST_FKP})
                select exists (select 1 from erased_families where family_id = $1) as erased,
                       (select profile from cur) as profile, (select sls_id from cur) as sls_id,
                       (select welfare_group from cur) as welfare_group, (select decile from cur) as decile,
                       (select submission_id from fkp) as fkp_id, (select welfare_group from fkp) as fkp_group,
                       (select decided_at from fkp) as fkp_at,
                       exists (select 1 from fkp_adjustments where submission_id = $2::uuid) as kept""",
            family_id, decision_id)
        if r["erased"]:
            return FamilyState(family_id, erased=True)
        if r["profile"] is None:
            return FamilyState(family_id, fkp=_fkp(r), fkp_kept=r["kept"])
        return FamilyState(family_id, classified=Classified(r["sls_id"], WelfareGroup(r["welfare_group"]), r["decile"]),
                           profile=HouseholdProfile.model_validate(r["profile"]), fkp=_fkp(r), fkp_kept=r["kept"])

    async def forum_tally(self, forum_id: str, regency: str, decision_id: str | None) -> ForumTally:
        """A forum's tally, its row locked first (created if missing): a forum's decisions and its close
        wait for each other, so the last of them sees every other one."""
        r = await self.conn.fetchrow(
            "insert into fkp_forums (forum_id, regency) values ($1::uuid, $2) on conflict (forum_id) do update "
            "set updated_at = now() returning expected, rerank_asked", forum_id, regency)
        applied = await self.conn.fetchval("select count(*) from fkp_forum_decisions where forum_id = $1::uuid",
                                           forum_id)
        counted = decision_id is not None and await self.conn.fetchval(
            "select exists (select 1 from fkp_forum_decisions where decision_id = $1::uuid)", decision_id)
        return ForumTally(forum_id, regency, r["expected"], applied, bool(counted), r["rerank_asked"])

    async def save_forum_tally(self, t: ForumTally, decision: FkpDecisionRecorded | None) -> None:
        """The tally after a decision (recorded as applied) or the close."""
        if decision is not None:
            await self.conn.execute(
                "insert into fkp_forum_decisions (decision_id, forum_id, family_id, kind) values ($1, $2, $3, $4) "
                "on conflict do nothing", decision.decision_id, decision.forum_id, decision.family_id,
                decision.kind.value)
        await self.conn.execute("update fkp_forums set expected = $2, rerank_asked = $3, updated_at = now() "
                                "where forum_id = $1::uuid", t.forum_id, t.expected, t.rerank_asked)

    async def _verify_order(self, family_id: str) -> VerifyDecision | None:
        """The newest of verify's decisions applied for the family (None: none yet), its row locked
        (created if missing, so two transactions on one family wait for each other)."""
        row = await self.conn.fetchrow(
            "insert into family_order (family_id) values ($1) on conflict (family_id) do update "
            "set family_id = excluded.family_id returning verify_seq, verify_version, verify_at, verified", family_id)
        return _order(row)

    async def placement_for(self, sls_id: str, model: PmtModel) -> Placement:
        """Cut-points of the latest ranking covering the family's province, else the model's reference."""
        r = await self.conn.fetchrow(
            "select id, partition, families, cutpoints, ranked_at from rankings where partition = any($1::text[]) "
            "order by id desc limit 1", [NATIONAL, sls_id[:2]],
        )
        if r is None:
            return reference_placement(model.version, model.decile_cutpoints)
        basis = (f"provisional: cut-points of the {scope_words(r['partition'])} ranking at {_iso(r['ranked_at'])} "
                 f"among {r['families']} families")
        return CutPoints(tuple(r["cutpoints"]), basis, r["id"])

    # ------------------------------------------------------------ saving decisions

    async def record_verify_decision(self, family_id: str, d: VerifyDecision, *, publishes: bool) -> int:
        """Verify's decision `d` is now the newest applied for the family (row locked by the state's
        loading); a verification lifts any withdrawal. When classify publishes on it, the family's next
        decision sequence is taken and returned (else the current one)."""
        current = self.cache.pop(("decision_seq", family_id), None)
        if current is not None:  # preloaded: written at `flush`
            seq = current + (1 if publishes else 0)
            self.cache.setdefault(_PENDING_ORDERS, []).append((family_id, d.seq, d.version, d.at, d.verified, seq))
            if d.verified:
                self.cache.setdefault(_PENDING_WITHDRAWALS_LIFTED, []).append(family_id)
            self.cache[("save_at_flush", family_id)] = True
            return seq
        if d.verified:
            await self.conn.execute("delete from withdrawals where family_id = $1", family_id)
        return await self.conn.fetchval(
            "update family_order set verify_seq = $2, verify_version = $3, verify_at = $4, verified = $5, "
            "decision_seq = decision_seq + $6::int where family_id = $1 returning decision_seq",
            family_id, d.seq, d.version, d.at, d.verified, 1 if publishes else 0)

    async def next_decision_seqs(self, family_ids: Sequence[str]) -> dict[str, int]:
        """Each family's next decision sequence, for the classification about to be published
        (re-classification, FKP, re-rank, replay). Callers hold the families' rows."""
        if not family_ids:
            return {}
        rows = await self.conn.fetch(
            "insert into family_order (family_id, decision_seq) select unnest($1::text[]), 1 "
            "on conflict (family_id) do update set decision_seq = family_order.decision_seq + 1 "
            "returning family_id, decision_seq", list(family_ids))
        return {r["family_id"]: r["decision_seq"] for r in rows}

    async def save_classification(self, p: HouseholdProfile, c: Classification, cfg: Config,
                                  ranking_id: int | None) -> None:
        if self.cache.pop(("save_at_flush", p.family_id), False):
            self.cache.setdefault(_PENDING_SAVES, []).append(_row(p, c, cfg, ranking_id))
            return
        await self.conn.execute(_SAVE, *_row(p, c, cfg, ranking_id))

    async def flush(self) -> None:
        """Writes what was saved of preloaded families: lifted withdrawals, verify's decision order
        and the classifications, one statement each (before the transaction commits)."""
        lifted = self.cache.pop(_PENDING_WITHDRAWALS_LIFTED, [])
        orders = self.cache.pop(_PENDING_ORDERS, [])
        saves = self.cache.pop(_PENDING_SAVES, [])
        if lifted:
            await self.conn.execute("delete from withdrawals where family_id = any($1::text[])", lifted)
        if orders:
            await self.conn.executemany(
                "update family_order set verify_seq = $2, verify_version = $3, verify_at = $4, verified = $5, "
                "decision_seq = $6 where family_id = $1", orders)
        if saves:
            await self.conn.executemany(_SAVE, saves)

    async def withdraw(self, w: Withdrawal) -> None:
        """Take the flagged family out of the classified population and record why."""
        e = w.flag
        await self.conn.execute("delete from families where family_id = $1", e.family_id)
        await self.conn.execute(
            """insert into withdrawals (family_id, sls_id, version, reason, detail, flagged_at) values ($1, $2, $3, $4, $5, $6)
               on conflict (family_id) do update set version = excluded.version, reason = excluded.reason,
                 detail = excluded.detail, flagged_at = excluded.flagged_at, withdrawn_at = now()""",
            e.family_id, e.sls_id, e.version, e.reason.value, e.detail, e.flagged_at)

    async def keep_fkp(self, a: FkpAdjustment) -> None:
        """Keep a village consultation decision (the audit trail; the latest per family applies)."""
        await self.conn.execute(
            "insert into fkp_adjustments (submission_id, family_id, welfare_group, reason, decided_by, decided_at) "
            "values ($1, $2, $3, $4, $5, $6) on conflict do nothing",
            a.submission_id, a.family_id, int(a.welfare_group), a.reason, a.decided_by, a.decided_at,
        )

    async def mark_area(self, regency: str, reason: str) -> None:
        """Ask for an area re-rank of `regency` (done by the service's background task)."""
        await self.conn.execute(
            "insert into rerank_areas (regency, reason) values ($1, $2) "
            "on conflict (regency) do update set reason = excluded.reason, requested_at = now()",
            regency, reason,
        )

    async def erase_family(self, e: FamilyErased) -> dict[str, int]:
        """Deletes the family's profile and classification (its row first: the lock re-rank and replay
        take), withdrawal and FKP decisions; remembers it erased (migration 006). Rows deleted per
        table (counts only)."""
        out = {}
        for table in ("families", "withdrawals", "fkp_adjustments"):
            status = await self.conn.execute(f"delete from {table} where family_id = $1", e.family_id)
            out[table] = int(status.rsplit(" ", 1)[-1])
        await self.conn.execute(
            "insert into erased_families (family_id, sls_id, erasure_id, reason, erased_at) values ($1, $2, $3, $4, $5) "
            "on conflict (family_id) do nothing", e.family_id, e.sls_id, e.erasure_id, e.reason.value, e.erased_at)
        return out

    async def record_audit(self, entry: audit.Entry) -> None:
        await audit.record(self.conn, entry)


_STORED = ("select family_id, sls_id, version, rank_value, decile, decile_basis, ranking_id, welfare_group, "
           "eligibility, model_version, lines_version, rule_version, member_eligibility from families")


def _stored(r: asyncpg.Record) -> StoredFamily:
    return StoredFamily(r["family_id"], r["sls_id"], r["rank_value"], r["decile"], r["decile_basis"], r["ranking_id"],
                        r["welfare_group"], dict(r["eligibility"]),
                        (r["model_version"], r["lines_version"], r["rule_version"]), dict(r["member_eligibility"]))


@contextlib.asynccontextmanager
async def exclusive(pool: asyncpg.Pool, *, wait: bool = True) -> AsyncIterator[bool]:
    """Holds classify's re-rank lock (one re-rank or replay at a time per database) while inside;
    without `wait`, yields False at once when another holds it."""
    async with pool.acquire() as conn:
        if wait:
            await conn.execute("select pg_advisory_lock($1)", LOCK)
        elif not await conn.fetchval("select pg_try_advisory_lock($1)", LOCK):
            yield False
            return
        try:
            yield True
        finally:
            if not conn.is_closed():
                await conn.execute("select pg_advisory_unlock($1)", LOCK)


@dataclass(frozen=True)
class ReplayRun:
    """A replay to one set of versions, as far as its committed batches went."""

    id: int
    cursor: str  # the last family id gone through
    examined: int
    changed: int
    resumed: bool  # an unfinished run taken up again


class RerankStore(ClassifyStore):
    """What re-rank, replay and the area re-rank queue add: families in batches, rankings, replay runs."""

    async def family_count(self) -> int:
        return await self.conn.fetchval("select count(*) from families")

    async def stale_count(self, versions: tuple[str, str, str]) -> int:
        """Families classified with other model, lines or rules versions than `versions`."""
        return await self.conn.fetchval(
            "select count(*) from families where model_version <> $1 or lines_version <> $2 or rule_version <> $3",
            *versions)

    async def provinces(self) -> list[str]:
        return [r[0] for r in await self.conn.fetch("select distinct substr(sls_id, 1, 2) from families order by 1")]

    async def rank_values(self, partition: str) -> list[tuple[str, float]]:
        """(family id, rank value) of every family of the partition (the nation, or a province)."""
        if partition == NATIONAL:
            rows = await self.conn.fetch("select family_id, rank_value from families")
        else:
            rows = await self.conn.fetch("select family_id, rank_value from families where substr(sls_id, 1, 2) = $1",
                                         partition)
        return [(r[0], r[1]) for r in rows]

    async def save_ranking(self, scope: str, partition: str, area: str | None, model_version: str, families: int,
                           cuts: list[float]) -> tuple[int, datetime]:
        """Records a ranking and its cut-points; returns its id and time."""
        r = await self.conn.fetchrow(
            "insert into rankings (scope, partition, area, model_version, families, cutpoints) "
            "values ($1, $2, $3, $4, $5, $6) returning id, ranked_at",
            scope, partition, area, model_version, families, cuts)
        return r["id"], r["ranked_at"]

    async def families_for_update(self, family_ids: Sequence[str]) -> list[StoredFamily]:
        rows = await self.conn.fetch(_STORED + " where family_id = any($1::text[]) order by family_id for update",
                                     list(family_ids))
        return [_stored(r) for r in rows]

    async def families_after_for_update(self, cursor: str, limit: int) -> list[StoredFamily]:
        """The next `limit` families in id order after `cursor`, their rows locked."""
        rows = await self.conn.fetch(_STORED + " where family_id > $1 order by family_id limit $2 for update",
                                     cursor, limit)
        return [_stored(r) for r in rows]

    async def set_bases(self, bases: Sequence[tuple[str, str]], ranking_id: int) -> None:
        """A new decile basis (and ranking) for families whose classification is otherwise unchanged."""
        if bases:
            await self.conn.executemany(
                "update families set decile_basis = $2, ranking_id = $3, updated_at = now() where family_id = $1",
                [(fid, basis, ranking_id) for fid, basis in bases])

    async def profiles(self, family_ids: Sequence[str]) -> dict[str, dict]:
        """The stored profiles (as documents) of these families."""
        return {r["family_id"]: r["profile"] for r in await self.conn.fetch(
            "select family_id, profile from families where family_id = any($1::text[])", list(family_ids))}

    async def fkp_groups(self, family_ids: Sequence[str]) -> dict[str, WelfareGroup]:
        """The latest village consultation decision of each family that has one."""
        rows = await self.conn.fetch(
            "select distinct on (family_id) family_id, welfare_group from fkp_adjustments "
            "where family_id = any($1::text[]) order by family_id, decided_at desc, received_at desc", list(family_ids),
        )
        return {r["family_id"]: WelfareGroup(r["welfare_group"]) for r in rows}

    async def save_classifications(self, rows: Sequence[tuple[HouseholdProfile, Classification, int | None, dict]],
                                   cfg: Config) -> None:
        """Many families' rows (profile, classification, ranking id, stored profile document) in one round trip."""
        if rows:
            await self.conn.executemany(_SAVE, [_row(p, c, cfg, ranking_id, doc) for p, c, ranking_id, doc in rows])

    # ------------------------------------------------------------ replay runs

    async def start_replay(self, versions: tuple[str, str, str]) -> ReplayRun:
        """The unfinished replay run to `versions` (resumed), or a new one; unfinished runs to other
        versions are closed as superseded."""
        runs = await self.conn.fetch("select * from replay_runs where finished_at is null order by id")
        run = next((r for r in runs if (r["model_version"], r["lines_version"], r["rule_version"]) == versions), None)
        for r in runs:
            if r is not run:
                await self.conn.execute("update replay_runs set finished_at = now(), outcome = 'superseded' "
                                        "where id = $1", r["id"])
        resumed = run is not None
        if run is None:
            run = await self.conn.fetchrow(
                "insert into replay_runs (model_version, lines_version, rule_version) values ($1, $2, $3) "
                "returning *", *versions)
        return ReplayRun(run["id"], run["cursor"], run["examined"], run["changed"], resumed)

    async def replay_examined(self, versions: tuple[str, str, str]) -> int:
        """Families an unfinished replay to `versions` already went through."""
        return await self.conn.fetchval(
            "select coalesce(max(examined), 0) from replay_runs where finished_at is null "
            "and (model_version, lines_version, rule_version) = ($1, $2, $3)", *versions)

    async def advance_replay(self, run_id: int, cursor: str, examined: int, changed: int) -> None:
        await self.conn.execute(
            "update replay_runs set cursor = $2, examined = examined + $3, changed = changed + $4, "
            "updated_at = now() where id = $1", run_id, cursor, examined, changed)

    async def finish_replay(self, run_id: int) -> None:
        await self.conn.execute("update replay_runs set finished_at = now(), updated_at = now(), "
                                "outcome = 'finished' where id = $1", run_id)

    # ------------------------------------------------------------ the area re-rank queue

    async def next_area(self) -> tuple[str, datetime] | None:
        """The regency marked longest ago for an area re-rank, and when it was marked."""
        r = await self.conn.fetchrow("select regency, requested_at from rerank_areas order by requested_at limit 1")
        return None if r is None else (r["regency"], r["requested_at"])

    async def area_done(self, regency: str, requested_at: datetime) -> None:
        """The area re-rank of `regency` asked for at `requested_at` is done (a later request stays)."""
        await self.conn.execute("delete from rerank_areas where regency = $1 and requested_at <= $2",
                                regency, requested_at)


class StatusStore:
    """What classify's read-only status API (classify.api) shows of its own tables: how many families rest on
    which versions, the recent rankings, the regencies waiting for an area re-rank, the replay runs, and
    whether a re-rank or replay holds the lock now. Ids, versions, counts and times only."""

    def __init__(self, conn: asyncpg.Connection) -> None:
        self.conn = conn

    async def families_by_versions(self) -> list[dict]:
        """Families per (model, poverty lines, rules) version they were classified with."""
        rows = await self.conn.fetch("select model_version, lines_version, rule_version, count(*) families "
                                     "from families group by 1, 2, 3 order by 4 desc")
        return [dict(r) for r in rows]

    async def recent_rankings(self, limit: int) -> list[dict]:
        rows = await self.conn.fetch("select id, scope, partition, area, model_version, families, ranked_at "
                                     "from rankings order by id desc limit $1", limit)
        return [dict(r) for r in rows]

    async def areas_waiting(self) -> list[dict]:
        rows = await self.conn.fetch("select regency, reason, requested_at from rerank_areas order by requested_at")
        return [dict(r) for r in rows]

    async def recent_replays(self, limit: int) -> list[dict]:
        rows = await self.conn.fetch(
            "select id, model_version, lines_version, rule_version, examined, changed, started_at, updated_at, "
            "finished_at, outcome from replay_runs order by id desc limit $1", limit)
        return [dict(r) for r in rows]

    async def rerank_running(self) -> bool:
        """A re-rank or replay holds classify's lock (store.exclusive) in this database now."""
        return await self.conn.fetchval(
            "select exists (select 1 from pg_locks where locktype = 'advisory' and granted and classid = 0 "
            "and objid = $1 and objsubid = 1 and database = (select oid from pg_database "
            "where datname = current_database()))", LOCK)
