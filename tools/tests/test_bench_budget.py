"""The CPU budget's arithmetic (measure.budget, measure.proc) on made-up process tables."""

from __future__ import annotations

import asyncio
import os

import pytest

from regsosek_tools.measure.budget import CpuReading, bound, budget, ceiling_budget, read_groups
from regsosek_tools.measure.proc import (
    ProcStat,
    find_stack_pids,
    listener_ports,
    parse_stat,
    postmaster_port,
    tree_cpu_s,
)
from regsosek_tools.report.bench import budget_lines


def stat_line(pid: int, comm: str, ppid: int, utime: int, stime: int, cutime: int, cstime: int) -> str:
    # fields 3.. of /proc/<pid>/stat: state ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt
    # utime stime cutime cstime priority ...
    return (f"{pid} ({comm}) S {ppid} {pid} {pid} 0 -1 4194304 6366 22965 0 0 "
            f"{utime} {stime} {cutime} {cstime} 20 0 1 0 30248 369692672 9787")


def test_parse_stat_reads_cpu_and_reaped_cpu_in_seconds():
    st = parse_stat(stat_line(8255, "postgres", 1, 150, 50, 300, 100), clk_tck=100)
    assert st == ProcStat(pid=8255, ppid=1, cpu_s=2.0, reaped_s=4.0)


def test_parse_stat_survives_a_command_name_with_spaces_and_parentheses():
    st = parse_stat(stat_line(42, "a) b (c", 7, 10, 0, 0, 0), clk_tck=10)
    assert (st.pid, st.ppid, st.cpu_s, st.reaped_s) == (42, 7, 1.0, 0.0)


def table(*rows: tuple[int, int, float, float]) -> dict[int, ProcStat]:
    return {pid: ProcStat(pid, ppid, cpu, reaped) for pid, ppid, cpu, reaped in rows}


def test_tree_cpu_counts_the_root_what_it_reaped_and_every_live_descendant():
    t = table((10, 1, 5.0, 20.0),  # postmaster: 20 s of backends that ended
              (11, 10, 1.0, 0.0), (12, 10, 2.0, 0.5),  # live backends, one reaped a child of its own
              (13, 12, 0.25, 0.0),  # a grandchild
              (99, 1, 100.0, 100.0))  # someone else's process
    assert tree_cpu_s(10, t) == pytest.approx(5 + 20 + 1 + 2 + 0.5 + 0.25)
    assert tree_cpu_s(12, t) == pytest.approx(2.75)
    assert tree_cpu_s(77, t) is None


def test_tree_cpu_difference_is_right_when_a_child_ends_between_readings():
    before = table((10, 1, 5.0, 20.0), (11, 10, 2.0, 0.0))
    after = table((10, 1, 6.0, 23.0))  # the child used 1 s more, then ended and was reaped: 20 + 3
    start, end = tree_cpu_s(10, before), tree_cpu_s(10, after)
    assert start is not None and end is not None
    assert end - start == pytest.approx(1.0 + 1.0)  # the postmaster's 1 s and the child's last 1 s


def test_listener_ports_and_postmaster_port():
    props = "node.id=1\nlisteners=PLAINTEXT://127.0.0.1:33092,CONTROLLER://127.0.0.1:33093\n" \
            "advertised.listeners=PLAINTEXT://127.0.0.1:44444\n"
    assert listener_ports(props) == {33092, 33093}
    assert postmaster_port("8255\n/x/data\n1796167913\n33432\n/x/sock\n127.0.0.1\n") == 33432
    assert postmaster_port("8255\n") is None


def test_find_stack_pids_keeps_only_this_stacks_servers():
    cmdlines = {
        1: ["/sbin/init"],
        100: ["/usr/bin/java", "-Xmx1g", "-cp", "/a/libs/*", "kafka.Kafka", "/mine/server.properties"],
        101: ["/usr/bin/java", "-cp", "/b/libs/*", "kafka.Kafka", "/theirs/server.properties"],
        200: ["/usr/lib/postgresql/15/bin/postgres", "-D", "/mine/pg/data"],
        201: ["/usr/lib/postgresql/15/bin/postgres", "-D", "/theirs/pg/data"],
        202: ["postgres: regsosek verify 127.0.0.1(5000) idle"],  # a backend: not a postmaster
        300: [],  # a kernel thread
    }
    files = {"/mine/server.properties": "listeners=PLAINTEXT://127.0.0.1:33092,CONTROLLER://127.0.0.1:33093",
             "/theirs/server.properties": "listeners=PLAINTEXT://127.0.0.1:19092",
             "/mine/pg/data/postmaster.pid": "200\n/mine/pg/data\n0\n33432\n",
             "/theirs/pg/data/postmaster.pid": "201\n/theirs/pg/data\n0\n15432\n"}

    def read(path: str) -> str:
        if path not in files:
            raise FileNotFoundError(path)
        return files[path]

    found = find_stack_pids({33092}, 33432, cmdlines, cmdline=lambda pid: cmdlines[pid], read=read)
    assert found == {"kafka": [100], "postgres": [200]}
    assert find_stack_pids({1}, 2, cmdlines, cmdline=lambda pid: cmdlines[pid], read=read) == \
        {"kafka": [], "postgres": []}


