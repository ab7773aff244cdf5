"""Open-loop pacing: when each request of a fixed-rate load is due."""

from __future__ import annotations

from collections.abc import Sequence


def schedule(rate: float, duration: float) -> list[float]:
    """Send offsets (seconds from the start) of an open-loop load at `rate` per second for
    `duration` seconds: evenly spaced, round(rate * duration) of them."""
    if rate <= 0 or duration <= 0:
        return []
    return [i / rate for i in range(round(rate * duration))]


def due(offsets: Sequence[float], start: int, elapsed: float) -> int:
    """Index one past the last offset at or before `elapsed`, scanning from `start`."""
    i = start
    while i < len(offsets) and offsets[i] <= elapsed:
        i += 1
    return i
