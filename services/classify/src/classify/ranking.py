"""Deciles: where a family stands among the others. Pure functions.

A family is ranked by its *rank value*: the model's predicted monthly per-capita
consumption, except that a village consultation (FKP) decision moves it into the
consumption range of the welfare group the village chose (for its regency's poverty
line). A family the village calls sangat miskin is ranked just below the extreme-poverty
line even if the model predicted more; one it calls tidak miskin is ranked at least at
the vulnerability line. That is how an FKP override reaches deciles and so the
programmes that target by decile.

Two ways to turn a rank value into a decile:

- **ranked** (`rank_deciles`): everyone of a scope (the nation, one province or one
  regency/city: the final ranking is per regency/city) sorted by (rank value, family id);
  the family at 0-based position i of n gets decile ``i * 10 // n + 1``. Every decile
  then holds n/10 families, rounded down or up; ties in rank value are split by family id
  so the sizes hold exactly. A re-rank computes the same in the database (store.py,
  `RANKED_DECILE`) so that no scope is ever held in memory; `rank_deciles` is the
  definition the tests check it against.
- **provisional** (`CutPoints`): one family placed against nine cut-points, the upper
  bounds of deciles 1..9: the model's reference cut-points before any ranking, the
  cut-points of the latest ranking of the family's scope after one.
"""

from __future__ import annotations

import math
from bisect import bisect_left
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from classify.model import PovertyLines
from regsosek.contracts import WelfareGroup
from regsosek.contracts import details as dt

DECILES = 10
SCOPES = ("national", "province", "regency")
NATIONAL = "ID"  # the partition of the national scope
PARTITION_LENGTH = {"province": 2, "regency": 4}  # BPS code digits of a province, a regency/city


def rank_value(predicted: float, fkp_group: WelfareGroup | None, area: str, lines: PovertyLines) -> float:
    """The predicted consumption, moved into the FKP group's consumption range if there is one."""
    if fkp_group is None:
        return predicted
    low, high = lines.band(fkp_group, area)
    if predicted < low:
        return low
    if predicted >= high:
        return math.nextafter(high, -math.inf)
    return predicted


def decile_at(position: int, n: int) -> int:
    """Decile (1..10) of the family at 0-based `position` among `n` ranked families."""
    if not 0 <= position < n:
        raise ValueError(f"position {position} outside 0..{n - 1}")
    return position * DECILES // n + 1


def rank_deciles(values: Iterable[tuple[str, float]]) -> dict[str, int]:
    """Deciles of (family id, rank value) pairs ranked together; lowest value = decile 1."""
    ordered = sorted(values, key=lambda kv: (kv[1], kv[0]))
    n = len(ordered)
    return {fid: decile_at(i, n) for i, (fid, _) in enumerate(ordered)}


def cutpoints(values: Iterable[tuple[str, float]], deciles: dict[str, int]) -> list[float]:
    """Upper bounds of deciles 1..9 of a ranking: the largest rank value in each decile
    or below it (so placing one of the ranked values with `CutPoints` gives its decile,
    ties across a boundary aside)."""
    top: dict[int, float] = {}
    for fid, v in values:
        d = deciles[fid]
        top[d] = max(top.get(d, -math.inf), v)
    return cutpoints_of_tops(top)


def cutpoints_of_tops(tops: dict[int, float]) -> list[float]:
    """The cut-points of a ranking from the largest rank value of each (non-empty) decile."""
    top = [tops.get(d, -math.inf) for d in range(1, DECILES + 1)]
    out: list[float] = []
    running = -math.inf
    for d in range(DECILES - 1):
        running = max(running, top[d])
        out.append(running)
    return out


def partition_of(scope: str, sls_id: str) -> str:
    """Which ranking a family belongs to: the nation, its province (BPS code, 2 digits) or its
    regency/city (4 digits)."""
    if scope == "national":
        return NATIONAL
    if scope in PARTITION_LENGTH:
        return sls_id[:PARTITION_LENGTH[scope]]
    raise ValueError(f"unknown scope {scope!r}; one of {', '.join(SCOPES)}")


@dataclass(frozen=True)
class CutPoints:
    """Provisional placement against nine cut-points (inclusive upper bounds of deciles 1..9)."""

    cuts: tuple[float, ...]
    basis: str
    ranking_id: int | None = None

    def place(self, value: float) -> tuple[int, str]:
        return bisect_left(self.cuts, value) + 1, self.basis


@dataclass(frozen=True)
class Ranked:
    """A decile already decided by a ranking of the whole scope."""

    decile: int
    basis: str
    ranking_id: int | None = None

    def place(self, value: float) -> tuple[int, str]:
        return self.decile, self.basis


Placement = CutPoints | Ranked


def reference_placement(model_version: str, cuts: Sequence[float]) -> CutPoints:
    return CutPoints(tuple(cuts), dt.BASIS_REFERENCE(model=model_version))
