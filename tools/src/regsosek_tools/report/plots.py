"""The bench's plots (PNG, matplotlib's headless Agg backend), for BENCHMARKS.md:

- throughput against families stored, from the stored phase of one or more bench runs
  (python -m regsosek_tools.bench --stored 0,200000,2000000 writes it with --plots);
- re-rank time and classify's RSS against the scope's size, from a re-rank measurement's JSON.

    python -m regsosek_tools.report.plots --bench .local/bench/20261201T060000Z.json --out docs/bench
    python -m regsosek_tools.report.plots --rerank .local/bench/rerank.json --out docs/bench

The re-rank JSON is what `python -m classify.rerank_bench --json FILE` writes: a list of
measurements, or an object with a "points" (or "scopes", "runs", "results") list. Each gives the
scope's size ("families", "scope_families", "scope_size" or "n"), the duration in seconds
("seconds", "rerank_s", "elapsed_s", "wall_s" or "duration_s") and the peak RSS in MiB
("peak_rss_mib", "max_rss_mb", "rss_mb", "peak_rss_mb", "rss_peak_mb"; or "max_rss_kb", "rss_kb"
in KiB); optionally "what" ("rerank" or "replay"), "scope" and "processes", which name the line a
point belongs to. An object may add "label", "commit" and "date" for the title.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

STORED_TARGET = 0.8  # issue 16, target 4: throughput with 2,000,000 stored >= 80% of the empty store's
RSS_SPREAD_TARGET = 0.2  # target 3: classify's RSS within 20% whatever the scope's size
THROUGHPUT_PNG = "throughput-vs-stored.png"
RERANK_PNG = "rerank-vs-scope.png"

SIZE_KEYS = ("families", "scope_families", "scope_size", "n")
SECONDS_KEYS = ("seconds", "rerank_s", "elapsed_s", "wall_s", "duration_s")
RSS_MB_KEYS = ("peak_rss_mib", "max_rss_mb", "rss_mb", "peak_rss_mb", "rss_peak_mb")
RSS_KB_KEYS = ("max_rss_kb", "rss_kb")


@dataclass(frozen=True)
class StoredPoint:
    stored: int
    families_per_s: float
    per_core: float | None = None  # families/s per core of service CPU (the four services summed)


@dataclass(frozen=True)
class RerankPoint:
    families: int
    seconds: float | None
    rss_mb: float | None
    series: str = "re-rank"  # e.g. "re-rank national", "replay ×4 processes"


def stored_series(result: dict) -> tuple[str, list[StoredPoint]]:
    """A bench result's stored phase as (label, points by families stored)."""
    b = result.get("bench") or {}
    points = [StoredPoint(int(s["stored_families"]), float(s["families_per_s"]), per_service_core(s))
              for s in result.get("stored") or [] if s.get("families_per_s") and s.get("stored_families") is not None]
    return f"{b.get('date', '?')} {b.get('commit', '?')}", sorted(points, key=lambda p: p.stored)


def per_service_core(step: dict) -> float | None:
    """A step's families/s per core of service CPU: on a shared machine, what a family costs the
    services, whatever share of the CPU they got."""
    from regsosek_tools.processes import PIPELINE

    cpu = sum((step.get("per_service") or {}).get(s, {}).get("cpu_percent") or 0.0 for s in PIPELINE)
    return step["families_per_s"] / (cpu / 100) if cpu > 0 and step.get("families_per_s") else None


def _first(d: dict, keys: Sequence[str]) -> float | None:
    return next((float(d[k]) for k in keys if d.get(k) is not None), None)


def rerank_points(doc: dict | list) -> list[RerankPoint]:
    """A re-rank measurement's points (the formats in the module's docstring), by scope size."""
    items = doc
    if isinstance(doc, dict):
        items = next((doc[k] for k in ("points", "scopes", "runs", "results") if isinstance(doc.get(k), list)), [doc])
    out = []
    for p in items:
        size = _first(p, SIZE_KEYS)
        if size is None:
            raise ValueError(f"a re-rank point without its scope size ({' or '.join(SIZE_KEYS)}): {sorted(p)}")
        rss = _first(p, RSS_MB_KEYS)
        if rss is None and (kb := _first(p, RSS_KB_KEYS)) is not None:
            rss = kb / 1024
        out.append(RerankPoint(int(size), _first(p, SECONDS_KEYS), rss, _series(p)))
    return sorted(out, key=lambda p: (p.series, p.families))


def _series(p: dict) -> str:
    what = {"rerank": "re-rank", "replay": "replay"}.get(str(p.get("what") or "rerank"), str(p.get("what")))
    parts = [what] + ([str(p["scope"])] if p.get("scope") and what == "re-rank" else [])
    if p.get("processes") and what == "replay":
        parts.append(f"×{p['processes']} processes")
    return " ".join(parts)


def rss_spread(points: Sequence[RerankPoint], series: str | None = None) -> float | None:
    """(largest RSS - smallest) / smallest over the points (of one series): target 3 wants at most 0.2."""
    rss = [p.rss_mb for p in points if p.rss_mb and (series is None or p.series == series)]
    return (max(rss) - min(rss)) / min(rss) if len(rss) >= 2 else None


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # headless: no display, files only
    import matplotlib.pyplot as plt

    return plt


