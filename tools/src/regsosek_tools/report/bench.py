"""The bench's reports: the verdict against issue 7's targets, the row for BENCHMARKS.md, and
the summary printed at the end of a run."""

from __future__ import annotations

from collections.abc import Sequence

from regsosek_tools.processes import PIPELINE as SERVICES
from regsosek_tools.report.plots import rerank_points, rss_spread

SCALED = SERVICES  # the services --instances multiplies (intake's instances behind load.http.Spread)

TARGETS = {
    "sustained_families_per_s": 5000.0,  # at least
    "p99_s_at_1000": 1.0,  # at most, at 1,000 families/s offered
    "replay_families_per_s": 20000.0,  # at least
    "rss_mb": 200.0,  # at most, per service process
    "ceiling_ratio": 0.5,  # at least
    "stored_ratio": 0.8,  # at least: families/s with 2,000,000 stored against the empty store's (issue 16)
    "rerank_families_per_s": 20000.0,  # at least, at the largest scope (issue 16, target 3)
    "rerank_rss_spread": 0.2,  # at most: classify's peak RSS from 100,000 to 5,000,000 families in the scope
}
STORED_TARGET_FAMILIES = 2_000_000
RERANK_SCOPE_SIZES = (100_000, 5_000_000)  # target 3: the same RSS (within 20%) from the one to the other
LATENCY_TARGET_RATE = 1000
MAIN_PHASES = ("throughput", "latency", "scale", "replay", "ceiling")  # in the run's main world (not brokers)


def sparkline(values: Sequence[float], width: int = 40) -> str:
    if not values:
        return ""
    bars = "▁▂▃▄▅▆▇█"
    if len(values) > width:  # max per bucket: a short spike stays visible
        step = len(values) / width
        values = [max(values[int(i * step):max(int(i * step) + 1, int((i + 1) * step))]) for i in range(width)]
    top = max(values)
    if top <= 0:
        return bars[0] * len(values)
    return "".join(bars[min(len(bars) - 1, int(v / top * (len(bars) - 1) + 0.5))] for v in values)


def fnum(v: float | None, digits: int = 0) -> str:
    if v is None:
        return "n/a"
    return f"{v:,.{digits}f}"


def meets(value: float | None, target: float, *, at_least: bool) -> bool | None:
    if value is None:
        return None
    return value >= target if at_least else value <= target


def mark(ok: bool | None) -> str:
    return {True: "✓", False: "✗", None: "–"}[ok]


def rate_entry(result: dict, rate: int) -> dict | None:
    return next((e for e in result.get("latency") or [] if e.get("rate") == rate), None)


def target_figures(result: dict) -> dict:
    """Each target's figure from a result, with whether it is met (None: not measured)."""
    tp = result.get("throughput") or {}
    sustained = tp.get("families_per_s")
    lat = rate_entry(result, LATENCY_TARGET_RATE)
    if "latency" not in result:
        p99, p99_ok, p99_note = None, None, "not run"
    elif lat is None:
        p99, p99_ok, p99_note = None, None, f"not run: {LATENCY_TARGET_RATE}/s not in --rates"
    elif lat.get("skipped"):
        p99, p99_ok, p99_note = None, False, f"not run: {lat['skipped']}"
    else:
        p99 = (lat.get("latency_s") or {}).get("p99")
        if lat.get("keeps_up"):
            p99_ok, p99_note = meets(p99, TARGETS["p99_s_at_1000"], at_least=False), ""
        else:
            p99_ok = False
            p99_note = (f"fell behind: {fnum(lat.get('accepted_rate'))}/s accepted, "
                        f"{lat.get('undelivered', 0)} undelivered")
    replay = result.get("replay") or {}
    rfps = replay.get("families_per_s") if replay.get("available") else None
    services = result.get("services") or {}
    rss = [(s.get("max_rss_mb"), name) for name, s in services.items()
           if name in SERVICES and s.get("max_rss_mb") is not None]
    rss_max, rss_who = max(rss) if rss else (None, "")
    ratio = (result.get("ceiling") or {}).get("ratio")
    return {
        "sustained": (sustained, meets(sustained, TARGETS["sustained_families_per_s"], at_least=True)),
        "p99": (p99, p99_ok, p99_note),
        "replay": (rfps, meets(rfps, TARGETS["replay_families_per_s"], at_least=True),
                   "" if replay.get("available") else (replay.get("reason") or "not run")),
        "rss": (rss_max, meets(rss_max, TARGETS["rss_mb"], at_least=False), rss_who),
        "ratio": (ratio, meets(ratio, TARGETS["ceiling_ratio"], at_least=True)),
    }


