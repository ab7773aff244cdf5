"""Re-rank and replay over the stored families, publishing only what changed.

**Re-rank** (`rerank`): ranks every stored family of a scope (the nation, or each
province) by rank value into deciles of 10% each (ranking.py), records the ranking
and its cut-points, then walks the families in batches of one transaction each:

- a family whose decile is unchanged gets the new decile basis, nothing is published;
- a family whose decile moved is classified again with the ranked decile (welfare group
  and every programme decision recomputed) and, since its decile changed, its
  family-classified and eligibility-decided go out through the outbox;
- a family whose rank value changed after the ranking was taken (a new interview
  version or an FKP decision arrived meanwhile) is left as its handler placed it.

An *area* re-rank (after an FKP adjustment) ranks the whole scope the same way but
applies the result to one regency's families only; the rest keep theirs until the
next full re-rank. A re-rank refuses to run while any family was classified with
another model, lines or rules version than the configured ones: replay first.

**Replay** (`replay`): after the model, poverty lines or rules files change, classifies
again, in family id order and in batches, every family computed with other versions.
A family keeps its decile when its rank value did not change, else it is placed against
the cut-points of the latest ranking (or the model's reference). Only families whose
welfare group, decile or any programme's eligibility changed are published; every row
records the new versions. Each batch commits its rows, its events and the run's
cursor together, so an interrupted replay resumes after the last committed batch.

One re-rank or replay runs at a time per database (an advisory lock).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field

import asyncpg

from classify import store
from classify.domain import fkp_note
from classify.ranking import NATIONAL, Placement, Ranked, cutpoints, partition_of, rank_deciles
from classify.store import SOURCE, Config
from regsosek.contracts import HouseholdProfile
from regsosek.messaging import Outbox, RelayWakeup
from regsosek.messaging.relay import RELAY_LOCK, OutboxRelay, make_producer
from regsosek.settings import ServiceSettings

LOCK = 7316101  # one re-rank or replay at a time in a classify database


class Busy(Exception):
    """Another re-rank or replay holds the lock."""


class StaleVersions(Exception):
    """Families classified with other versions than the configured ones: replay first."""

    def __init__(self, count: int, configured: tuple[str, str, str]) -> None:
        super().__init__(f"{count} families were classified with another model, lines or rules version than "
                         f"the configured {', '.join(configured)}; run `python -m classify.replay` first")
        self.count = count


@contextlib.asynccontextmanager
async def exclusive(pool: asyncpg.Pool, *, wait: bool = True) -> AsyncIterator[None]:
    async with pool.acquire() as conn:
        if wait:
            await conn.execute("select pg_advisory_lock($1)", LOCK)
        elif not await conn.fetchval("select pg_try_advisory_lock($1)", LOCK):
            raise Busy()
        try:
            yield
        finally:
            if not conn.is_closed():
                await conn.execute("select pg_advisory_unlock($1)", LOCK)


def chunks(items: Sequence[str], size: int):
    for i in range(0, len(items), size):
        yield items[i:i + size]


async def stale_count(conn: asyncpg.Connection, cfg: Config) -> int:
    return await conn.fetchval(
        "select count(*) from families where model_version <> $1 or lines_version <> $2 or rule_version <> $3",
        *cfg.versions,
    )


_ROW = ("select family_id, sls_id, version, rank_value, decile, decile_basis, ranking_id, welfare_group, eligibility, "
        "model_version, lines_version, rule_version from families")


async def _reclassify(conn: asyncpg.Connection, cfg: Config, outbox: Outbox, rows: list[asyncpg.Record],
                      placements: Callable[[asyncpg.Record], Placement] | None,
                      provisional: bool = False) -> int:
    """Classifies `rows` again (profile from the row), saves them, publishes those whose
    outcome changed; returns how many changed."""
    if not rows:
        return 0
    ids = [r["family_id"] for r in rows]
    docs = await store.profiles(conn, ids)
    fkp = await store.fkp_groups(conn, ids)
    by_province: dict[str, Placement] = {}
    saves: list[tuple] = []
    changed: list[tuple] = []
    for r in rows:
        fid = r["family_id"]
        p = HouseholdProfile.model_validate(docs[fid])
        if provisional:
            prov = r["sls_id"][:2]
            if prov not in by_province:
                by_province[prov] = await store.placement_for(conn, r["sls_id"], cfg.model)
            placement = by_province[prov]
            c = cfg.classify(p, fkp.get(fid), placement)
            if c.rank_value == r["rank_value"]:  # same place among the others: keep its decile and basis
                placement = Ranked(r["decile"], r["decile_basis"], r["ranking_id"])
                c = cfg.classify(p, fkp.get(fid), placement)
        else:
            assert placements is not None
            placement = placements(r)
            c = cfg.classify(p, fkp.get(fid), placement)
        saves.append(store.save_args(p, c, cfg, placement.ranking_id, docs[fid]))
        if c.outcome() != store.stored_outcome(r):
            changed.append((p, c))
    await store.save_many(conn, saves)
    seqs = await store.next_decision_seqs(conn, [p.family_id for p, _ in changed])
    for p, c in changed:
        store.publish(outbox, p, c, cfg, seqs[p.family_id])
    await outbox.flush(conn)
    return len(changed)


# ---------------------------------------------------------------- re-rank


@dataclass
class RerankReport:
    scope: str
    area: str | None = None
    partitions: list[dict] = field(default_factory=list)
    ranked: int = 0  # families in the rankings
    examined: int = 0  # families the ranking was applied to
    changed: int = 0  # re-published
    unchanged: int = 0
    skipped: int = 0  # rank value changed after the ranking was taken

    def as_dict(self) -> dict:
        return dict(self.__dict__)


async def rerank(pool: asyncpg.Pool, cfg: Config, scope: str, *, area: str | None = None, batch_size: int = 500,
                 wait: bool = True, on_commit: Callable[[], None] | None = None) -> RerankReport:
    partition_of(scope, "00")  # validates the scope
    report = RerankReport(scope=scope, area=area)
    async with exclusive(pool, wait=wait):
        async with pool.acquire() as conn:
            stale = await stale_count(conn, cfg)
            if stale:
                raise StaleVersions(stale, cfg.versions)
            if area is not None:
                partitions = [partition_of(scope, area)]
            elif scope == "national":
                partitions = [NATIONAL]
            else:
                partitions = [r[0] for r in await conn.fetch("select distinct substr(sls_id, 1, 2) from families order by 1")]
        for p in partitions:
            await _rerank_partition(pool, cfg, scope, p, area, batch_size, report, on_commit)
    return report


async def _rerank_partition(pool: asyncpg.Pool, cfg: Config, scope: str, partition: str, area: str | None,
                            batch_size: int, report: RerankReport, on_commit: Callable[[], None] | None) -> None:
    async with pool.acquire() as conn:
        if partition == NATIONAL:
            rows = await conn.fetch("select family_id, rank_value from families")
        else:
            rows = await conn.fetch("select family_id, rank_value from families where substr(sls_id, 1, 2) = $1",
                                    partition)
        values = [(r[0], r[1]) for r in rows]
        if not values:
            return
        deciles = rank_deciles(values)
        ranking = await conn.fetchrow(
            "insert into rankings (scope, partition, area, model_version, families, cutpoints) "
            "values ($1, $2, $3, $4, $5, $6) returning id, ranked_at",
            scope, partition, area, cfg.model.version, len(values), cutpoints(values, deciles),
        )
    basis = store.ranked_basis(partition, ranking["ranked_at"], len(values), area)
    snapshot = dict(values)
    targets = sorted(fid for fid in snapshot if area is None or fid.startswith(area))
    report.ranked += len(values)
    report.partitions.append({"partition": partition, "ranking_id": ranking["id"], "families": len(values),
                              "applied_to": len(targets),
                              "decile_sizes": dict(sorted(Counter(deciles.values()).items()))})

    def ranked(r: asyncpg.Record) -> Placement:
        return Ranked(deciles[r["family_id"]], basis, ranking["id"])

    for batch in chunks(targets, batch_size):
        async with pool.acquire() as conn, conn.transaction():
            rows = await conn.fetch(_ROW + " where family_id = any($1::text[]) order by family_id for update", batch)
            same, moved = [], []
            for r in rows:
                fid = r["family_id"]
                if r["rank_value"] != snapshot[fid]:
                    report.skipped += 1
                elif deciles[fid] == r["decile"]:
                    same.append(r)
                else:
                    moved.append(r)
            if same:
                # Same decile, same everything else (versions are the configured ones): only the basis is new.
                await conn.executemany(
                    "update families set decile_basis = $2, ranking_id = $3, updated_at = now() where family_id = $1",
                    [(r["family_id"], basis + fkp_note(r["decile_basis"]), ranking["id"]) for r in same],
                )
            changed = await _reclassify(conn, cfg, Outbox(SOURCE), moved, ranked)
            report.examined += len(same) + len(moved)
            report.changed += changed
            report.unchanged += len(same) + len(moved) - changed
        if on_commit:
            on_commit()


# ---------------------------------------------------------------- replay


@dataclass
class ReplayReport:
    run_id: int
    resumed: bool
    versions: tuple[str, str, str]
    examined: int = 0  # families looked at by this invocation
    reclassified: int = 0  # of those, computed with other versions and so classified again
    changed: int = 0  # re-published
    batches: int = 0
    finished: bool = False
    total_examined: int = 0  # over the whole run, resumed invocations included
    total_changed: int = 0

    def as_dict(self) -> dict:
        return dict(self.__dict__)


async def replay(pool: asyncpg.Pool, cfg: Config, *, batch_size: int = 500, max_batches: int | None = None,
                 on_commit: Callable[[], None] | None = None) -> ReplayReport:
    async with exclusive(pool):
        async with pool.acquire() as conn, conn.transaction():
            runs = await conn.fetch("select * from replay_runs where finished_at is null order by id")
            run = next((r for r in runs if (r["model_version"], r["lines_version"], r["rule_version"]) == cfg.versions),
                       None)
            for r in runs:
                if r is not run:
                    await conn.execute("update replay_runs set finished_at = now(), outcome = 'superseded' "
                                       "where id = $1", r["id"])
            resumed = run is not None
            if run is None:
                run = await conn.fetchrow(
                    "insert into replay_runs (model_version, lines_version, rule_version) values ($1, $2, $3) "
                    "returning *", *cfg.versions)
        report = ReplayReport(run_id=run["id"], resumed=resumed, versions=cfg.versions,
                              total_examined=run["examined"], total_changed=run["changed"])
        cursor = run["cursor"]
        while max_batches is None or report.batches < max_batches:
            async with pool.acquire() as conn, conn.transaction():
                rows = await conn.fetch(_ROW + " where family_id > $1 order by family_id limit $2 for update",
                                        cursor, batch_size)
                if not rows:
                    await conn.execute("update replay_runs set finished_at = now(), updated_at = now(), "
                                       "outcome = 'finished' where id = $1", report.run_id)
                    report.finished = True
                    break
                stale = [r for r in rows
                         if (r["model_version"], r["lines_version"], r["rule_version"]) != cfg.versions]
                changed = await _reclassify(conn, cfg, Outbox(SOURCE), stale, None, provisional=True)
                cursor = rows[-1]["family_id"]
                await conn.execute(
                    "update replay_runs set cursor = $2, examined = examined + $3, changed = changed + $4, "
                    "updated_at = now() where id = $1", report.run_id, cursor, len(rows), changed)
            report.batches += 1
            report.examined += len(rows)
            report.reclassified += len(stale)
            report.changed += changed
            report.total_examined += len(rows)
            report.total_changed += changed
            if on_commit:
                on_commit()
    return report


# ---------------------------------------------------------------- publishing from a command


async def drain_outbox(pool: asyncpg.Pool, settings: ServiceSettings, timeout: float = 120.0) -> int:
    """Publishes the outbox to Kafka from this process, or, when a running classify
    service is the relay, waits until it has. Returns the rows this process published."""
    deadline = time.monotonic() + timeout
    async with pool.acquire() as conn:
        if await conn.fetchval("select pg_try_advisory_lock($1)", RELAY_LOCK):
            relay = OutboxRelay(settings, lambda: pool, RelayWakeup())
            relay.producer = make_producer(settings.kafka_bootstrap, settings)
            await relay.producer.start()
            try:
                total = 0
                while n := await relay.publish_once(conn):
                    total += n
                return total
            finally:
                await conn.execute("select pg_advisory_unlock($1)", RELAY_LOCK)
                await relay.stop()
        while await conn.fetchval("select count(*) from outbox"):
            if time.monotonic() > deadline:
                raise TimeoutError(f"the outbox was not emptied within {timeout:.0f}s")
            await asyncio.sleep(0.2)
    return 0
