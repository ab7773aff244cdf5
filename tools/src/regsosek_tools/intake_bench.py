"""Intake alone: its memory at rest and under batch uploads, and its single requests at fixed offered
rates (issue 16, targets 5 and 6).

    python -m regsosek_tools.intake_bench                                  # defaults below
    python -m regsosek_tools.intake_bench --rates 100,300,1000 --duration 10 --env REGSOSEK_HTTP_WORKERS=2
    python -m regsosek_tools.intake_bench --phases batch --json out.json

A world of its own on the running stack (database and topics; nothing downstream of intake), one
intake process (with its HTTP workers, REGSOSEK_HTTP_WORKERS, if set with --env), and these phases:

- idle: RSS of every process of intake a few seconds after it is ready (before any request), and
  again ("warm") at rest after the rosters and the warm-up requests;
- batch: `--batch-families` interviews uploaded by `--devices` devices, `--batch-size` per request
  (POST /v1/interviews:batch: what the full bench's throughput phase does), RSS sampled every 0.1 s;
- single: after `--warmup` requests, single POST /v1/interviews sent open loop at each `--rates`
  rate for `--duration` s, whatever the answers. Latency = answer − the request's scheduled send
  time (a request the generator could not send on time waits in the figure, as a device would).

For every phase: the peak RSS of each intake process (VmRSS sampled, and the kernel's high-water
mark VmHWM at the end), intake's CPU seconds (every process, from /proc, the relay's publishing
included) and CPU per accepted request, and the stack's PostgreSQL's (its backends: the statements
of every client of the stack, so run it on a stack nothing else uses). The figures depend on what else the machine runs: read the
load average printed with them, and compare runs made back to back.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sys
import time
from pathlib import Path

import orjson

from regsosek_tools.load.families import Family, build_pool
from regsosek_tools.load.http import RawHttp
from regsosek_tools.load.pacing import schedule
from regsosek_tools.measure.budget import CpuGroups
from regsosek_tools.measure.proc import git_commit, proc_cpu_s, proc_memory_kb, stack_pids
from regsosek_tools.measure.profile import FlameGraphs
from regsosek_tools.measure.stats import distribution
from regsosek_tools.processes import ROOT, ServiceProcess
from regsosek_tools.sample import officer_areas
from regsosek_tools.world import World, free_port


def process_tree(pid: int) -> list[int]:
    """`pid` and its descendants (intake's HTTP worker processes), from /proc."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        with contextlib.suppress(OSError):
            for task in Path(f"/proc/{p}/task").iterdir():
                with contextlib.suppress(OSError):
                    todo += [int(c) for c in (task / "children").read_text().split()]
    return out


class Watch:
    """Samples the RSS of intake's processes every `every` s; CPU seconds on demand."""

    def __init__(self, pid: int, every: float = 0.1) -> None:
        self.pid, self.every = pid, every
        self.peak_kb: dict[int, int] = {}
        self.peak_sum_kb = 0
        self._task: asyncio.Task | None = None

    def reset(self) -> None:
        self.peak_kb, self.peak_sum_kb = {}, 0

    def sample(self) -> dict[int, int]:
        now = {p: rss for p in process_tree(self.pid) if (rss := proc_memory_kb(p)[0]) is not None}
        for p, rss in now.items():
            self.peak_kb[p] = max(self.peak_kb.get(p, 0), rss)
        self.peak_sum_kb = max(self.peak_sum_kb, sum(now.values()))
        return now

    def hwm_kb(self) -> dict[int, int]:
        return {p: hwm for p in process_tree(self.pid) if (hwm := proc_memory_kb(p)[1]) is not None}

    def cpu_s(self) -> float:
        return sum(c for p in process_tree(self.pid) if (c := proc_cpu_s(p)) is not None)

    async def run(self) -> None:
        while True:
            self.sample()
            await asyncio.sleep(self.every)

    def start(self) -> None:
        self._task = asyncio.create_task(self.run())

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    def figures(self) -> dict:
        mb = 1024.0
        return {"peak_rss_mb": {str(p): round(v / mb, 1) for p, v in sorted(self.peak_kb.items())},
                "peak_rss_max_mb": round(max(self.peak_kb.values(), default=0) / mb, 1),
                "peak_rss_sum_mb": round(self.peak_sum_kb / mb, 1),
                "hwm_mb": {str(p): round(v / mb, 1) for p, v in sorted(self.hwm_kb().items())}}


class IntakeBench:
    def __init__(self, a: argparse.Namespace) -> None:
        self.a = a
        self.world = World(["intake"], kind="intakebench")
        self.port = free_port()
        self.tokens: dict[str, str] = {}
        self.http = RawHttp("127.0.0.1", self.port, connections=a.max_inflight)
        self.proc: ServiceProcess | None = None
        self.watch: Watch | None = None
        self.postgres: CpuGroups | None = None
        self.t0 = time.monotonic()

    def log(self, msg: str) -> None:
        print(f"[{time.monotonic() - self.t0:6.1f}s] {msg}", file=sys.stderr, flush=True)

    def token(self, officer: str, areas: list[str] | None = None) -> str:
        """An officer's token for their village, or with `areas` (a device uploading for the province)."""
        from regsosek.auth import Role, mint

        if officer not in self.tokens:
            self.tokens[officer] = mint(subject=officer, role=Role.OFFICER, areas=areas or officer_areas(officer),
                                        ttl_s=24 * 3600)
        return self.tokens[officer]

    async def start(self) -> None:
        await self.world.create()
        extra = {"REGSOSEK_AUTH_MAX_TOKEN_LIFETIME_S": str(24 * 3600)}
        for kv in self.a.env or []:
            k, _, v = kv.partition("=")
            extra[k] = v
        self.proc = ServiceProcess("intake", self.world.service_env("intake", self.port, log_level="WARNING",
                                                                    extra=extra), self.port)
        self.proc.log_path = ROOT / ".local" / "logs" / "bench" / f"{self.world.tag}-intake.log"
        self.proc.start()
        await self.proc.wait_ready_async(self.a.start_timeout)
        assert self.proc.pid is not None
        self.watch = Watch(self.proc.pid)
        self.postgres = CpuGroups(dict, {"postgres": stack_pids(self.world.stack.bootstrap,
                                                                self.world.stack.pg_base).get("postgres", [])})

    def postgres_cpu_s(self) -> float | None:
        """The stack's PostgreSQL backends' CPU seconds so far (None when it runs elsewhere)."""
        assert self.postgres
        return self.postgres.read().groups.get("postgres")

    def postgres_figures(self, cpu0: float | None, cpu1: float | None, units: int, per: str) -> dict:
        if cpu0 is None or cpu1 is None:
            return {"postgres_cpu_s": None, f"postgres_cpu_ms_per_{per}": None}
        cpu = cpu1 - cpu0
        return {"postgres_cpu_s": round(cpu, 2), f"postgres_cpu_ms_per_{per}": round(1000 * cpu / max(units, 1), 3)}

    async def stop(self) -> None:
        if self.watch:
            await self.watch.stop()
        await self.http.close()
        if self.proc:
            await asyncio.to_thread(self.proc.stop, 15.0)
        await self.world.destroy(timeout_s=30.0)

    async def post(self, path: str, body: bytes, token: str) -> tuple[int, bytes, float]:
        return await self.http.request(self.http.build("POST", path, body, token))

    # ------------------------------------------------------------ phases

    async def idle(self) -> dict:
        assert self.watch
        await asyncio.sleep(self.a.idle_s)
        self.watch.reset()
        self.watch.sample()
        return {"processes": len(self.watch.peak_kb), **self.watch.figures()}

    async def batch(self, fams: list[Family]) -> dict:
        assert self.watch
        batches = [fams[i:i + self.a.batch_size] for i in range(0, len(fams), self.a.batch_size)]
        queue: asyncio.Queue[list[Family]] = asyncio.Queue()
        for b in batches:
            queue.put_nowait(b)
        statuses: dict[int, int] = {}

        async def device(k: int) -> None:
            token = self.token(f"BENCH-DEVICE-{k:02d}", ["64"])  # as the full bench's devices: the province
            while not queue.empty():
                b = queue.get_nowait()
                body = b'{"interviews":[' + b",".join(f.body for f in b) + b"]}"
                status, text, _ = await self.post("/v1/interviews:batch", body, token)
                statuses[status] = statuses.get(status, 0) + 1
                if status == 200:
                    for r in orjson.loads(text)["results"]:
                        statuses[r["status"]] = statuses.get(r["status"], 0) + 1

        self.watch.reset()
        self.watch.start()
        cpu0, pg0, t0 = self.watch.cpu_s(), self.postgres_cpu_s(), time.monotonic()
        await asyncio.gather(*(device(k) for k in range(self.a.devices)))
        wall, cpu, pg1 = time.monotonic() - t0, self.watch.cpu_s() - cpu0, self.postgres_cpu_s()
        await self.watch.stop()
        accepted = statuses.get(202, 0)
        return {"families": len(fams), "requests": len(batches), "statuses": statuses, "wall_s": round(wall, 2),
                "accepted_per_s": round(accepted / wall, 1), "cpu_s": round(cpu, 2),
                "cpu_ms_per_family": round(1000 * cpu / max(accepted, 1), 3),
                **self.postgres_figures(pg0, pg1, accepted, "family"), "load_avg": os.getloadavg()[0],
                **self.watch.figures()}

    async def single(self, fams: list[Family], rate: int, duration: float) -> dict:
        assert self.watch
        offsets = schedule(rate, duration)[:len(fams)]
        raws = [self.http.build("POST", "/v1/interviews", f.body, self.token(f.officer)) for f in fams]
        answers: list[tuple[int, float] | None] = [None] * len(offsets)

        async def one(i: int, due_at: float) -> None:
            try:
                status, _, _ = await self.http.request(raws[i])
            except Exception:  # noqa: BLE001 - counted as failed
                status = 0
            answers[i] = (status, time.monotonic() - due_at)

        self.watch.reset()
        self.watch.start()
        cpu0, pg0, start = self.watch.cpu_s(), self.postgres_cpu_s(), time.monotonic()
        tasks = []
        for i, off in enumerate(offsets):
            delay = start + off - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(i, start + off)))
        sent_s = time.monotonic() - start
        done, pending = await asyncio.wait(tasks, timeout=self.a.answers_timeout)
        for t in pending:
            t.cancel()
        wall, cpu, pg1 = time.monotonic() - start, self.watch.cpu_s() - cpu0, self.postgres_cpu_s()
        await self.watch.stop()
        got = [a for a in answers if a is not None]
        ok = [lat for status, lat in got if status in (200, 202)]
        statuses: dict[int, int] = {}
        for status, _ in got:
            statuses[status] = statuses.get(status, 0) + 1
        # accepted/s over the window in which they were answered (the last answer ends it)
        return {"rate": rate, "duration_s": duration, "sent": len(offsets), "sent_rate": round(len(offsets) / sent_s, 1),
                "statuses": statuses, "unanswered": len(pending), "accepted_per_s": round(len(ok) / wall, 1),
                "latency_s": distribution(ok), "cpu_s": round(cpu, 2),
                "cpu_ms_per_request": round(1000 * cpu / max(len(ok), 1), 3),
                **self.postgres_figures(pg0, pg1, len(ok), "request"), "load_avg": os.getloadavg()[0],
                **self.watch.figures()}


