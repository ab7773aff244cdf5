"""Session-level advisory locks are taken only through regsosek.db.advisory_lock: the pool resets
only the connections it marks (db.PooledConnection), so a lock taken any other way could stay with
a pooled connection after its holder failed to release it."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
SESSION_LOCK = re.compile(r"pg_(?:try_)?advisory_lock(?:_shared)?\s*\(", re.IGNORECASE)


def test_no_source_takes_a_session_lock_but_the_pool_helper():
    sources = [p for d in ("libs", "services", "tools") for p in (ROOT / d).rglob("*.py")
               if "/tests/" not in p.as_posix() and "/.venv/" not in p.as_posix()]
    sources += list((ROOT / "services").rglob("*.sql"))
    assert len(sources) > 100
    takers = sorted(str(p.relative_to(ROOT)) for p in sources if SESSION_LOCK.search(p.read_text()))
    assert takers == ["libs/regsosek/src/regsosek/db.py"]


def test_the_pattern_tells_session_locks_from_transaction_locks():
    assert SESSION_LOCK.search("select pg_try_advisory_lock($1)")
    assert SESSION_LOCK.search("select pg_advisory_lock(7316001)")
    assert not SESSION_LOCK.search("select pg_advisory_xact_lock($1, hashtext($2))")
    assert not SESSION_LOCK.search("select pg_try_advisory_xact_lock($1)")
