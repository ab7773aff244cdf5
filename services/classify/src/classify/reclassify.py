"""Re-rank and replay over the stored families, publishing only what changed.

**Re-rank** (`rerank`): ranks every stored family of a scope (the nation, each province or
each regency/city: the final ranking is per regency/city) by rank value into deciles of 10%
each. The ranking is taken by the database (window functions over the scope: store.py,
`RerankStore.start_rerank`) in one transaction that records a run, one ranking per partition
with its cut-points, and the snapshot of every family's ranked decile; Python never holds the
scope, only one page of it. The run then walks the snapshot in pages of family ids, one
transaction each:

- a family whose decile is unchanged gets the new decile basis without a write of its row: the
  ranking confirms it once the run's cursor passes it (migration 011, read through the
  database's `placed(...)`); only a family whose basis was still provisional is written, in one
  statement per page; nothing is published;
- a family whose decile moved is classified again with the ranked decile (welfare group
  and every programme decision recomputed) and, since its decile changed, its
  family-classified and eligibility-decided go out through the outbox;
- a family whose rank value changed after the ranking was taken (a new interview
  version or an FKP decision arrived meanwhile) is left as its handler placed it.

Each page commits its rows, its events and the run's cursor together: a re-rank killed
mid-way is taken up by the next re-rank of the same scope (and area) after its last
committed page, with the same ranking (`restart` drops it and ranks afresh instead). Starting
or taking up a run supersedes any other unfinished one (of another scope or area): only the
newest ranking's pages are ever applied.

An *area* re-rank (after an FKP adjustment) ranks the area's whole partition the same way but
applies the result to one regency's families only; the rest keep theirs until the
next full re-rank. A re-rank refuses to run while any family was classified with
another model, lines or rules version than the configured ones: replay first.

**Replay** (`replay`, `replay_slice`): after the model, poverty lines or rules files change,
classifies again, in family id order and in batches, every family computed with other
versions. The run's families are split by family id into slices (one per process the
command spreads it over); each slice has its own cursor. A family keeps its decile when its
rank value did not change, else it is placed against the cut-points of the latest ranking
(or the model's reference). Only families whose welfare group, decile or any programme's
eligibility changed are published; every row records the new versions. A batch is read in
one statement (profiles and FKP groups included) and decided by `replay_domain.ReplayJudge`
from the stored profile documents, without building models: the families whose outcome
stays are written in one statement (`RerankStore.restate`); only those whose outcome changed
are classified the per-family way (`Config.classify`) and published. Each batch commits
its rows, its events and its slice's cursor together, so an interrupted replay resumes
every slice after its last committed batch.

One re-rank or replay runs at a time per database (an advisory lock). The commands
(rerank.py, replay.py) and the service's re-rank task (asked for, scheduled, FKP areas) run
them through the same `Reclassifier`, built by app.py; all SQL is the store's (`RerankStore`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import asyncpg

from classify import schedule
from classify import store as stores
from classify.domain import Config, StoredFamily
from classify.model import features
from classify.publisher import Publisher
from classify.ranking import Placement, Ranked, partition_of, rank_value
from classify.replay_domain import ReplayJudge
from classify.store import ReplaySlice, RerankRun, RerankStore
from regsosek.background import run_forever
from regsosek.contracts import HouseholdProfile, WelfareGroup
from regsosek.db import Backoff, is_transient
from regsosek.messaging import Outbox
from regsosek.messaging.unit_of_work import unit_of_work

if TYPE_CHECKING:
    from classify.settings import ClassifySettings

log = logging.getLogger("classify.areas")


class Busy(Exception):
    """Another re-rank or replay holds the lock."""


class StaleVersions(Exception):
    """Families classified with other versions than the configured ones: replay first."""

    def __init__(self, count: int, configured: tuple[str, str, str]) -> None:
        super().__init__(f"{count} families were classified with another model, lines or rules version than "
                         f"the configured {', '.join(configured)}; run `python -m classify.replay` first")
        self.count = count


@dataclass
class RerankReport:
    scope: str
    area: str | None = None
    run_id: int | None = None
    resumed: bool = False  # an interrupted run taken up again (its ranking as taken then)
    finished: bool = False
    partitions: list[dict] = field(default_factory=list)
    ranked: int = 0  # families in the rankings
    examined: int = 0  # families the ranking was applied to (by this invocation)
    changed: int = 0  # re-published
    unchanged: int = 0
    skipped: int = 0  # rank value changed after the ranking was taken
    pages: int = 0

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
    slices: int = 1

    def as_dict(self) -> dict:
        return dict(self.__dict__)

    def add(self, part: ReplayReport) -> None:
        """Counts of one slice's work (another process's) added to this run's report."""
        for k in ("examined", "reclassified", "changed", "batches", "total_examined", "total_changed"):
            setattr(self, k, getattr(self, k) + getattr(part, k))


