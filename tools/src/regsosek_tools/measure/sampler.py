"""The bench's sampler: once a second, per service instance RSS, high-water mark, CPU and
events consumed (from its /metrics), consumer lag per group, and the machine's CPU; then
per-phase figures from the samples."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from regsosek_tools.measure.kafka import parse_counter
from regsosek_tools.measure.proc import proc_cpu_s, proc_memory_kb, system_cpu
from regsosek_tools.processes import PIPELINE as SERVICES
from regsosek_tools.processes import ServiceProcess

CONSUMED_METRIC = "regsosek_events_consumed_total"


@dataclass
class Instance:
    key: str  # "verify", "verify#2", ...
    service: str  # "verify" (or "receiver")
    proc: ServiceProcess


@dataclass
class Snapshot:
    t: float  # seconds since the bench started
    phase: str
    rss_kb: dict[str, int] = field(default_factory=dict)
    hwm_kb: dict[str, int] = field(default_factory=dict)
    cpu_s: dict[str, float] = field(default_factory=dict)
    consumed: dict[str, float] = field(default_factory=dict)
    lag: dict[str, int] = field(default_factory=dict)
    cpu_busy: float | None = None  # whole machine, % of all CPUs since the previous sample


class Sampler:
    """Samples `instances` (a live view: instances stopped on purpose leave it first) every second
    into `samples`, labelled with the current `phase`; an instance that exited is an error."""

    def __init__(self, instances: dict[str, Instance], lags: Callable[[], Awaitable[dict[str, int]]], http: Any, *,
                 now: Callable[[], float], log: Callable[[str], None], errors: list[str]) -> None:
        self.instances, self.lags, self.http = instances, lags, http
        self.now, self.log, self.errors = now, log, errors
        self.samples: list[Snapshot] = []
        self.phase = "setup"

    async def _metrics(self, inst: Instance) -> float | None:
        try:
            r = await self.http.get(f"{inst.proc.url}/metrics", timeout=2.0)
            return parse_counter(r.text, CONSUMED_METRIC) if r.status_code == 200 else None
        except Exception:  # noqa: BLE001
            return None

    async def run(self) -> None:
        """Samples once a second until cancelled."""
        prev_cpu = system_cpu()
        next_at = time.monotonic()
        while True:
            next_at += 1.0
            prev_cpu = await self.sample_once(prev_cpu)
            await asyncio.sleep(max(0.05, next_at - time.monotonic()))
            if time.monotonic() - next_at > 5:  # fell far behind (busy machine): do not burst to catch up
                next_at = time.monotonic()

    async def sample_once(self, prev_cpu: tuple[float, float] | None) -> tuple[float, float] | None:
        """One snapshot appended to `samples`; returns the machine's CPU counters for the next one."""
        s = Snapshot(t=round(self.now(), 2), phase=self.phase)
        insts = list(self.instances.values())
        for i in insts:
            if i.proc.running and i.proc.pid:
                self._process_figures(s, i)
            elif i.proc.proc is not None and i.proc.returncode is not None:
                msg = f"{i.key} exited with code {i.proc.returncode} (log {i.proc.log_path})"
                if msg not in self.errors:
                    self.errors.append(msg)
                    self.log("ERROR " + msg)
        services = [i for i in insts if i.service != "receiver"]
        got = await asyncio.gather(*(self._metrics(i) for i in services))
        for i, v in zip(services, got, strict=True):
            if v is not None:
                s.consumed[i.key] = v
        with contextlib.suppress(Exception):  # a sample without lag; keep sampling
            s.lag = await self.lags()
        cpu = system_cpu()
        if cpu and prev_cpu and cpu[1] > prev_cpu[1]:
            s.cpu_busy = round(100 * (cpu[0] - prev_cpu[0]) / (cpu[1] - prev_cpu[1]), 1)
        self.samples.append(s)
        return cpu

    @staticmethod
    def _process_figures(s: Snapshot, i: Instance) -> None:
        assert i.proc.pid is not None
        rss, hwm = proc_memory_kb(i.proc.pid)
        cpu = proc_cpu_s(i.proc.pid)
        if rss is not None:
            s.rss_kb[i.key] = rss
        if hwm is not None:
            s.hwm_kb[i.key] = hwm
        if cpu is not None:
            s.cpu_s[i.key] = cpu

    def latest_lag(self) -> dict[str, int] | None:
        for s in reversed(self.samples[-3:]):
            if s.lag:
                return s.lag
        return None

    def phase_services(self, phase: str) -> dict[str, dict]:
        """Per service during one phase: events consumed/s (mean and peak over 5 s), CPU %."""
        ss = [s for s in self.samples if s.phase == phase]
        out: dict[str, dict] = {}
        if len(ss) < 2:
            return out
        span = ss[-1].t - ss[0].t
        for svc in SERVICES:
            keys = {k for s in ss for k in s.consumed if k.split("#")[0] == svc}
            total = 0.0
            cpu = 0.0
            for k in keys:
                pts = [(s.t, s.consumed[k]) for s in ss if k in s.consumed]
                if len(pts) >= 2:
                    total += pts[-1][1] - pts[0][1]
                cp = [s.cpu_s[k] for s in ss if k in s.cpu_s]
                if len(cp) >= 2:
                    cpu += cp[-1] - cp[0]
            peak = 0.0
            for i in range(len(ss)):
                j = next((j for j in range(i, len(ss)) if ss[j].t - ss[i].t >= 5.0), None)
                if j is None:
                    break
                d = sum(ss[j].consumed.get(k, 0) - ss[i].consumed.get(k, 0) for k in keys
                        if k in ss[i].consumed and k in ss[j].consumed)
                peak = max(peak, d / (ss[j].t - ss[i].t))
            lag = [s.lag.get(svc, 0) for s in ss if s.lag]
            out[svc] = {"instances": len(keys), "consumed": total, "consumed_per_s": total / span if span else None,
                        "peak_consumed_per_s_5s": peak, "cpu_percent": 100 * cpu / span if span else None,
                        "lag_max": max(lag) if lag else None, "lag_end": lag[-1] if lag else None}
        busy = [s.cpu_busy for s in ss if s.cpu_busy is not None]
        out["_machine"] = {"cpu_busy_percent_mean": sum(busy) / len(busy) if busy else None, "span_s": span}
        return out

    def memory(self) -> dict[str, dict]:
        out: dict[str, dict] = {}
        for s in self.samples:
            for k, v in s.rss_kb.items():
                svc = k.split("#")[0]
                o = out.setdefault(svc, {"max_rss_mb": 0.0, "max_hwm_mb": 0.0, "instances": set()})
                o["max_rss_mb"] = max(o["max_rss_mb"], v / 1024)
                o["instances"].add(k)
            for k, v in s.hwm_kb.items():
                o = out.setdefault(k.split("#")[0], {"max_rss_mb": 0.0, "max_hwm_mb": 0.0, "instances": set()})
                o["max_hwm_mb"] = max(o["max_hwm_mb"], v / 1024)
        for o in out.values():
            o["instances"] = sorted(o["instances"])
        return out

    def lag_series(self) -> dict[str, list]:
        return {svc: [[s.t, s.phase, s.lag.get(svc)] for s in self.samples if s.lag] for svc in SERVICES}
