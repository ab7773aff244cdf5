"""Verify's store on a real PostgreSQL for what the fast tests cannot show: the statements that
load a batch's interview states together and claim, store and decide an arriving interview in
one statement keep the NIK-claim rules (docs/ORDERING.md): a NIK another family took since the
state was loaded is caught (ClaimsRaced) and nothing but the claim is written; otherwise the
interview, its outcome and its history line are stored together."""

from __future__ import annotations

import asyncio
import copy
import uuid

import asyncpg
import pytest

from regsosek import db, migrate
from regsosek.contracts import FamilyInterview, RosterStatus, pseudonymise_interview
from regsosek.examples import family_interview
from regsosek.pseudonyms import DEVELOPMENT_NIK_HASH_KEY
from verify import domain
from verify.domain import ClaimsRaced
from verify.store import VerifyStore

from itkit import World

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
async def verify_db(stack):
    world = await World(["verify"]).setup()
    try:
        await migrate.run("verify", dsn=world.dsn("verify"))
        conn = await asyncpg.connect(world.dsn("verify"), timeout=10)
        await db.init_connection(conn)  # the services' JSON codecs
        try:
            yield conn
        finally:
            await conn.close()
    finally:
        await world.teardown()


def interview(building: int):
    doc = copy.deepcopy(family_interview())
    doc["location"]["building_no"] = building
    doc["submission_id"] = str(uuid.uuid4())
    for m in doc["members"]:  # NIKs of this family alone
        if m.get("nik"):
            m["nik"] = m["nik"][:6] + f"{building:04d}{m['line_no']:02d}" + m["nik"][12:]
    return pseudonymise_interview(FamilyInterview.model_validate(doc), DEVELOPMENT_NIK_HASH_KEY)


async def rostered(conn: asyncpg.Connection, *ivs) -> None:
    """The SLS's roster as verify stores it, listing these families."""
    sls_id = ivs[0].location.sls_id
    await conn.execute("insert into rosters (sls_id, revision, submission_id, officer_id, confirmed_at) "
                       "values ($1, 1, $2, 'IT', now()) on conflict do nothing", sls_id, uuid.uuid4())
    await conn.executemany(
        "insert into roster_families (sls_id, building_no, family_no, kk_hash, member_count, status) "
        "values ($1, $2, $3, $4, $5, $6) on conflict do nothing",
        [(sls_id, iv.location.building_no, iv.location.family_no, iv.location.kk_hash, len(iv.members),
          RosterStatus.PRESENT.value) for iv in ivs])


async def test_an_interview_is_claimed_stored_and_decided_in_one_statement(verify_db):
    iv = interview(building=11)
    await rostered(verify_db, iv)
    async with verify_db.transaction():
        store = VerifyStore(verify_db)
        await store.preload_interview_states([iv])
        outcome = domain.on_interview(await store.interview_state(iv), iv)
        await store.save(outcome)
    row = await verify_db.fetchrow("select state, decision_seq, body is not null as kept from interviews "
                                   "where family_id = $1", iv.family_id)
    assert (row["state"], row["decision_seq"], row["kept"]) == (outcome.verdicts[0].decision.state, 1, True)
    assert await verify_db.fetchval("select count(*) from verification_history where family_id = $1", iv.family_id) == 1
    claimed = await verify_db.fetchval("select count(*) from nik_claims where family_id = $1", iv.family_id)
    assert claimed == len(iv.nik_hashes()) > 0