MARKDOWN_HEADER = (
    "| date | commit | machine | families | sustained families/s (≥ 5,000) | p99 at 1,000/s (≤ 1 s) "
    "| replay families/s (≥ 20,000) | max RSS per service (≤ 200 MB) | pipeline / ceiling (≥ 50%) "
    "| ceiling records/s | instances → families/s |\n"
    "|---|---|---|---|---|---|---|---|---|---|---|"
)


def markdown_row(result: dict) -> str:
    """One row for BENCHMARKS.md (columns as MARKDOWN_HEADER)."""
    b, m = result.get("bench") or {}, result.get("machine") or {}
    f = target_figures(result)
    sustained, ok = f["sustained"]
    p99, p99_ok, p99_note = f["p99"]
    replay, replay_ok, replay_note = f["replay"]
    rss, rss_ok, rss_who = f["rss"]
    ratio, ratio_ok = f["ratio"]
    cells = [
        b.get("date", ""),
        b.get("commit", ""),
        f"{m.get('nproc', '?')} CPU, {m.get('mem_gib', 0):.0f} GiB",
        fnum((result.get("throughput") or {}).get("families")),
        f"{fnum(sustained, 1)} {mark(ok)}",
        (f"{p99:.2f} s {mark(p99_ok)}" if p99 is not None else "n/a") + (f" ({p99_note})" if p99_note else ""),
        f"{fnum(replay)} {mark(replay_ok)}" if replay is not None else f"n/a ({replay_note})",
        f"{rss:.0f} MB {mark(rss_ok)} ({rss_who})" if rss is not None else "n/a",
        f"{ratio * 100:.1f}% {mark(ratio_ok)}" if ratio is not None else "n/a",
        fnum((result.get("ceiling") or {}).get("records_per_s")),
        ", ".join(f"{s['instances']} → {fnum(s.get('families_per_s'), 1)}" for s in result.get("scale") or []) or "n/a",
    ]
    return "| " + " | ".join(c.replace("|", "/") for c in cells) + " |"


def ratios(figures: Sequence[tuple[int, float | None]]) -> list[dict]:
    """Each configuration's families/s against the first one's, measured in the same run (the
    machine is shared: absolute figures drift between runs, ratios within one run much less)."""
    base = figures[0][1] if figures else None
    return [{"n": n, "families_per_s": fps, "ratio": fps / base if fps and base else None} for n, fps in figures]


COMPARISON_HEADER = (
    "| date | commit | machine | compared | families each | families/s | ratio to the first | load average (1 min) |\n"
    "|---|---|---|---|---|---|---|---|"
)


def comparison_rows(result: dict) -> list[str]:
    """Rows for BENCHMARKS.md (COMPARISON_HEADER): brokers 1 against 3, instances 1, 2, 3."""
    b, m = result.get("bench") or {}, result.get("machine") or {}
    rows = []
    for key, what, unit in (("brokers", "Kafka brokers", "broker(s)"),
                            ("scale", "instances of every service", "instance(s)"),
                            ("stored", "families already stored", "stored")):
        runs = result.get(key) or []
        rs = result.get(f"{key}_ratios") or []
        if not runs or not rs:
            continue
        load = m.get("loadavg_at_start") or []
        cells = [
            b.get("date", ""), b.get("commit", ""), f"{m.get('nproc', '?')} CPU, {m.get('mem_gib', 0):.0f} GiB", what,
            fnum(runs[0].get("families")),
            ", ".join(f"{fnum(r['n'])} {unit} → {fnum(r['families_per_s'], 1)}" for r in rs),
            ", ".join(f"{fnum(r['n'])}: {r['ratio']:.2f}" if r["ratio"] is not None else f"{fnum(r['n'])}: n/a"
                      for r in rs),
            _load(load, m.get("loadavg_at_end") or []),
        ]
        rows.append("| " + " | ".join(c.replace("|", "/") for c in cells) + " |")
    return rows


def _load(start: Sequence[float], end: Sequence[float]) -> str:
    """The 1-minute load average at the start of the run, and at its end when known."""
    if not start:
        return "n/a"
    return f"{start[0]:.1f} → {end[0]:.1f}" if end else f"{start[0]:.1f} at start"


