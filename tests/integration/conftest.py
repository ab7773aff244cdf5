"""Integration tests run against the real Kafka and PostgreSQL of scripts/stack.sh.

Every module here sets `pytestmark = pytest.mark.integration`; `make test` runs them after the unit tests.
Each module builds its own world (topic prefix, databases, ports): see itkit.World.
"""

from __future__ import annotations

import subprocess

import pytest

from regsosek_tools.world import Stack

from itkit import BOOTSTRAP, PG_BASE, ROOT, start_producer


@pytest.fixture(scope="session")
def stack() -> None:
    """The local broker and database: started with `scripts/stack.sh up` when they do not answer at
    REGSOSEK_KAFKA_BOOTSTRAP and REGSOSEK_PG_URL_BASE (a stack another checkout started counts)."""
    if not Stack(BOOTSTRAP, PG_BASE).problems():
        return
    status = subprocess.run(["bash", "scripts/stack.sh", "status"], cwd=ROOT, capture_output=True, text=True)
    if status.returncode != 0:
        up = subprocess.run(["bash", "scripts/stack.sh", "up"], cwd=ROOT, capture_output=True, text=True, timeout=900)
        if up.returncode != 0:
            pytest.fail(f"scripts/stack.sh up failed:\n{up.stdout[-3000:]}\n{up.stderr[-3000:]}")


@pytest.fixture(scope="session")
async def producer(stack):
    p = await start_producer()
    yield p
    await p.stop()
