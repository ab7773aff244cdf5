"""The benchmark's pure parts: percentiles, the open-loop pacing schedule, metric and lag
arithmetic, target verdicts and the BENCHMARKS.md row; and its lean HTTP client against a
local socket. No Kafka, no PostgreSQL, no services."""

from __future__ import annotations

import argparse
import asyncio

import pytest

from regsosek_tools.bench import parse_list
from regsosek_tools.load.http import RawHttp
from regsosek_tools.load.pacing import due, schedule
from regsosek_tools.measure.kafka import group_lag, parse_counter
from regsosek_tools.measure.stats import distribution, percentile
from regsosek_tools.report import bench as report
from regsosek_tools.report.bench import MARKDOWN_HEADER, markdown_row, sparkline, target_figures

# ---------------------------------------------------------------- percentiles


def test_percentile_nearest_rank():
    values = list(range(1, 101))  # 1..100
    assert percentile(values, 50) == 50
    assert percentile(values, 95) == 95
    assert percentile(values, 99) == 99
    assert percentile(values, 100) == 100
    assert percentile(values, 0) == 1


def test_percentile_order_and_small_samples():
    assert percentile([3.0, 1.0, 2.0], 50) == 2.0
    assert percentile([5.0], 99) == 5.0
    assert percentile([1.0, 10.0], 99) == 10.0  # the worst of two is the p99
    assert percentile([], 50) is None


def test_distribution():
    d = distribution([0.1, 0.2, 0.3, 0.4])
    assert d["n"] == 4 and d["p50"] == 0.2 and d["p99"] == 0.4 and d["max"] == 0.4
    assert d["mean"] == pytest.approx(0.25)
    assert distribution([]) == {"n": 0, "p50": None, "p95": None, "p99": None, "max": None, "mean": None}


# ---------------------------------------------------------------- pacing


def test_schedule_is_evenly_spaced_at_the_rate():
    s = schedule(100, 2)
    assert len(s) == 200
    assert s[0] == 0 and s[1] == pytest.approx(0.01) and s[-1] == pytest.approx(1.99)
    assert all(b - a == pytest.approx(0.01) for a, b in zip(s, s[1:], strict=False))


def test_schedule_rounds_and_refuses_nonsense():
    assert len(schedule(1000, 0.0015)) == 2
    assert len(schedule(3, 0.5)) == 2  # round(1.5) == 2
    assert schedule(0, 10) == [] and schedule(10, 0) == []


def test_due_sends_everything_whose_time_has_come_and_nothing_early():
    s = schedule(10, 1)  # 0.0, 0.1, ..., 0.9
    assert due(s, 0, -0.01) == 0
    assert due(s, 0, 0.0) == 1
    assert due(s, 1, 0.35) == 4
    assert due(s, 4, 0.35) == 4  # nothing new
    assert due(s, 4, 5.0) == 10  # a late generator catches up at once: open loop


# ---------------------------------------------------------------- metrics, lag, parsing


def test_parse_counter_sums_label_sets_and_ignores_others():
    text = """# HELP regsosek_events_consumed_total Kafka records consumed
# TYPE regsosek_events_consumed_total counter
regsosek_events_consumed_total{service="verify"} 1200.0
regsosek_events_consumed_total{service="other"} 5.0
regsosek_events_consumed_created{service="verify"} 1.7e9
regsosek_events_consumed_total_bogus 99
"""
    assert parse_counter(text, "regsosek_events_consumed_total") == 1205.0
    assert parse_counter("", "regsosek_events_consumed_total") == 0.0
    assert parse_counter("x 1\n", "x") == 1.0


def test_group_lag_counts_uncommitted_partitions_from_zero():
    ends = {("t", 0): 10, ("t", 1): 5, ("t", 2): 0}
    assert group_lag({("t", 0): 10, ("t", 1): 5}, ends) == 0
    assert group_lag({("t", 0): 4}, ends) == 6 + 5
    assert group_lag({("t", 0): 12}, {("t", 0): 10}) == 0  # never negative


def test_parse_list():
    assert parse_list("100,500, 1000") == [100, 500, 1000]
    for bad in ("", "0", "1,-2", "a"):
        with pytest.raises((argparse.ArgumentTypeError, ValueError)):
            parse_list(bad)


def test_sparkline():
    assert sparkline([]) == ""
    assert sparkline([0, 0]) == "▁▁"
    line = sparkline([0, 5, 10])
    assert line[0] == "▁" and line[-1] == "█" and len(line) == 3
    long = sparkline([0] * 100 + [7] + [0] * 99, width=20)
    assert len(long) == 20 and "█" in long  # a one-sample spike survives the squeeze


