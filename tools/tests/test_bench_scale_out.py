"""The bench's scale-out options, without Kafka or services: --brokers and --instances on the command
line, ratios and the comparison rows for BENCHMARKS.md, intake instances behind a round-robin
spread, topic placement on n brokers, and the cluster's bootstrap list read from .local/stack.env."""

from __future__ import annotations

import asyncio

import pytest

from regsosek_tools import processes
from regsosek_tools.bench import families_needed, parse_args
from regsosek_tools.load.http import RawHttp, Spread
from regsosek_tools.report.bench import COMPARISON_HEADER, SCALED, comparison_rows, ratios
from regsosek_tools.world import min_insync, placement

# ---------------------------------------------------------------- command line


def test_brokers_adds_its_phase_to_the_ones_asked_for():
    a = parse_args(["--quick", "--phases", "scale", "--brokers", "1,3"])
    assert a.phases == ["scale", "brokers"] and a.brokers == [1, 3]


def test_brokers_phase_alone_defaults_to_one_against_three():
    a = parse_args(["--phases", "brokers"])
    assert a.phases == ["brokers"] and a.brokers == [1, 3]


def test_without_brokers_no_broker_phase_runs():
    a = parse_args(["--quick"])
    assert "brokers" not in a.phases and a.brokers == []


def test_instances_and_brokers_refuse_nonsense(capsys):
    assert parse_args(["--instances", "1, 2,3"]).instances == [1, 2, 3]
    for argv in (["--instances", "0,1"], ["--brokers", "x"], ["--brokers", ""], ["--phases", "brokers,speed"]):
        with pytest.raises(SystemExit):
            parse_args(argv)
    capsys.readouterr()


def test_families_needed_counts_each_phase_once():
    a = parse_args(["--quick", "--phases", "scale", "--instances", "1,2,3", "--scale-families", "500",
                    "--warmup", "100"])
    assert families_needed(a) == 100 + 3 * 500
    # the broker comparison sends the same warm-up and families through every broker count
    b = parse_args(["--quick", "--brokers", "1,3", "--phases", "brokers", "--scale-families", "500",
                    "--warmup", "100"])
    assert families_needed(b) == 100 + 500


def test_every_service_is_scaled():
    assert set(SCALED) == {"intake", "verify", "classify", "notify"}


# ---------------------------------------------------------------- ratios and rows


def test_ratios_are_against_the_first_configuration():
    got = ratios([(1, 200.0), (2, 150.0), (3, 100.0)])
    assert [r["n"] for r in got] == [1, 2, 3]
    assert [r["ratio"] for r in got] == [1.0, 0.75, 0.5]


def test_ratios_without_a_figure_are_none_not_zero():
    assert [r["ratio"] for r in ratios([(1, None), (3, 120.0)])] == [None, None]
    assert [r["ratio"] for r in ratios([(1, 100.0), (3, None)])] == [1.0, None]
    assert ratios([]) == []


def _result() -> dict:
    return {
        "bench": {"date": "2026-12-01", "commit": "abc1234"},
        "machine": {"nproc": 2, "mem_gib": 24.0, "loadavg_at_start": [4.2, 3.0, 2.0]},
        "brokers": [{"brokers": 1, "families": 1000}, {"brokers": 3, "families": 1000}],
        "brokers_ratios": ratios([(1, 100.0), (3, 80.0)]),
        "scale": [{"instances": 1, "families": 500}, {"instances": 2, "families": 500}],
        "scale_ratios": ratios([(1, 100.0), (2, None)]),
    }


def test_comparison_rows_name_each_configuration_and_its_ratio():
    rows = comparison_rows(_result())
    assert len(rows) == 2
    brokers, scale = rows
    assert "Kafka brokers" in brokers and "1 broker(s) → 100.0, 3 broker(s) → 80.0" in brokers
    assert "1: 1.00, 3: 0.80" in brokers and "4.2 at start" in brokers
    assert "instances of every service" in scale and "2: n/a" in scale
    ended = _result()
    ended["machine"]["loadavg_at_end"] = [9.6, 5.0, 3.0]
    assert "4.2 → 9.6" in comparison_rows(ended)[0]
    columns = COMPARISON_HEADER.splitlines()[0].count("|")
    assert all(r.count("|") == columns for r in rows)