def print_summary(r: dict) -> None:
    p = print
    b, m = r["bench"], r["machine"]
    p()
    world = b.get("world") or "one per broker count"
    p(f"Regsosek benchmark  {b['started_at']}  commit {b['commit']}  world {world}")
    p(f"  machine: {m['nproc']} CPU ({m['cpu']}), {m['mem_gib']:.1f} GiB, Python {m['python']}, Kafka {m['kafka']}; "
      f"load average at start {', '.join(f'{x:.2f}' for x in m['loadavg_at_start'])}")
    if b.get("interrupted"):
        p("  INTERRUPTED: partial results")
    main = any(k in r for k in MAIN_PHASES)
    for section in (_print_throughput, _print_latency, _print_scale, _print_brokers, _print_replay, _print_ceiling,
                    _print_budget, _print_rerank, _print_stored, _print_profiles, *((_print_targets,) if main else ())):
        section(r)
    if r.get("errors"):
        p()
        p(f"Problems ({len(r['errors'])}):")
        for e in r["errors"][:10]:
            p(f"  {e}")
    if main:
        p()
        p("Row for BENCHMARKS.md:")
        p(MARKDOWN_HEADER)
        p(r["markdown_row"])
    if r.get("comparison_rows"):
        p()
        p("Comparisons for BENCHMARKS.md:")
        p(COMPARISON_HEADER)
        for row in r["comparison_rows"]:
            p(row)


def _print_throughput(r: dict) -> None:
    p = print
    tp = r.get("throughput")
    if tp:
        p()
        p(f"Throughput: {tp['families']:,} families, POST /v1/interviews:batch ({tp['batch_size']} per request, "
          f"{tp['devices']} devices)")
        fps = tp.get("families_per_s") or tp.get("families_per_s_partial")
        p(f"  end to end      {fnum(fps, 1)} families/s  (first request -> last of {tp['decided_delivered']:,}/"
          f"{tp['decided_expected']:,} eligibility events at the receiver, {fnum(tp['span_s'], 1)} s"
          f"{'' if tp.get('families_per_s') else ', INCOMPLETE: ' + tp['ended']})")
        p(f"  intake accepted {fnum(tp.get('accepted_per_s'), 1)} families/s  ({tp['accepted']:,} accepted, "
          f"{tp['refused']} refused, {tp['failed_requests']} failed requests; generator CPU {tp['generator_cpu_s']} s)")
        _print_services(tp.get("per_service") or {}, r.get("services") or {})


def _print_latency(r: dict) -> None:
    p = print
    if r.get("latency"):
        p()
        p("Latency at fixed offered rates (single POST /v1/interviews, open loop): send -> eligibility event at the receiver")
        p(f"  {'offered':>8} {'sent/s':>8} {'accepted/s':>10} {'delivered':>13} {'p50':>7} {'p95':>7} {'p99':>7} "
          f"{'max':>7} {'p99*':>7} {'backlog':>8}  keeps up")
        for e in r["latency"]:
            if e.get("skipped"):
                p(f"  {e['rate']:>7}/s  skipped: {e['skipped']}")
                continue
            d = e["latency_s"]
            p(f"  {e['rate']:>7}/s {e['sent_rate']:>8.0f} {fnum(e['accepted_rate']):>10} "
              f"{e['delivered']:>6}/{e['decided_expected']:<6} {_s(d['p50']):>7} {_s(d['p95']):>7} {_s(d['p99']):>7} "
              f"{_s(d['max']):>7} {_s(e['latency_from_schedule_s']['p99']):>7} {e['backlog_at_window_end']:>8}  "
              + ("yes" if e["keeps_up"] else "NO: " + "; ".join(e["falls_behind_because"])))
        p("  (p99*: from when the schedule said to send, so including any wait for one of the "
          f"{r['bench']['args'].get('max_inflight')} connections;")
        p("   backlog: families sent in the window whose event had not reached the receiver when the window closed)")