def plot_throughput_vs_stored(series: Sequence[tuple[str, Sequence[StoredPoint]]], path: Path, *,
                              machine: str = "") -> Path:
    """Sustained families/s against families already stored, one line per run, with the target
    (80% of that run's empty-store figure) dashed."""
    plt = _pyplot()
    with_cost = any(p.per_core for _, points in series for p in points)
    fig, axes = plt.subplots(1, 2 if with_cost else 1, figsize=(12 if with_cost else 8, 4.5), dpi=110, squeeze=False)
    ax = axes[0][0]
    for label, points in series:
        if not points:
            continue
        xs, ys = [p.stored for p in points], [p.families_per_s for p in points]
        line, = ax.plot(xs, ys, marker="o", label=label)
        ax.axhline(STORED_TARGET * ys[0], color=line.get_color(), linestyle="--", linewidth=1,
                   label=f"{label}: {STORED_TARGET:.0%} of {xs[0]:,} stored")
        for x, y in zip(xs, ys, strict=True):
            ax.annotate(f"{y / ys[0]:.0%}", (x, y), textcoords="offset points", xytext=(0, 7), ha="center", fontsize=8)
    ax.set_xlabel("families already stored")
    ax.set_ylabel("sustained families/s end to end")
    ax.set_ylim(bottom=0)
    ax.xaxis.set_major_formatter(_thousands())
    ax.set_title("Throughput against families stored" + (f" ({machine})" if machine else ""), fontsize=10)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    if with_cost:
        cost = axes[0][1]
        for label, points in series:
            pts = [p for p in points if p.per_core]
            cost.plot([p.stored for p in pts], [p.per_core for p in pts], marker="o", label=label)
        cost.set_xlabel("families already stored")
        cost.set_ylabel("families/s per core of service CPU")
        cost.set_ylim(bottom=0)
        cost.xaxis.set_major_formatter(_thousands())
        cost.set_title("What a family costs the services (their CPU)", fontsize=10)
        cost.grid(True, alpha=0.3)
        cost.legend(fontsize=8)
    return _save(fig, plt, path)


def plot_rerank(points: Sequence[RerankPoint], path: Path, *, label: str = "") -> Path:
    """Re-rank duration and classify's peak RSS against the scope's size (log scale), side by side."""
    plt = _pyplot()
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.4), dpi=110)
    xs = sorted({p.families for p in points})
    for name in dict.fromkeys(p.series for p in points):
        mine = [p for p in points if p.series == name]
        timed = [(p.families, p.seconds) for p in mine if p.seconds is not None]
        left.plot([x for x, _ in timed], [s for _, s in timed], marker="o", label=name)
        rss = [(p.families, p.rss_mb) for p in mine if p.rss_mb is not None]
        line, = right.plot([x for x, _ in rss], [m for _, m in rss], marker="o", label=name)
        if rss and name.startswith("re-rank"):
            base = rss[0][1]
            right.axhspan(base * (1 - RSS_SPREAD_TARGET), base * (1 + RSS_SPREAD_TARGET), color=line.get_color(),
                          alpha=0.08, label=f"{name}: ±{RSS_SPREAD_TARGET:.0%} of the smallest scope's")
    left.set_ylabel("seconds (wall)")
    right.set_ylabel("peak RSS (MiB)")
    right.set_ylim(bottom=0)
    for ax in (left, right):
        ax.set_xscale("log")
        ax.set_xlabel("families in the scope")
        ax.grid(True, alpha=0.3, which="both")
        ax.legend(fontsize=7)
        if xs:
            from matplotlib.ticker import NullFormatter

            ax.set_xticks(xs)
            ax.xaxis.set_major_formatter(_thousands())
            ax.xaxis.set_minor_formatter(NullFormatter())  # the scopes' sizes only, not 3×10⁴ between them
    fig.suptitle("Re-rank (and replay) against scope size" + (f" ({label})" if label else ""), fontsize=10)
    return _save(fig, plt, path)


def compact(v: float) -> str:
    """A family count as an axis label: 0, 500, 50k, 2M, 2.5M."""
    if abs(v) >= 1e6:
        return f"{v / 1e6:g}M"
    if abs(v) >= 1e3:
        return f"{v / 1e3:g}k"
    return f"{v:g}"


def _thousands():
    from matplotlib.ticker import FuncFormatter

    return FuncFormatter(lambda v, _: compact(v))


def _save(fig, plt, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def write_bench_plots(results: Sequence[dict], out_dir: Path) -> list[Path]:
    """The throughput-against-stored plot of bench results that have a stored phase."""
    series = [stored_series(r) for r in results]
    series = [s for s in series if s[1]]
    if not series:
        return []
    m = results[0].get("machine") or {}
    machine = f"{m.get('nproc', '?')} CPU, shared" if m else ""
    return [plot_throughput_vs_stored(series, out_dir / THROUGHPUT_PNG, machine=machine)]


def write_rerank_plot(doc: dict | list, out_dir: Path) -> Path:
    label = ""
    if isinstance(doc, dict):
        label = " ".join(str(doc[k]) for k in ("date", "commit", "label") if doc.get(k))
    return plot_rerank(rerank_points(doc), out_dir / RERANK_PNG, label=label)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m regsosek_tools.report.plots", description=__doc__.split("\n\n")[0])
    p.add_argument("--bench", action="append", default=[], help="a bench result JSON with a stored phase (repeatable)")
    p.add_argument("--rerank", help="a re-rank measurement JSON (format in this module's docstring)")
    p.add_argument("--out", default="docs/bench", help="directory of the PNGs (default docs/bench)")
    a = p.parse_args(argv)
    if not a.bench and not a.rerank:
        p.error("nothing to plot: give --bench and/or --rerank")
    out = Path(a.out)
    written = write_bench_plots([json.loads(Path(f).read_text()) for f in a.bench], out) if a.bench else []
    if a.bench and not written:
        print("no stored phase in the bench results given: no throughput plot", file=sys.stderr)
    if a.rerank:
        written.append(write_rerank_plot(json.loads(Path(a.rerank).read_text()), out))
    for w in written:
        print(w)
    return 0 if written else 1


if __name__ == "__main__":
    raise SystemExit(main())
