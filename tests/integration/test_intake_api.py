"""Intake's HTTP API on the real stack: idempotency by submission id, authorisation by role and
assigned area, body limits, single submissions sharing transactions. Its OpenAPI fuzz run is in
test_api_fuzz.py, with every other service's."""

from __future__ import annotations

import asyncio
import copy
import uuid

import httpx
import pytest

from regsosek.topics import Topic

from itkit import (
    World,
    eventually,
    family,
    family_id_of,
    header,
    new_sls_id,
    read_topic,
    roster,
    token,
    trace_id_of,
)

pytestmark = pytest.mark.integration


@pytest.fixture
async def intake_world(stack):
    world = await World(["intake"]).setup()
    try:
        await world.start("intake")
        yield world
    finally:
        await world.teardown()


def _base(world: World) -> str:
    return f"http://127.0.0.1:{world.ports['intake']}"


async def test_idempotency_same_id_same_content_and_conflict(intake_world):
    sls = new_sls_id()
    entry, iv = family(sls, 1)
    officer = {"authorization": f"Bearer {token('officer', 'OFC-IT', (sls,))}"}
    async with httpx.AsyncClient(base_url=_base(intake_world), timeout=20) as c:
        assert (await c.post("/v1/rosters", json=roster(sls, [entry]), headers=officer)).status_code == 202
        first = await c.post("/v1/interviews", json=iv, headers=officer)
        assert first.status_code == 202, first.text
        again = await asyncio.gather(*(c.post("/v1/interviews", json=iv, headers=officer) for _ in range(5)))
        assert {r.status_code for r in again} == {200}
        assert {r.json()["event_id"] for r in again} == {first.json()["event_id"]}  # the original receipt

        changed = copy.deepcopy(iv)
        changed["housing"]["floor_area_m2"] = 48
        conflict = await c.post("/v1/interviews", json=changed, headers=officer)
        assert conflict.status_code == 409, conflict.text

        batch = await c.post("/v1/interviews:batch", headers=officer, json={"interviews": [iv, changed, {"bad": 1}]})
        assert batch.status_code == 200, batch.text
        assert [r["status"] for r in batch.json()["results"]] == [200, 409, 422]

        # the same id twice within one upload: a repeat is a replay, a changed repeat a conflict
        entry2, iv2 = family(sls, 2)
        changed2 = copy.deepcopy(iv2)
        changed2["housing"]["floor_area_m2"] = 60
        twice = await c.post("/v1/interviews:batch", headers=officer, json={"interviews": [iv2, iv2, changed2]})
        results = twice.json()["results"]
        assert [r["status"] for r in results] == [202, 200, 409]
        assert results[0]["receipt"]["event_id"] == results[1]["receipt"]["event_id"]
    # exactly one event for the family on the topic, whatever was resent
    stored = await intake_world.fetchval("intake", "select count(*) from submissions where submission_id = $1",
                                         uuid.UUID(iv["submission_id"]))
    assert stored == 1
    topic = intake_world.topic(Topic.INTERVIEW_SUBMITTED)

    async def published():
        records = [r for r in await read_topic(topic, timeout=5) if header(r, "ce_subject") == family_id_of(iv)]
        return records or None

    records = await eventually(published, timeout=30, what="the interview's event on the topic")
    assert [header(r, "ce_id") for r in records] == [first.json()["event_id"]]


async def test_authorisation_by_role_and_area(intake_world):
    sls = new_sls_id("6472")
    entry, iv = family(sls, 1)
    async with httpx.AsyncClient(base_url=_base(intake_world), timeout=20) as c:
        nobody = await c.post("/v1/interviews", json=iv)
        assert nobody.status_code == 401 and "bearer" in nobody.text.lower()

        forged = token("officer", "OFC-IT", (sls,))[:-4] + "AAAA"
        bad = await c.post("/v1/interviews", json=iv, headers={"authorization": f"Bearer {forged}"})
        assert bad.status_code == 401

        elsewhere = {"authorization": f"Bearer {token('officer', 'OFC-X', ('6401',))}"}
        wrong_area = await c.post("/v1/interviews", json=iv, headers=elsewhere)
        assert wrong_area.status_code == 403 and "not in the areas assigned" in wrong_area.text
        assert sls not in wrong_area.text  # a refusal names the field, not the value

        supervisor = {"authorization": f"Bearer {token('supervisor', 'SPV-1', (sls,))}"}
        wrong_role = await c.post("/v1/interviews", json=iv, headers=supervisor)
        assert wrong_role.status_code == 403 and "officer" in wrong_role.text

        village = {"authorization": f"Bearer {token('village_official', 'DESA-1', (sls,))}"}
        fkp = {"submission_id": str(uuid.uuid4()), "family_id": f"{sls}-0001-001", "sls_id": sls,
               "welfare_group": 2, "reason": "consultation", "decided_by": "Musdes", "decided_at": "2023-05-03T10:00:00+08:00"}
        assert (await c.post("/v1/fkp-adjustments", json=fkp, headers=supervisor)).status_code == 403
        assert (await c.post("/v1/fkp-adjustments", json=fkp, headers=village)).status_code == 202

        mine = {"authorization": f"Bearer {token('officer', 'OFC-IT', (sls,))}"}
        assert (await c.post("/v1/interviews", json=iv, headers=mine)).status_code == 202
        status_other = await c.get(f"/v1/submissions/{iv['submission_id']}", headers=elsewhere)
        assert status_other.status_code == 403