def _print_scale(r: dict) -> None:
    p = print
    if r.get("scale"):
        p()
        p(f"Horizontal scale: instances of {', '.join(SCALED)} (intake's behind a round-robin spread; "
          f"{r['scale'][0].get('partitions')} partitions per topic)")
        rs = {q["n"]: q.get("ratio") for q in r.get("scale_ratios") or []}
        for s in r["scale"]:
            ps = s.get("per_service") or {}
            per = ", ".join(f"{k} {fnum((ps.get(k) or {}).get('consumed_per_s'))}/s" for k in SCALED)
            ratio = rs.get(s["instances"])
            p(f"  {s['instances']} instance(s): {fnum(s.get('families_per_s') or s.get('families_per_s_partial'), 1)} "
              f"families/s end to end ({s['families']:,} families{'' if s.get('families_per_s') else ', ' + s['ended']}"
              f"{'' if ratio is None else f'; {ratio:.2f} of the first'}); consumed {per}"
              f"{'' if s.get('groups_stable', True) else '; groups did not settle'}")


def _print_brokers(r: dict) -> None:
    p = print
    if r.get("brokers"):
        p()
        p("Brokers: the same families through a fresh world whose topics are on 1 or on all brokers of the cluster")
        for s, q in zip(r["brokers"], r.get("brokers_ratios") or [], strict=False):
            fps = s.get("families_per_s") or s.get("families_per_s_partial")
            p(f"  {s['brokers']} broker(s) (replication {s['brokers']}, min.insync.replicas {s['min_insync']}): "
              f"{fnum(fps, 1)} families/s end to end ({s['families']:,} families"
              f"{'' if s.get('families_per_s') else ', ' + s['ended']}); "
              + (f"{q['ratio']:.2f} of the first" if q.get("ratio") is not None else "no ratio"))


def _print_replay(r: dict) -> None:
    p = print
    rp = r.get("replay")
    if rp:
        p()
        if not rp.get("available"):
            p(f"Replay: not available ({rp.get('reason')})")
        elif rp.get("error"):
            p(f"Replay: FAILED ({rp['error']})")
        else:
            p(f"Replay (python -m classify.replay, rules version changed only): {fnum(rp['families_per_s'])} families/s "
              f"({rp['examined']:,} examined, {rp['reclassified']} classified again, {rp['republished']} re-published "
              f"in {rp['work_s']:.2f} s; {fnum(rp['families_per_s_wall'])}/s including {fnum(rp['startup_s'], 2)} s "
              f"start-up)")


def _print_ceiling(r: dict) -> None:
    p = print
    c = r.get("ceiling")
    if c:
        p()
        if c.get("error"):
            p(f"Ceiling: FAILED ({c['error']})")
        else:
            p(f"Ceiling (raw aiokafka, {c['records']:,} interview payloads, {c['hops']} hops, {c['partitions']} "
              f"partitions): {fnum(c['records_per_s'])} records/s end to end (producer alone "
              f"{fnum(c['produce_only_per_s'])}/s)")
            if c.get("ratio") is not None:
                p(f"  pipeline / ceiling = {fnum(c['pipeline_families_per_s'], 1)} / {fnum(c['records_per_s'])} = "
                  f"{100 * c['ratio']:.1f}%")


GROUP_LABELS = {"generator": "load generator (the bench process)", "kafka": "Kafka broker",
                "postgres": "PostgreSQL backends (statements)",
                "postgres-background": "PostgreSQL background processes", "receiver": "receiver",
                "intake": "intake (every worker)", "producer": "ceiling producer", "relay1": "ceiling relay 1",
                "relay2": "ceiling relay 2", "sink": "ceiling sink"}


def budget_lines(b: dict, unit: str) -> list[str]:
    """A CPU budget (measure.budget) as a table: CPU seconds, ms per `unit`, share, cores."""
    lines = [f"  {'process group':<38} {'CPU s':>7} {'ms/' + unit:>11} {'share':>6} {'cores':>6}"]
    rows = sorted(b.get("groups", {}).items(), key=lambda kv: -(kv[1].get("cpu_s") or 0))
    for g, r in rows:
        lines.append(f"  {GROUP_LABELS.get(g, g):<38} {fnum(r.get('cpu_s'), 2):>7} {fnum(r.get('ms_per_unit'), 2):>11} "
                     f"{_pct(r.get('share')):>6} {fnum(r.get('cores'), 2) if 'cores' in r else '':>6}")
    lines.append(f"  {'total':<38} {fnum(b.get('total_cpu_s'), 2):>7} {fnum(b.get('total_ms_per_unit'), 2):>11} "
                 f"{'100%':>6} {fnum(b.get('cores'), 2):>6}")
    if b.get("missing"):
        lines.append(f"  not measured (no running process found): {', '.join(b['missing'])}")
    return lines


def _pct(v: float | None) -> str:
    return "n/a" if v is None else f"{100 * v:.0f}%"