# ---------------------------------------------------------------- targets and the Markdown row


def _result(**over) -> dict:
    r = {
        "bench": {"date": "2026-11-28", "commit": "abc1234"},
        "machine": {"nproc": 2, "mem_gib": 23.5},
        "throughput": {"families": 20000, "families_per_s": 6123.4},
        "latency": [
            {"rate": 100, "keeps_up": True, "latency_s": {"p99": 0.2}},
            {"rate": 1000, "keeps_up": True, "latency_s": {"p99": 0.75}, "accepted_rate": 1000.0},
        ],
        "replay": {"available": True, "families_per_s": 25000.0},
        "services": {"intake": {"max_rss_mb": 150.0}, "verify": {"max_rss_mb": 120.0},
                     "receiver": {"max_rss_mb": 900.0}},  # not a pipeline service: no target
        "ceiling": {"records_per_s": 10000.0, "ratio": 0.61234},
        "scale": [{"instances": 1, "families_per_s": 3000.0}, {"instances": 2, "families_per_s": 4500.0}],
    }
    r.update(over)
    return r


def _cells(row: str) -> list[str]:
    return [c.strip() for c in row.strip().strip("|").split("|")]


def test_markdown_row_all_targets_met():
    row = markdown_row(_result())
    cells = _cells(row)
    assert len(cells) == len(_cells(MARKDOWN_HEADER.splitlines()[0]))
    assert cells[:4] == ["2026-11-28", "abc1234", "2 CPU, 24 GiB", "20,000"]
    assert cells[4] == "6,123.4 ✓"
    assert cells[5] == "0.75 s ✓"
    assert cells[6] == "25,000 ✓"
    assert cells[7] == "150 MB ✓ (intake)"
    assert cells[8] == "61.2% ✓"
    assert cells[9] == "10,000"
    assert cells[10] == "1 → 3,000.0, 2 → 4,500.0"


def test_markdown_row_misses_and_gaps_are_explicit():
    r = _result(
        throughput={"families": 2000, "families_per_s": 190.0},
        latency=[{"rate": 500, "keeps_up": False}, {"rate": 1000, "skipped": "the pipeline fell behind at 500/s"}],
        replay={"available": False, "reason": "python -m classify.replay does not exist in this checkout"},
        services={"notify": {"max_rss_mb": 250.4}},
        ceiling={"error": "boom"},
        scale=[],
    )
    cells = _cells(markdown_row(r))
    assert cells[4] == "190.0 ✗"
    assert cells[5] == "n/a (not run: the pipeline fell behind at 500/s)"
    assert cells[6].startswith("n/a (python -m classify.replay does not exist")
    assert cells[7] == "250 MB ✗ (notify)"
    assert cells[8] == "n/a" and cells[10] == "n/a"


def test_p99_of_a_rate_that_fell_behind_is_not_a_pass():
    r = _result(latency=[{"rate": 1000, "keeps_up": False, "latency_s": {"p99": 0.5}, "accepted_rate": 640.0,
                          "undelivered": 12}])
    p99, ok, note = target_figures(r)["p99"]
    assert p99 == 0.5 and ok is False and "fell behind" in note and "12 undelivered" in note


def test_targets_not_measured_are_neither_met_nor_missed():
    f = target_figures({"bench": {}, "machine": {}})
    assert f["sustained"] == (None, None)
    assert f["p99"] == (None, None, "not run")
    assert f["ratio"] == (None, None)
    assert f["rss"][1] is None


def test_markdown_row_has_no_stray_pipes():
    r = _result(replay={"available": False, "reason": "a | b"})
    assert len(_cells(markdown_row(r))) == 11


# ---------------------------------------------------------------- the lean HTTP client


