"""Flame graphs of the running services: py-spy record attached to each service process for one
bench phase (python -m regsosek_tools.bench --profile).

py-spy samples the Python stacks of a running process from outside (ptrace: root, or
CAP_SYS_PTRACE, or kernel.yama.ptrace_scope 0), so the services run unchanged. Each profiled phase
writes one SVG per service instance, named by date, commit, phase and instance:

    docs/bench/flame-2026-12-01-92ed5d2-throughput-verify.svg

py-spy stops on SIGINT and then writes its file; a py-spy that could not attach (no permission,
the process gone) is reported, not fatal.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any


def py_spy() -> str | None:
    """The py-spy executable of this environment (the root dev dependency), else the one on PATH."""
    here = Path(sys.executable).parent / "py-spy"
    return str(here) if here.exists() else shutil.which("py-spy")


def flame_name(date: str, commit: str, phase: str, instance: str) -> str:
    """The SVG's file name: date, commit, phase and instance, in characters safe in a path."""
    parts = [date, commit.replace("+dirty", "-dirty")[:20], phase, instance]
    return "flame-" + "-".join(re.sub(r"[^A-Za-z0-9_.-]+", "_", p).strip("_") for p in parts) + ".svg"


def record_command(exe: str, pid: int, svg: Path, rate: int, fmt: str = "flamegraph") -> list[str]:
    """py-spy record of one process (and its children: intake's HTTP workers) until SIGINT; `fmt` raw
    writes collapsed stacks (one line per stack and its sample count) instead of an SVG."""
    return [exe, "record", "--pid", str(pid), "--output", str(svg), "--format", fmt, "--rate", str(rate),
            "--subprocesses", "--nonblocking"]


def without_checkout(svg: Path, checkout: Path) -> None:
    """The flame graph with the checkout's absolute path cut out of the command lines it shows."""
    text = svg.read_text(errors="replace")
    svg.write_text(text.replace(f"{checkout}/", ""))


def _log_file(path: Path):
    """py-spy's own output, appended to (opened once at its start)."""
    return open(path, "ab")  # noqa: SIM115 - closed by the caller's with


@dataclass
class Recording:
    instance: str
    pid: int
    svg: Path
    proc: asyncio.subprocess.Process | None = None
    log: Path | None = None


class FlameGraphs:
    """py-spy on a set of processes for one phase at a time: `start` before, `stop` after."""

    def __init__(self, out_dir: Path, *, date: str, commit: str, rate: int = 100, log_dir: Path,
                 log: Callable[[str], None] = lambda _: None, checkout: Path | None = None,
                 fmt: str = "flamegraph") -> None:
        self.out_dir, self.date, self.commit, self.rate, self.log_dir, self.log = out_dir, date, commit, rate, log_dir, log
        self.fmt = fmt
        self.checkout = checkout  # its path is cut from the SVGs' command lines (they go into the repository)
        self.exe = py_spy()
        self.running: list[Recording] = []
        self.phase = ""

    async def start(self, phase: str, pids: Iterable[tuple[str, int]]) -> list[str]:
        """Attaches to each (instance, pid); returns the problems (none when every py-spy started)."""
        if self.exe is None:
            return ["py-spy not found: install the dev dependencies (uv sync), or put py-spy on PATH"]
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.phase = phase
        for instance, pid in pids:
            log = self.log_dir / f"py-spy-{phase}-{instance.replace('#', '-')}.log"
            rec = Recording(instance, pid, self.out_dir / flame_name(self.date, self.commit, phase, instance), log=log)
            with _log_file(log) as err:
                rec.proc = await asyncio.create_subprocess_exec(
                    *record_command(self.exe, pid, rec.svg, self.rate, self.fmt), stdin=subprocess.DEVNULL,
                    stdout=err, stderr=err, start_new_session=True)
            self.running.append(rec)
        self.log(f"profile: py-spy recording {', '.join(r.instance for r in self.running)} during {phase}")
        await asyncio.sleep(1.0)  # attached before the phase starts; one that failed has exited by now
        return [f"py-spy could not attach to {r.instance} (pid {r.pid}): see {r.log}"
                for r in self.running if r.proc is not None and r.proc.returncode not in (None, 0)]

    async def stop(self, timeout: float = 120.0) -> list[dict]:
        """SIGINT to every py-spy; waits for each to write its SVG. One entry per instance."""
        out: list[dict[str, Any]] = []
        for rec in self.running:
            if rec.proc is not None and rec.proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    rec.proc.send_signal(signal.SIGINT)
        for rec in self.running:
            rc = None
            if rec.proc is not None:
                try:
                    rc = await asyncio.wait_for(rec.proc.wait(), timeout)
                except TimeoutError:
                    with contextlib.suppress(ProcessLookupError):
                        rec.proc.kill()
                    rc = await rec.proc.wait()
            written = rec.svg.exists() and rec.svg.stat().st_size > 0
            if written and self.checkout is not None:
                without_checkout(rec.svg, self.checkout)
            out.append({"phase": self.phase, "instance": rec.instance, "svg": str(rec.svg) if written else None,
                        "rc": rc, "log": str(rec.log)})
        self.running = []
        self.log("profile: " + ", ".join(f"{e['instance']} -> {Path(e['svg']).name if e['svg'] else 'NO SVG'}"
                                         for e in out))
        return out