def value_of(cfg: Config, p: HouseholdProfile, group: WelfareGroup | None) -> float:
    """The family's rank value under `cfg` (what `Config.classify` ranks it by), without classifying it: a
    replay classifies each family once, with its placement decided first."""
    predicted, _ = cfg.model.predict(features(p), p.regency)
    return rank_value(predicted, group, p.sls_id, cfg.lines)


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
        by_regency: dict[str, Placement] = {}
        saves, changed = [], []
        for r in rows:
            p = HouseholdProfile.model_validate(docs[r.family_id])
            group = fkp.get(r.family_id)
            placement: Placement
            if placement_of is None:
                if value_of(cfg, p, group) == r.rank_value:  # same place among the others: keep decile and basis
                    placement = Ranked(r.decile, r.decile_basis, r.ranking_id)
                else:
                    regency = r.sls_id[:4]
                    if regency not in by_regency:
                        by_regency[regency] = await store.placement_for(r.sls_id, cfg.model)
                    placement = by_regency[regency]
            else:
                placement = placement_of(r)
            c = cfg.classify(p, group, placement)
            saves.append((r.family_id, c, placement.ranking_id))
            if c.outcome() != r.outcome():
                changed.append((p, c))
        await store.reclassified(saves, cfg)
        seqs = await store.next_decision_seqs([p.family_id for p, _ in changed])
        for p, c in changed:
            self.publisher.classified(outbox, p, c, seqs[p.family_id])
        return len(changed)

    # ------------------------------------------------------------ re-rank

    async def rerank(self, pool: asyncpg.Pool, scope: str, *, area: str | None = None, batch_size: int = 2000,
                     wait: bool = True, on_commit: Callable[[], None] | None = None, reason: str = "command",
                     restart: bool = False, max_pages: int | None = None) -> RerankReport:
        """Ranks the scope (or takes up its interrupted run) and applies the ranking in pages of
        `batch_size` families; stops after `max_pages` pages if given (the next re-rank resumes)."""
        partition_of(scope, area or "0000")  # validates the scope
        async with stores.exclusive(pool, wait=wait) as held:
            if not held:
                raise Busy()
            async with unit_of_work(pool, "classify") as uow:
                run = await self._start(self.store_for(uow.conn), scope, area, reason, restart)
                rankings = await self.store_for(uow.conn).rerank_rankings(run.id)
            report = RerankReport(scope=scope, area=area, run_id=run.id, resumed=run.resumed, ranked=run.ranked)
            report.partitions = [{"partition": r.partition, "ranking_id": r.ranking_id, "families": r.families,
                                  "decile_sizes": r.decile_sizes} for r in rankings]
            cursor: str | None = run.cursor
            while cursor is not None and (max_pages is None or report.pages < max_pages):
                async with unit_of_work(pool, "classify", on_commit) as uow:
                    cursor = await self._apply_page(self.store_for(uow.conn), uow.outbox, run, cursor, batch_size,
                                                    report)
            report.finished = cursor is None
        return report

    async def _start(self, store: RerankStore, scope: str, area: str | None, reason: str, restart: bool) -> RerankRun:
        """The interrupted run of the scope and area to take up, or a new run with its ranking taken."""
        stale = await store.stale_count(self.config.versions)
        if stale:
            raise StaleVersions(stale, self.config.versions)
        run = await store.unfinished_rerank(scope, area)
        others = [i for i in await store.unfinished_rerank_ids() if run is None or i != run.id]
        if run is not None and (restart or run.model_version != self.config.model.version
                                or any(i > run.id for i in others) or await store.rerank_snapshot_lost(run.id)):
            await store.close_rerank(run.id, "superseded")
            run = None
        # one unfinished run at a time: a family's basis is that of the newest ranking that confirmed it
        # (migration 011), so no page of an older ranking may be applied after a newer one's
        for other in others:
            await store.close_rerank(other, "superseded")
        return run or await store.start_rerank(scope, area, reason, self.config.model.version)

    async def _apply_page(self, store: RerankStore, outbox: Outbox, run: RerankRun, cursor: str, batch_size: int,
                          report: RerankReport) -> str | None:
        """Applies the page after `cursor`; returns the new cursor (None: the run is finished)."""
        page = await store.rerank_page(run.id, cursor, batch_size)
        if page is None:
            await store.close_rerank(run.id, "finished")
            return None
        ranked = {r.family_id: placement for r, placement in page.moved}
        changed = await self._reclassify(store, outbox, [r for r, _ in page.moved], lambda r: ranked[r.family_id])
        examined = page.unchanged + len(page.moved)
        await store.advance_rerank(run.id, page.last, examined, changed, examined - changed, page.skipped)
        report.pages += 1
        report.skipped += page.skipped
        report.examined += examined
        report.changed += changed
        report.unchanged += examined - changed
        return page.last

    # ------------------------------------------------------------ replay

    async def start_replay(self, pool: asyncpg.Pool, slices: int) -> tuple[ReplayReport, list[ReplaySlice]]:
        """The replay run to the configured versions (resumed, or new and split into `slices` slices)
        and its slices. Call holding the lock (`stores.exclusive`)."""
        async with unit_of_work(pool, "classify") as uow:
            store = self.store_for(uow.conn)
            run = await store.start_replay(self.config.versions)
            parts = await store.replay_slices(run.id, slices)
        report = ReplayReport(run_id=run.id, resumed=run.resumed, versions=self.config.versions,
                              total_examined=run.examined, total_changed=run.changed, slices=len(parts))
        return report, parts

    async def finish_replay(self, pool: asyncpg.Pool, report: ReplayReport) -> None:
        async with pool.acquire() as conn:
            report.finished = await self.store_for(conn).finish_replay(report.run_id)

    async def replay(self, pool: asyncpg.Pool, *, batch_size: int = 500, max_batches: int | None = None,
                     on_commit: Callable[[], None] | None = None) -> ReplayReport:
        """A replay in this process: every slice of the run in turn."""
        async with stores.exclusive(pool):
            report, slices = await self.start_replay(pool, 1)
            for s in slices:
                if not s.finished:
                    report.add(await self.replay_slice(pool, report, s, batch_size=batch_size,
                                                       max_batches=max_batches, on_commit=on_commit))
            await self.finish_replay(pool, report)
        return report

    async def replay_slice(self, pool: asyncpg.Pool, run: ReplayReport, s: ReplaySlice, *, batch_size: int,
                           max_batches: int | None = None, on_commit: Callable[[], None] | None = None) -> ReplayReport:
        """Goes through one slice of the run (in the process the command gave it to; the command holds the
        lock); returns this slice's counts."""
        part = ReplayReport(run_id=run.run_id, resumed=run.resumed, versions=run.versions)
        cursor: str | None = s.cursor
        judge = ReplayJudge(self.config)
        placements: dict[str, Placement] = {}  # regency -> placement (rankings do not change: the lock is held)
        while cursor is not None and (max_batches is None or part.batches < max_batches):
            async with unit_of_work(pool, "classify", on_commit) as uow:
                cursor = await self._replay_batch(self.store_for(uow.conn), uow.outbox, s, cursor, batch_size, part,
                                                  judge, placements)
        return part

    async def _replay_batch(self, store: RerankStore, outbox: Outbox, s: ReplaySlice, cursor: str, batch_size: int,
                            report: ReplayReport, judge: ReplayJudge, placements: dict[str, Placement]) -> str | None:
        """One batch of the slice after `cursor`, its progress recorded with it; returns the new cursor
        (None: the slice is finished). Families whose outcome stays are written together (`restate`);
        those whose outcome changes are classified the per-family way and published."""
        last, examined, stale = await store.replay_page(cursor, batch_size, s.upper, self.config.versions)
        if last is None:
            await store.finish_replay_slice(s.run_id, s.slice)
            return None
        for regency in {r.sls_id[:4] for r in stale} - placements.keys():
            placements[regency] = await store.placement_for(regency, self.config.model)
        restated, other = [], []
        for r in stale:
            try:
                same = judge.judge(r, lambda sls: placements[sls[:4]])
            except (KeyError, TypeError, ValueError):  # a document this path does not read: the per-family way
                same = None
            if same is None:
                other.append(StoredFamily(r.family_id, r.sls_id, r.rank_value, r.decile, r.decile_basis,
                                          r.ranking_id, r.welfare_group, r.eligibility, ("", "", ""),
                                          r.member_eligibility))
            else:
                restated.append(same)
        judge.forget_lines()
        await store.restate(restated, self.config)
        changed = await self._reclassify(store, outbox, other, None)
        await store.advance_replay(s.run_id, s.slice, last, examined, changed)
        report.batches += 1
        report.examined += examined
        report.reclassified += len(stale)
        report.changed += changed
        report.total_examined += examined
        report.total_changed += changed
        return last


