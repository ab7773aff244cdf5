"""What a process and the machine use: RSS, CPU, the machine's description and the commit measured."""

from __future__ import annotations

import contextlib
import os
import platform
import subprocess
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from regsosek_tools.processes import ROOT

_CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def proc_memory_kb(pid: int) -> tuple[int | None, int | None]:
    """(VmRSS, VmHWM) of a process in kB, from /proc/<pid>/status."""
    rss = hwm = None
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1])
            elif line.startswith("VmHWM:"):
                hwm = int(line.split()[1])
    except (OSError, ValueError):
        pass
    return rss, hwm


def proc_cpu_s(pid: int) -> float | None:
    """User + system CPU seconds of a process, from /proc/<pid>/stat."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / _CLK_TCK
    except (OSError, IndexError, ValueError):
        return None


def system_cpu() -> tuple[float, float] | None:
    """(busy, total) jiffies of all CPUs, from /proc/stat."""
    try:
        parts = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    except (OSError, ValueError):
        return None
    idle = parts[3] + (parts[4] if len(parts) > 4 else 0)
    return float(sum(parts) - idle), float(sum(parts))


def machine_info() -> dict:
    mem_kb = 0
    with contextlib.suppress(OSError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_kb = int(line.split()[1])
    cpu = ""
    with contextlib.suppress(OSError):
        cpu = next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                    if ln.startswith("model name")), "")
    kafka = ""
    with contextlib.suppress(OSError):
        kafka = next((ln.split("=", 1)[1].strip().strip("\"'") for ln in
                      (ROOT / "scripts" / "versions.env").read_text().splitlines() if ln.startswith("KAFKA_VERSION")), "")
    return {"nproc": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
            "mem_gib": mem_kb / 1024 / 1024, "cpu": cpu, "python": platform.python_version(),
            "kernel": platform.release(), "kafka": kafka, "loadavg_at_start": os.getloadavg()}


def git_commit() -> tuple[str, bool]:
    """(short commit, whether tracked files differ from it)."""
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                                timeout=10).stdout.strip()
        dirty = bool(subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                                    capture_output=True, text=True, timeout=10).stdout.strip())
    except (OSError, subprocess.SubprocessError):
        return "unknown", False
    return commit or "unknown", dirty


# ---------------------------------------------------------------- CPU of process trees (the CPU budget)


@dataclass(frozen=True)
class ProcStat:
    """One process's line of /proc/<pid>/stat, in CPU seconds."""

    pid: int
    ppid: int
    cpu_s: float  # utime + stime: the process itself, every thread
    reaped_s: float  # cutime + cstime: its children that ended and that it waited for (with theirs)


def parse_stat(text: str, clk_tck: int = _CLK_TCK) -> ProcStat:
    """/proc/<pid>/stat's text; the command name (field 2) may hold spaces and parentheses."""
    head, _, rest = text.rpartition(")")
    pid = int(head.split("(", 1)[0])
    f = rest.split()  # f[0] is field 3 (state)
    return ProcStat(pid=pid, ppid=int(f[1]), cpu_s=(int(f[11]) + int(f[12])) / clk_tck,
                    reaped_s=(int(f[13]) + int(f[14])) / clk_tck)


def process_table(proc: Path = Path("/proc")) -> dict[int, ProcStat]:
    """Every process now (those that end while it is read are left out)."""
    out: dict[int, ProcStat] = {}
    for d in proc.iterdir():
        if d.name.isdigit():
            with contextlib.suppress(OSError, ValueError, IndexError):
                st = parse_stat((d / "stat").read_text())
                out[st.pid] = st
    return out


def tree_cpu_s(root: int, table: Mapping[int, ProcStat]) -> float | None:
    """CPU seconds so far of `root`, every child it reaped, and every live descendant (each with what
    it reaped): a process group's cumulative CPU, children coming and going included. The difference
    of two readings is the tree's CPU between them (a child alive at the first and reaped by the
    second moves from the live part into its parent's reaped part). None when `root` is not running."""
    if root not in table:
        return None
    children: dict[int, list[int]] = {}
    for st in table.values():
        children.setdefault(st.ppid, []).append(st.pid)
    total, todo, seen = 0.0, [root], set()
    while todo:
        pid = todo.pop()
        if pid in seen:
            continue
        seen.add(pid)
        st = table[pid]
        total += st.cpu_s + st.reaped_s
        todo += children.get(pid, [])
    return total


def listener_ports(properties: str) -> set[int]:
    """Ports of a Kafka server.properties' `listeners` (host:port after each ://)."""
    ports: set[int] = set()
    for line in properties.splitlines():
        key, _, value = line.partition("=")
        if key.strip() == "listeners":
            for listener in value.split(","):
                with contextlib.suppress(ValueError):
                    ports.add(int(listener.strip().rsplit(":", 1)[1]))
    return ports


def postmaster_port(pid_file: str) -> int | None:
    """The port in a postmaster.pid (its fourth line)."""
    lines = pid_file.splitlines()
    try:
        return int(lines[3])
    except (IndexError, ValueError):
        return None


def find_stack_pids(kafka_ports: set[int], pg_port: int | None, pids: Iterable[int], *,
                    cmdline: Callable[[int], list[str]], read: Callable[[str], str]) -> dict[str, list[int]]:
    """The stack's servers among `pids`: {"kafka": brokers (java running kafka.Kafka whose
    properties file listens on one of `kafka_ports`), "postgres": postmasters (postgres -D <dir>
    whose <dir>/postmaster.pid names `pg_port`)}. Others' stacks on the same machine are left out."""
    out: dict[str, list[int]] = {"kafka": [], "postgres": []}
    for pid in pids:
        with contextlib.suppress(OSError, ValueError, IndexError):
            args = cmdline(pid)
            if not args:
                continue
            if "kafka.Kafka" in args:
                props = args[args.index("kafka.Kafka") + 1]
                if listener_ports(read(props)) & kafka_ports:
                    out["kafka"].append(pid)
            elif Path(args[0]).name == "postgres" and "-D" in args and pg_port is not None:
                data_dir = args[args.index("-D") + 1]
                if postmaster_port(read(str(Path(data_dir) / "postmaster.pid"))) == pg_port:
                    out["postgres"].append(pid)
    return out


def proc_cmdline(pid: int) -> list[str]:
    return [a for a in Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0") if a]


def stack_pids(bootstrap: str, pg_url: str) -> dict[str, list[int]]:
    """find_stack_pids for the stack at `bootstrap` (host:port,...) and `pg_url` (postgresql://...:port),
    from /proc; the data directory's postmaster.pid is read as root or as the cluster's owner."""
    from urllib.parse import urlsplit

    ports = set()
    for hp in bootstrap.split(","):
        with contextlib.suppress(ValueError, IndexError):
            ports.add(int(hp.strip().rsplit(":", 1)[1]))
    try:
        pg_port: int | None = urlsplit(pg_url).port or 5432
    except ValueError:
        pg_port = None
    pids = [int(d.name) for d in Path("/proc").iterdir() if d.name.isdigit()]
    return find_stack_pids(ports, pg_port, pids, cmdline=proc_cmdline, read=lambda p: Path(p).read_text())
