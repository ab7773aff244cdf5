"""Privacy by design (issue 11, items 3 and 8): identifiers never travel the bus or rest in clear,
and a family can be erased everywhere.

On the real stack (four services, the reference receiver subscribed through notify) an SLS roster
and three families are submitted through intake and decided and delivered; one family is erased
(POST /v1/families/{id}/erasure); once every service has applied `family-erased`:

- every table of every service's database (every column, bytea included, read raw) and every
  record of every topic of the world (keys, values, header values) holds none of the erased
  family's NIKs, KK number, names or address; nor any other family's: they travel and rest only
  hashed or sealed (ids are allowed: audit entries name the family id);
- intake's sealed bodies, opened with the keys, still hold the other families' identifiers (the
  scan can see them) and not the erased family's;
- a later submission about the erased family gets 410;
- the services' log files and the dead-letter topic hold no NIK, KK number or name of any family.
"""

from __future__ import annotations

import asyncio
import uuid

import httpx
import orjson
import pytest

from regsosek.crypto import DEVELOPMENT_DATA_KEY, DEVELOPMENT_DATA_KEY_ID, parse_keys
from regsosek.topics import Topic

from itkit import (
    Submitter,
    World,
    eventually,
    family,
    family_id_of,
    new_sls_id,
    read_topic,
    roster,
    token,
)

pytestmark = pytest.mark.integration

SERVICES = ("intake", "verify", "classify", "notify")
RECEIVER_SECRET = "integration-receiver-secret-" + uuid.uuid4().hex
WAIT = 120


def distinctive(entry: dict, doc: dict, tag: str, n: int) -> None:
    """Names and an address no other text could contain by chance; the roster's head name too."""
    for m in doc["members"]:
        m["name"] = f"Nama{tag}F{n}M{m['line_no']}"
    doc["location"]["address"] = f"Jl. Alamat{tag} No. {n}"
    doc["location"]["gps"] = {"lat": -0.5021, "lon": 117.1537}
    entry["head_name"] = doc["members"][0]["name"]


def identifiers(entry: dict, doc: dict) -> dict[str, str]:
    """label -> every direct identifier of the family, as text."""
    out = {"KK number": doc["location"]["kk_number"], "address": doc["location"]["address"],
           "roster head name": entry["head_name"]}
    for m in doc["members"]:
        out[f"member {m['line_no']} name"] = m["name"]
        if m.get("nik"):
            out[f"member {m['line_no']} NIK"] = m["nik"]
    return out


def _found(value, needles: dict[str, bytes], where: str, out: list[str]) -> None:
    if value is None:
        return
    if isinstance(value, (bytes, bytearray, memoryview)):
        raw = bytes(value)
    elif isinstance(value, (list, tuple)):
        for v in value:
            _found(v, needles, where, out)
        return
    else:
        raw = str(value).encode()
    out.extend(f"{label} in {where}" for label, n in needles.items() if n in raw)


async def database_leaks(world: World, service: str, needles: dict[str, bytes]) -> tuple[list[str], int]:
    """Every column of every row of every table of the service's database, bytea read raw."""
    out: list[str] = []
    rows_seen = 0
    tables = [r[0] for r in await world.fetch(
        service, "select tablename from pg_tables where schemaname = 'public' order by 1")]
    for t in tables:
        for row in await world.fetch(service, f'select * from "{t}"'):
            rows_seen += 1
            for col, v in row.items():
                _found(v, needles, f"{service}.{t}.{col}", out)
    return out, rows_seen


async def topic_leaks(world: World, needles: dict[str, bytes]) -> tuple[list[str], int]:
    out: list[str] = []
    n = 0
    for t in Topic:
        for r in await read_topic(world.topic(t)):
            n += 1
            where = f"{t.value}[{r.partition}]@{r.offset}"
            _found(r.key, needles, where + " key", out)
            _found(r.value, needles, where + " value", out)
            for k, v in r.headers or ():
                _found(k, needles, f"{where} header {k} (name)", out)
                _found(v, needles, f"{where} header {k}", out)
    return out, n


def as_needles(values: dict[str, str], prefix: str) -> dict[str, bytes]:
    return {f"{prefix} {k}": v.encode() for k, v in values.items()}