def test_no_comparison_rows_when_nothing_was_compared():
    assert comparison_rows({"bench": {}, "machine": {}}) == []


# ---------------------------------------------------------------- intake instances behind a spread


class Recorder(RawHttp):
    """A RawHttp that answers without a network and counts what it was sent."""

    def __init__(self, port: int) -> None:
        super().__init__("127.0.0.1", port, connections=4)
        self.sent: list[bytes] = []
        self.closed = False

    async def request(self, raw: bytes) -> tuple[int, bytes, float]:
        self.sent.append(raw)
        await asyncio.sleep(0)
        return 202, str(self.port).encode(), 0.0

    async def close(self) -> None:
        self.closed = True


async def test_spread_sends_to_each_instance_in_turn():
    a, b, c = Recorder(1), Recorder(2), Recorder(3)
    spread = Spread([a, b])
    spread.add(c)
    answers = [(await spread.request(b"x"))[1] for _ in range(7)]
    assert answers == [b"1", b"2", b"3", b"1", b"2", b"3", b"1"]
    assert spread.connections == 12


async def test_spread_stops_sending_to_a_removed_instance():
    a, b = Recorder(1), Recorder(2)
    spread = Spread([a, b])
    await spread.remove(2)
    assert b.closed and not a.closed
    await asyncio.gather(*(spread.request(b"x") for _ in range(5)))
    assert len(a.sent) == 5 and b.sent == []
    await spread.remove(1)
    with pytest.raises(ConnectionError):
        await spread.request(b"x")


async def test_spread_counts_requests_in_flight_across_instances():
    spread = Spread([Recorder(1), Recorder(2)])
    await asyncio.gather(*(spread.request(b"x") for _ in range(6)))
    assert spread.busy == 0 and spread.busy_max == 6


def test_spread_builds_requests_like_its_instances():
    spread = Spread([RawHttp("127.0.0.1", 8001, connections=1)])
    raw = spread.build("POST", "/v1/interviews", b"{}", "t")
    assert raw.startswith(b"POST /v1/interviews HTTP/1.1\r\n") and b"Authorization: Bearer t" in raw


# ---------------------------------------------------------------- topics on n brokers


@pytest.mark.parametrize("brokers", [[1], [1, 2], [1, 2, 3], [4, 7, 9]])
def test_placement_puts_every_partition_on_every_broker_with_leaders_spread(brokers):
    got = placement(6, brokers)
    assert sorted(got) == list(range(6))
    assert all(sorted(replicas) == sorted(brokers) for replicas in got.values())
    leaders = [replicas[0] for replicas in got.values()]
    assert max(leaders.count(b) for b in brokers) - min(leaders.count(b) for b in brokers) <= 1


def test_placement_refuses_an_empty_cluster():
    with pytest.raises(ValueError):
        placement(6, [])


def test_min_insync_is_productions_rule_on_fewer_brokers():
    assert [min_insync(n) for n in (1, 2, 3, 4)] == [1, 1, 2, 2]


# ---------------------------------------------------------------- the cluster's bootstrap list


def test_stack_env_reads_the_clusters_escaped_bootstrap_list(tmp_path, monkeypatch):
    (tmp_path / ".local").mkdir()
    (tmp_path / ".local" / "stack.env").write_text(
        "# Written by scripts/stack.sh\n"
        "export REGSOSEK_KAFKA_BOOTSTRAP=127.0.0.1:49092\\,127.0.0.1:49192\\,127.0.0.1:49292\n"
        "export REGSOSEK_PG_URL_BASE='postgresql://regsosek@127.0.0.1:45432'\n")
    monkeypatch.setattr(processes, "ROOT", tmp_path)
    monkeypatch.delenv("REGSOSEK_KAFKA_BOOTSTRAP", raising=False)
    monkeypatch.delenv("REGSOSEK_PG_URL_BASE", raising=False)
    env = processes.stack_env()
    assert env["REGSOSEK_KAFKA_BOOTSTRAP"] == "127.0.0.1:49092,127.0.0.1:49192,127.0.0.1:49292"
    assert env["REGSOSEK_PG_URL_BASE"] == "postgresql://regsosek@127.0.0.1:45432"