def test_read_groups_sums_instances_and_refuses_a_partial_group():
    t = table((5, 1, 3.0, 9.0),  # the bench: 9 s reaped from children it stopped; not the generator's
              (10, 5, 2.0, 0.0), (11, 10, 1.5, 0.0),  # intake and one of its HTTP workers
              (20, 5, 4.0, 0.0), (21, 5, 1.0, 0.0))  # verify and verify#2
    got = read_groups({"intake": [10], "verify": [20, 21], "classify": [30]}, t, own_pid=5)
    assert got == {"intake": pytest.approx(3.5), "verify": pytest.approx(5.0), "classify": None, "generator": 3.0}


def reading(t: float, machine: float | None = None, **groups: float | None) -> CpuReading:
    return CpuReading(t=t, groups=dict(groups), machine_busy_s=machine)


def test_budget_per_family_share_and_cores():
    start = reading(100.0, 1000.0, intake=10.0, verify=5.0, kafka=50.0, postgres=None, generator=1.0)
    end = reading(110.0, 1020.0, intake=14.0, verify=7.0, kafka=56.0, postgres=None, generator=3.0)
    b = budget(start, end, units=1000)
    g = b["groups"]
    assert g["intake"]["cpu_s"] == pytest.approx(4.0)
    assert g["intake"]["ms_per_unit"] == pytest.approx(4.0)  # 4 s over 1,000 families
    assert g["kafka"]["ms_per_unit"] == pytest.approx(6.0)
    assert g["postgres"] == {"cpu_s": None, "ms_per_unit": None, "share": None, "cores": None}
    assert b["total_cpu_s"] == pytest.approx(14.0)
    assert b["total_ms_per_unit"] == pytest.approx(14.0)
    assert g["kafka"]["share"] == pytest.approx(6 / 14)
    assert g["intake"]["cores"] == pytest.approx(0.4)
    assert b["cores"] == pytest.approx(1.4)
    assert b["machine_busy_cpu_s"] == pytest.approx(20.0)
    assert b["outside_groups_cpu_s"] == pytest.approx(6.0)
    assert b["missing"] == ["postgres"]
    assert list(g)[:2] == ["intake", "verify"]  # pipeline order first


def test_budget_without_units_or_machine_gives_none_not_a_division_error():
    b = budget(reading(0.0, kafka=1.0), reading(0.0, kafka=2.0), units=0)
    assert b["total_ms_per_unit"] is None and b["cores"] is None and b["machine_busy_cpu_s"] is None


def test_ceiling_budget_is_the_broker_and_the_stages_not_the_idle_services():
    start = reading(0.0, 0.0, kafka=100.0, postgres=10.0, verify=5.0, generator=2.0)
    end = reading(4.0, 8.0, kafka=103.0, postgres=10.5, verify=5.25, generator=2.5)
    stages = {"producer": 1.0, "relay1": 1.5, "relay2": 1.5, "sink": 0.5}
    b = ceiling_budget(start, end, stages, records=20000)
    assert list(b["groups"]) == ["kafka", "producer", "relay1", "relay2", "sink"]
    assert b["total_cpu_s"] == pytest.approx(7.5)
    assert b["total_ms_per_unit"] == pytest.approx(7.5 * 1000 / 20000)
    assert b["groups"]["relay1"]["ms_per_unit"] == pytest.approx(0.075)
    assert b["idle"] == {"postgres": pytest.approx(0.5), "verify": pytest.approx(0.25), "generator": pytest.approx(0.5)}
    assert b["cores"] == pytest.approx(7.5 / 4)
    missing = ceiling_budget(start, end, {"producer": 1.0, "sink": None}, records=10)
    assert missing["missing"] == ["sink"] and missing["total_cpu_s"] == pytest.approx(4.0)


