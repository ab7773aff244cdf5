"""Session state on a pooled connection is taken only through regsosek.db: the pool resets only the
connections it marks (db.PooledConnection, marked by db.advisory_lock), so a session-level lock,
setting, LISTEN, held cursor or temporary table taken any other way would stay with the connection
for its next user. Migrations are exempt: they run on the connection holding the migration lock."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
SESSION_LOCK = re.compile(r"pg_(?:try_)?advisory_lock(?:_shared)?\s*\(", re.IGNORECASE)
# other session state, in the SQL of Python sources: SET without LOCAL (a statement starting a string,
# with a quoted value), set_config(...), LISTEN, a cursor WITH HOLD, a temporary table
SESSION_STATE = re.compile(
    r"""["']\s*set\s+(?:session\s+)?(?!local\b)[a-z_.]+\s*(?:=|\bto\b)\s*'|set_config\s*\(|["']\s*listen\s"""
    r"""|\bwith\s+hold\b|\bcreate\s+(?:temp|temporary)\s+table\b|add_listener\s*\(""", re.IGNORECASE)


def test_no_source_takes_a_session_lock_but_the_pool_helper():
    sources = [p for d in ("libs", "services", "tools") for p in (ROOT / d).rglob("*.py")
               if "/tests/" not in p.as_posix() and "/.venv/" not in p.as_posix()]
    sources += list((ROOT / "services").rglob("*.sql"))
    assert len(sources) > 100
    takers = sorted(str(p.relative_to(ROOT)) for p in sources if SESSION_LOCK.search(p.read_text()))
    assert takers == ["libs/regsosek/src/regsosek/db.py"]


def test_no_source_takes_other_session_state_on_a_connection():
    sources = [p for d in ("libs", "services") for p in (ROOT / d).rglob("*.py")
               if "/tests/" not in p.as_posix() and "/.venv/" not in p.as_posix()]
    takers = sorted(str(p.relative_to(ROOT)) for p in sources if SESSION_STATE.search(p.read_text()))
    # the re-rank bench's loader builds its scope on a connection of its own (asyncpg.connect, no pool)
    assert takers == ["services/classify/src/classify/rerank_bench.py"]


def test_the_pattern_tells_session_locks_from_transaction_locks():
    assert SESSION_LOCK.search("select pg_try_advisory_lock($1)")
    assert SESSION_LOCK.search("select pg_advisory_lock(7316001)")
    assert not SESSION_LOCK.search("select pg_advisory_xact_lock($1, hashtext($2))")
    assert not SESSION_LOCK.search("select pg_try_advisory_xact_lock($1)")


def test_the_pattern_tells_session_settings_from_transaction_settings():
    for taken in ('"set work_mem = \'64MB\'"', '"SET statement_timeout TO \'5s\'"', '"set session work_mem = \'1GB\'"',
                  '"select set_config(\'a.b\', $1, false)"', '"LISTEN changes"', '"declare c cursor with hold for"',
                  '"create temp table t (x int)"', "conn.add_listener('x', cb)"):
        assert SESSION_STATE.search(taken), taken
    for plain in ('"set local work_mem = \'64MB\'"', '"set updated_at = now() returning expected"',
                  'f"set {name} or {name}_FILE, not both"', '"update t set x = \'a\'"'):
        assert not SESSION_STATE.search(plain), plain