async def test_a_nik_taken_after_the_states_were_loaded_stops_the_save(verify_db):
    iv = interview(building=12)
    await rostered(verify_db, iv)
    async with verify_db.transaction():
        store = VerifyStore(verify_db)
        await store.preload_interview_states([iv])
        outcome = domain.on_interview(await store.interview_state(iv), iv)
        assert outcome.claims[0].clashes == ()  # decided on every NIK being free
        # meanwhile another family (another instance's transaction, committed) takes one of them
        taken = sorted(iv.nik_hashes())[0]
        await verify_db.execute("insert into nik_claims (nik_hash, family_id) values ($1, $2)",
                                taken, iv.family_id[:14] + "-0999-001")
        with pytest.raises(ClaimsRaced):
            await store.save(outcome)
        assert await verify_db.fetchval("select count(*) from interviews where family_id = $1", iv.family_id) == 0
        assert await verify_db.fetchval("select count(*) from verification_history where family_id = $1",
                                        iv.family_id) == 0
        # decided again on fresh state, the family is flagged for the NIK another family holds
        fresh = await store.interview_state(iv)
        # the claim stays as `_claim_niks` leaves it: the free NIKs are the family's, the taken one not
        assert fresh.nik_holders == {h: (iv.family_id[:14] + "-0999-001" if h == taken else iv.family_id)
                                     for h in iv.nik_hashes()}
        again = domain.on_interview(fresh, iv)
        await store.save(again)
    row = await verify_db.fetchrow("select state, outcome from interviews where family_id = $1", iv.family_id)
    assert (row["state"], row["outcome"]) == ("flagged", "duplicate_nik")


async def test_a_batch_decided_together_is_claimed_stored_and_decided_in_one_statement(verify_db):
    a, b, c = interview(building=21), interview(building=22), interview(building=23)
    shared = sorted(a.nik_hashes())[0]  # b lists one of a's NIKs too
    b = b.model_copy(update={"members": [b.members[0].model_copy(update={"nik_hash": shared.hex()}),
                                         *b.members[1:]]})
    await rostered(verify_db, a, b, c)
    taken = sorted(c.nik_hashes())[-1]
    async with verify_db.transaction():
        store = VerifyStore(verify_db)
        await store.preload_interview_states([a, b, c])
        states = [await store.interview_state(iv) for iv in (a, b, c)]
        outcomes = domain.on_interviews(list(zip(states, (a, b, c), strict=True)))
        # the holders carried from a to b: b is flagged for the NIK a claims first, not decided on it as free
        assert outcomes[1].claims[0].clashes == (b.members[0].line_no,)
        assert outcomes[2].claims[0].clashes == ()
        # meanwhile another instance's family takes one of c's NIKs
        await verify_db.execute("insert into nik_claims (nik_hash, family_id) values ($1, $2)",
                                taken, c.family_id[:14] + "-0999-001")
        statements = []
        verify_db.add_query_logger(statements.append)
        try:
            raced = await store.save_together([(o, None) for o in outcomes])
            await asyncio.sleep(0.1)  # asyncpg calls its query loggers soon after, not at once
        finally:
            verify_db.remove_query_logger(statements.append)
        # one statement of verify's (asyncpg may introspect the array types the first time)
        assert len([q for q in statements if "nik_claims" in q.query or "interviews" in q.query]) == 1
        assert raced == {c.family_id}
    rows = {r["family_id"]: (r["state"], r["outcome"], r["decision_seq"]) for r in await verify_db.fetch(
        "select family_id, state, outcome, decision_seq from interviews where family_id = any($1::text[])",
        [a.family_id, b.family_id, c.family_id])}
    assert rows == {a.family_id: ("verified", "verified", 1), b.family_id: ("flagged", "duplicate_nik", 1)}
    history = await verify_db.fetch("select family_id, cause from verification_history where family_id = any($1::text[]) "
                                    "order by family_id", [a.family_id, b.family_id, c.family_id])
    assert [(h["family_id"], h["cause"]) for h in history] == [(a.family_id, "interview"), (b.family_id, "interview")]
    holders = {bytes(r["nik_hash"]): r["family_id"] for r in await verify_db.fetch(
        "select nik_hash, family_id from nik_claims where family_id = any($1::text[])",
        [a.family_id, b.family_id, c.family_id])}
    assert holders[shared] == a.family_id  # the family the decision gave it to
    assert {h for h, f in holders.items() if f == b.family_id} == set(b.nik_hashes()) - {shared}
    # c: nothing but its claim written (its free NIKs), to be decided again on fresh state
    assert {h for h, f in holders.items() if f == c.family_id} == set(c.nik_hashes()) - {taken}
