"""Verify's store on a real PostgreSQL for what the fast tests cannot show: the statements that
load a batch's interview states together and claim, store and decide an arriving interview in
one statement keep the NIK-claim rules (docs/ORDERING.md): a NIK another family took since the
state was loaded is caught (ClaimsRaced) and nothing but the claim is written; otherwise the
interview, its outcome and its history line are stored together."""

from __future__ import annotations

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
