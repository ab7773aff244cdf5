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

One re-rank or replay runs at a time per database (an advisory lock). The commands
(rerank.py, replay.py) and the service's area re-rank task run them through the same
`Reclassifier`, built by app.py; all SQL is the store's (`RerankStore`).
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import asyncpg

from classify import store as stores
from classify.domain import Config, StoredFamily, fkp_note
from classify.publisher import Publisher
from classify.ranking import NATIONAL, Placement, Ranked, cutpoints, partition_of, rank_deciles
from classify.settings import ClassifySettings
from classify.store import RerankStore
from regsosek.background import run_forever
from regsosek.composition import unit_of_work
from regsosek.contracts import HouseholdProfile
from regsosek.db import Backoff, is_transient
from regsosek.messaging import Outbox

log = logging.getLogger("classify.areas")


class Busy(Exception):
    """Another re-rank or replay holds the lock."""


class StaleVersions(Exception):
    """Families classified with other versions than the configured ones: replay first."""

    def __init__(self, count: int, configured: tuple[str, str, str]) -> None:
        super().__init__(f"{count} families were classified with another model, lines or rules version than "
                         f"the configured {', '.join(configured)}; run `python -m classify.replay` first")
        self.count = count


def chunks(items: Sequence[str], size: int):
    for i in range(0, len(items), size):
        yield items[i:i + size]


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


@dataclass(frozen=True)
class Ranking:
    """One partition's ranking as a batch applies it."""

    id: int
    basis: str
    snapshot: dict[str, float]  # rank value of each family when ranked
    deciles: dict[str, int]


def sort_for_ranking(rows: Sequence[StoredFamily], ranking: Ranking) -> tuple[list[StoredFamily], list[StoredFamily], int]:
    """(same decile, moved, skipped: rank value changed after the ranking was taken)."""
    same, moved, skipped = [], [], 0
    for r in rows:
        if r.rank_value != ranking.snapshot[r.family_id]:
            skipped += 1
        elif ranking.deciles[r.family_id] == r.decile:
            same.append(r)
        else:
            moved.append(r)
    return same, moved, skipped


