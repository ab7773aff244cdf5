"""Re-rank the registered families into deciles and re-publish only what changed.

    python -m classify.rerank [--scope national|province|regency] [--batch-size N] [--restart]
                              [--max-pages K] [--outbox-only] [--json]

Run it when collection or a consultation round closes (the service also re-ranks on its
schedule, REGSOSEK_RERANK_SCHEDULE, and when asked: POST /v1/reranks). Every stored family
of the scope (the nation, each province, or each regency/city: the final ranking is per
regency/city) is ranked by its rank value (predicted per-capita consumption, bounded by an
FKP decision's welfare group) into deciles of 10% each, in the database; families whose
welfare group, decile or programme eligibility changed get new family-classified and
eligibility-decided events through classify's outbox, the others only a new decile basis
("ranked: <scope> at <time> among <n> families"). Families classified afterwards are
placed against this ranking's cut-points until the next one.

The ranking is applied in pages of --batch-size families, each committed with the run's
cursor: a re-rank interrupted (killed, or stopped by --max-pages) is taken up, with the
ranking it took, by the next re-rank of the same scope; --restart ranks afresh instead.

Reads the same REGSOSEK_* environment as the service (database, topic prefix, model,
lines and rules files); refuses (exit 2) while families computed with other versions
remain: run `python -m classify.replay` first. See reclassify.py for the details.
"""

from __future__ import annotations

import argparse
import sys

from classify.commands import common_arguments, run
from classify.ranking import SCOPES
from classify.reclassify import RerankReport
from classify.settings import ClassifySettings


def show(r: RerankReport) -> None:
    state = "finished" if r.finished else "stopped (run again to resume)"
    print(f"re-rank #{r.run_id} ({r.scope}){' (resumed)' if r.resumed else ''}: {state}; {r.ranked} families "
          f"ranked in {len(r.partitions)} partition(s)")
    for p in r.partitions[:20]:
        sizes = " ".join(f"{d}:{n}" for d, n in p["decile_sizes"].items())
        print(f"  {p['partition']}: ranking #{p['ranking_id']}, {p['families']} families; decile sizes {sizes}")
    if len(r.partitions) > 20:
        print(f"  ... and {len(r.partitions) - 20} more partitions")
    print(f"  {r.changed} re-published (group, decile or eligibility changed), {r.unchanged} unchanged, "
          f"{r.skipped} skipped (changed while ranking)")


def main(argv: list[str] | None = None) -> int:
    settings = ClassifySettings()
    parser = argparse.ArgumentParser(prog="python -m classify.rerank", description=__doc__.split("\n\n")[0])
    parser.add_argument("--scope", choices=SCOPES, default=settings.decile_scope,
                        help="rank nationally, within each province or within each regency/city "
                             "(default %(default)s)")
    parser.add_argument("--restart", action="store_true",
                        help="drop an interrupted re-rank of this scope and rank afresh instead of resuming it")
    parser.add_argument("--max-pages", type=int, default=None,
                        help="stop after this many pages (the next re-rank of the scope resumes)")
    common_arguments(parser, settings.rerank_page_size)
    args = parser.parse_args(argv)
    return run(settings, args, lambda reclassify, pool, on_commit, _progress: reclassify.rerank(
                   pool, args.scope, batch_size=args.batch_size, on_commit=on_commit, restart=args.restart,
                   max_pages=args.max_pages),
               show, what="re-rank")


if __name__ == "__main__":
    sys.exit(main())
