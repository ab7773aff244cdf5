"""Start and stop the pipeline's services as subprocesses (for the runner and for
integration and crash tests).

    proc = ServiceProcess("verify", {"REGSOSEK_LOG_LEVEL": "DEBUG"})
    proc.start(); proc.wait_ready(60)
    proc.kill()          # SIGKILL: a crash, no graceful shutdown
    proc.start(); proc.wait_ready(60)
    proc.stop()          # SIGTERM, wait, then SIGKILL

    async with running(["intake", "verify", "classify"]) as procs:
        procs["intake"].url

Each service is its console script from the same virtual environment
(`regsosek-<name>`), started in a new session with stdout and stderr appended to
`.local/logs/<name>.log`. The receiver runs as `python -m regsosek_tools.receiver`.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterable, Mapping
from datetime import datetime
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[3]
DEFAULT_PORTS = {"intake": 8001, "verify": 8002, "classify": 8003, "notify": 8004, "console": 8005, "receiver": 8009}
PIPELINE = ("intake", "verify", "classify", "notify")


class ServiceNotReady(RuntimeError):
    pass


def log_dir() -> Path:
    return Path(os.environ.get("REGSOSEK_LOG_DIR") or ROOT / ".local" / "logs")


def stack_env() -> dict[str, str]:
    """Where the local stack is: the environment, else .local/stack.env, else the defaults."""
    env = {"REGSOSEK_KAFKA_BOOTSTRAP": "127.0.0.1:19092", "REGSOSEK_PG_URL_BASE": "postgresql://regsosek@127.0.0.1:15432"}
    stack_file = ROOT / ".local" / "stack.env"
    if stack_file.exists():
        for line in stack_file.read_text().splitlines():
            line = line.strip()
            if line.startswith("export ") and "=" in line:
                k, _, v = line.removeprefix("export ").partition("=")
                if k in env:
                    env[k] = "".join(shlex.split(v))  # written with printf %q: a list's commas come escaped
    for k in env:
        if os.environ.get(k):
            env[k] = os.environ[k]
    return env


def command_for(name: str) -> list[str]:
    if name == "receiver":
        return [sys.executable, "-m", "regsosek_tools.receiver"]
    script = Path(sys.executable).parent / f"regsosek-{name}"
    if not script.exists():
        raise FileNotFoundError(f"console script {script} not found: is the {name} service installed "
                                f"(uv sync) and its entry point written?")
    return [str(script)]


def port_in_use(port: int, host: str = "127.0.0.1") -> bool:
    import socket

    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex((host, port)) == 0


class ServiceProcess:
    """One service as a child process in its own session (process group)."""

    def __init__(self, name: str, env_overrides: Mapping[str, str] | None = None, port: int | None = None, *,
                 command: list[str] | None = None, host: str = "127.0.0.1") -> None:
        self.name = name
        self.port = port if port is not None else DEFAULT_PORTS.get(name, 8000)
        self.host = host
        self.env_overrides = dict(env_overrides or {})
        self.command = command
        self.proc: subprocess.Popen | None = None
        self.log_path = log_dir() / f"{name}.log"

    def __repr__(self) -> str:
        return f"ServiceProcess({self.name!r}, port={self.port}, pid={self.pid})"

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def returncode(self) -> int | None:
        return self.proc.poll() if self.proc else None

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(stack_env())
        env.update({"REGSOSEK_HTTP_PORT": str(self.port), "REGSOSEK_HTTP_HOST": self.host, "PYTHONUNBUFFERED": "1"})
        env.update(self.env_overrides)
        return env

    def start(self) -> ServiceProcess:
        if self.running:
            raise RuntimeError(f"{self.name} is already running (pid {self.pid})")
        cmd = self.command or command_for(self.name)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            log.write(f"\n=== {datetime.now().isoformat(timespec='seconds')} starting {self.name} on port {self.port}: "
                      f"{' '.join(cmd)}\n".encode())
            log.flush()
            self.proc = subprocess.Popen(cmd, env=self.env(), cwd=ROOT, stdin=subprocess.DEVNULL, stdout=log,
                                         stderr=subprocess.STDOUT, start_new_session=True)
        return self

    def _check_alive(self) -> None:
        if self.proc is None:
            raise ServiceNotReady(f"{self.name} was not started")
        if self.proc.poll() is not None:
            raise ServiceNotReady(f"{self.name} exited with code {self.proc.returncode} before it was ready; "
                                  f"last log lines ({self.log_path}):\n{self.log_tail()}")

    def wait_ready(self, timeout: float = 60.0, interval: float = 0.2) -> None:
        """Poll GET /healthz until 200; raise ServiceNotReady on exit or timeout."""
        deadline = time.monotonic() + timeout
        with httpx.Client(timeout=2.0) as client:
            while True:
                self._check_alive()
                with contextlib.suppress(httpx.HTTPError):
                    if client.get(f"{self.url}/healthz").status_code == 200:
                        return
                if time.monotonic() > deadline:
                    raise ServiceNotReady(f"{self.name} not ready after {timeout:.0f} s; last log lines:\n{self.log_tail()}")
                time.sleep(interval)

    async def wait_ready_async(self, timeout: float = 60.0, interval: float = 0.2) -> None:
        deadline = time.monotonic() + timeout
        async with httpx.AsyncClient(timeout=2.0) as client:
            while True:
                self._check_alive()
                with contextlib.suppress(httpx.HTTPError):
                    if (await client.get(f"{self.url}/healthz")).status_code == 200:
                        return
                if time.monotonic() > deadline:
                    raise ServiceNotReady(f"{self.name} not ready after {timeout:.0f} s; last log lines:\n{self.log_tail()}")
                await asyncio.sleep(interval)

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """Send `sig` to the service's process group (SIGKILL by default: a crash)."""
        proc = self.proc
        if proc is not None and proc.poll() is None:  # running
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, sig)
            if sig == signal.SIGKILL:
                proc.wait()

    def stop(self, timeout: float = 15.0) -> int | None:
        """SIGTERM, wait up to `timeout`, then SIGKILL. Returns the exit code."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.kill(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill(signal.SIGKILL)
        return self.proc.returncode

    def restart(self, *, crash: bool = False, timeout: float = 60.0) -> None:
        self.kill() if crash else self.stop()
        self.start()
        self.wait_ready(timeout)

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


def pipeline(names: Iterable[str] = PIPELINE, *, port_offset: int = 0, env: Mapping[str, str] | None = None,
             receiver_env: Mapping[str, str] | None = None) -> list[ServiceProcess]:
    """ServiceProcess objects for the named services on their default ports (+ offset)."""
    out = []
    for n in names:
        overrides = dict(env or {})
        if n == "receiver":
            overrides.update(receiver_env or {})
        out.append(ServiceProcess(n, overrides, DEFAULT_PORTS[n] + port_offset))
    return out


async def wait_all_ready(procs: Iterable[ServiceProcess], timeout: float = 60.0) -> None:
    """Wait for every service; on the first failure stop waiting for the others and raise it."""
    tasks = [asyncio.create_task(p.wait_ready_async(timeout)) for p in procs]
    done, pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
    for t in pending:
        t.cancel()
    await asyncio.gather(*pending, return_exceptions=True)
    for t in done:
        if (e := t.exception()) is not None:
            raise e


@contextlib.asynccontextmanager
async def running(services: Iterable[ServiceProcess | str], *, timeout: float = 60.0,
                  check_ports: bool = True) -> AsyncIterator[dict[str, ServiceProcess]]:
    """Start several services, wait until all are ready, and stop them all on exit."""
    procs = [s if isinstance(s, ServiceProcess) else ServiceProcess(s) for s in services]
    if check_ports:
        busy = [f"{p.name} ({p.port})" for p in procs if port_in_use(p.port, p.host)]
        if busy:
            raise ServiceNotReady(f"port already in use: {', '.join(busy)}. Another copy of the service is running; "
                                  "stop it or choose other ports.")
    try:
        for p in procs:
            p.start()
        await wait_all_ready(procs, timeout)
        yield {p.name: p for p in procs}
    finally:
        await asyncio.gather(*(asyncio.to_thread(p.stop) for p in procs), return_exceptions=True)
