"""Service processes: start, readiness, crash (SIGKILL), restart, graceful stop. Uses the
reference receiver, which needs neither Kafka nor PostgreSQL."""

from __future__ import annotations

import signal
import sys

import httpx
import pytest

from regsosek_tools.processes import ServiceNotReady, ServiceProcess, running
from regsosek_tools.world import free_port


@pytest.fixture
def log_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("REGSOSEK_LOG_DIR", str(tmp_path))
    return tmp_path


def test_start_ready_kill_restart_stop(log_dir):
    p = ServiceProcess("receiver", {"REGSOSEK_RECEIVER_SECRET": "s" * 40}, free_port())
    assert p.log_path == log_dir / "receiver.log"
    p.start()
    try:
        p.wait_ready(30)
        assert httpx.get(f"{p.url}/stats").json()["received"] == 0
        p.kill()  # a crash
        assert p.returncode == -signal.SIGKILL and not p.running
        p.start()
        p.wait_ready(30)
        assert p.running
    finally:
        rc = p.stop(10)
    assert rc is not None and not p.running
    assert p.log_path.read_text().count("starting receiver") == 2


def test_a_process_that_exits_is_reported_with_its_log(log_dir):
    p = ServiceProcess("receiver", {"REGSOSEK_HTTP_PORT": "not-a-port"}, free_port())
    p.start()
    with pytest.raises(ServiceNotReady, match="exited with code"):
        p.wait_ready(30)
    p.stop()


async def test_running_starts_and_stops_several(log_dir):
    procs = [ServiceProcess("receiver", {}, free_port()),
             ServiceProcess("receiver-2", {}, free_port(), command=[sys.executable, "-m", "regsosek_tools.receiver"])]
    async with running(procs, timeout=30) as started:
        assert set(started) == {"receiver", "receiver-2"}
        assert all(p.running for p in procs)
    assert not any(p.running for p in procs)
