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
from pathlib import Path

import asyncpg
import orjson

from classify.consultation import ForumTally
from classify.domain import (
    FKP_NOTE,
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
from classify.ranking import (
    DECILES,
    NATIONAL,
    PARTITION_LENGTH,
    CutPoints,
    Placement,
    Ranked,
    cutpoints_of_tops,
    partition_of,
    reference_placement,
)
from classify.replay_domain import Restated, StoredOutcome
from regsosek import audit, db
from regsosek.contracts import FamilyErased, FkpAdjustment, FkpDecisionRecorded, HouseholdProfile, WelfareGroup
from regsosek.contracts import details as dt
from regsosek.envelope import encode

LOCK = 7316101  # one re-rank or replay at a time in a classify database
SCHEDULE_LOCK = 7316102  # one instance at a time asks for the scheduled re-rank
RANKING_WORK_MEM = "256MB"  # the database's sort memory while taking a ranking (spills to disk beyond)
LONG_STATEMENT_S = 3600.0  # statements over a whole scope (taking a ranking): beyond the pool's command timeout

MIGRATIONS = Path(__file__).resolve().parents[2] / "migrations"  # the schema this module's SQL works on


def _iso(at: datetime) -> str:
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def scope_words(partition: str) -> str:
    if partition == NATIONAL:
        return dt.SCOPE_NATIONAL()
    if len(partition) == PARTITION_LENGTH["province"]:
        return dt.SCOPE_PROVINCE(code=partition)
    return dt.SCOPE_REGENCY(code=partition)


# The partition of a family's row in each scope, and its ranked decile over that partition (window w: the
# partition ordered by rank value, family id): the family at 0-based position i of n gets decile
# i * 10 // n + 1, as ranking.rank_deciles.
PARTITION_SQL = {"national": f"'{NATIONAL}'::text", **{scope: f"substr(sls_id, 1, {n})"
                                                   for scope, n in PARTITION_LENGTH.items()}}
RANKED_DECILE = f"((row_number() over w - 1) * {DECILES} / count(*) over (partition by {{p}}) + 1)::int as decile"


def ranked_basis(partition: str, ranked_at: datetime, families: int, area: str | None) -> str:
    if area:
        return dt.BASIS_RANKED_AREA(scope=scope_words(partition), at=_iso(ranked_at), families=families, area=area)
    return dt.BASIS_RANKED(scope=scope_words(partition), at=_iso(ranked_at), families=families)


def ranking_cuts_basis(partition: str, ranked_at: datetime, families: int) -> str:
    """The basis of a decile placed by the cut-points of the latest ranking covering the family."""
    return dt.BASIS_RANKING_CUTS(scope=scope_words(partition), at=_iso(ranked_at), families=families)


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


def _row(p: HouseholdProfile, c: Classification, cfg: Config, ranking_id: int | None) -> tuple:
    """The row of one family. Its profile goes as its JSON (an orjson Fragment: the jsonb codec writes it
    as it is, regsosek.db), not as a dict that is serialised again."""
    return (p.family_id, p.sls_id, p.submission_id, p.version, orjson.Fragment(encode(p)),
            c.predicted, int(c.welfare_group), c.decile, cfg.model.version, cfg.rules.version,
            [d.programme for d in c.decisions if d.eligible], c.rank_value, c.decile_basis, cfg.lines.version,
            c.eligibility, ranking_id, c.member_eligibility)


# A family classified again from its stored profile (re-rank's moved families, replay's changed ones): the
# columns a classification decides, for a batch in one statement; the profile is not sent again.
_RECLASSIFIED = """update families f set predicted = u.predicted, welfare_group = u.welfare_group, decile = u.decile,
             eligible = array(select jsonb_array_elements_text(u.eligible::jsonb)), rank_value = u.rank_value,
             decile_basis = u.decile_basis, eligibility = u.eligibility::jsonb, ranking_id = u.ranking_id,
             member_eligibility = u.member_eligibility::jsonb, model_version = $11, lines_version = $12,
             rule_version = $13, updated_at = now()
           from unnest($1::text[], $2::float8[], $3::int[], $4::int[], $5::text[], $6::float8[], $7::text[],
                       $8::text[], $9::text[], $10::bigint[])
             as u(family_id, predicted, welfare_group, decile, eligible, rank_value, decile_basis, eligibility,
                  member_eligibility, ranking_id)
           where f.family_id = u.family_id"""


def _json_text(value: object) -> str:
    return orjson.dumps(value).decode()


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
        """Cut-points of the latest ranking covering the family (national, its province or its regency),
        else the model's reference."""
        r = await self.conn.fetchrow(
            "select id, partition, families, cutpoints, ranked_at from rankings where partition = any($1::text[]) "
            "order by id desc limit 1", [NATIONAL, sls_id[:2], sls_id[:4]],
        )
        if r is None:
            return reference_placement(model.version, model.decile_cutpoints)
        return CutPoints(tuple(r["cutpoints"]), ranking_cuts_basis(r["partition"], r["ranked_at"], r["families"]),
                         r["id"])

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


# A family as re-rank and replay read it: its decile basis and ranking as placed (migration 011: the newest
# ranking that confirmed its decile without writing its row, else the row's own).
_STORED_OF_F = ("select f.family_id, f.sls_id, f.version, f.rank_value, f.decile, p.decile_basis, p.ranking_id, "
                "f.welfare_group, f.eligibility, f.model_version, f.lines_version, f.rule_version, "
                "f.member_eligibility")
_PLACED = "cross join lateral placed(f.family_id, f.sls_id, f.decile_basis, f.ranking_id) p"


def _stored(r: asyncpg.Record) -> StoredFamily:
    return StoredFamily(r["family_id"], r["sls_id"], r["rank_value"], r["decile"], r["decile_basis"], r["ranking_id"],
                        r["welfare_group"], dict(r["eligibility"]),
                        (r["model_version"], r["lines_version"], r["rule_version"]), dict(r["member_eligibility"]))


@contextlib.asynccontextmanager
async def exclusive(pool: asyncpg.Pool, *, wait: bool = True) -> AsyncIterator[bool]:
    """Holds classify's re-rank lock (one re-rank or replay at a time per database) while inside;
    without `wait`, yields False at once when another holds it."""
    async with pool.acquire() as conn:
        if not await db.advisory_lock(conn, LOCK, wait=wait):
            yield False
            return
        try:
            yield True
        finally:
            await db.advisory_unlock(conn, LOCK)


@dataclass(frozen=True)
class ReplayRun:
    """A replay to one set of versions, as far as its committed batches went."""

    id: int
    examined: int
    changed: int
    resumed: bool  # an unfinished run taken up again


@dataclass(frozen=True)
class ReplaySlice:
    """The families (lower, upper] of a replay, which one process goes through in id order."""

    run_id: int
    slice: int
    cursor: str  # the last family id gone through (the lower bound before the first batch)
    upper: str | None  # None: no upper bound
    finished: bool


@dataclass(frozen=True)
class RerankRun:
    """A re-rank as far as its committed pages went: its ranking is taken, its cursor is the last family applied."""

    id: int
    scope: str
    area: str | None
    model_version: str
    ranked: int
    cursor: str
    totals: dict[str, int]  # examined, changed, unchanged, skipped over the whole run
    resumed: bool


@dataclass(frozen=True)
class PartitionRanking:
    partition: str
    ranking_id: int
    families: int
    decile_sizes: dict[int, int]


@dataclass(frozen=True)
class RerankPage:
    """One page of a re-rank's snapshot. The families whose decile stays have the new basis once the page
    commits (confirmed by the ranking, migration 011); `moved` are those to classify again with their ranked
    decile, their rows locked."""

    last: str  # the page's last family id: the run's cursor once the page commits
    unchanged: int  # same rank value, same decile: new basis only
    skipped: int  # rank value changed after the ranking was taken: left as their handler placed them
    moved: list[tuple[StoredFamily, Ranked]]


_FKP_NOTE_START = FKP_NOTE.split("{}")[0]
# The page of a run: members after the cursor up to the page's last family id (a range of the members'
# key: the page's members only are read), joined with their rows and the ranking of their partition.
_PAGE = (f"from families f {_PLACED} join rerank_members m on m.run_id = $1 and m.family_id = f.family_id "
         "join rankings r on r.run_id = m.run_id and r.partition = m.partition "
         "where m.family_id > $2 and m.family_id <= $3")


def _ranked_sql(scope: str, where: str) -> str:
    """Every family of `where` with its partition in `scope` and its ranked decile there."""
    p = PARTITION_SQL[scope]
    return (f"select family_id, sls_id, {p} as partition, rank_value, {RANKED_DECILE} from families {where} "
            f"window w as (partition by {p} order by rank_value, family_id)").replace("{p}", p)


class RerankStore(ClassifyStore):
    """What re-rank, replay and the area re-rank queue add: rankings taken in the database and applied in
    pages, families in batches, replay runs and their slices, re-rank requests."""

    async def family_count(self) -> int:
        return await self.conn.fetchval("select count(*) from families")

    async def stale_count(self, versions: tuple[str, str, str]) -> int:
        """Families classified with other model, lines or rules versions than `versions`."""
        return await self.conn.fetchval(
            "select count(*) from families where model_version <> $1 or lines_version <> $2 or rule_version <> $3",
            *versions)

    # ------------------------------------------------------------ re-rank runs

    async def unfinished_rerank_ids(self) -> list[int]:
        """Every re-rank run not finished (nor superseded), oldest first."""
        return [r["id"] for r in await self.conn.fetch("select id from rerank_runs where finished_at is null "
                                                        "order by id")]

    async def unfinished_rerank(self, scope: str, area: str | None) -> RerankRun | None:
        """The re-rank of `scope` (and `area`) interrupted after taking its ranking, if any."""
        r = await self.conn.fetchrow(
            "select * from rerank_runs where finished_at is null and scope = $1 and area is not distinct from $2 "
            "order by id desc limit 1", scope, area)
        if r is None:
            return None
        totals = {k: r[k] for k in ("examined", "changed", "unchanged", "skipped")}
        return RerankRun(r["id"], scope, area, r["model_version"], r["ranked"], r["cursor"], totals, True)

    async def start_rerank(self, scope: str, area: str | None, reason: str, model_version: str) -> RerankRun:
        """A new run with its ranking taken: every family of the scope (of the area's partition for an area
        re-rank) ranked by the database, the snapshot of the families it applies to kept (rerank_members),
        one ranking per partition with its cut-points and decile sizes. Call in one transaction."""
        run = await self.conn.fetchrow(
            "insert into rerank_runs (scope, area, reason, model_version) values ($1, $2, $3, $4) "
            "returning id, started_at", scope, area, reason, model_version)
        args: list = [run["id"]]
        where = kept = ""
        if area is not None:
            args += [partition_of(scope, area), area]
            where = f"where {PARTITION_SQL[scope]} = $2"
            kept = f"where substr(sls_id, 1, {PARTITION_LENGTH['regency']}) = $3"
        # the sort of the scope in memory rather than in temporary files (the database's memory, for this
        # transaction only); the snapshot inserted in its key's order (appended to its index, not scattered)
        await self.conn.execute(f"set local work_mem = '{RANKING_WORK_MEM}'")
        deciles = await self.conn.fetch(
            f"with ranked as materialized ({_ranked_sql(scope, where)}), "
            f"kept as (insert into rerank_members (run_id, family_id, partition, rank_value, decile) "
            f"select $1, family_id, partition, rank_value, decile from ranked {kept} order by family_id) "
            "select partition, decile, count(*)::int as families, max(rank_value) as top "
            "from ranked group by 1, 2 order by 1, 2", *args, timeout=LONG_STATEMENT_S)
        by_partition: dict[str, dict[int, tuple[int, float]]] = {}
        for d in deciles:
            by_partition.setdefault(d["partition"], {})[d["decile"]] = (d["families"], d["top"])
        rows = []
        for partition, tops in by_partition.items():
            families = sum(n for n, _ in tops.values())
            rows.append((scope, partition, area, model_version, families,
                         cutpoints_of_tops({d: top for d, (_, top) in tops.items()}), run["id"],
                         ranked_basis(partition, run["started_at"], families, area),
                         [tops.get(d, (0, 0.0))[0] for d in range(1, DECILES + 1)], run["started_at"]))
        await self.conn.executemany(
            "insert into rankings (scope, partition, area, model_version, families, cutpoints, run_id, basis, "
            "decile_sizes, ranked_at) values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)", rows)
        ranked = sum(r[4] for r in rows)
        await self.conn.execute("update rerank_runs set ranked = $2 where id = $1", run["id"], ranked)
        totals = {"examined": 0, "changed": 0, "unchanged": 0, "skipped": 0}
        return RerankRun(run["id"], scope, area, model_version, ranked, "", totals, False)

    async def rerank_rankings(self, run_id: int) -> list[PartitionRanking]:
        """The rankings (one per partition) a run took."""
        rows = await self.conn.fetch("select partition, id, families, decile_sizes from rankings where run_id = $1 "
                                     "order by partition", run_id)
        return [PartitionRanking(r["partition"], r["id"], r["families"],
                                 {d: n for d, n in enumerate(r["decile_sizes"], 1) if n}) for r in rows]

    async def rerank_page(self, run_id: int, after: str, limit: int) -> RerankPage | None:
        """The next `limit` families of the run's snapshot after `after` (None: none left). Those whose decile
        stays are confirmed by the ranking without a write (migration 011: read through `placed`, once the run's
        cursor passes them), except those whose basis is not a ranked one yet (provisional): they get the
        ranking's basis (and keep an FKP note) in one statement. Those whose decile moved are returned, their
        rows locked; those whose rank value changed since the ranking are only counted."""
        page = await self.conn.fetchrow(
            "select max(m.family_id) as last, count(*) filter (where f.rank_value <> m.rank_value) as skipped, "
            "count(*) filter (where f.rank_value = m.rank_value and f.decile = m.decile) as unchanged, "
            "count(*) filter (where f.rank_value = m.rank_value and f.decile = m.decile and (f.ranking_id is null "
            "or f.decile_basis not like 'ranked: %')) as provisional, "
            "array_agg(m.family_id) filter (where f.rank_value = m.rank_value and f.decile <> m.decile) as moved "
            "from (select family_id, rank_value, decile from rerank_members where run_id = $1 and family_id > $2 "
            "order by family_id limit $3) m left join families f using (family_id)", run_id, after, limit)
        if page["last"] is None:
            return None
        if page["provisional"]:  # a basis not ranked yet: written once (the others are confirmed unwritten)
            await self.conn.execute(
                "update families f set ranking_id = r.id, updated_at = now(), decile_basis = r.basis || "
                "case when strpos(f.decile_basis, $4) > 0 then substr(f.decile_basis, strpos(f.decile_basis, $4)) "
                "else '' end from rerank_members m join rankings r on r.run_id = m.run_id "
                "and r.partition = m.partition "
                "where m.run_id = $1 and m.family_id = f.family_id and m.family_id > $2 and m.family_id <= $3 "
                "and f.rank_value = m.rank_value and f.decile = m.decile "
                "and (f.ranking_id is null or f.decile_basis not like 'ranked: %' or f.ranking_id >= r.id)",
                run_id, after, page["last"], _FKP_NOTE_START)
        rows = await self.conn.fetch(
            f"{_STORED_OF_F}, m.decile as ranked_decile, r.id as ranked_id, r.basis as ranked_basis {_PAGE} "
            "and m.family_id = any($4::text[]) and f.rank_value = m.rank_value and f.decile <> m.decile "
            "order by f.family_id for update of f",
            run_id, after, page["last"], page["moved"]) if page["moved"] else []
        moved = [(_stored(r), Ranked(r["ranked_decile"], r["ranked_basis"], r["ranked_id"])) for r in rows]
        return RerankPage(page["last"], page["unchanged"], page["skipped"], moved)

    async def rerank_snapshot_lost(self, run_id: int) -> bool:
        """Whether a run that ranked families has lost its snapshot (a database crash empties unlogged tables)."""
        return await self.conn.fetchval(
            "select ranked > 0 and not exists (select 1 from rerank_members m where m.run_id = r.id) "
            "from rerank_runs r where id = $1", run_id)

    async def advance_rerank(self, run_id: int, cursor: str, examined: int, changed: int, unchanged: int,
                             skipped: int) -> None:
        await self.conn.execute(
            "update rerank_runs set cursor = $2, examined = examined + $3, changed = changed + $4, "
            "unchanged = unchanged + $5, skipped = skipped + $6, updated_at = now() where id = $1",
            run_id, cursor, examined, changed, unchanged, skipped)

    async def close_rerank(self, run_id: int, outcome: str) -> None:
        """The run is finished (or superseded): its snapshot goes (at once when no other run is unfinished)."""
        await self.conn.execute("update rerank_runs set finished_at = now(), updated_at = now(), outcome = $2 "
                                "where id = $1", run_id, outcome)
        if await self.conn.fetchval("select exists (select 1 from rerank_runs where finished_at is null)"):
            await self.conn.execute("delete from rerank_members where run_id = $1", run_id, timeout=LONG_STATEMENT_S)
        else:
            await self.conn.execute("truncate rerank_members")

    # ------------------------------------------------------------ classifying again

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

    async def reclassified(self, rows: Sequence[tuple[str, Classification, int | None]], cfg: Config) -> None:
        """Families classified again from their stored profile (family id, classification, ranking id), in one
        statement: the columns a classification decides and the configured versions; the profile, the
        submission and its version stay as stored (not sent again). Callers hold the rows."""
        if rows:
            columns = zip(*[(family_id, c.predicted, int(c.welfare_group), c.decile,
                             _json_text([d.programme for d in c.decisions if d.eligible]), c.rank_value,
                             c.decile_basis, _json_text(c.eligibility), _json_text(c.member_eligibility), ranking_id)
                            for family_id, c, ranking_id in rows], strict=True)
            await self.conn.execute(_RECLASSIFIED, *map(list, columns), *cfg.versions)

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
        examined, changed = await self.conn.fetchrow(
            f"select {_REPLAY_TOTAL.format('examined')}, {_REPLAY_TOTAL.format('changed')} "
            "from replay_runs r where id = $1", run["id"])
        return ReplayRun(run["id"], examined, changed, resumed)

    async def replay_slices(self, run_id: int, parts: int) -> list[ReplaySlice]:
        """The run's slices; a run without any is split now into `parts` slices of about as many families
        (a run from before slices: one slice from its cursor)."""
        rows = await self.conn.fetch("select * from replay_slices where run_id = $1 order by slice", run_id)
        if not rows:
            cursor = await self.conn.fetchval("select cursor from replay_runs where id = $1", run_id)
            bounds = await self.slice_bounds(cursor, parts) if parts > 1 else []
            lowers, uppers = [cursor, *bounds], [*bounds, None]
            await self.conn.executemany(
                "insert into replay_slices (run_id, slice, lower_id, upper_id, cursor) values ($1, $2, $3, $4, $3)",
                [(run_id, i, lo, up) for i, (lo, up) in enumerate(zip(lowers, uppers, strict=True))])
            rows = await self.conn.fetch("select * from replay_slices where run_id = $1 order by slice", run_id)
        return [ReplaySlice(run_id, r["slice"], r["cursor"], r["upper_id"], r["finished_at"] is not None)
                for r in rows]

    async def slice_bounds(self, after: str, parts: int) -> list[str]:
        """Up to `parts` - 1 family ids, increasing, that split the families after `after` into about equal parts
        (each part: after the previous bound up to and including the next), without sorting the families: the
        planner's equal-frequency histogram of family ids when it has enough bounds above `after`, else by
        counting along the primary key. Any increasing bounds cover every family exactly once; how even the
        parts are depends on how current the statistics are (families added since the table was last analysed
        fall into the last part)."""
        return await self.histogram_bounds(after, parts) or await self.counted_bounds(after, parts)

    async def histogram_bounds(self, after: str, parts: int) -> list[str]:
        """`slice_bounds` from pg_stats (empty when the histogram has fewer than 4 bounds a part above `after`)."""
        hist = await self.conn.fetchval(
            "select array(select b from unnest(histogram_bounds::text::text[]) b where b > $1 order by b) "
            "from pg_stats where schemaname = current_schema() and tablename = 'families' and attname = 'family_id'",
            after)
        if not hist or len(hist) < 4 * parts:
            return []
        # bound k of the histogram's n + 1: about k / n of the families after `after` are at or below it
        return [hist[round(k * (len(hist) - 1) / parts)] for k in range(1, parts)]

    async def counted_bounds(self, after: str, parts: int) -> list[str]:
        """`slice_bounds` by counting: each bound `count / parts` families along the primary key after the
        previous one (index scans over the ids, no sort; fewer bounds when there are fewer families)."""
        total = await self.conn.fetchval("select count(*) from families where family_id > $1", after,
                                         timeout=LONG_STATEMENT_S)
        step = total // parts
        bounds: list[str] = []
        if step == 0:
            return bounds
        lower = after
        for _ in range(1, parts):
            lower = await self.conn.fetchval(
                "select family_id from families where family_id > $1 order by family_id offset $2 limit 1",
                lower, step - 1, timeout=LONG_STATEMENT_S)
            if lower is None:
                break
            bounds.append(lower)
        return bounds

    async def replay_examined(self, versions: tuple[str, str, str]) -> int:
        """Families an unfinished replay to `versions` already went through."""
        return await self.conn.fetchval(
            f"select coalesce(max({_REPLAY_TOTAL.format('examined')}), 0) from replay_runs r "
            "where finished_at is null and (model_version, lines_version, rule_version) = ($1, $2, $3)", *versions)

    async def families_after_for_update(self, cursor: str, limit: int, upper: str | None = None) -> list[StoredFamily]:
        """The next `limit` families in id order after `cursor` (up to `upper`, if given), their rows locked."""
        rows = await self.conn.fetch(
            f"{_STORED_OF_F} from families f {_PLACED} where f.family_id > $1 and ($3::text is null or "
            "f.family_id <= $3) order by f.family_id limit $2 for update of f", cursor, limit, upper)
        return [_stored(r) for r in rows]

    async def replay_page(self, cursor: str, limit: int, upper: str | None,
                          versions: tuple[str, str, str]) -> tuple[str | None, int, list[StoredOutcome]]:
        """The next `limit` families in id order after `cursor` (up to `upper`, if given), their rows locked, in
        one statement: (the last family id, None if none; how many; those classified with other versions than
        `versions`, each with its latest FKP decision's group, its prediction when made with the same model and
        lines versions, and its profile document: the whole document without that prediction, else only what
        `ReplayJudge.judge` reads of it then, its members)."""
        rows = await self.conn.fetch(
            "select f.family_id, f.sls_id, f.rank_value, f.decile, p.decile_basis, p.ranking_id, f.welfare_group, "
            "f.eligible, f.eligibility, f.member_eligibility, "
            "case when stale and pmt is null then f.profile end as profile, "
            "case when stale and pmt is not null then f.profile -> 'members' end as members, pmt as predicted, "
            "case when stale then (select a.welfare_group from fkp_adjustments a where a.family_id = f.family_id "
            "  order by a.decided_at desc, a.received_at desc limit 1) end as fkp_group, stale "
            f"from families f {_PLACED}, "
            "lateral (select (f.model_version, f.lines_version, f.rule_version) is distinct from ($4, $5, $6) "
            "         as stale, "
            "         case when (f.model_version, f.lines_version) = ($4, $5) then f.predicted end as pmt) s "
            "where f.family_id > $1 and ($3::text is null or f.family_id <= $3) "
            "order by f.family_id limit $2 for update of f", cursor, limit, upper, *versions)
        if not rows:
            return None, 0, []
        return rows[-1]["family_id"], len(rows), [
            StoredOutcome(r["family_id"], r["sls_id"],
                          r["profile"] if r["predicted"] is None else {"members": r["members"]}, r["rank_value"],
                          r["decile"], r["decile_basis"], r["ranking_id"], r["welfare_group"], r["eligible"],
                          r["eligibility"], r["member_eligibility"], r["fkp_group"], r["predicted"])
            for r in rows if r["stale"]]

    async def restate(self, rows: Sequence[Restated], cfg: Config) -> None:
        """Families whose outcome a replay found unchanged: their rank value, decile basis, ranking and list of
        eligible programmes (what may move without changing the outcome) and the configured versions, in one
        statement (programme codes are single words: the list goes as one space-separated text a family)."""
        if rows:
            await self.conn.execute(
                "update families f set predicted = u.predicted, rank_value = u.rank_value, "
                "decile_basis = u.decile_basis, ranking_id = u.ranking_id, "
                "eligible = string_to_array(u.eligible, ' '), model_version = $7, lines_version = $8, "
                "rule_version = $9, updated_at = now() "
                "from unnest($1::text[], $2::float8[], $3::float8[], $4::text[], $5::bigint[], $6::text[]) "
                "as u(family_id, predicted, rank_value, decile_basis, ranking_id, eligible) "
                "where f.family_id = u.family_id",
                [r.family_id for r in rows], [r.predicted for r in rows], [r.rank_value for r in rows],
                [r.decile_basis for r in rows], [r.ranking_id for r in rows], [" ".join(r.eligible) for r in rows],
                *cfg.versions)

    async def advance_replay(self, run_id: int, slice_no: int, cursor: str, examined: int, changed: int) -> None:
        await self.conn.execute(
            "update replay_slices set cursor = $3, examined = examined + $4, changed = changed + $5 "
            "where run_id = $1 and slice = $2", run_id, slice_no, cursor, examined, changed)

    async def finish_replay_slice(self, run_id: int, slice_no: int) -> None:
        await self.conn.execute("update replay_slices set finished_at = now() where run_id = $1 and slice = $2",
                                run_id, slice_no)

    async def finish_replay(self, run_id: int) -> bool:
        """The run is finished when all its slices are (returns whether it is)."""
        status = await self.conn.execute(
            f"update replay_runs r set finished_at = now(), updated_at = now(), outcome = 'finished', "
            f"examined = {_REPLAY_TOTAL.format('examined')}, changed = {_REPLAY_TOTAL.format('changed')} "
            "where id = $1 and finished_at is null and not exists "
            "(select 1 from replay_slices s where s.run_id = r.id and s.finished_at is null)", run_id)
        return status.endswith(" 1")

    # ------------------------------------------------------------ the area re-rank queue and re-rank requests

    async def next_area(self) -> tuple[str, datetime] | None:
        """The regency marked longest ago for an area re-rank, and when it was marked."""
        r = await self.conn.fetchrow("select regency, requested_at from rerank_areas order by requested_at limit 1")
        return None if r is None else (r["regency"], r["requested_at"])

    async def area_done(self, regency: str, requested_at: datetime) -> None:
        """The area re-rank of `regency` asked for at `requested_at` is done (a later request stays)."""
        await self.conn.execute("delete from rerank_areas where regency = $1 and requested_at <= $2",
                                regency, requested_at)

    async def next_request(self) -> tuple[int, str, str] | None:
        """The re-rank asked for longest ago and not done yet: (request id, scope, reason)."""
        r = await self.conn.fetchrow("select id, scope, reason from rerank_requests where done_at is null "
                                     "order by id limit 1")
        return None if r is None else (r["id"], r["scope"], r["reason"])

    async def request_done(self, request_id: int, run_id: int | None) -> None:
        await self.conn.execute("update rerank_requests set done_at = now(), run_id = $2 where id = $1",
                                request_id, run_id)

    async def last_scheduled(self) -> datetime | None:
        """When the schedule last asked for a re-rank; holds the schedule's lock until the transaction ends,
        so that two instances of the service do not both ask."""
        await self.conn.execute("select pg_advisory_xact_lock($1)", SCHEDULE_LOCK)
        return await self.conn.fetchval("select max(requested_at) from rerank_requests where reason = 'schedule'")

    async def request_rerank(self, scope: str, reason: str, requested_by: str) -> int:
        return await self.conn.fetchval(
            "insert into rerank_requests (scope, reason, requested_by) values ($1, $2, $3) returning id",
            scope, reason, requested_by)


# A replay run's families gone through (or re-published) so far: the sum over its slices (runs from before
# slices: their own counter).
_REPLAY_TOTAL = ("coalesce((select sum(s.{0}) from replay_slices s where s.run_id = r.id), 0)::bigint "
                 "+ case when exists (select 1 from replay_slices s where s.run_id = r.id) then 0 else r.{0} end")


class StatusStore:
    """What classify's status API (classify.api) shows of its own tables: how many families rest on which
    versions, the recent rankings and re-rank runs, the re-ranks and regencies waiting, the replay runs, and
    whether a re-rank or replay holds the lock now (ids, versions, counts and times only); and the one thing
    it writes: a request for a re-rank."""

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
            f"select id, model_version, lines_version, rule_version, {_REPLAY_TOTAL.format('examined')} as examined, "
            f"{_REPLAY_TOTAL.format('changed')} as changed, started_at, updated_at, finished_at, outcome "
            "from replay_runs r order by id desc limit $1", limit)
        return [dict(r) for r in rows]

    async def recent_reranks(self, limit: int) -> list[dict]:
        rows = await self.conn.fetch(
            "select id, scope, area, reason, model_version, ranked, examined, changed, skipped, started_at, "
            "updated_at, finished_at, outcome from rerank_runs order by id desc limit $1", limit)
        return [dict(r) for r in rows]

    async def reranks_waiting(self) -> list[dict]:
        """Re-ranks asked for (or scheduled) and not done yet."""
        rows = await self.conn.fetch("select id, scope, reason, requested_at from rerank_requests "
                                     "where done_at is null order by id")
        return [dict(r) for r in rows]

    async def request_rerank(self, scope: str, requested_by: str) -> int:
        """Asks the service for a re-rank of `scope` (its re-rank task does it); returns the request's id."""
        return await self.conn.fetchval(
            "insert into rerank_requests (scope, reason, requested_by) values ($1, 'request', $2) returning id",
            scope, requested_by)

    async def rerank_running(self) -> bool:
        """A re-rank or replay holds classify's lock (store.exclusive) in this database now."""
        return await self.conn.fetchval(
            "select exists (select 1 from pg_locks where locktype = 'advisory' and granted and classid = 0 "
            "and objid = $1 and objsubid = 1 and database = (select oid from pg_database "
            "where datname = current_database()))", LOCK)
