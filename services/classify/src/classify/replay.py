"""Replay the stored families with the configured model, poverty lines and rules.

    python -m classify.replay [--processes P] [--batch-size N] [--max-batches K] [--outbox-only] [--json]

After pointing REGSOSEK_PMT_MODEL_FILE / POVERTY_LINES_FILE / RULES_FILE at new files
(and restarting the service with them), this classifies again every family computed
with other versions and publishes family-classified and eligibility-decided only for
those whose welfare group, decile or any programme's eligibility changed. A new replay
splits the families by family id into SLICES_PER_PROCESS slices of about as many families for each of
--processes (default REGSOSEK_REPLAY_PROCESSES; bounds from the planner's statistics, or counted along
the primary key: `RerankStore.slice_bounds`); each process takes the next slice not yet taken and goes
through it in id order, one
transaction per batch, with the slice's cursor in the database (replay_slices):
interrupted (or stopped by --max-batches, per process), the next invocation with the same
versions resumes every slice after its last committed batch (with the slices it had).
Decile placement stays provisional; run `python -m classify.rerank` afterwards for ranked
deciles.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import multiprocessing
import sys
from collections.abc import Awaitable, Callable
from concurrent.futures import ProcessPoolExecutor
from typing import TYPE_CHECKING

import asyncpg

from classify import store as stores
from classify.commands import common_arguments, run
from classify.domain import Config
from classify.reclassify import Reclassifier, ReplayReport, reclassifier
from classify.settings import ClassifySettings
from classify.store import ReplaySlice, RerankStore
from regsosek import db

if TYPE_CHECKING:
    from regsosek.progress import Progress

# A worker process is spawned: a new interpreter, which imports this module again (as the parent's main
# module) before its first slice, while the replay's other processes go on alone. So this module, and the
# command's parts it imports, import neither the web framework nor the Kafka client (not classify.app):
# 0.7 s against 1.5 s on the development machine. A test holds it to that.

PROGRESS_POLL_S = 2.0
# Slices a new replay is split into, per process. More slices than processes let this process, whose
# interpreter and modules are ready, go on taking slices while the others start (each new process
# starts an interpreter and imports this module: ~0.7 s on this machine, a fifth of a 100,000-family replay).
SLICES_PER_PROCESS = 4
def show(r: ReplayReport) -> None:
    state = "finished" if r.finished else "stopped (run again to resume)"
    print(f"replay #{r.run_id} to {', '.join(r.versions)}{' (resumed)' if r.resumed else ''} "
          f"in {r.slices} slice(s): {state}")
    print(f"  this run: {r.examined} families examined, {r.reclassified} classified again, "
          f"{r.changed} re-published (group, decile or eligibility changed)")
    print(f"  whole replay: {r.total_examined} examined, {r.total_changed} re-published")


async def in_processes(dsn: str, reclassify: Reclassifier, pool: asyncpg.Pool, p: Progress,
                       processes: int, batch_size: int, max_batches: int | None) -> ReplayReport:
    """The replay with its unfinished slices shared by up to `processes` processes: this one and each of
    the others take the next slice nobody has taken until none is left (this one starts at once; the
    others once their interpreter is up). This one also holds the lock, follows the progress in the
    database and finishes the run when every slice is done."""
    async with stores.exclusive(pool):
        report, slices = await reclassify.start_replay(pool, processes * SLICES_PER_PROCESS)
        todo = [s for s in slices if not s.finished]
        loop = asyncio.get_running_loop()
        with ProcessPoolExecutor(max_workers=max(1, min(processes - 1, len(todo) - 1)),
                                 mp_context=multiprocessing.get_context("spawn")) as workers:

            async def here(s: ReplaySlice, most: int | None) -> ReplayReport:
                return await reclassify.replay_slice(pool, report, s, batch_size=batch_size, max_batches=most)

            async def elsewhere(s: ReplaySlice, most: int | None) -> ReplayReport:
                return await loop.run_in_executor(workers, replay_slice, dsn, reclassify.config, report, s,
                                                  batch_size, most)

            lanes = [here] + [elsewhere] * min(processes - 1, len(todo) - 1)
            parts = asyncio.gather(*(take_slices(lane, todo, max_batches) for lane in lanes))
            while not parts.done():
                await asyncio.wait([parts], timeout=PROGRESS_POLL_S)
                async with pool.acquire() as conn:
                    p.advance_to(await RerankStore(conn).replay_examined(reclassify.config.versions))
            for lane_parts in parts.result():
                for part in lane_parts:
                    report.add(part)
        await reclassify.finish_replay(pool, report)
    return report


async def take_slices(go_through: Callable[[ReplaySlice, int | None], Awaitable[ReplayReport]], todo: list[ReplaySlice],
                      max_batches: int | None) -> list[ReplayReport]:
    """One process's share: the next slice of `todo` (shared by every lane of this event loop) until none
    is left or, with `max_batches`, until this process has gone through that many batches."""
    parts: list[ReplayReport] = []
    left = max_batches
    while todo and (left is None or left > 0):
        part = await go_through(todo.pop(0), left)
        parts.append(part)
        if left is not None:
            left -= part.batches
    return parts


GC_THRESHOLD = (50_000, 20, 100)  # container allocations between young collections, ...


def collect_less() -> None:
    """The cyclic garbage collector's settings for a replay process. A batch's decoded documents (hundreds of
    thousands of small dicts and lists) live until the batch is written and are then freed by reference
    counting; at the default threshold (700 allocations) the collector traversed them again and again while a
    batch was read, which took half of the reading's CPU (16 of 30 µs a family, measured). Everything imported
    so far is frozen out of its sight, and young collections run about once a batch instead."""
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLD)


def replay_slice(dsn: str, config: Config, run: ReplayReport, s: ReplaySlice, batch_size: int,
                 max_batches: int | None) -> ReplayReport:
    """One slice, in a process of its own (its own pool and event loop; its reclassifier built once)."""
    collect_less()

    async def main() -> ReplayReport:
        pool = await db.connect_pool(dsn, max_size=1)
        try:
            return await worker_reclassifier(config).replay_slice(
                pool, run, s, batch_size=batch_size, max_batches=max_batches)
        finally:
            await pool.close()
    return asyncio.run(main())


_worker: Reclassifier | None = None  # a worker process's, built at its first slice


def worker_reclassifier(config: Config) -> Reclassifier:
    """The reclassifier of a worker process: built once, at its first slice (every slice of a run has the
    same configuration: the command's)."""
    global _worker
    if _worker is None:
        _worker = reclassifier(config)
    return _worker


def main(argv: list[str] | None = None) -> int:
    settings = ClassifySettings()
    parser = argparse.ArgumentParser(prog="python -m classify.replay", description=__doc__.split("\n\n")[0])
    common_arguments(parser, settings.rerank_batch_size)
    parser.add_argument("--max-batches", type=int, default=None,
                        help="stop after this many batches per process (the next run resumes)")
    parser.add_argument("--processes", type=int, default=settings.replay_processes,
                        help="processes a new replay is split over, by family id range (default %(default)s)")
    args = parser.parse_args(argv)
    if args.processes < 1:
        parser.error("--processes must be at least 1")
    collect_less()

    def work(reclassify: Reclassifier, pool: asyncpg.Pool, on_commit, p: Progress):
        if args.processes == 1:
            return reclassify.replay(pool, batch_size=args.batch_size, max_batches=args.max_batches,
                                     on_commit=on_commit)
        return in_processes(settings.dsn(), reclassify, pool, p, args.processes, args.batch_size, args.max_batches)
    return run(settings, args, work, show, what="replay", count=families_and_resumed)


async def families_and_resumed(store: RerankStore, cfg: Config) -> tuple[int, int]:
    """All families; of them, those an unfinished replay to the same versions already went through."""
    return await store.family_count(), await store.replay_examined(cfg.versions)


if __name__ == "__main__":
    sys.exit(main())
