"""The console's progress figures from the real store (PostgreSQL, migrations 001-003) equal the in-memory
store's on the same events: families by their form's result (complete, refused, moved, ...), rosters with
confirmed absent families, and verify's sls-completed whose non-responses are counted once, by the forms."""

from __future__ import annotations

import dataclasses
import sys
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest

from console.domain import FamilyState, RosterCount, VerifyState, counts_change
from console.store import ConsoleStore
from regsosek import db, migrate

from itkit import World, new_sls_id

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "services" / "console" / "tests"))
from console_fakes import InMemoryConsoleStore  # noqa: E402

pytestmark = pytest.mark.integration
T0 = datetime(2022, 10, 20, 2, 0, tzinfo=UTC)


def families(sls: str) -> list[FamilyState]:
    results = ["complete", "complete", "partly_complete", "refused", "moved", "not_found", "no_competent_respondent"]
    out = [FamilyState(f"{sls}-{b:04d}-001", sls, submission_id=str(uuid.uuid4()), version=1, interviewed_at=T0,
                       result=r) for b, r in enumerate(results, start=1)]
    out[0] = dataclasses.replace(out[0], verify_seq=1, verify_state=VerifyState.VERIFIED)
    return out


async def test_progress_from_postgres_equals_the_in_memory_store(stack):
    w = await World(["console"]).setup()
    try:
        await migrate.run("console", dsn=w.dsn("console"))
        pool = await db.connect_pool(w.dsn("console"), max_size=2)
        one, other = new_sls_id("6472"), new_sls_id("6472")
        fake = InMemoryConsoleStore()
        rosters = [RosterCount(one, expected=9, absent=2, as_of=T0, outcomes={"moved": 1, "dissolved": 0, "not_found": 1}),
                   # verify completed the other SLS: 5 absent of which 3 are non-response forms
                   RosterCount(other, expected=12, absent=5, as_of=T0, revision=1, non_response=3)]
        try:
            async with pool.acquire() as conn, conn.transaction():
                store = ConsoleStore(conn)
                for s in (store, fake):
                    for r in rosters:
                        await s.save_roster(r)
                    for sls in (one, other):
                        for f in families(sls):
                            await s.save_family(f)
                            await s.change_counts(counts_change(sls, None, f))
            async with pool.acquire() as conn:
                store = ConsoleStore(conn)
                for area, length in ((one[:4], 7), (one, 14), (other, 14)):
                    real, kept = await store.progress(area, None, length), await fake.progress(area, None, length)
                    assert real == kept, area
                (done,) = await store.progress(other, None, 14)
                assert (done.interviewed, done.verified, done.refused, done.absent, done.not_reached) == (3, 1, 1, 2, 5)
                assert (done.moved, done.not_found, done.no_respondent, done.completion) == (1, 1, 1, 9 / 12)
                (listed,) = await store.progress(one, None, 14)
                assert (listed.absent, listed.not_reached, listed.moved, listed.not_found) == (2, 5, 2, 2)
                assert await store.progress(one[:4], ("6471",), 7) == [], "another regency's reader sees nothing"
        finally:
            await pool.close()
    finally:
        await w.teardown()