@pytest.fixture(scope="module")
async def decided(stack):
    """The world with one SLS of three families decided and delivered: (world, procs, families)."""
    world = await World(list(SERVICES)).setup()
    try:
        receiver = world.receiver(RECEIVER_SECRET).start()
        procs = dict(zip(SERVICES, [world.process(n).start() for n in SERVICES], strict=True))
        await asyncio.gather(receiver.wait_ready(), *(p.wait_ready() for p in procs.values()))
        async with httpx.AsyncClient(base_url=procs["notify"].url, timeout=10) as client:
            r = await client.post("/v1/subscriptions", json={"callback_url": receiver.url + "/notify",
                                                             "secret": RECEIVER_SECRET},
                                  headers={"authorization": f"Bearer {token('programme', 'PKH-IT')}"})
            assert r.status_code == 201, r.text
        sls = new_sls_id()
        tag = uuid.uuid4().hex[:8]
        fams = [family(sls, b) for b in (1, 2, 3)]
        for n, (entry, doc) in enumerate(fams):
            distinctive(entry, doc, tag, n)
        async with httpx.AsyncClient(base_url=procs["intake"].url, timeout=10) as client:
            submitter = Submitter(client)
            ros = roster(sls, [e for e, _ in fams])
            ros["confirmed_by"] = f"KetuaRT{tag}"
            await submitter.submit("/v1/rosters", ros)
            for _, doc in fams:
                await submitter.submit("/v1/interviews", doc)

            async def all_notified():
                for _, doc in fams:
                    s = await submitter.status(doc["submission_id"])
                    if not (s and s["final"] == "decided" and any(st["step"] == "notified" for st in s["journey"])):
                        return False
                return True

            await eventually(all_notified, timeout=WAIT, what="every family decided and delivered")
        yield world, procs, fams, ros
    finally:
        await world.teardown()