def _print_budget(r: dict) -> None:
    p = print
    tb = (r.get("throughput") or {}).get("cpu_budget")
    c = r.get("ceiling") or {}
    cb = c.get("cpu_budget")
    if not tb and not cb:
        return
    p()
    p("CPU budget (CPU seconds of each process group over the phase, from /proc; measure.budget)")
    if tb:
        p(f"  throughput: {fnum(tb['units'])} families, {fnum(tb['span_s'], 1)} s from the first request until every "
          "consumer group had caught up")
        for line in budget_lines(tb, "family"):
            p(line)
        if tb.get("machine_busy_cpu_s") is not None:
            p(f"  machine busy {fnum(tb['machine_busy_cpu_s'], 1)} CPU s over the phase, "
              f"{fnum(tb['outside_groups_cpu_s'], 1)} of them outside these groups (other work on the machine)")
        rpf = (r.get("throughput") or {}).get("records_per_family") or {}
        if rpf:
            p(f"  Kafka records written per family: {rpf['total']:.2f} ("
              + ", ".join(f"{t} {v:.2f}" for t, v in sorted(rpf.items(), key=lambda kv: -kv[1]) if t != "total") + ")")
    idle = r.get("idle_cpu")
    if idle and tb:
        fixed = fixed_ms_per_family(idle, tb)
        p(f"  idle ({fnum(idle['span_s'], 1)} s with nothing sent, everything running): "
          + ", ".join(f"{GROUP_LABELS.get(g, g).split(' (')[0]} {fnum(q.get('cores'), 3)}"
                      for g, q in sorted(idle["groups"].items(), key=lambda kv: -(kv[1].get("cores") or 0)))
          + f" cores; total {fnum(idle.get('cores'), 3)} cores = {fnum(fixed, 2)} of the "
          f"{fnum(tb['total_ms_per_unit'], 2)} ms per family at the phase's rate")
    if cb:
        p(f"  ceiling: {fnum(cb['units'])} records through {c.get('hops')} hops, {fnum(cb['span_s'], 1)} s")
        for line in budget_lines(cb, "record"):
            p(line)
        idle = {g: v for g, v in (cb.get("idle") or {}).items() if v}
        if idle:
            p("  (not the ceiling's: idle meanwhile " + ", ".join(f"{g} {v:.2f} s" for g, v in idle.items()) + ")")
    ratio = c.get("cpu_bound_ratio")
    if ratio is not None and tb and cb:
        p(f"  both CPU-bound on the same cores: pipeline / ceiling = {fnum(cb['total_ms_per_unit'], 2)} ms per record / "
          f"{fnum(tb['total_ms_per_unit'], 2)} ms per family = {100 * ratio:.1f}%, on any number of cores"
          + (f" (measured in this run {100 * c['ratio']:.1f}%)" if c.get("ratio") is not None else ""))
        p(f"  50% needs at most {fnum(2 * cb['total_ms_per_unit'], 2)} ms of CPU per family")


def fixed_ms_per_family(idle: dict, phase: dict) -> float | None:
    """The part of a phase's CPU per family that the running pipeline spends anyway (its idle cores
    over the phase's span, per family)."""
    cores, span, units = idle.get("cores"), phase.get("span_s"), phase.get("units")
    if cores is None or not span or not units:
        return None
    return 1000 * cores * span / units


def stored_verdict(result: dict) -> tuple[float | None, int | None, bool | None]:
    """Target 4: (ratio, families stored) of the largest stored step against the first (the empty
    store), and whether it is met; met is None when the largest step is below 2,000,000 stored."""
    rs = [q for q in result.get("stored_ratios") or [] if q.get("ratio") is not None]
    if len(rs) < 2:
        return None, None, None
    last = rs[-1]
    if last["n"] < STORED_TARGET_FAMILIES:
        return last["ratio"], last["n"], None
    return last["ratio"], last["n"], last["ratio"] >= TARGETS["stored_ratio"]


