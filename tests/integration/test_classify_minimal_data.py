"""Classify holds no identifying data (docs/DATA_INVENTORY_CLASSIFY.md): after families went
through verify and classify on the real broker and database, none of their NIKs, KK numbers,
names, birth dates or addresses is anywhere in classify's database or on interview-verified;
a v1 record (the whole interview, from before minimal events) is reduced to its profile on
arrival; and migration 005 converts rows stored before it exactly as verify builds profiles,
leaving no trace of the interview."""

from __future__ import annotations

import shutil
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest

from classify.app import MIGRATIONS
from regsosek import db
from regsosek.contracts import FamilyInterview, InterviewVerifiedV1, SlsRoster, household_profile
from regsosek.envelope import encode
from regsosek.examples import family_interview
from regsosek.topics import Topic
from regsosek_tools.sample import generate

from itkit import (
    PG_BASE,
    World,
    by_subject,
    cloud_event,
    create_databases,
    drop_databases,
    eventually,
    family,
    family_id_of,
    new_sls_id,
    read_topic,
    roster,
)

pytestmark = pytest.mark.integration

WAIT = 90


def identifying(iv: FamilyInterview) -> dict[str, str]:
    """label -> identifying value of the interview, as text."""
    out: dict[str, str] = {}
    if iv.location.kk_number:
        out["kk_number"] = iv.location.kk_number
    if iv.location.address:
        out["address"] = iv.location.address
    for m in iv.members:
        out[f"member {m.line_no} name"] = m.name
        out[f"member {m.line_no} birth date"] = m.date_of_birth.isoformat()
        if m.nik:
            out[f"member {m.line_no} NIK"] = m.nik
    return out


def distinctive(doc: dict) -> dict:
    """The family with names and an address no other text could contain by chance."""
    tag = uuid.uuid4().hex[:8]
    for m in doc["members"]:
        m["name"] = f"{m['name']} Nama{tag}{m['line_no']}"
    doc["location"]["address"] = f"Jl. Alamat{tag} No. 7"
    doc["location"]["gps"] = {"lat": -0.5021, "lon": 117.1537}
    return doc


async def database_text(dsn: str) -> dict[str, str]:
    """Every row of every table of the database, as text, per table."""
    pool = await db.connect_pool(dsn, max_size=1, wait_s=10)
    try:
        async with pool.acquire() as conn:
            tables = [r[0] for r in await conn.fetch(
                "select tablename from pg_tables where schemaname = 'public' order by 1")]
            return {t: "\n".join(r[0] for r in await conn.fetch(f'select t::text from "{t}" t')) for t in tables}
    finally:
        await pool.close()


def leaks(text: dict[str, str], values: dict[str, str]) -> list[str]:
    return [f"{label} in table {table}" for table, body in text.items() for label, v in values.items() if v in body]


@pytest.fixture(scope="module")
async def pipeline(stack):
    w = await World(["verify", "classify"]).setup()
    try:
        await w.start("verify", "classify")
        yield w
    finally:
        await w.teardown()


async def test_classified_family_leaves_no_identifying_data_in_classify(pipeline, producer):
    w = pipeline
    sls = new_sls_id()
    fams = [family(sls, b) for b in (1, 2)]
    docs = [distinctive(doc) for _, doc in fams]
    r = SlsRoster.model_validate(roster(sls, [e for e, _ in fams]))
    _, value, headers = cloud_event(r, subject=sls)
    await producer.send_and_wait(w.topic(Topic.SLS_ROSTER), value=value, key=sls.encode(), headers=headers)
    ivs = [FamilyInterview.model_validate(d) for d in docs]
    for iv in ivs:
        _, value, headers = cloud_event(iv, subject=iv.family_id)
        await producer.send_and_wait(w.topic(Topic.INTERVIEW_SUBMITTED), value=value, key=sls.encode(),
                                     headers=headers)
    fids = [family_id_of(d) for d in docs]

    async def classified():
        rows = await w.fetch("classify", "select family_id from families where family_id = any($1::text[])", fids)
        backlog = await w.fetchval("classify", "select count(*) from outbox")
        return len(rows) == len(fids) and backlog == 0
    await eventually(classified, timeout=WAIT, what="both families classified and published")

    values = {f"{iv.family_id} {k}": v for iv in ivs for k, v in identifying(iv).items()}
    text = await database_text(w.dsn("classify"))
    assert "families" in text and all(fid in text["families"] for fid in fids)  # the scan sees the rows
    assert not leaks(text, values)
    # what the profile keeps is there: ages, not birth dates
    profile = await w.fetchval("classify", "select profile from families where family_id = $1", fids[0])
    assert '"age": 42' in profile and "date_of_birth" not in profile

    # nor on the topic classify reads
    verified = by_subject(await read_topic(w.topic(Topic.INTERVIEW_VERIFIED)))
    for iv in ivs:
        (rec,) = verified[iv.family_id]
        assert dict(rec.headers)["ce_type"] == b"id.go.bps.regsosek.interview.verified.v2"
        found = [label for label, v in identifying(iv).items() if v.encode() in rec.value]
        assert not found, f"{iv.family_id}: {found} on interview-verified"