# ---------------------------------------------------------------- the service's re-ranks (its background task)


def reclassifier(config: Config) -> Reclassifier:
    """The reclassifier of an operator command or replay worker: its own publisher for `config`."""
    return Reclassifier(config, Publisher(config))


class RerankTasks:
    """The service's re-ranks, one at a time: those asked for (POST /v1/reranks), the schedule's
    (`rerank_schedule`, at `decile_scope`) and the area re-ranks FKP adjustments marked (rerank_areas).
    A re-rank interrupted (the service stopped, the pod killed) is taken up by the next one of its scope."""

    def __init__(self, reclassifier: Reclassifier, settings: ClassifySettings,
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self.reclassifier = reclassifier
        self.settings = settings
        self.clock = clock

    async def run(self, pool: asyncpg.Pool, on_commit: Callable[[], None]) -> None:
        s = self.settings
        await run_forever("re-rank", lambda: self.next_rerank(pool, on_commit),
                          backoff=Backoff(s.retry_initial_s, s.retry_max_s), expected=is_transient, logger=log)

    async def next_rerank(self, pool: asyncpg.Pool, on_commit: Callable[[], None]) -> None:
        """After a poll interval: asks for the scheduled re-rank if due, then does the re-rank asked for longest
        ago, else the area re-rank of the regency marked longest ago, if any."""
        s = self.settings
        await asyncio.sleep(s.area_rerank_poll_s)
        async with unit_of_work(pool, "classify") as uow:
            store = self.reclassifier.store_for(uow.conn)
            if schedule.due(s.rerank_schedule, await store.last_scheduled(), self.clock()):
                await store.request_rerank(s.decile_scope, "schedule", "schedule")
            request = await store.next_request()
        if request is not None:
            await self.requested(pool, on_commit, *request)
        else:
            await self.next_area(pool, on_commit)

    async def _rerank(self, pool: asyncpg.Pool, on_commit: Callable[[], None], **how) -> RerankReport | None:
        """A re-rank at `decile_scope` unless `how` says otherwise; None when it cannot run now."""
        s = self.settings
        try:
            return await self.reclassifier.rerank(pool, how.pop("scope", s.decile_scope), wait=False,
                                                  batch_size=s.rerank_page_size, on_commit=on_commit, **how)
        except Busy:
            return None  # a re-rank or replay is running; try again later
        except StaleVersions as e:
            log.warning("re-rank waits for a replay", extra={"fields": {"stale": e.count}})
            await asyncio.sleep(30 * s.area_rerank_poll_s)
            return None

    async def requested(self, pool: asyncpg.Pool, on_commit: Callable[[], None], request_id: int, scope: str,
                        reason: str) -> None:
        report = await self._rerank(pool, on_commit, scope=scope, reason=reason)
        if report is None:
            return
        async with pool.acquire() as conn:
            await self.reclassifier.store_for(conn).request_done(request_id, report.run_id)
        log.info("re-ranked", extra={"fields": {"scope": scope, "reason": reason, "changed": report.changed,
                                                "examined": report.examined, "resumed": report.resumed}})

    async def next_area(self, pool: asyncpg.Pool, on_commit: Callable[[], None]) -> None:
        async with pool.acquire() as conn:
            marked = await self.reclassifier.store_for(conn).next_area()
        if marked is None:
            return
        regency, requested_at = marked
        report = await self._rerank(pool, on_commit, area=regency, reason="fkp")
        if report is None:
            return
        async with pool.acquire() as conn:
            await self.reclassifier.store_for(conn).area_done(regency, requested_at)
        log.info("area re-ranked", extra={"fields": {"regency": regency, "changed": report.changed,
                                                     "examined": report.examined}})