def _print_stored(r: dict) -> None:
    p = print
    if not r.get("stored"):
        return
    p()
    p("Families already stored (load.stored: COPY into every service's tables), then the throughput measurement")
    rs = {q["n"]: q.get("ratio") for q in r.get("stored_ratios") or []}
    for s in r["stored"]:
        fps = s.get("families_per_s") or s.get("families_per_s_partial")
        ratio = rs.get(s["stored_families"])
        load = s.get("load") or {}
        size = sum((s.get("database_bytes") or {}).values()) / 2**30
        loaded = (f"; loaded +{fnum(load['families'])} families, {fnum(load['rows'])} rows in {load['seconds']:.0f} s "
                  f"({fnum(load.get('rows_per_s'))} rows/s)" if load else "")
        p(f"  {fnum(s['stored_families']):>10} stored: {fnum(fps, 1)} families/s end to end ({s['families']:,} families"
          f"{'' if s.get('families_per_s') else ', ' + s['ended']}"
          f"{'' if ratio is None else f'; {ratio:.2f} of the first'}); databases {size:.2f} GiB{loaded}")
        io = s.get("database_io")
        if io:
            most = ", ".join(f"{q['table']} {fnum(q['blks_read'])}" for q in io["most_read"][:4])
            p(f"  {'':>10}   database a family: {io['blks_read_per_family']:.1f} blocks read from outside shared "
              f"buffers, {io['blks_hit_per_family']:.0f} found in them; WAL {io['wal_records_per_family']:.0f} "
              f"records, {io['wal_fpi_per_family']:.1f} full-page images, {fnum(io['wal_bytes_per_family'])} bytes"
              + (f"; most blocks read: {most}" if most else ""))
        for q in (s.get("statements") or [])[:5]:
            p(f"  {'':>10}   {q['exec_ms_per_family']:.3f} ms a family ({q['calls_per_family']:.2f} calls, "
              f"{q['blks_read_per_family']:.1f} blocks read) {q['database']}: {q['statement'][:90]}")
        seq = ", ".join(f"{q['table']} {fnum(q['seq_tup_read'])} rows in {q['seq_scan']}"
                        for q in (s.get("sequential_reads") or [])[:4])
        if seq:
            p(f"  {'':>10}   read by sequential scans during the step: {seq}")
    ratio, n, ok = stored_verdict(r)
    if ratio is not None:
        p(f"  {mark(ok)} target 4 (≥ {TARGETS['stored_ratio']:.0%} at {STORED_TARGET_FAMILIES:,} stored): {ratio:.0%} at "
          f"{n:,} stored" + ("" if ok is not None else " (below 2,000,000 stored: no verdict)"))


def rerank_verdicts(result: dict) -> dict:
    """Targets 2 and 3 from the rerank phase (None where not measured):
    "rerank": (families/s at the largest scope, its families, RSS spread smallest to largest, met) — met is
    None unless the sizes reach from 100,000 or fewer to 5,000,000 or more;
    "replay": (families/s of the largest replay, its families, its processes, met)."""
    points = (result.get("rerank") or {}).get("points") or []
    reranks = sorted((q for q in points if q.get("what") == "rerank"), key=lambda q: q["families"])
    replays = sorted((q for q in points if q.get("what") == "replay"), key=lambda q: q["families"])
    rerank: tuple = (None, None, None, None)
    if reranks:
        first, last = reranks[0], reranks[-1]
        spread = rss_spread(rerank_points(reranks))
        fast = last["families_per_s"] >= TARGETS["rerank_families_per_s"]
        spans = first["families"] <= RERANK_SCOPE_SIZES[0] and last["families"] >= RERANK_SCOPE_SIZES[1]
        ok = (fast and spread is not None and spread <= TARGETS["rerank_rss_spread"]) if spans else None
        rerank = (last["families_per_s"], last["families"], spread, ok)
    replay: tuple = (None, None, None, None)
    if replays:
        last = replays[-1]
        replay = (last["families_per_s"], last["families"], last.get("processes"),
                  meets(last["families_per_s"], TARGETS["replay_families_per_s"], at_least=True))
    return {"rerank": rerank, "replay": replay}


