"""Charts as inline SVG, drawn on the server (no script, no CDN): completion bars, daily interviews
against the plan, welfare-group and decile distributions. Each has role="img", a title and a
description that say in words what it shows; pages put the numbers in a table beside it too."""

from __future__ import annotations

from datetime import date
from html import escape

# Colours with at least 4.5:1 contrast against white for text, 3:1 for the bars (WCAG 2.1).
INK = "#1f2933"
DONE = "#1b6e3a"
REMAINING = "#d9dee3"
PLAN = "#b3261e"
GROUP_COLOURS = ("#8c1d18", "#c2410c", "#a16207", "#1b6e3a")  # sangat miskin .. tidak miskin


def _svg(width: int, height: int, title: str, desc: str, body: str) -> str:
    t, d = escape(title), escape(desc)
    return (f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" width="{width}" height="{height}" '
            f'role="img" '
            f'aria-label="{t}. {d}" class="chart" preserveAspectRatio="xMinYMin meet">'
            f'<title>{t}</title><desc>{d}</desc>{body}</svg>')


def completion_bar(share: float, label: str) -> str:
    """A horizontal bar, `share` (0..1) filled."""
    share = min(max(share, 0.0), 1.0)
    width = 100
    filled = round(share * width, 1)
    text = f"{share:.0%}"
    body = (f'<rect x="0" y="0" width="{width}" height="10" fill="{REMAINING}" rx="2"/>'
            f'<rect x="0" y="0" width="{filled}" height="10" fill="{DONE}" rx="2"/>')
    return _svg(width, 10, f"{label}: {text}", text, body)


def daily_chart(days: list[tuple[date, int]], plan_per_day: float, *, title: str, desc: str) -> str:
    """Interviews per day as bars, the plan as a line across them."""
    if not days:
        return _svg(320, 40, title, desc, f'<text x="4" y="24" fill="{INK}" font-size="12">—</text>')
    width, height, pad = 640, 200, 28
    top = max(max(n for _, n in days), plan_per_day, 1)
    step = (width - pad) / len(days)
    bars = []
    for i, (day, n) in enumerate(days):
        h = (height - 2 * pad) * n / top
        x = pad + i * step
        bars.append(f'<rect x="{x + step * 0.1:.1f}" y="{height - pad - h:.1f}" width="{step * 0.8:.1f}" '
                    f'height="{h:.1f}" fill="{DONE}"><title>{day.isoformat()}: {n}</title></rect>')
    plan_y = height - pad - (height - 2 * pad) * plan_per_day / top
    axis = (f'<line x1="{pad}" y1="{height - pad}" x2="{width}" y2="{height - pad}" stroke="{INK}"/>'
            f'<text x="{pad}" y="{height - 8}" fill="{INK}" font-size="12">{days[0][0].isoformat()}</text>'
            f'<text x="{width}" y="{height - 8}" fill="{INK}" font-size="12" text-anchor="end">{days[-1][0].isoformat()}</text>'
            f'<text x="2" y="{pad - 8}" fill="{INK}" font-size="12">{top:.0f}</text>')
    plan = (f'<line x1="{pad}" y1="{plan_y:.1f}" x2="{width}" y2="{plan_y:.1f}" stroke="{PLAN}" stroke-width="2" '
            f'stroke-dasharray="6 4"/>')
    return _svg(width, height, title, desc, "".join(bars) + axis + plan)


def distribution(counts: list[int], labels: list[str], *, title: str, colours: tuple[str, ...] = ()) -> str:
    """Vertical bars, one per category, each labelled below with its count on top."""
    width, height, pad = 40 * len(counts) + 8, 150, 34
    top = max(max(counts, default=0), 1)
    total = sum(counts)
    parts = []
    for i, (n, label) in enumerate(zip(counts, labels, strict=True)):
        h = (height - 2 * pad) * n / top
        x = 8 + i * 40
        colour = colours[i] if i < len(colours) else DONE
        parts.append(f'<rect x="{x}" y="{height - pad - h:.1f}" width="30" height="{h:.1f}" fill="{colour}"/>'
                     f'<text x="{x + 15}" y="{height - pad - h - 4:.1f}" fill="{INK}" font-size="11" '
                     f'text-anchor="middle">{n}</text>'
                     f'<text x="{x + 15}" y="{height - pad + 14}" fill="{INK}" font-size="11" '
                     f'text-anchor="middle">{escape(label)}</text>')
    desc = "; ".join(f"{label}: {n}" for n, label in zip(counts, labels, strict=True)) + f" ({total})"
    return _svg(width, height, title, desc, "".join(parts))
