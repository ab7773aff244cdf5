"""Replay the stored families with the configured model, poverty lines and rules.

    python -m classify.replay [--batch-size N] [--max-batches K] [--outbox-only] [--json]

After pointing REGSOSEK_PMT_MODEL_FILE / POVERTY_LINES_FILE / RULES_FILE at new files
(and restarting the service with them), this classifies again every family computed
with other versions and publishes family-classified and eligibility-decided only for
those whose welfare group, decile or any programme's eligibility changed. It walks the
families in id order, one transaction per batch, with its cursor in the database
(replay_runs): interrupted (or stopped by --max-batches), the next invocation with the
same versions resumes after the last committed batch. Decile placement stays
provisional; run `python -m classify.rerank` afterwards for ranked deciles.
"""

from __future__ import annotations

import argparse
import sys

from classify.commands import common_arguments, run
from classify.domain import Config
from classify.reclassify import ReplayReport
from classify.settings import ClassifySettings
from classify.store import RerankStore


def show(r: ReplayReport) -> None:
    state = "finished" if r.finished else "stopped (run again to resume)"
    print(f"replay #{r.run_id} to {', '.join(r.versions)}{' (resumed)' if r.resumed else ''}: {state}")
    print(f"  this run: {r.examined} families examined, {r.reclassified} classified again, "
          f"{r.changed} re-published (group, decile or eligibility changed)")
    print(f"  whole replay: {r.total_examined} examined, {r.total_changed} re-published")


def main(argv: list[str] | None = None) -> int:
    settings = ClassifySettings()
    parser = argparse.ArgumentParser(prog="python -m classify.replay", description=__doc__.split("\n\n")[0])
    common_arguments(parser, settings)
    parser.add_argument("--max-batches", type=int, default=None,
                        help="stop after this many batches (the next run resumes)")
    args = parser.parse_args(argv)
    return run(settings, args, lambda reclassify, pool, on_commit: reclassify.replay(
                   pool, batch_size=args.batch_size, max_batches=args.max_batches, on_commit=on_commit),
               show, what="replay", count=families_and_resumed)


async def families_and_resumed(store: RerankStore, cfg: Config) -> tuple[int, int]:
    """All families; of them, those an unfinished replay to the same versions already went through."""
    return await store.family_count(), await store.replay_examined(cfg.versions)


if __name__ == "__main__":
    sys.exit(main())
