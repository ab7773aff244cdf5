"""The bench's plots and flame graphs: the PNGs drawn headless from a bench result and from a
re-rank measurement, the re-rank JSON formats read, and py-spy's command and file names. Real
matplotlib; py-spy itself is not run here (it needs a process to attach to)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from regsosek_tools.bench import profiled_phase
from regsosek_tools.measure.delivery import stalled
from regsosek_tools.measure.profile import flame_name, record_command, without_checkout
from regsosek_tools.report import plots

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def bench_result() -> dict:
    return {"bench": {"date": "2026-12-01", "commit": "abc1234"}, "machine": {"nproc": 2},
            "stored": [{"stored_families": 450, "families_per_s": 120.0,
                        "per_service": {"intake": {"cpu_percent": 20.0}, "verify": {"cpu_percent": 30.0},
                                        "classify": {"cpu_percent": 30.0}, "notify": {"cpu_percent": 20.0},
                                        "receiver": {"cpu_percent": 50.0}}},
                       {"stored_families": 200_450, "families_per_s": 110.0},
                       {"stored_families": 2_000_450, "families_per_s": None}]}  # not completed: not plotted


def test_stored_series_keeps_completed_steps_in_order():
    label, points = plots.stored_series(bench_result())
    assert label == "2026-12-01 abc1234"
    assert [(p.stored, p.families_per_s) for p in points] == [(450, 120.0), (200_450, 110.0)]
    assert points[0].per_core == pytest.approx(120.0) and points[1].per_core is None  # the services' CPU only


def test_throughput_plot_is_a_png(tmp_path: Path):
    (path,) = plots.write_bench_plots([bench_result()], tmp_path)
    assert path == tmp_path / plots.THROUGHPUT_PNG
    assert path.read_bytes()[:8] == PNG_MAGIC


def test_no_stored_phase_no_plot(tmp_path: Path):
    assert plots.write_bench_plots([{"bench": {}, "throughput": {}}], tmp_path) == []
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("doc", [
    [{"families": 5_000_000, "seconds": 250.0, "max_rss_mb": 140.0}, {"families": 100_000, "seconds": 5.0,
                                                                       "max_rss_mb": 120.0}],
    {"points": [{"scope_families": 100_000, "elapsed_s": 5.0, "max_rss_kb": 122880},
                {"scope_families": 5_000_000, "elapsed_s": 250.0, "max_rss_kb": 143360}]},
])
def test_rerank_points_read_either_format(doc):
    points = plots.rerank_points(doc)
    assert [p.families for p in points] == [100_000, 5_000_000]
    assert points[0].seconds == 5.0 and points[0].rss_mb == pytest.approx(120.0)
    assert plots.rss_spread(points) == pytest.approx(20 / 120)


def test_rerank_bench_output_gives_one_line_per_scope_and_replay():
    doc = [{"what": "rerank", "families": 100_000, "scope": "national", "seconds": 6.0, "peak_rss_mib": 90.0},
           {"what": "rerank", "families": 1_000_000, "scope": "national", "seconds": 58.0, "peak_rss_mib": 95.0},
           {"what": "replay", "families": 100_000, "processes": 2, "seconds": 9.0, "peak_rss_mib": 120.0}]
    points = plots.rerank_points(doc)
    assert {p.series for p in points} == {"re-rank national", "replay ×2 processes"}
    assert plots.rss_spread(points, "re-rank national") == pytest.approx(5 / 90)


def test_rerank_point_without_size_is_refused():
    with pytest.raises(ValueError, match="scope size"):
        plots.rerank_points([{"seconds": 1.0}])


def test_rerank_plot_from_the_command_line(tmp_path: Path):
    src = tmp_path / "rerank.json"
    src.write_text(json.dumps({"commit": "abc1234", "points": [
        {"families": 100_000, "seconds": 4.0, "max_rss_mb": 110.0},
        {"families": 1_000_000, "seconds": 41.0, "max_rss_mb": 118.0},
        {"families": 5_000_000, "seconds": 230.0, "rss_mb": 121.0}]}))
    out = tmp_path / "out"
    assert plots.main(["--rerank", str(src), "--out", str(out)]) == 0
    assert (out / plots.RERANK_PNG).read_bytes()[:8] == PNG_MAGIC


def test_plots_command_needs_an_input():
    with pytest.raises(SystemExit):
        plots.main([])


def test_flame_names_carry_date_commit_phase_and_instance():
    assert flame_name("2026-12-01", "92ed5d2+dirty", "stored-200000", "verify#2") == \
        "flame-2026-12-01-92ed5d2-dirty-stored-200000-verify_2.svg"


def test_py_spy_records_one_process_and_its_workers_until_interrupted(tmp_path: Path):
    cmd = record_command("/x/py-spy", 4242, tmp_path / "f.svg", 50)
    assert cmd[:2] == ["/x/py-spy", "record"]
    assert cmd[cmd.index("--pid") + 1] == "4242" and cmd[cmd.index("--rate") + 1] == "50"
    assert "--subprocesses" in cmd and "--duration" not in cmd  # stopped by SIGINT at the phase's end


def test_profiled_phases_are_the_measured_ones():
    assert profiled_phase("throughput") and profiled_phase("stored-2000000")
    assert not profiled_phase("stored-0-warmup") and not profiled_phase("warmup") and not profiled_phase("scale-2")


def test_flame_graphs_do_not_carry_the_checkouts_path(tmp_path: Path):
    svg = tmp_path / "f.svg"
    svg.write_text('<text>/srv/co/.venv/bin/py-spy record --pid 1</text><title>process 1:"/srv/co/.venv/bin/python"</title>')
    without_checkout(svg, Path("/srv/co"))
    assert "/srv/co" not in svg.read_text() and ".venv/bin/py-spy record" in svg.read_text()


def test_a_phase_is_stalled_early_only_once_events_flow():
    assert stalled(25.0, True, {"verify": 0, "notify": 0}, 120.0)
    assert not stalled(25.0, False, {"verify": 0, "notify": 0}, 120.0)  # may still be in intake's outbox
    assert not stalled(25.0, True, {"verify": 3}, 120.0)
    assert not stalled(25.0, True, None, 120.0)
    assert stalled(121.0, False, None, 120.0)


def test_axis_labels_are_compact():
    assert [plots.compact(v) for v in (0, 500, 50_000, 2_000_000, 2_500_000)] == ["0", "500", "50k", "2M", "2.5M"]


async def test_py_spy_records_a_running_process_into_an_svg(tmp_path: Path):
    """The real py-spy on a real process: attached, stopped by SIGINT, the SVG written."""
    import asyncio
    import os
    import sys

    from regsosek_tools.measure.profile import FlameGraphs, py_spy

    if py_spy() is None:
        pytest.skip("py-spy is not installed (root dev dependency): uv sync")
    if os.geteuid() != 0 and Path("/proc/sys/kernel/yama/ptrace_scope").read_text().strip() != "0":
        pytest.skip("py-spy needs ptrace: root, CAP_SYS_PTRACE or kernel.yama.ptrace_scope=0")
    busy = await asyncio.create_subprocess_exec(sys.executable, "-c", "while True: sum(range(10000))")
    try:
        flames = FlameGraphs(tmp_path / "out", date="2026-12-01", commit="abc1234", rate=50, log_dir=tmp_path,
                             checkout=tmp_path)
        assert await flames.start("throughput", [("busy", busy.pid)]) == []
        await asyncio.sleep(2.0)
        (entry,) = await flames.stop(timeout=60)
    finally:
        busy.kill()
        await busy.wait()
    assert entry["instance"] == "busy" and entry["svg"], entry
    svg = Path(entry["svg"])
    assert svg.name == "flame-2026-12-01-abc1234-throughput-busy.svg"
    assert "<svg" in svg.read_text()[:2000]
