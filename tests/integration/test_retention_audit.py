"""Retention and audit on the real stack (docs/RETENTION.md).

Retention: rows older than their retention (inserted with an old timestamp) are pruned or
emptied by the running service's retention task while recent ones stay: inbox ids,
outbox_rejected rows, audit rows, intake's received bodies of final journeys, notify's
delivered payloads (the delivery rows and figures stay).

Audit: reading a submission's journey and a supervisor's resolution are recorded with the
token's subject and role, the object's id and the request id, and no personal value; the
admin query (HTTP and the command) returns them; any other role gets 403.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import uuid

import httpx
import pytest

from itkit import ROOT, World, eventually, family, family_id_of, new_sls_id, roster, token

pytestmark = pytest.mark.integration

FAST = {"REGSOSEK_RETENTION_INTERVAL_S": "0.5", "REGSOSEK_RETENTION_BATCH_ROWS": "2"}


@pytest.fixture
async def world(stack):
    w = await World(["intake", "notify"]).setup()
    try:
        await w.start("intake", "notify", **FAST)
        yield w
    finally:
        await w.teardown()


async def _exec(world: World, service: str, sql: str, *args) -> None:
    await world.fetch(service, sql, *args)


async def test_old_rows_are_pruned_and_recent_ones_stay(world):
    for svc in ("intake", "notify"):
        # inbox: 100 days old (beyond the default 45) x5, so several bounded statements run; 1 day old stays
        await _exec(world, svc, "insert into inbox (event_id, topic, received_at) select 'old-' || g, 't', "
                                "now() - interval '100 days' from generate_series(1, 5) g")
        await _exec(world, svc, "insert into inbox (event_id, topic, received_at) "
                                "values ('recent', 't', now() - interval '1 day')")
        for rid, age in ((1, "40 days"), (2, "1 day")):  # outbox_rejected: 30 days
            await _exec(world, svc, "insert into outbox_rejected (id, topic, key, value, header_keys, header_values, "
                                    "created_at, error_type, reason, rejected_at) values ($1, 't', null, 'x', '{}', '{}', "
                                    f"now(), 'E', 'r', now() - interval '{age}')", rid)
        await _exec(world, svc, "insert into audit_log (actor, role, action, object_type, at) values "
                                "('OLD', 'admin', 'submission.read', 'submission', now() - interval '800 days'), "
                                "('NEW', 'admin', 'submission.read', 'submission', now() - interval '1 day')")

    # intake: a roster received 800 days ago (final once accepted) loses its body; a recent one keeps it
    old_sub, new_sub = uuid.uuid4(), uuid.uuid4()
    for sid, age in ((old_sub, "800 days"), (new_sub, "1 day")):
        await _exec(world, "intake", "insert into submissions (submission_id, kind, sls_id, content_hash, body, "
                                     "event_id, submitted_by, received_at) values ($1, 'roster', '64720100010001', "
                                     f"'\\x00', '{{\"kk\": \"6472010505800001\"}}', $2, 'OFC-IT', now() - interval '{age}')",
                    sid, str(uuid.uuid4()))

    # notify: a paused subscription with an old and a recent delivered event and an old pending one
    sub_id = uuid.uuid4()
    await _exec(world, "notify", "insert into subscriptions (id, owner, callback_url, secret, status) values "
                                 "($1, 'PRG-IT', 'http://127.0.0.1:9/x', 'k' || repeat('x', 40), 'paused')", sub_id)
    for ev, status, delivered in (("d-old", "delivered", "40 days"), ("d-new", "delivered", "1 day"),
                                  ("p-old", "pending", None)):
        await _exec(world, "notify", "insert into deliveries (subscription_id, event_id, event_type, family_id, payload, "
                                     "status, created_at, delivered_at) values ($1, $2, 'eligibility-decided', "
                                     "'64720100010001-0001-001', '{\"data\": {\"eligible\": true}}', $3, "
                                     "now() - interval '41 days', "
                                     + (f"now() - interval '{delivered}')" if delivered else "null)"),
                    sub_id, ev, status)

    async def pruned() -> bool:
        for svc in ("intake", "notify"):
            if await world.fetchval(svc, "select count(*) from inbox where event_id like 'old-%'"):
                return False
            if await world.fetchval(svc, "select count(*) from outbox_rejected where id = 1"):
                return False
            if await world.fetchval(svc, "select count(*) from audit_log where actor = 'OLD'"):
                return False
        return (await world.fetchval("intake", "select body_expired_at is not null and body is null "
                                               "and body_enc is null from submissions where submission_id = $1",
                                     old_sub)
                and await world.fetchval("notify", "select payload is null from deliveries where event_id = 'd-old'"))

    await eventually(pruned, timeout=30, what="the retention task to prune the old rows")
    for svc in ("intake", "notify"):
        assert await world.fetchval(svc, "select count(*) from inbox where event_id = 'recent'") == 1
        assert await world.fetchval(svc, "select count(*) from outbox_rejected where id = 2") == 1
        assert await world.fetchval(svc, "select count(*) from audit_log where actor = 'NEW'") == 1
    # the recent body stays (sealed at rest by intake's start-up pass, so in body_enc rather than body)
    assert await world.fetchval("intake", "select body_expired_at is null and (body is not null or body_enc is not null) "
                                          "from submissions where submission_id = $1", new_sub)
    old = (await world.fetch("intake", "select content_hash, body_expired_at, submitted_by from submissions "
                                       "where submission_id = $1", old_sub))[0]
    assert old["content_hash"] == b"\x00" and old["body_expired_at"] is not None and old["submitted_by"] == "OFC-IT"
    rows = {r["event_id"]: r for r in await world.fetch(
        "notify", "select event_id, status, payload is null as expired, payload_expired_at from deliveries")}
    assert rows["d-old"]["expired"] and rows["d-old"]["status"] == "delivered" and rows["d-old"]["payload_expired_at"]
    assert not rows["d-new"]["expired"] and not rows["p-old"]["expired"]  # recent, and not yet delivered: kept

    # a replay from before the expiry does not re-queue the emptied delivery (nothing to send)
    admin = {"authorization": f"Bearer {token('admin', 'ADM-IT', ())}"}
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{world.ports['notify']}", timeout=20) as c:
        r = await c.post(f"/v1/subscriptions/{sub_id}/redeliver", json={"since": "2000-01-01T00:00:00Z"}, headers=admin)
        assert r.status_code == 200, r.text
        assert r.json()["requeued"] == 1  # d-new only
        assert await world.fetchval("notify", "select status from deliveries where event_id = 'd-old'") == "delivered"
        audit = await c.get("/v1/audit", params={"object": str(sub_id)}, headers=admin)
        assert audit.status_code == 200, audit.text
        (e,) = [x for x in audit.json()["entries"] if x["action"] == "subscription.redeliver"]
        assert e["actor"] == "ADM-IT" and e["role"] == "admin" and e["detail"]["requeued"] == 1


async def test_reads_and_decisions_are_audited_without_personal_values(world):
    sls = new_sls_id()
    entry, iv = family(sls, 1)
    officer = {"authorization": f"Bearer {token('officer', 'OFC-AUD', (sls[:4],))}", "x-request-id": "req-aud-1"}
    supervisor = {"authorization": f"Bearer {token('supervisor', 'SUP-AUD', (sls[:4],))}"}
    admin = {"authorization": f"Bearer {token('admin', 'ADM-AUD', ())}"}
    outsider = {"authorization": f"Bearer {token('officer', 'OFC-OUT', ('6401',))}"}
    fam = family_id_of(iv)
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{world.ports['intake']}", timeout=20) as c:
        rst = roster(sls, [entry])
        assert (await c.post("/v1/rosters", json=rst, headers=officer)).status_code == 202
        sub = await c.post("/v1/interviews", json=iv, headers=officer)
        assert sub.status_code == 202, sub.text
        sid = sub.json()["submission_id"]

        journey = await c.get(f"/v1/submissions/{sid}", headers=officer)
        assert journey.status_code == 200, journey.text
        denied = await c.get(f"/v1/submissions/{sid}", headers=outsider)
        assert denied.status_code == 403 and sls not in denied.text  # the outsider does not learn where the family lives
        resolution = {"submission_id": str(uuid.uuid4()), "family_id": fam, "sls_id": sls, "decision": "verify",
                      "supervisor_id": "SUP-AUD", "reason": "lives here, confirmed by the RT head",
                      "decided_at": "2022-10-25T10:00:00+08:00"}
        assert (await c.post("/v1/resolutions", json=resolution, headers=supervisor)).status_code == 202

        rows = await world.fetch("intake", "select * from audit_log order by id")
        reads = [r for r in rows if r["action"] == "submission.read"]
        assert [(r["actor"], r["role"], r["outcome"]) for r in reads] == [("OFC-AUD", "officer", "ok"),
                                                                           ("OFC-OUT", "officer", "denied")]
        assert reads[0]["object_type"] == "submission" and reads[0]["object_id"] == sid
        assert reads[0]["request_id"] == "req-aud-1" and reads[0]["trace_id"]
        (decision,) = [r for r in rows if r["action"] == "resolution.submit"]
        assert (decision["actor"], decision["role"], decision["object_id"]) == ("SUP-AUD", "supervisor", fam)
        text = json.dumps([dict(r) for r in rows], default=str)
        for member in iv["members"]:  # no NIK, no name
            assert member["name"] not in text
            if "nik" in member:
                assert member["nik"] not in text
        assert iv["location"]["kk_number"] not in text and "confirmed by the RT head" not in text

        # the admin query, by actor and by object; another role gets 403
        got = await c.get("/v1/audit", params={"actor": "OFC-AUD"}, headers=admin)
        assert got.status_code == 200, got.text
        assert [(e["action"], e["object_id"]) for e in got.json()["entries"]] == [("submission.read", sid)]
        by_object = await c.get("/v1/audit", params={"object": fam, "since": "2000-01-01T00:00:00Z"}, headers=admin)
        assert [e["action"] for e in by_object.json()["entries"]] == ["resolution.submit"]
        for who in (officer, supervisor):
            assert (await c.get("/v1/audit", headers=who)).status_code == 403
        assert (await c.get("/v1/audit")).status_code == 401
        assert await world.fetchval("intake", "select count(*) from audit_log where action = 'audit.read' "
                                              "and actor = 'ADM-AUD'") == 2

    # the same from the service's database, for an operator without HTTP
    out = await asyncio.to_thread(
        subprocess.run, [sys.executable, "-m", "regsosek.audit", "--service", "intake", "--dsn", world.dsn("intake"),
                         "--actor", "SUP-AUD", "--since", "1d"],
        capture_output=True, text=True, timeout=60, cwd=ROOT, env=dict(os.environ))
    assert out.returncode == 0, out.stderr
    lines = [json.loads(x) for x in out.stdout.splitlines()]
    assert [(x["action"], x["object_id"]) for x in lines] == [("resolution.submit", fam)]
