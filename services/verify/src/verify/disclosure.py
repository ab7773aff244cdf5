"""Small-count suppression for progress figures (pure): a number that could single out a household
is not shown.

Rule: in a cell that covers one SLS (an SLS-level group, the totals of a full SLS id, or any area
where only one SLS has a roster), `flagged`, `absent` and `non_response` (a refusal singles out a
household too) between 1 and 4 are withheld (null), and with them the figure they could be
recomputed from (`verified`, as interviewed - flagged; `outstanding`, as expected - interviewed -
absent - non_response). The cell lists what was withheld in `suppressed`. 0 is shown
(nobody is singled out by it), and so is 5 or more. The totals of a breakdown also withhold a figure
when exactly one of its groups withheld it (else totals minus the other groups would give it back).
Known limit: figures of the same area asked for separately (the totals without `by`, then the
breakdown) can still be subtracted; the caller sees only its own areas, where its officers know
these households anyway.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

SMALL = range(1, 5)
# a withheld figure -> the figures it could be recomputed from, withheld with it
COMPLEMENTS: dict[str, tuple[str, ...]] = {"flagged": ("verified",), "absent": ("outstanding",),
                                           "non_response": ("outstanding",)}
SLS_DIGITS = 14
# the figures of a progress cell, as VerifyStore.progress_by_prefix counts them per group
FIGURES = ("sls", "sls_complete", "expected", "interviewed", "verified", "flagged", "absent", "outstanding",
           "non_response", "held")


def covers_one_sls(prefix: str, sls: int) -> bool:
    return len(prefix) >= SLS_DIGITS or sls <= 1


def suppress(cell: dict, *, one_sls: bool, also: frozenset[str] = frozenset()) -> dict:
    """The cell with small counts withheld (None), and `suppressed`: the withheld figures, sorted.
    `also`: figures to withhold whatever their value (secondary suppression)."""
    withheld = set(also)
    if one_sls:
        withheld |= {f for f in COMPLEMENTS if cell.get(f) in SMALL}
    for f in list(withheld):
        withheld.update(COMPLEMENTS.get(f, ()))
    out = {k: (None if k in withheld else v) for k, v in cell.items()}
    out["suppressed"] = sorted(withheld)
    return out


def suppress_breakdown(totals: dict, groups: list[dict]) -> tuple[dict, list[dict]]:
    """Totals and groups (each with `prefix` and `sls`) with small counts withheld."""
    shown = [suppress(g, one_sls=covers_one_sls(g["prefix"], g["sls"])) for g in groups]
    once = frozenset(f for f in COMPLEMENTS if sum(f in g["suppressed"] for g in shown) == 1)
    return suppress(totals, one_sls=covers_one_sls(totals["prefix"], totals["sls"]), also=once), shown


def progress_figures(rows: Sequence[Mapping[str, Any]], prefix: str, broken_down: bool) -> tuple[dict, list[dict]]:
    """The area's totals and (`broken_down`) its groups from the store's rows (one per group, `grp` its
    prefix), with small counts withheld (suppress_breakdown)."""
    groups = [{"prefix": r["grp"], **{k: int(r[k]) for k in FIGURES}} for r in rows]
    totals = {"prefix": prefix, **{k: sum(g[k] for g in groups) for k in FIGURES}}
    return suppress_breakdown(totals, groups if broken_down else [])
