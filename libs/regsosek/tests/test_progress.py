"""regsosek.progress: a bar with rate and ETA on a terminal, periodic log lines elsewhere."""

from __future__ import annotations

import io
import logging

from regsosek.progress import Progress, iterate, progress


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_not_a_terminal_logs_every_interval_with_rate_and_eta(caplog):
    caplog.set_level(logging.INFO, logger="regsosek.progress")
    clock = FakeClock()
    out = io.StringIO()
    with progress("replay", total=1000, unit="families", stream=out, log_every_s=10, clock=clock) as p:
        for _ in range(9):
            clock.now += 2
            p.update(50)  # 25 families/s
    lines = [r for r in caplog.records if r.name == "regsosek.progress"]
    assert [r.fields["done"] for r in lines] == [250, 450]  # at 10 s (not at every update), then at the end
    assert lines[0].fields == {"task": "replay", "done": 250, "unit": "families", "rate_per_s": 25.0,
                               "elapsed_s": 10.0, "total": 1000, "percent": 25.0, "eta_s": 30}
    assert "250/1000 families, 25.0/s, ETA 30s" in lines[0].getMessage()
    assert out.getvalue() == ""  # no bar, no carriage returns in a log
    assert lines[-1].getMessage().startswith("replay done: 450/1000 families")


def test_terminal_shows_a_bar_with_rate_and_eta():
    out = Tty()
    clock = FakeClock()
    with progress("re-rank", total=200, unit="families", stream=out, clock=clock) as p:
        p.update(100)
    text = out.getvalue()
    assert "re-rank" in text and "100/200" in text and "families/s" in text
    assert "<" in text  # tqdm's "elapsed<remaining"


def test_counts_never_pass_the_total_and_unknown_totals_have_no_eta():
    clock = FakeClock()
    p = Progress("bench", total=10, stream=io.StringIO(), log_every_s=1e9, clock=clock)
    p.update(7)
    p.update(7)
    assert p.done == 10
    q = Progress("calibrate", None, stream=io.StringIO(), log_every_s=1e9, clock=clock)
    clock.now += 1
    q.update(5)
    assert q.eta_s() is None and "eta_s" not in q.fields() and q.fields()["rate_per_s"] == 5.0


def test_iterate_counts_each_item(caplog):
    caplog.set_level(logging.INFO, logger="regsosek.progress")
    assert list(iterate(range(5), "rows", total=5, stream=io.StringIO(), log_every_s=1e9)) == [0, 1, 2, 3, 4]
    (end,) = [r for r in caplog.records if r.name == "regsosek.progress"]
    assert end.fields["done"] == 5 and end.fields["percent"] == 100.0