async def test_an_erased_family_leaves_no_identifier_anywhere(decided):
    world, procs, fams, ros = decided
    (erased_entry, erased_doc), *others = fams
    fid = family_id_of(erased_doc)
    admin = {"authorization": f"Bearer {token('admin', 'ADM-IT', ())}"}
    async with httpx.AsyncClient(base_url=procs["intake"].url, timeout=10) as client:
        r = await client.post(f"/v1/families/{fid}/erasure", json={"reason": "data_subject_request",
                                                                   "reference": "CASE-2023-17"}, headers=admin)
        assert r.status_code == 202, r.text
        erasure_id = r.json()["erasure_id"]
        again = await client.post(f"/v1/families/{fid}/erasure", json={"reason": "other"}, headers=admin)
        assert again.status_code == 200 and again.json()["erasure_id"] == erasure_id
        officer = {"authorization": f"Bearer {token('officer', 'OFC-IT')}"}
        denied = await client.post(f"/v1/families/{fid}/erasure", json={"reason": "other"}, headers=officer)
        assert denied.status_code == 403

    for service in ("verify", "classify", "notify"):
        await eventually(lambda s=service: world.fetchval(
            s, "select count(*) from erased_families where family_id = $1", fid), timeout=WAIT,
            what=f"{service} to apply family-erased")
        entry = await world.fetch(service, "select actor, action, object_id, detail from audit_log "
                                  "where action = 'family.erase' and object_id = $1", fid)
        assert len(entry) == 1, f"{service} did not audit the erasure"
    # every outbox drained (so the topics hold whatever the databases published)
    for service in SERVICES:
        await eventually(lambda s=service: world.fetchval(s, "select count(*) = 0 from outbox"), timeout=WAIT,
                         what=f"{service}'s outbox to drain")

    # a later submission about the erased family is refused
    newer = {**erased_doc, "submission_id": str(uuid.uuid4()), "version": 2}
    async with httpx.AsyncClient(base_url=procs["intake"].url, timeout=10) as client:
        r = await client.post("/v1/interviews", json=newer, headers={"authorization": f"Bearer {token('officer', 'OFC-IT')}"})
        assert r.status_code == 410, r.text
        assert not any(v in r.text for v in identifiers(erased_entry, erased_doc).values())
        # the SLS's roster sent again, still listing the erased family (an offline device, a revision):
        # accepted, but stored without the erased family's identifiers
        again = {**ros, "submission_id": str(uuid.uuid4())}
        r = await client.post("/v1/rosters", json=again, headers={"authorization": f"Bearer {token('officer', 'OFC-IT')}"})
        assert r.status_code == 202, r.text
    await eventually(lambda: world.fetchval("intake", "select count(*) = 0 from outbox"), timeout=WAIT,
                     what="intake's outbox to drain after the roster")

    erased = as_needles(identifiers(erased_entry, erased_doc), f"erased family {fid}")
    kept = {k: v for e, d in others for k, v in as_needles(identifiers(e, d), family_id_of(d)).items()}
    everyone = {**erased, **kept, "RT head who confirmed": ros["confirmed_by"].encode()}

    # the scan sees the rows it scans: the family ids are there (ids are allowed)
    leaks: list[str] = []
    ids_seen = {}
    for service in SERVICES:
        found, rows = await database_leaks(world, service, everyone)
        assert rows > 0, f"{service}: nothing scanned"
        leaks += found
        ids, _ = await database_leaks(world, service, {"family id": fid.encode()})
        ids_seen[service] = bool(ids)
    assert all(ids_seen.values()), f"the erased family's id should remain as an id: {ids_seen}"
    found, records = await topic_leaks(world, everyone)
    assert records > 0
    leaks += found
    assert not leaks, "identifiers in clear:\n" + "\n".join(leaks)

    # intake's sealed bodies: the other families' identifiers are inside (the erasure is not just
    # encryption hiding them); the erased family's are not, in any body (interviews, roster entry)
    ring = parse_keys(f"{DEVELOPMENT_DATA_KEY_ID}:{DEVELOPMENT_DATA_KEY}")
    rows = await world.fetch("intake", "select submission_id, kind, body, body_enc from submissions")
    assert all(r["body"] is None and r["body_enc"] for r in rows), "a body is stored in clear"
    opened = b"\n".join(ring.open(r["body_enc"], aad=r["submission_id"].bytes) for r in rows)
    assert all(v in opened for v in kept.values()), "the other families' bodies lost identifiers"
    assert [k for k, v in erased.items() if v in opened] == []
    roster_bodies = [orjson.loads(ring.open(r["body_enc"], aad=r["submission_id"].bytes))
                     for r in rows if r["kind"] == "roster"]
    assert len(roster_bodies) == 2  # the first roster (redacted by the erasure) and the later one (on accept)
    for roster_body in roster_bodies:
        fam1 = next(f for f in roster_body["families"] if f["building_no"] == 1)
        assert "kk_number" not in fam1 and "head_name" not in fam1 and fam1["member_count"] == 3

    # verify keeps hashes only, and the erased family's are gone
    assert await world.fetchval("verify", "select count(*) from nik_claims where family_id = $1", fid) == 0
    assert await world.fetchval("verify", "select count(*) from nik_claims") == 2 * len(others)
    assert await world.fetchval("verify", "select body is null from interviews where family_id = $1", fid)
    assert await world.fetchval("classify", "select count(*) from families where family_id = $1", fid) == 0
    # notify: the delivery figures stay, the payload is gone; the subscription told about the family
    # gets an erasure notice (ids only) instead
    rows = await world.fetch("notify", "select status, payload from deliveries where family_id = $1 "
                             "and event_type = 'eligibility-decided'", fid)
    assert rows and all(r["payload"] is None for r in rows)
    notices = await world.fetch("notify", "select status, payload from deliveries where family_id = $1 "
                                "and event_type = 'family-erased'", fid)
    assert len(notices) == 1 and set(orjson.loads(notices[0]["payload"])["data"]) == {
        "family_id", "erasure_id", "erased_at", "action", "decisions_withdrawn"}


async def test_logs_and_dead_letters_hold_no_identifier(decided):
    world, procs, fams, ros = decided
    needles = {k: v for e, d in fams for k, v in as_needles(identifiers(e, d), family_id_of(d)).items()
               if "address" not in k}
    logs = [p for p in world.processes if p.log_path.exists()]
    assert {p.name for p in logs} >= set(SERVICES)
    leaks: list[str] = []
    for p in logs:
        text = p.log_path.read_bytes()
        assert text, f"{p.log_path} is empty"
        leaks += [f"{label} in {p.log_path.name}" for label, v in needles.items() if v in text]
    dead = await read_topic(world.topic(Topic.DEAD_LETTER))
    for r in dead:
        for v in (r.key, r.value, *(h for _, h in r.headers or ())):
            _found(v, needles, f"dead letter {r.partition}:{r.offset}", leaks)
    assert not leaks, "\n".join(leaks)