def _print_rerank(r: dict) -> None:
    p = print
    rr = r.get("rerank")
    if not rr:
        return
    p()
    if not rr.get("available") or rr.get("error"):
        p(f"Re-rank and replay at scale: {rr.get('reason') or 'FAILED (' + str(rr.get('error')) + ')'}")
        return
    p(f"Re-rank ({rr['scope']} scope) and replay at scale (python -m classify.rerank_bench: each size bulk-loaded)")
    for q in rr["points"]:
        startup = f"; {q['startup_seconds']:.2f} s of it start-up" if q.get("startup_seconds") is not None else ""
        p(f"  {q['what']:<7} {fnum(q['families']):>10} families: {fnum(q['families_per_s']):>7} families/s "
          f"({q['seconds']:.2f} s{startup}), peak RSS {q['peak_rss_mib']:.1f} MiB, {q['cpu_us_per_family']} µs "
          f"CPU a family (classify and database), load {q['load_average']:.1f}")
    v = rerank_verdicts(r)
    fps, n, spread, ok = v["rerank"]
    if fps is not None:
        sizes = f"{RERANK_SCOPE_SIZES[0]:,} to {RERANK_SCOPE_SIZES[1]:,}"
        p(f"  {mark(ok)} target 3 (re-rank ≥ {fnum(TARGETS['rerank_families_per_s'])} families/s, peak RSS within "
          f"{TARGETS['rerank_rss_spread']:.0%} from {sizes} families): {fnum(fps)}/s at {n:,}, RSS spread "
          + (f"{spread:.1%}" if spread is not None else "n/a")
          + ("" if ok is not None else f" (sizes do not span {sizes}: no verdict)"))
    fps, n, processes, ok = v["replay"]
    if fps is not None:
        p(f"  {mark(ok)} target 2 (replay ≥ {fnum(TARGETS['replay_families_per_s'])} families/s): {fnum(fps)}/s "
          f"at {n:,} families over {processes} processes")


def _print_profiles(r: dict) -> None:
    if r.get("profiles"):
        print()
        print("Flame graphs (py-spy record):")
        for e in r["profiles"]:
            where = e["svg"] or f"not written (rc {e['rc']}, see {e['log']})"
            print(f"  {e['phase']:<16} {e['instance']:<10} {where}")
    for path in r.get("plots") or []:
        print(f"Plot: {path}")


def _print_targets(r: dict) -> None:
    p = print
    p()
    p("Targets (issue 7)")
    f = target_figures(r)
    sustained, ok = f["sustained"]
    p(f"  {mark(ok)} sustained end to end ≥ 5,000 families/s: {fnum(sustained, 1)}")
    p99, p99_ok, note = f["p99"]
    p(f"  {mark(p99_ok)} p99 ≤ 1 s at 1,000 families/s: {_s(p99)}{' (' + note + ')' if note else ''}")
    rps, rok, rnote = f["replay"]
    p(f"  {mark(rok)} replay ≥ 20,000 families/s: {fnum(rps)}{' (' + rnote + ')' if rnote else ''}")
    rss, rssok, who = f["rss"]
    p(f"  {mark(rssok)} ≤ 200 MB RSS per service: max {fnum(rss)} MB ({who})")
    ratio, ratio_ok = f["ratio"]
    p(f"  {mark(ratio_ok)} pipeline ≥ 50% of the raw-Kafka ceiling: "
      + (f"{100 * ratio:.1f}%" if ratio is not None else "n/a"))


def _s(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.2f}s"


def _print_services(per: dict, mem: dict) -> None:
    p = print
    p(f"  {'service':<9} {'inst':>4} {'consumed/s':>11} {'peak 5s':>9} {'CPU %':>6} {'max RSS MB':>11} "
      f"{'HWM MB':>7}  lag (max; over the phase)")
    for svc in (*SERVICES, "receiver"):
        s = per.get(svc) or {}
        mm = mem.get(svc) or {}
        p(f"  {svc:<9} {s.get('instances', 1):>4} {fnum(s.get('consumed_per_s')):>11} "
          f"{fnum(s.get('peak_consumed_per_s_5s')):>9} {fnum(s.get('cpu_percent')):>6} "
          f"{fnum(mm.get('max_rss_mb')):>11} {fnum(mm.get('max_hwm_mb')):>7}  "
          + (f"{fnum(s.get('lag_max'))}" if s else ""))
    mach = per.get("_machine") or {}
    if mach.get("cpu_busy_percent_mean") is not None:
        p(f"  machine CPU busy {mach['cpu_busy_percent_mean']:.0f}% on average over the phase "
          "(everything: Kafka, PostgreSQL, services, generator)")


def print_lag(r: dict, phase: str = "throughput") -> None:
    series = r.get("lag_series") or {}
    rows = {svc: [v or 0 for t, ph, v in pts if ph == phase] for svc, pts in series.items()}
    if not any(rows.values()):
        return
    print(f"\nConsumer lag per group during {phase}, one sample a second (max):")
    for svc, vals in rows.items():
        print(f"  {svc:<9} {max(vals, default=0):>8,}  {sparkline(vals)}")