def test_bound_is_ceiling_cpu_per_record_over_pipeline_cpu_per_family():
    assert bound(20.0, 0.5) == pytest.approx(0.025)
    assert bound(None, 0.5) is None and bound(0.0, 0.5) is None and bound(20.0, None) is None


def test_budget_lines_largest_first_with_total():
    b = budget(reading(0.0, intake=0.0, kafka=0.0), reading(2.0, intake=1.0, kafka=3.0), units=100)
    lines = budget_lines(b, "family")
    assert "ms/family" in lines[0]
    assert lines[1].lstrip().startswith("Kafka broker") and "30.00" in lines[1] and "75%" in lines[1]
    assert lines[2].lstrip().startswith("intake") and "10.00" in lines[2]
    assert lines[3].lstrip().startswith("total") and "40.00" in lines[3]


@pytest.mark.integration
async def test_the_stacks_broker_and_postmaster_are_found_and_ended_backends_keep_their_cpu():
    """On the real stack: its broker and postmaster by their ports; CPU of backends that connect,
    work and end stays in the postmaster's tree reading (its reaped-children CPU)."""
    import asyncpg

    from regsosek_tools.measure.budget import CpuGroups
    from regsosek_tools.measure.proc import stack_pids
    from regsosek_tools.world import Stack

    stack = Stack.from_env()
    found = stack_pids(stack.bootstrap, stack.pg_base)
    assert len(found["kafka"]) >= 1 and len(found["postgres"]) == 1
    groups = CpuGroups(lambda: {}, found)
    before = groups.read()
    for _ in range(3):  # each a new backend that ends before the second reading
        conn = await asyncpg.connect(f"{stack.pg_base}/postgres", timeout=30)
        try:
            await conn.fetchval("select count(*) from generate_series(1, 3000000)")
        finally:
            await conn.close()
    await asyncio.sleep(0.5)  # the postmaster reaps them
    after = groups.read()
    pg0, pg1 = before.groups["postgres"], after.groups["postgres"]
    assert pg0 is not None and pg1 is not None
    assert pg1 - pg0 >= 0.2, (pg0, pg1)  # three scans of 3 million rows take well over 0.2 s of CPU
    assert before.groups["kafka"] is not None and after.groups["generator"] is not None
    assert os.getpid() == groups.own_pid



def test_records_per_family_by_topic_without_the_worlds_prefix():
    from regsosek_tools.measure.budget import records_per_unit

    ends0 = {"b1.interview-submitted": 100, "b1.interview-verified": 50, "b1.quiet": 7}
    ends1 = {"b1.interview-submitted": 300, "b1.interview-verified": 250, "b1.quiet": 7, "b1.new": 20}
    got = records_per_unit(ends0, ends1, 200, prefix="b1.")
    assert got == {"interview-submitted": 1.0, "interview-verified": 1.0, "new": 0.1, "total": pytest.approx(2.1)}


def test_fixed_part_of_the_cpu_per_family_from_the_idle_cores():
    from regsosek_tools.report.bench import fixed_ms_per_family

    # 0.25 cores idle; a 40 s phase of 2,000 families: 10 CPU s of it would have been spent anyway
    assert fixed_ms_per_family({"cores": 0.25}, {"span_s": 40.0, "units": 2000}) == pytest.approx(5.0)
    assert fixed_ms_per_family({"cores": None}, {"span_s": 40.0, "units": 2000}) is None


def test_postgres_background_processes_are_told_from_the_backends():
    from regsosek_tools.measure.budget import background_cpu_s

    procs = table((100, 1, 1.0, 50.0), (101, 100, 7.0, 0.0), (102, 100, 2.0, 0.0), (103, 100, 3.0, 0.5),
                   (104, 100, 4.0, 0.0), (105, 100, 9.0, 0.0), (200, 1, 30.0, 0.0), (201, 200, 5.0, 0.0))
    titles = {101: "postgres: checkpointer ", 102: "postgres: background writer ", 103: "postgres: autovacuum worker ",
              104: "postgres: walwriter ", 105: "postgres: regsosek bench_intake 127.0.0.1(5432) idle",
              201: "postgres: checkpointer "}

    def title(pid: int) -> str:
        if pid not in titles:
            raise FileNotFoundError(pid)  # a process that ended while the table was read
        return titles[pid]
    assert background_cpu_s([100], procs, title) == 7.0 + 2.0 + 3.5 + 4.0  # not the backend, not another cluster
    assert background_cpu_s([100, 200], procs, title) == 16.5 + 5.0
    assert background_cpu_s([], procs, title) == 0.0