async def test_a_v1_record_is_classified_from_its_profile_and_the_interview_is_not_kept(pipeline, producer):
    w = pipeline
    sls = new_sls_id()
    _, doc = family(sls, 1)
    iv = FamilyInterview.model_validate(distinctive(doc))
    old = InterviewVerifiedV1(family_id=iv.family_id, sls_id=sls, outcome="verified",
                              verified_at=datetime.now(UTC), interview=iv, decision_seq=1)
    # no service can produce v1 any more (new_envelope knows only the produced types): write it as
    # an old verify did, the v2 record's headers with the v1 type and body
    _, _, headers = cloud_event(old.upgraded(), subject=iv.family_id)
    headers = [(k, b"id.go.bps.regsosek.interview.verified.v1" if k == "ce_type" else v) for k, v in headers]
    value = encode(old)
    await producer.send_and_wait(w.topic(Topic.INTERVIEW_VERIFIED), value=value, key=sls.encode(), headers=headers)

    async def classified():
        row = await w.fetch("classify", "select profile from families where family_id = $1", iv.family_id)
        backlog = await w.fetchval("classify", "select count(*) from outbox")
        return row and backlog == 0 and row
    (row,) = await eventually(classified, timeout=WAIT, what="the v1 family classified")
    assert row["profile"] is not None
    text = await database_text(w.dsn("classify"))
    assert not leaks(text, identifying(iv))
    assert not any(iv.family_id.encode() in r.value for r in await read_topic(w.topic(Topic.DEAD_LETTER), timeout=5))


# ---------------------------------------------------------------- migration 005 on rows stored before it


def _old_rows() -> list[FamilyInterview]:
    """Generated families, and the example at the edges of age: a birthday on the interview's local
    date that is the day before in UTC, a 29 February birthday in a year without one."""
    out = list(generate(11, 40).interviews)
    d = distinctive(family_interview())
    d["interviewed_at"] = "2022-10-20T01:00:00+08:00"
    d["members"][0].update(date_of_birth="1980-10-20", nik=None)
    d["members"][1].update(date_of_birth="1964-02-29", nik=None)
    out.append(FamilyInterview.model_validate(d))
    d = distinctive(family_interview())
    d["location"].update(building_no=2)
    d["interviewed_at"] = "2023-02-28T23:30:00+08:00"
    d["members"][1].update(date_of_birth="1964-02-29", nik=None)
    out.append(FamilyInterview.model_validate(d))
    return out


def _without_rows(profile: dict) -> dict:
    """A profile as migration 005 converted it: from before members carried their form row (line_no),
    for which classify falls back to the member's position."""
    return {**profile, "members": [{k: v for k, v in m.items() if k != "line_no"} for m in profile["members"]]}


async def test_migration_converts_stored_interviews_to_profiles(stack, tmp_path: Path):
    name = f"it{uuid.uuid4().hex[:8]}_classify_m005"
    await create_databases([name])
    try:
        before = tmp_path / "migrations"
        before.mkdir()
        for f in sorted(MIGRATIONS.glob("*.sql")):
            if f.name < "005":
                shutil.copy(f, before / f.name)
        pool = await db.connect_pool(f"{PG_BASE}/{name}", max_size=2, wait_s=10)
        try:
            await db.migrate(pool, before)
            ivs = _old_rows()
            async with pool.acquire() as conn:
                await conn.executemany(
                    "insert into families (family_id, sls_id, submission_id, version, interview, predicted, "
                    "welfare_group, decile, model_version, rule_version, eligible, rank_value, lines_version) "
                    "values ($1, $2, $3, $4, $5, 500000, 2, 3, 'm', 'r', '{}', 500000, 'l')",
                    [(iv.family_id, iv.location.sls_id, iv.submission_id, iv.version, iv.model_dump(mode="json"))
                     for iv in ivs])
            assert "005_household_profile.sql" in [n.rsplit("/", 1)[-1] for n in await db.migrate(pool, MIGRATIONS)]
            async with pool.acquire() as conn:
                rows = {r["family_id"]: r["profile"] for r in await conn.fetch("select family_id, profile from families")}
                columns = {r[0] for r in await conn.fetch(
                    "select column_name from information_schema.columns where table_name = 'families'")}
        finally:
            await pool.close()
        assert "interview" not in columns and "profile" in columns
        assert {fid: rows[fid] for fid in rows} == {iv.family_id: _without_rows(household_profile(iv).model_dump(mode="json"))
                                                   for iv in ivs}
        assert [m["age"] for m in rows[ivs[-2].family_id]["members"]] == [42, 58, 3]
        assert [m["age"] for m in rows[ivs[-1].family_id]["members"]][1] == 58
        text = await database_text(f"{PG_BASE}/{name}")
        values = {f"{iv.family_id} {k}": v for iv in ivs for k, v in identifying(iv).items()}
        assert not leaks(text, values)
    finally:
        await drop_databases([name])
