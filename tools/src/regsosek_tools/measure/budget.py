"""The CPU budget of a phase: CPU seconds of every process group of the run between two readings,
divided by what the phase moved (families, or the ceiling's records).

Groups: each service (every instance, with its HTTP workers and any child process: the instance's
process tree), the reference receiver, the load generator (the bench process itself, without its
children: those are the services), the Kafka broker(s) and the PostgreSQL cluster of the stack (the
postmaster's tree: backends come and go, the postmaster's reaped-children CPU keeps theirs; see
measure.proc.tree_cpu_s). The machine's busy CPU over the same span is beside them: what it holds
beyond the groups is other work on the machine (other users, the kernel's own threads).

On a machine whose cores are all busy, families/s = CPU available / CPU per family and
records/s = CPU available / CPU per record, whatever the number of cores: the pipeline-to-ceiling
ratio is then bounded by (ceiling CPU per record) / (pipeline CPU per family) (`bound`)."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from regsosek_tools.measure.proc import ProcStat, process_table, system_cpu, tree_cpu_s
from regsosek_tools.processes import PIPELINE

_CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
STACK_GROUPS = ("kafka", "postgres")
# PostgreSQL's own processes, apart from the backends running the services' statements: what they do
# (checkpoints, writing dirty buffers, WAL, vacuum) follows what was written before as much as the phase.
PG_BACKGROUND = "postgres-background"
PG_BACKGROUND_TITLES = ("postgres: checkpointer", "postgres: background writer", "postgres: walwriter",
                        "postgres: autovacuum")
GROUPS = (*PIPELINE, "receiver", "generator", *STACK_GROUPS, PG_BACKGROUND)
# The raw-Kafka ceiling's own processes (load.ceiling): each reports its CPU at its end.
CEILING_STAGES = ("producer", "relay1", "relay2", "sink")


@dataclass(frozen=True)
class CpuReading:
    """Cumulative CPU seconds of each group at one moment (None: the group had no running process)."""

    t: float  # time.monotonic()
    groups: dict[str, float | None] = field(default_factory=dict)
    machine_busy_s: float | None = None  # all CPUs, all processes (/proc/stat)


def read_groups(members: Mapping[str, list[int]], table: Mapping[int, ProcStat], *,
                own_pid: int) -> dict[str, float | None]:
    """Each group's cumulative CPU from one process table: the sum of its members' trees; None when a
    member is not running (a figure without it would be too low). "generator" is `own_pid` alone."""
    out: dict[str, float | None] = {}
    for group, pids in members.items():
        trees = [tree_cpu_s(pid, table) for pid in pids]
        out[group] = sum(t for t in trees if t is not None) if pids and None not in trees else None
    own = table.get(own_pid)
    out["generator"] = own.cpu_s if own else None
    return out


def budget(start: CpuReading, end: CpuReading, units: int) -> dict:
    """Per group: CPU seconds between the readings, ms per unit (family or record), share of the
    groups' total and cores kept busy; the groups' total; the machine's busy CPU and what of it was
    outside the groups."""
    span = end.t - start.t
    rows: dict[str, dict] = {}
    for g in (*[g for g in GROUPS if g in end.groups], *[g for g in end.groups if g not in GROUPS]):
        a, b = start.groups.get(g), end.groups.get(g)
        rows[g] = {"cpu_s": b - a if a is not None and b is not None else None}
    total = sum(r["cpu_s"] for r in rows.values() if r["cpu_s"] is not None)
    for r in rows.values():
        d = r["cpu_s"]
        r["ms_per_unit"] = 1000 * d / units if d is not None and units else None
        r["share"] = d / total if d is not None and total else None
        r["cores"] = d / span if d is not None and span > 0 else None
    machine = (end.machine_busy_s - start.machine_busy_s
               if end.machine_busy_s is not None and start.machine_busy_s is not None else None)
    return {"units": units, "span_s": span, "groups": rows, "total_cpu_s": total,
            "total_ms_per_unit": 1000 * total / units if units else None,
            "cores": total / span if span > 0 else None,
            "machine_busy_cpu_s": machine,
            "outside_groups_cpu_s": machine - total if machine is not None else None,
            "missing": [g for g, r in rows.items() if r["cpu_s"] is None]}


def ceiling_budget(start: CpuReading, end: CpuReading, stages: Mapping[str, float | None], records: int) -> dict:
    """The ceiling's CPU per record: the broker(s) over the phase plus each stage's own CPU (reported
    by the stage). The services, receiver and PostgreSQL idle during the phase: their CPU is shown
    (`idle`) but is not the ceiling's; neither is the generator's (the bench sampling and waiting)."""
    phase = budget(start, end, records)
    rows: dict[str, dict] = {}
    kafka = phase["groups"].get("kafka", {}).get("cpu_s")
    rows["kafka"] = {"cpu_s": kafka}
    for name in (*[s for s in CEILING_STAGES if s in stages], *[s for s in stages if s not in CEILING_STAGES]):
        rows[name] = {"cpu_s": stages[name]}
    measured = [r["cpu_s"] for r in rows.values() if r["cpu_s"] is not None]
    total = sum(measured)
    for r in rows.values():
        d = r["cpu_s"]
        r["ms_per_unit"] = 1000 * d / records if d is not None and records else None
        r["share"] = d / total if d is not None and total else None
    idle = {g: r["cpu_s"] for g, r in phase["groups"].items() if g != "kafka"}
    return {"units": records, "span_s": phase["span_s"], "groups": rows, "total_cpu_s": total,
            "total_ms_per_unit": 1000 * total / records if records else None,
            "cores": total / phase["span_s"] if phase["span_s"] > 0 else None,
            "idle": idle, "machine_busy_cpu_s": phase["machine_busy_cpu_s"],
            "missing": [g for g, r in rows.items() if r["cpu_s"] is None]}


def records_per_unit(ends0: Mapping[str, int], ends1: Mapping[str, int], units: int, *, prefix: str = "") -> dict:
    """Records written to each topic between two readings of its end offsets (summed over partitions),
    per unit (family), by topic name without `prefix`; "total" over every topic."""
    out: dict[str, float] = {}
    for topic, end in sorted(ends1.items()):
        d = end - ends0.get(topic, 0)
        if d and units:
            out[topic.removeprefix(prefix)] = d / units
    out["total"] = sum(out.values())
    return out


def bound(pipeline_ms_per_family: float | None, ceiling_ms_per_record: float | None) -> float | None:
    """The pipeline-to-ceiling ratio both would reach with every core busy: (ceiling CPU per record) /
    (pipeline CPU per family); the same on any number of cores."""
    if not pipeline_ms_per_family or ceiling_ms_per_record is None:
        return None
    return ceiling_ms_per_record / pipeline_ms_per_family


def background_cpu_s(postmasters: list[int], table: Mapping[int, ProcStat],
                     title: Callable[[int], str]) -> float:
    """CPU seconds so far of the live children of `postmasters` whose process title names a background
    process (PG_BACKGROUND_TITLES: checkpointer, background writer, WAL writer, autovacuum launcher and
    workers). An autovacuum worker that ends moves into the postmaster's reaped CPU, i.e. the backends'."""
    total = 0.0
    for st in table.values():
        if st.ppid in postmasters:
            try:
                name = title(st.pid)
            except OSError:
                continue
            if name.startswith(PG_BACKGROUND_TITLES):
                total += st.cpu_s + st.reaped_s
    return total


def _title(pid: int) -> str:
    with open(f"/proc/{pid}/cmdline", "rb") as f:
        return f.read().split(b"\0", 1)[0].decode(errors="replace")


class CpuGroups:
    """Reads every group's cumulative CPU now: the services' process ids from `services` (a live
    view: {service or "receiver": [pids]}), the stack's from `stack` (found once: measure.proc.stack_pids)."""

    def __init__(self, services: Callable[[], dict[str, list[int]]], stack: Mapping[str, list[int]], *,
                 own_pid: int | None = None) -> None:
        self.services, self.stack = services, dict(stack)
        self.own_pid = own_pid if own_pid is not None else os.getpid()

    def read(self) -> CpuReading:
        members = {**self.services(), **{g: pids for g, pids in self.stack.items() if pids}}
        table = process_table()
        groups = read_groups(members, table, own_pid=self.own_pid)
        for g in STACK_GROUPS:  # not found (an external server): shown as missing, not as zero
            groups.setdefault(g, None)
        postmasters = members.get("postgres") or []
        if groups["postgres"] is not None:  # the backends (statements) apart from the background processes
            background = background_cpu_s(postmasters, table, _title)
            groups["postgres"] -= background
            groups[PG_BACKGROUND] = background
        busy = system_cpu()
        return CpuReading(t=time.monotonic(), groups=groups, machine_busy_s=busy[0] / _CLK_TCK if busy else None)