class Reclassifier:
    """Re-rank and replay with the configured model, lines and rules."""

    def __init__(self, config: Config, publisher: Publisher,
                 store_for: Callable[[asyncpg.Connection], RerankStore] = RerankStore) -> None:
        self.config = config
        self.publisher = publisher
        self.store_for = store_for

    async def _reclassify(self, store: RerankStore, outbox: Outbox, rows: list[StoredFamily],
                          placement_of: Callable[[StoredFamily], Placement] | None) -> int:
        """Classifies `rows` again (profile from the row) with the ranked placement `placement_of`, or
        (None, replay) provisionally; saves them, publishes those whose outcome changed; returns how many."""
        if not rows:
            return 0
        cfg = self.config
        ids = [r.family_id for r in rows]
        docs = await store.profiles(ids)
        fkp = await store.fkp_groups(ids)
        by_province: dict[str, Placement] = {}
        saves, changed = [], []
        for r in rows:
            p = HouseholdProfile.model_validate(docs[r.family_id])
            group = fkp.get(r.family_id)
            if placement_of is None:
                province = r.sls_id[:2]
                if province not in by_province:
                    by_province[province] = await store.placement_for(r.sls_id, cfg.model)
                placement = by_province[province]
                c = cfg.classify(p, group, placement)
                if c.rank_value == r.rank_value:  # same place among the others: keep its decile and basis
                    placement = Ranked(r.decile, r.decile_basis, r.ranking_id)
                    c = cfg.classify(p, group, placement)
            else:
                placement = placement_of(r)
                c = cfg.classify(p, group, placement)
            saves.append((p, c, placement.ranking_id, docs[r.family_id]))
            if c.outcome() != r.outcome():
                changed.append((p, c))
        await store.save_classifications(saves, cfg)
        seqs = await store.next_decision_seqs([p.family_id for p, _ in changed])
        for p, c in changed:
            self.publisher.classified(outbox, p, c, seqs[p.family_id])
        return len(changed)

    # ------------------------------------------------------------ re-rank

    async def rerank(self, pool: asyncpg.Pool, scope: str, *, area: str | None = None, batch_size: int = 500,
                     wait: bool = True, on_commit: Callable[[], None] | None = None) -> RerankReport:
        partition_of(scope, "00")  # validates the scope
        report = RerankReport(scope=scope, area=area)
        async with stores.exclusive(pool, wait=wait) as held:
            if not held:
                raise Busy()
            async with pool.acquire() as conn:
                store = self.store_for(conn)
                stale = await store.stale_count(self.config.versions)
                if stale:
                    raise StaleVersions(stale, self.config.versions)
                if area is not None:
                    partitions = [partition_of(scope, area)]
                elif scope == "national":
                    partitions = [NATIONAL]
                else:
                    partitions = await store.provinces()
            for p in partitions:
                await self._rerank_partition(pool, scope, p, area, batch_size, report, on_commit)
        return report

    async def _rerank_partition(self, pool: asyncpg.Pool, scope: str, partition: str, area: str | None,
                                batch_size: int, report: RerankReport, on_commit: Callable[[], None] | None) -> None:
        async with pool.acquire() as conn:
            store = self.store_for(conn)
            values = await store.rank_values(partition)
            if not values:
                return
            deciles = rank_deciles(values)
            ranking_id, ranked_at = await store.save_ranking(scope, partition, area, self.config.model.version,
                                                             len(values), cutpoints(values, deciles))
        ranking = Ranking(ranking_id, stores.ranked_basis(partition, ranked_at, len(values), area), dict(values), deciles)
        targets = sorted(fid for fid in ranking.snapshot if area is None or fid.startswith(area))
        report.ranked += len(values)
        report.partitions.append({"partition": partition, "ranking_id": ranking_id, "families": len(values),
                                  "applied_to": len(targets),
                                  "decile_sizes": dict(sorted(Counter(deciles.values()).items()))})
        for batch in chunks(targets, batch_size):
            async with unit_of_work(pool, "classify", on_commit) as uow:
                await self._apply_ranking(self.store_for(uow.conn), uow.outbox, batch, ranking, report)

    async def _apply_ranking(self, store: RerankStore, outbox: Outbox, batch: Sequence[str], ranking: Ranking,
                             report: RerankReport) -> None:
        same, moved, skipped = sort_for_ranking(await store.families_for_update(batch), ranking)
        # Same decile, same everything else (versions are the configured ones): only the basis is new.
        await store.set_bases([(r.family_id, ranking.basis + fkp_note(r.decile_basis)) for r in same], ranking.id)
        changed = await self._reclassify(store, outbox, moved, lambda r: Ranked(ranking.deciles[r.family_id],
                                                                                ranking.basis, ranking.id))
        report.skipped += skipped
        report.examined += len(same) + len(moved)
        report.changed += changed
        report.unchanged += len(same) + len(moved) - changed

    # ------------------------------------------------------------ replay

    async def replay(self, pool: asyncpg.Pool, *, batch_size: int = 500, max_batches: int | None = None,
                     on_commit: Callable[[], None] | None = None) -> ReplayReport:
        versions = self.config.versions
        async with stores.exclusive(pool):
            async with unit_of_work(pool, "classify") as uow:
                run = await self.store_for(uow.conn).start_replay(versions)
            report = ReplayReport(run_id=run.id, resumed=run.resumed, versions=versions,
                                  total_examined=run.examined, total_changed=run.changed)
            cursor = run.cursor
            while (max_batches is None or report.batches < max_batches) and not report.finished:
                async with unit_of_work(pool, "classify", on_commit) as uow:
                    cursor = await self._replay_batch(self.store_for(uow.conn), uow.outbox, cursor, batch_size, report)
        return report

    async def _replay_batch(self, store: RerankStore, outbox: Outbox, cursor: str, batch_size: int,
                            report: ReplayReport) -> str:
        """One batch after `cursor`, its progress recorded with it; returns the new cursor."""
        rows = await store.families_after_for_update(cursor, batch_size)
        if not rows:
            await store.finish_replay(report.run_id)
            report.finished = True
            return cursor
        stale = [r for r in rows if r.versions != self.config.versions]
        changed = await self._reclassify(store, outbox, stale, None)
        cursor = rows[-1].family_id
        await store.advance_replay(report.run_id, cursor, len(rows), changed)
        report.batches += 1
        report.examined += len(rows)
        report.reclassified += len(stale)
        report.changed += changed
        report.total_examined += len(rows)
        report.total_changed += changed
        return cursor


# ---------------------------------------------------------------- area re-ranks (the service's background task)


class AreaReranks:
    """Re-ranks, one at a time, the regencies FKP adjustments marked (rerank_areas)."""

    def __init__(self, reclassifier: Reclassifier, settings: ClassifySettings) -> None:
        self.reclassifier = reclassifier
        self.settings = settings

    async def run(self, pool: asyncpg.Pool, on_commit: Callable[[], None]) -> None:
        s = self.settings
        await run_forever("area re-rank", lambda: self.next_area(pool, on_commit),
                          backoff=Backoff(s.retry_initial_s, s.retry_max_s), expected=is_transient, logger=log)

    async def next_area(self, pool: asyncpg.Pool, on_commit: Callable[[], None]) -> None:
        """After a poll interval, re-ranks the regency marked longest ago, if any."""
        s = self.settings
        await asyncio.sleep(s.area_rerank_poll_s)
        async with pool.acquire() as conn:
            marked = await self.reclassifier.store_for(conn).next_area()
        if marked is None:
            return
        regency, requested_at = marked
        try:
            report = await self.reclassifier.rerank(pool, s.decile_scope, area=regency, batch_size=s.rerank_batch_size,
                                                    wait=False, on_commit=on_commit)
        except Busy:
            return  # a re-rank or replay is running; try again later
        except StaleVersions as e:
            log.warning("area re-rank waits for a replay", extra={"fields": {"regency": regency, "stale": e.count}})
            await asyncio.sleep(30 * s.area_rerank_poll_s)
            return
        async with pool.acquire() as conn:
            await self.reclassifier.store_for(conn).area_done(regency, requested_at)
        log.info("area re-ranked", extra={"fields": {"regency": regency, "changed": report.changed,
                                                     "examined": report.examined}})