async def main_async(a: argparse.Namespace) -> dict:
    per_rate = [len(schedule(r, a.duration)) for r in a.rates] if "single" in a.phases else []
    need = a.warmup + (a.batch_families if "batch" in a.phases else 0) + sum(per_rate)
    pool = build_pool(a.seed, need)
    fams = iter(pool.families)
    commit, dirty = git_commit()
    result: dict = {"commit": commit, "dirty": dirty, "env": a.env or [], "load_avg_start": os.getloadavg()[0],
                    "phases": {}}
    b = IntakeBench(a)
    try:
        b.log(f"world {b.world.tag}; starting intake on :{b.port} ({' '.join(a.env or []) or 'default settings'})")
        await b.start()
        result["phases"]["idle"] = await b.idle()
        b.log(f"idle: {json.dumps(result['phases']['idle'])}")
        b.log(f"{len(pool.rosters)} rosters, {a.warmup} warm-up interviews")
        await asyncio.gather(*(b.post("/v1/rosters", body, b.token(officer)) for _, officer, body in pool.rosters))
        warm = [next(fams) for _ in range(a.warmup)]
        await asyncio.gather(*(b.post("/v1/interviews", f.body, b.token(f.officer)) for f in warm))
        await asyncio.sleep(a.idle_s)
        result["phases"]["warm"] = await b.idle()  # at rest again, after the rosters and the warm-up
        b.log(f"warm: {json.dumps(result['phases']['warm'])}")
        flames = None
        if a.profile:  # over the measured phases (batch, single), not the warm-up
            assert b.proc is not None and b.proc.pid is not None
            flames = FlameGraphs(Path(a.profile).parent, date="", commit="", rate=a.profile_rate,
                                 log_dir=ROOT / ".local" / "logs" / "bench", log=b.log, checkout=ROOT,
                                 fmt="raw" if a.profile.endswith(".txt") else "flamegraph")
            result["profile_problems"] = await flames.start("+".join(a.phases), [("intake", b.proc.pid)])
        if "batch" in a.phases:
            batch = [next(fams) for _ in range(a.batch_families)]
            result["phases"]["batch"] = r = await b.batch(batch)
            b.log(f"batch: {json.dumps(r)}")
        if "single" in a.phases:
            result["phases"]["single"] = []
            for rate, n in zip(a.rates, per_rate, strict=True):
                r = await b.single([next(fams) for _ in range(n)], rate, a.duration)
                result["phases"]["single"].append(r)
                b.log(f"single {rate}/s: accepted {r['accepted_per_s']}/s, p50 {r['latency_s'].get('p50')} "
                      f"p99 {r['latency_s'].get('p99')} s, CPU {r['cpu_ms_per_request']} ms/request "
                      f"(PostgreSQL {r['postgres_cpu_ms_per_request']}), "
                      f"peak RSS {r['peak_rss_max_mb']} MB, load {r['load_avg']:.1f}")
                await asyncio.sleep(a.pause)
        if flames is not None:
            (rec,) = await flames.stop()
            if rec["svg"]:
                Path(rec["svg"]).replace(a.profile)
                result["profile"] = a.profile
        result["load_avg_end"] = os.getloadavg()[0]
    finally:
        await b.stop()
    return result


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m regsosek_tools.intake_bench", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--phases", default="batch,single", help="batch, single (idle always)")
    p.add_argument("--rates", default="100,300,1000", help="offered single requests per second (default 100,300,1000)")
    p.add_argument("--duration", type=float, default=10.0, help="seconds per offered rate (default 10)")
    p.add_argument("--batch-families", type=int, default=4000, help="interviews in the batch phase (default 4000)")
    p.add_argument("--batch-size", type=int, default=100)
    p.add_argument("--devices", type=int, default=16)
    p.add_argument("--warmup", type=int, default=150)
    p.add_argument("--max-inflight", type=int, default=512, help="connections to intake at most (default 512)")
    p.add_argument("--idle-s", type=float, default=3.0)
    p.add_argument("--pause", type=float, default=3.0, help="seconds between rates")
    p.add_argument("--answers-timeout", type=float, default=60.0)
    p.add_argument("--start-timeout", type=float, default=120.0)
    p.add_argument("--seed", type=int, default=16)
    p.add_argument("--env", action="append", help="KEY=VALUE for intake's environment (repeatable)")
    p.add_argument("--json", help="write the result here too")
    p.add_argument("--profile", help="flame graph (SVG) of intake over the measured phases (py-spy; "
                   "a name ending in .txt: collapsed stacks)")
    p.add_argument("--profile-rate", type=int, default=100, help="py-spy samples per second (default 100)")
    a = p.parse_args(argv)
    a.phases = [x.strip() for x in a.phases.split(",") if x.strip()]
    a.rates = [int(x) for x in a.rates.split(",") if x.strip()]
    return a


def main(argv: list[str] | None = None) -> int:
    a = parse_args(argv)
    result = asyncio.run(main_async(a))
    text = json.dumps(result, indent=2)
    print(text)
    if a.json:
        Path(a.json).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