async def test_oversized_and_malformed_bodies_are_4xx(intake_world):
    officer = {"authorization": f"Bearer {token('officer', 'OFC-IT', ('64',))}", "content-type": "application/json"}
    async with httpx.AsyncClient(base_url=_base(intake_world), timeout=30) as c:
        big = await c.post("/v1/interviews", content=b"[" + b"1," * (5 * 1024 * 1024) + b"1]", headers=officer)
        assert big.status_code == 413

        async def chunked():  # no Content-Length: counted while it streams
            yield b"["
            for _ in range(160):
                yield b"1," * 32 * 1024
            yield b"1]"
        streamed = await c.post("/v1/interviews", content=chunked(), headers=officer)
        assert streamed.status_code == 413 and "too large" in streamed.json()["reason"]
        for body in (b"{", b"\xff\xfe", b"null", b'{"members": "x"}', b"[]"):
            r = await c.post("/v1/interviews", content=body, headers=officer)
            assert 400 <= r.status_code < 500, (body, r.status_code, r.text)
        _, iv = family(new_sls_id(), 1)
        iv["members"][0]["name"] = "Bu\x00di"
        r = await c.post("/v1/interviews", json=iv, headers=officer)
        assert r.status_code == 422 and r.json()["errors"][0]["path"] == "/members/0/name"


async def test_concurrent_single_submissions_share_transactions_yet_each_keeps_its_answer_and_trace(intake_world):
    """Group commit: single submissions that arrive while others are being stored are stored together
    (fewer transactions than requests: rows of one transaction share its xmin), yet each request gets
    its own answer (a repeat within the burst a replay of the first, a changed one a conflict) and its
    row and events keep its own trace."""
    sls = new_sls_id()
    n = 60
    forms = [family(sls, i) for i in range(1, n + 1)]
    officer = {"authorization": f"Bearer {token('officer', 'OFC-GROUP', (sls,))}"}
    traces = {family_id_of(iv): uuid.uuid4().hex for _, iv in forms}
    repeated, changed = forms[0][1], copy.deepcopy(forms[1][1])
    changed["housing"]["floor_area_m2"] = 77

    async def send(c: httpx.AsyncClient, iv: dict) -> httpx.Response:
        traceparent = f"00-{traces[family_id_of(iv)]}-{uuid.uuid4().hex[:16]}-01"
        return await c.post("/v1/interviews", json=iv, headers={**officer, "traceparent": traceparent})

    limits = httpx.Limits(max_connections=n + 8)
    async with httpx.AsyncClient(base_url=_base(intake_world), timeout=60, limits=limits) as c:
        assert (await c.post("/v1/rosters", json=roster(sls, [e for e, _ in forms]), headers=officer)).status_code == 202
        answers = await asyncio.gather(*(send(c, iv) for iv in [*(iv for _, iv in forms), repeated, repeated, changed]))

    firsts, extra = answers[:n], answers[n:]
    assert [r.status_code for r in firsts[2:]] == [202] * (n - 2), [r.text for r in firsts if r.status_code >= 300]
    repeats = [firsts[0], extra[0], extra[1]]  # the same form three times: one stored, two replays of it
    assert sorted(r.status_code for r in repeats) == [200, 200, 202]
    assert len({r.json()["event_id"] for r in repeats}) == 1
    assert sorted(r.status_code for r in (firsts[1], extra[2])) == [202, 409]  # one stored, the other refused

    rows = await intake_world.fetch(
        "intake", "select family_id, trace_id, xmin::text as tx from submissions where sls_id = $1 and kind = 'interview'",
        sls)
    assert len(rows) == n
    stored_by = {r["family_id"]: r["trace_id"] for r in rows}
    assert stored_by == traces, "a row names another request's trace"  # (a form's repeats share its trace)
    transactions = len({r["tx"] for r in rows})
    assert transactions < n, f"{n} concurrent submissions were stored in {transactions} transactions: no group formed"

    topic = intake_world.topic(Topic.INTERVIEW_SUBMITTED)

    async def published():
        records = [r for r in await read_topic(topic, timeout=10) if header(r, "ce_subject") in traces]
        return records if len(records) >= n else None

    records = await eventually(published, timeout=60, what="every interview's event on the topic")
    assert len(records) == n
    for r in records:
        fid = header(r, "ce_subject")
        assert trace_id_of(header(r, "traceparent")) == stored_by[fid], f"event of {fid} carries another request's trace"
