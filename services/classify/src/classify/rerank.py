"""Re-rank the registered families into deciles and re-publish only what changed.

    python -m classify.rerank [--scope national|province] [--batch-size N] [--outbox-only] [--json]

Run it when collection or a consultation round closes. Every stored family of the
scope (the nation, or each province) is ranked by its rank value (predicted per-capita
consumption, bounded by an FKP decision's welfare group) into deciles of 10% each;
families whose welfare group, decile or programme eligibility changed get new
family-classified and eligibility-decided events through classify's outbox, the others
only a new decile basis ("ranked: <scope> at <time> among <n> families"). Families
classified afterwards are placed against this ranking's cut-points until the next one.

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
    print(f"re-rank ({r.scope}): {r.ranked} families ranked in {len(r.partitions)} partition(s)")
    for p in r.partitions:
        sizes = " ".join(f"{d}:{n}" for d, n in p["decile_sizes"].items())
        print(f"  {p['partition']}: ranking #{p['ranking_id']}, {p['families']} families; decile sizes {sizes}")
    print(f"  {r.changed} re-published (group, decile or eligibility changed), {r.unchanged} unchanged, "
          f"{r.skipped} skipped (changed while ranking)")


def main(argv: list[str] | None = None) -> int:
    settings = ClassifySettings()
    parser = argparse.ArgumentParser(prog="python -m classify.rerank", description=__doc__.split("\n\n")[0])
    parser.add_argument("--scope", choices=SCOPES, default=settings.decile_scope,
                        help="rank nationally or within each province (default %(default)s)")
    common_arguments(parser, settings)
    args = parser.parse_args(argv)
    return run(settings, args, lambda reclassify, pool, on_commit: reclassify.rerank(
                   pool, args.scope, batch_size=args.batch_size, on_commit=on_commit),
               show, what="re-rank")


if __name__ == "__main__":
    sys.exit(main())
