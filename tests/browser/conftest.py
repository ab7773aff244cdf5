"""Browser tests of the console: they run on the real stack like tests/integration (same kit)."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "integration"))

from itkit import BOOTSTRAP, PG_BASE, ROOT  # noqa: E402


def _listening(host: str, port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(1.0)
        return s.connect_ex((host, port)) == 0


@pytest.fixture(scope="session")
def stack() -> None:
    """The broker and database the tests point at (REGSOSEK_KAFKA_BOOTSTRAP, REGSOSEK_PG_URL_BASE):
    used when both answer, else started with `scripts/stack.sh up`."""
    kafka_host, _, kafka_port = BOOTSTRAP.split(",")[0].rpartition(":")
    pg = urlsplit(PG_BASE)
    if _listening(kafka_host, int(kafka_port)) and _listening(pg.hostname or "127.0.0.1", pg.port or 5432):
        return
    up = subprocess.run(["bash", "scripts/stack.sh", "up"], cwd=ROOT, capture_output=True, text=True, timeout=900)
    if up.returncode != 0:
        pytest.fail(f"scripts/stack.sh up failed:\n{up.stdout[-3000:]}\n{up.stderr[-3000:]}")
