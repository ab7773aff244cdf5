"""The runner's summary (python -m regsosek_tools.run): outcomes against the sample's expectations,
welfare groups and deciles, eligibility, the receiver, throughput and latency."""

from __future__ import annotations

from regsosek_tools.measure.stats import percentile

GROUP_NAMES = {1: "sangat miskin", 2: "miskin", 3: "rentan miskin", 4: "tidak miskin"}


def dist(values: list[float]) -> dict:
    return {"n": len(values), "p50": percentile(values, 50), "p99": percentile(values, 99),
            "max": max(values) if values else None}


def print_report(rep: dict, notify: bool) -> None:
    p = print
    p()
    p(f"Regsosek pipeline run  seed {rep['seed']}: {rep['families']} families in {rep['sls']} SLS")
    p(f"  rosters       {rep['rosters']}")
    p(f"  interviews    {rep['receipts']}  via {rep['via']}")
    p(f"  final states  {rep['final']}")
    p()
    p(f"  {'verification outcome':<26}{'actual':>8}{'expected':>10}{'matched':>9}")
    for k, row in rep["outcomes"].items():
        p(f"  {k:<26}{row['actual']:>8}{row['expected']:>10}{row['matched']:>9}")
    p(f"  expectations met: {rep['expectations_matched']}/{rep['families']}")
    for m in rep["mismatches"][:10]:
        p(f"    mismatch {m['family_id']}: expected {m['expected']}, got {m['actual']}")
    if len(rep["mismatches"]) > 10:
        p(f"    ... and {len(rep['mismatches']) - 10} more")
    p()
    _print_decisions(rep, notify)
    p()
    _print_timing(rep)
    if rep["errors"]:
        p(f"  errors ({len(rep['errors'])}):")
        for e in rep["errors"][:10]:
            p(f"    {e}")
    if rep["not_final"]:
        p(f"  NOT FINAL ({len(rep['not_final'])}): {', '.join(rep['not_final'][:10])}")


def _print_decisions(rep: dict, notify: bool) -> None:
    p = print
    decided = sum(rep["welfare_groups"].values()) or 1
    p("  welfare groups (decided families)")
    for g, n in rep["welfare_groups"].items():
        p(f"    {g} {GROUP_NAMES.get(g, ''):<14}{n:>6}  {100 * n / decided:5.1f}%")
    p("  deciles")
    top = max(rep["deciles"].values(), default=1)
    for d in range(1, 11):
        n = rep["deciles"].get(d, 0)
        p(f"    {d:>2} {n:>6}  {'#' * round(40 * n / top)}")
    p("  eligible per programme (intake journeys)")
    p("    " + ", ".join(f"{k} {v}" for k, v in rep["eligible_by_programme"].items()))
    if notify and "receiver" in rep:
        r = rep["receiver"]
        p("  eligible per programme (receiver, this sample)")
        p("    " + ", ".join(f"{k} {v}" for k, v in rep["receiver_eligible_by_programme"].items()))
        p(f"  receiver: {r.get('received', 0)} events received, {r.get('unique', 0)} unique, "
          f"{r.get('duplicates', 0)} duplicates, {r.get('out_of_order', 0)} out of order, {r.get('families', 0)} families, "
          f"{r.get('messages', 0)} messages; new decisions missing: {len(r['new_decided_missing'])}/{r['new_decided_families']}")


def _print_timing(rep: dict) -> None:
    p = print
    if rep["span_s"]:
        replays = " - replays of an earlier run, not a measure" if not rep["observed_latency_s"]["n"] else ""
        p(f"  throughput    {rep['throughput_families_per_s']:.1f} families/s "
          f"({rep['families']} in {rep['span_s']:.1f} s, first submit -> last final state{replays})")
    if rep["pipeline_span_s"]:
        p(f"                {rep['pipeline_throughput_families_per_s']:.1f} families/s by the services' timestamps "
          f"(first receipt -> last decision, {rep['pipeline_span_s']:.1f} s)")
    lat, obs, dl = rep["latency_s"], rep["observed_latency_s"], rep["delivery_latency_s"]
    if lat["n"]:
        p(f"  latency       receipt -> final state: p50 {lat['p50']:.2f} s, p99 {lat['p99']:.2f} s, max {lat['max']:.2f} s "
          f"over {lat['n']} new submissions (services' timestamps)")
    if obs["n"]:
        p(f"                submit -> final state observed: p50 {obs['p50']:.2f} s, p99 {obs['p99']:.2f} s "
          f"(by polling, {rep['status_polls']} status requests, backing off to {rep['poll_max_s']} s)")
    if dl["n"]:
        p(f"                decision -> at the receiver: p50 {dl['p50']:.2f} s, p99 {dl['p99']:.2f} s")
    if not obs["n"]:
        p("  latency       n/a (no new submissions: all were replays of an earlier run)")
    p(f"  this runner used {rep['runner_cpu_s']} s of CPU (it shares the machine with the services)")