def test_raw_http_content_length_chunked_and_reconnect():
    async def scenario() -> None:
        seen: list[bytes] = []

        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            n = 0
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except asyncio.IncompleteReadError:
                    break
                length = int(next(ln.split(b":")[1] for ln in head.split(b"\r\n") if ln.lower().startswith(b"content-length")))
                seen.append(await reader.readexactly(length))
                n += 1
                if n == 1:
                    writer.write(b"HTTP/1.1 202 Accepted\r\ncontent-length: 2\r\n\r\n{}")
                elif n == 2:
                    writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n")
                else:  # then close: the client must reconnect for the next request
                    writer.write(b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
                    await writer.drain()
                    writer.close()
                    return
                await writer.drain()

        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        client = RawHttp("127.0.0.1", port, connections=1, timeout=5)
        try:
            req = client.build("POST", "/v1/interviews", b'{"a":1}', token="t")
            assert b"Authorization: Bearer t" in req and req.endswith(b'\r\n\r\n{"a":1}')
            assert (await client.request(req))[:2] == (202, b"{}")
            assert (await client.request(req))[:2] == (200, b"abcde")
            status, body, sent = await client.request(req)
            assert (status, body) == (503, b"") and sent > 0
            assert (await client.request(req))[:2] == (202, b"{}")  # on a new connection
            assert seen == [b'{"a":1}'] * 4
            assert client.busy == 0 and client.busy_max == 1
        finally:
            await client.close()
            server.close()
            await server.wait_closed()

    asyncio.run(asyncio.wait_for(scenario(), 10))


def test_targets_are_the_issues():
    assert report.TARGETS == {"sustained_families_per_s": 5000.0, "p99_s_at_1000": 1.0,
                             "replay_families_per_s": 20000.0, "rss_mb": 200.0, "ceiling_ratio": 0.5,
                             "stored_ratio": 0.8, "rerank_families_per_s": 20000.0, "rerank_rss_spread": 0.2}
    assert report.RERANK_SCOPE_SIZES == (100_000, 5_000_000)


# ---------------------------------------------------------------- loads and the ceiling (no services)


def test_ceiling_payload_round_trip(tmp_path):
    from regsosek_tools.load.ceiling import read_payload, write_payload

    records = [(b"64720100010001", b'{"a": 1}'), (b"", b""), (b"k" * 300, bytes(range(256)))]
    path = tmp_path / "payload.bin"
    write_payload(path, records)
    assert read_payload(path.read_bytes()) == records


def test_ceiling_figures_need_every_record_at_the_sink():
    from regsosek_tools.load.ceiling import ceiling_figures

    stages = {"producer": {"n": 100, "first": 10.0, "acked": 12.0}, "sink": {"n": 100, "first": 10.5, "last": 14.0}}
    f = ceiling_figures(100, 6, stages, payload_bytes_mean=2048.0)
    assert f["records_per_s"] == pytest.approx(25.0) and f["produce_only_per_s"] == pytest.approx(50.0)
    assert f["hops"] == 3 and f["partitions"] == 6 and f["stages"] is stages
    short = ceiling_figures(100, 6, {**stages, "sink": {"n": 99, "last": 14.0}}, payload_bytes_mean=1.0)
    assert short == {"error": "the sink received 99 of 100", "stages": {**stages, "sink": {"n": 99, "last": 14.0}}}


async def test_batch_upload_counts_answers_and_drops_what_intake_did_not_take():
    import orjson

    from regsosek_tools.load.families import Family
    from regsosek_tools.load.submit import BatchUpload

    fams = [Family(f"F{i}", "S", "OFC", orjson.dumps({"i": i}), decided=i != 4) for i in range(5)]
    sent: list[bytes] = []

    async def post(raw: bytes) -> tuple[int, bytes, float]:
        sent.append(raw)
        if len(sent) == 1:  # the first batch (F0, F1): F0 accepted, F1 refused
            return 200, orjson.dumps({"results": [{"index": 0, "status": 202}, {"index": 1, "status": 422}]}), 1.0
        if len(sent) == 2:  # F2, F3: the whole request failed
            return 503, b"busy", 2.0
        return 200, orjson.dumps({"results": [{"index": 0, "status": 200}]}), 3.0  # F4: a duplicate

    up = BatchUpload(RawHttp("127.0.0.1", 9, connections=1), post, lambda k: f"token-{k}", fams,
                     batch_size=2, devices=1)
    done = asyncio.Event()
    await up.run(done)
    assert done.is_set() and len(sent) == 3
    assert b"Authorization: Bearer token-0" in sent[0] and b"POST /v1/interviews:batch" in sent[0]
    assert up.counts == {"accepted": 1, "duplicate": 1, "refused": 1, "failed_requests": 1}
    assert up.expected == {"F0"}  # F4 was never to be decided
    assert up.not_taken() == 1 + 2 * 1
    res = up.figures({"F0": 5.0}, "complete", cpu0=0.0, bench_now=0.0)
    assert res["decided_delivered"] == 1 and res["undelivered"] == 0
    assert res["families_per_s"] is None and res["families_per_s_partial"] == pytest.approx(5 / 4.0)


def test_quick_defaults_and_phase_names():
    from regsosek_tools.bench import parse_args

    a = parse_args(["--quick"])
    assert (a.families, a.duration, a.warmup, a.scale_families) == (2000, 8.0, 100, 500)
    assert a.phases == ["throughput", "latency", "scale", "replay", "ceiling"]
    full = parse_args(["--phases", "throughput, ceiling"])
    assert (full.families, full.duration, full.warmup) == (20000, 20.0, 200)
    assert full.phases == ["throughput", "ceiling"]
    with pytest.raises(SystemExit):
        parse_args(["--phases", "throughput,warp"])


def test_rerank_phase_from_its_sizes_or_its_name():
    from regsosek_tools.bench import parse_args

    a = parse_args(["--rerank-sizes", "1000000,100000", "--phases", "throughput"])
    assert a.phases == ["throughput", "rerank"]
    assert a.rerank_sizes == [100_000, 1_000_000] and a.rerank_replay_sizes == [100_000, 1_000_000]
    b = parse_args(["--phases", "rerank", "--rerank-replay-sizes", "100000"])
    assert b.rerank_sizes == [100_000, 1_000_000, 5_000_000] and b.rerank_replay_sizes == [100_000]
    assert (b.rerank_scope, b.replay_processes) == ("regency", 2)
    assert parse_args([]).rerank_sizes == []
    with pytest.raises(SystemExit):
        parse_args(["--phases", "rerank", "--replay-processes", "0"])


def _point(what: str, families: int, per_s: int, rss: float, processes: int = 1) -> dict:
    return {"what": what, "families": families, "families_per_s": per_s, "peak_rss_mib": rss,
            "processes": processes}


def test_rerank_verdicts_need_the_span_the_rate_and_flat_memory():
    def verdicts(*points: dict) -> dict:
        return report.rerank_verdicts({"rerank": {"available": True, "points": list(points)}})

    met = verdicts(_point("rerank", 5_000_000, 32_000, 90.2), _point("rerank", 100_000, 22_000, 90.4),
                   _point("replay", 100_000, 19_000, 90.6, 2), _point("replay", 5_000_000, 22_900, 92.2, 2))
    fps, n, spread, ok = met["rerank"]
    assert (fps, n, ok) == (32_000, 5_000_000, True) and spread == pytest.approx(0.2 / 90.2)
    assert met["replay"] == (22_900, 5_000_000, 2, True)  # the largest replay, not the first
    slow = verdicts(_point("rerank", 100_000, 30_000, 90.0), _point("rerank", 5_000_000, 19_999, 90.0))
    assert slow["rerank"][3] is False
    grown = verdicts(_point("rerank", 100_000, 30_000, 90.0), _point("rerank", 5_000_000, 30_000, 108.1))
    assert grown["rerank"][3] is False and grown["rerank"][2] == pytest.approx(18.1 / 90.0)
    short = verdicts(_point("rerank", 100_000, 30_000, 90.0), _point("rerank", 1_000_000, 30_000, 90.0))
    assert short["rerank"][3] is None  # 1,000,000 is not the target's largest scope: no verdict
    assert verdicts(_point("replay", 1_000_000, 15_000, 92.0, 2))["replay"][3] is False
    assert report.rerank_verdicts({}) == {"rerank": (None, None, None, None), "replay": (None, None, None, None)}


def test_rerank_summary_prints_each_point_and_both_verdicts(capsys):
    r = {"rerank": {"available": True, "scope": "regency", "replay_processes": 2, "points": [
        {**_point("rerank", 100_000, 22_641, 90.4), "seconds": 4.42, "cpu_us_per_family": 43.0, "load_average": 0.8},
        {**_point("replay", 100_000, 19_148, 90.6, 2), "seconds": 5.22, "startup_seconds": 3.01,
         "cpu_us_per_family": 73.0, "load_average": 0.8},
        {**_point("rerank", 5_000_000, 32_043, 90.2), "seconds": 156.04, "cpu_us_per_family": 30.9,
         "load_average": 1.1}]}}
    report._print_rerank(r)
    out = capsys.readouterr().out
    assert "rerank   5,000,000 families:  32,043 families/s (156.04 s)" in out
    assert "(5.22 s; 3.01 s of it start-up)" in out
    assert "✓ target 3" in out and "32,043/s at 5,000,000, RSS spread 0.2%" in out
    assert "✗ target 2" in out and "19,148/s at 100,000 families over 2 processes" in out
    report._print_rerank({"rerank": {"available": True, "error": "exit 1: boom"}})
    assert "FAILED (exit 1: boom)" in capsys.readouterr().out
