"""Classify's re-rank, FKP area re-rank and replay on the real broker and database: a
classify service of its own world is fed interview-verified records directly; the
commands run as an operator would run them (python -m classify.rerank / .replay, with
the world's database and topic prefix); every expectation is worked out independently
from the stored rank values with the pure ranking function, and the records on the
world's family-classified and eligibility-decided topics are counted: only families
whose welfare group, decile or eligibility changed are published again.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import subprocess
import sys
import uuid
from datetime import UTC, datetime

import httpx
import pytest
import yaml

from classify.model import DATA
from classify.ranking import rank_deciles
from classify.replay import SLICES_PER_PROCESS
from regsosek.auth import Role, mint
from regsosek.contracts import (
    EligibilityDecided,
    FamilyClassified,
    FkpAdjustment,
    InterviewVerified,
    WelfareGroup,
    household_profile,
)
from regsosek.topics import Topic
from regsosek_tools.sample import generate

from itkit import BOOTSTRAP, World, by_subject, cloud_event, eventually, read_topic

pytestmark = pytest.mark.integration

SEED = 4242
FAMILIES = 90
RULES_FILE = DATA / "eligibility-2022.1.yaml"
EXTREME_POOR = yaml.safe_load((DATA / "poverty-lines-2022.yaml").read_text())["extreme_poor"]


async def _command(world: World, module: str, *args: str, env: dict[str, str] | None = None,
                   timeout: float = 120) -> tuple[int, dict | str]:
    full_env = {**os.environ, "REGSOSEK_DATABASE_URL": world.dsn("classify"), "REGSOSEK_TOPIC_PREFIX": world.prefix,
                "REGSOSEK_KAFKA_BOOTSTRAP": BOOTSTRAP, **(env or {})}
    p = await asyncio.to_thread(subprocess.run, [sys.executable, "-m", module, "--json", *args], env=full_env,
                                capture_output=True, text=True, timeout=timeout)
    if p.returncode == 0:
        return 0, json.loads(p.stdout.strip().splitlines()[-1])
    return p.returncode, p.stderr


def _bearer(role: Role) -> dict[str, str]:
    """A token for classify's API (signed with the local key pair the world's services accept)."""
    return {"authorization": "Bearer " + mint(subject="IT", role=role, areas=["64"], audience="regsosek-classify")}


async def _records(world: World) -> tuple[dict, dict]:
    fc = by_subject(await read_topic(world.topic(Topic.FAMILY_CLASSIFIED)))
    ed = by_subject(await read_topic(world.topic(Topic.ELIGIBILITY_DECIDED)))
    return fc, ed


def _counts(records: dict) -> dict[str, int]:
    return {k: len(v) for k, v in records.items()}


def _new_since(before: dict[str, int], now: dict) -> dict[str, list]:
    return {k: v[before.get(k, 0):] for k, v in now.items() if len(v) > before.get(k, 0)}


async def _state(world: World) -> dict[str, dict]:
    rows = await world.fetch("classify", "select f.family_id, f.rank_value, f.decile, f.welfare_group, f.eligibility, "
                                         "f.eligible, f.member_eligibility, p.decile_basis, p.ranking_id, "
                                         "f.rule_version from families f "
                                         "cross join lateral placed(f.family_id, f.sls_id, f.decile_basis, "
                                         "f.ranking_id) p")
    return {r["family_id"]: {**dict(r), "eligibility": json.loads(r["eligibility"]),
                             "member_eligibility": json.loads(r["member_eligibility"])} for r in rows}


def _stored_as_decided(s: dict, e: EligibilityDecided) -> None:
    """The family's row holds what its eligibility-decided said (a family classified again from its stored
    profile has only the decided columns written)."""
    decided = {d.programme: d.eligible for d in e.decisions}
    assert s["eligibility"] == decided and s["eligible"] == [p for p, ok in decided.items() if ok]
    assert s["member_eligibility"] == {f"{m.programme}:{m.line_no}": m.eligible for m in e.member_decisions}
    assert (s["decile"], s["welfare_group"], s["rule_version"]) == (e.decile, int(e.welfare_group), e.rule_version)


async def _row_versions(world: World) -> dict[str, tuple[str, str]]:
    """Each family's row version: the transaction that wrote it and where it is."""
    rows = await world.fetch("classify", "select family_id, xmin::text as xmin, ctid::text as ctid from families")
    return {r["family_id"]: (r["xmin"], r["ctid"]) for r in rows}


@pytest.fixture(scope="module")
async def classify_world(stack, producer):
    world = await World(["classify"]).setup()
    try:
        (proc,) = await world.start("classify", REGSOSEK_AREA_RERANK_POLL_S="0.2")
        sample = generate(SEED, FAMILIES)
        for iv in sample.interviews:
            e = InterviewVerified(family_id=iv.family_id, sls_id=iv.location.sls_id, outcome="verified",
                                  verified_at=datetime.now(UTC), profile=household_profile(iv))
            _, value, headers = cloud_event(e, subject=iv.family_id)
            await producer.send(world.topic(Topic.INTERVIEW_VERIFIED), value=value,
                                key=iv.location.sls_id.encode(), headers=headers)
        await producer.flush()

        async def all_classified():
            fc, ed = await _records(world)
            return len(fc) == FAMILIES and len(ed) == FAMILIES and fc
        await eventually(all_classified, timeout=60, what="every family classified once")
        yield world, proc
    finally:
        await world.teardown()


async def test_rerank_fkp_area_and_replay_publish_only_changes(classify_world, producer, tmp_path):
    world, proc = classify_world
    fc, ed = await _records(world)
    assert _counts(fc) == {fid: 1 for fid in fc} and _counts(ed) == _counts(fc)
    before = await _state(world)
    assert all(s["decile_basis"].startswith("provisional: reference cut-points") for s in before.values())

    # ------------------------------------------------ a national re-rank
    expected_deciles = rank_deciles((fid, s["rank_value"]) for fid, s in before.items())
    moved = {fid for fid, d in expected_deciles.items() if d != before[fid]["decile"]}
    assert moved  # the reference cut-points are not this population's
    rc, report = await _command(world, "classify.rerank", "--scope", "national", "--batch-size", "16")
    assert rc == 0, report
    assert report["changed"] == len(moved) and report["unchanged"] == FAMILIES - len(moved)
    assert report["partitions"][0]["decile_sizes"] == {str(d): FAMILIES // 10 for d in range(1, 11)}

    counts = _counts(fc)
    fc, ed = await _records(world)  # the command returns once its events are on the topics
    new_fc, new_ed = _new_since(counts, fc), _new_since(counts, ed)
    assert set(new_fc) == moved and set(new_ed) == moved
    assert all(len(v) == 1 for v in new_fc.values()) and all(len(v) == 1 for v in new_ed.values())
    for fid, (rec,) in new_fc.items():
        c = FamilyClassified.model_validate_json(rec.value)
        assert c.decile == expected_deciles[fid]
        assert c.decile_basis.startswith("ranked: national at ") and c.decile_basis.endswith(f"among {FAMILIES} families")
        (erec,) = new_ed[fid]
        assert EligibilityDecided.model_validate_json(erec.value).decile == expected_deciles[fid]
    ranked = await _state(world)
    assert {fid: s["decile"] for fid, s in ranked.items()} == expected_deciles
    for fid, (erec,) in new_ed.items():
        _stored_as_decided(ranked[fid], EligibilityDecided.model_validate_json(erec.value))
    assert all(s["decile_basis"].startswith("ranked: national") for s in ranked.values())

    # the same ranking again, and per province (one province here): nothing changes, nothing is published,
    # and no family's row is written: each reads the new ranking's basis (migration 011), its row version
    # (xmin, ctid) the one the national re-rank left
    versions = await _row_versions(world)
    for scope in ("national", "province"):
        rc, report = await _command(world, "classify.rerank", "--scope", scope)
        assert rc == 0 and report["changed"] == 0 and report["examined"] == FAMILIES, report
        assert report["unchanged"] == FAMILIES, report
        confirmed = await _state(world)
        assert {s["ranking_id"] for s in confirmed.values()} == {report["partitions"][0]["ranking_id"]}
        assert all(s["decile_basis"].startswith(f"ranked: {scope}") for s in confirmed.values())
        assert {f: s["decile"] for f, s in confirmed.items()} == expected_deciles
    assert await _row_versions(world) == versions
    assert _counts((await _records(world))[0]) == _counts(fc)
    assert all(s["decile_basis"].startswith("ranked: province 64") for s in (await _state(world)).values())

    # ------------------------------------------------ an FKP adjustment re-ranks its regency
    def area_changes(target: str) -> tuple[dict[str, int], set[str]]:
        values = {fid: s["rank_value"] for fid, s in ranked.items()}
        values[target] = math.nextafter(EXTREME_POOR, 0.0)  # sangat miskin: ranked just below the extreme line
        final = rank_deciles(values.items())
        area = target[:4]
        return final, {f for f in final if f.startswith(area) and f != target and final[f] != ranked[f]["decile"]}

    candidates = [f for f, s in ranked.items() if s["decile"] >= 6 and s["rank_value"] > 400_000]
    target = max(candidates, key=lambda f: (len(area_changes(f)[1]), f))
    final, shifted = area_changes(target)
    assert shifted, "the sample must have a family whose move shifts others of its regency"
    counts = _counts(fc)
    fkp = FkpAdjustment(submission_id=uuid.uuid4(), family_id=target, sls_id=target[:14],
                        welfare_group=WelfareGroup.SANGAT_MISKIN, reason="no regular income since the flood",
                        decided_by="FKP Desa", decided_at=datetime.now(UTC))
    _, value, headers = cloud_event(fkp, subject=target)
    await producer.send_and_wait(world.topic(Topic.FKP_ADJUSTMENT), value=value, key=target[:14].encode(),
                                 headers=headers)

    async def area_reranked():
        done = await world.fetchval("classify", "select count(*) from rankings where area = $1", target[:4])
        pending = await world.fetchval("classify", "select count(*) from rerank_areas")
        outbox = await world.fetchval("classify", "select count(*) from outbox")
        return done == 1 and pending == 0 and outbox == 0
    await eventually(area_reranked, timeout=30, what="the FKP family's regency re-ranked")
    after_fkp = await _state(world)
    area = target[:4]
    for fid, s in after_fkp.items():
        if fid.startswith(area):
            assert s["decile"] == final[fid], fid  # the whole regency stands where the new ranking puts it
        else:
            assert s["decile"] == ranked[fid]["decile"], fid  # others wait for the next full re-rank
    assert after_fkp[target]["welfare_group"] == 1 and after_fkp[target]["decile"] < ranked[target]["decile"]
    assert "set by village consultation (FKP)" in after_fkp[target]["decile_basis"]

    async def published():
        fc2, ed2 = await _records(world)
        n_fc, n_ed = _new_since(counts, fc2), _new_since(counts, ed2)
        return (fc2, ed2, n_fc, n_ed) if set(n_fc) == shifted | {target} and set(n_ed) == set(n_fc) else None
    fc, ed, new_fc, new_ed = await eventually(published, timeout=20, what="the area's changes published")
    assert all(len(v) == 1 for f, v in new_fc.items() if f != target)  # each shifted family once
    last = FamilyClassified.model_validate_json(new_fc[target][-1].value)
    assert last.welfare_group is WelfareGroup.SANGAT_MISKIN and last.adjusted_by_fkp and last.decile == final[target]
    for f in shifted:
        c = FamilyClassified.model_validate_json(new_fc[f][0].value)
        assert c.decile == final[f] and f"(area {area} re-ranked after village consultation)" in c.decile_basis

    # the next full re-rank catches up the rest of the province, and only them
    rest = {f for f in final if final[f] != after_fkp[f]["decile"]}
    counts = _counts(fc)
    rc, report = await _command(world, "classify.rerank")
    assert rc == 0 and report["changed"] == len(rest), report
    fc, ed = await _records(world)
    assert set(_new_since(counts, fc)) == rest and set(_new_since(counts, ed)) == rest

    # ------------------------------------------------ replay after a rules change
    rules = yaml.safe_load(RULES_FILE.read_text())
    rules["version"] = "rules-it.2"
    rules["programmes"]["sembako"]["max_decile"] = 3
    new_rules = tmp_path / "rules-it.2.yaml"
    new_rules.write_text(yaml.safe_dump(rules))
    env = {"REGSOSEK_RULES_FILE": str(new_rules)}
    rc, err = await _command(world, "classify.rerank", env=env)
    assert rc == 2 and "classify.replay" in err  # stored families are of the old rules: replay first

    await proc.stop()  # the service is restarted with the new rules, as an operator would
    (proc,) = await world.start("classify", REGSOSEK_AREA_RERANK_POLL_S="0.2", **env)
    state = await _state(world)
    losing = {f for f, s in state.items() if s["decile"] in (4, 5)}  # Sembako now stops at decile 3
    assert losing
    counts = _counts(fc)
    rc, first = await _command(world, "classify.replay", "--batch-size", "20", "--max-batches", "2", env=env)
    assert rc == 0 and first["finished"] is False and first["examined"] == 40, first
    assert await world.fetchval("classify", "select cursor from replay_slices where run_id = $1", first["run_id"]) \
        == sorted(state)[39]
    rc, second = await _command(world, "classify.replay", "--batch-size", "20", env=env)
    assert rc == 0 and second["resumed"] is True and second["finished"] is True, second
    assert second["run_id"] == first["run_id"] and second["examined"] == FAMILIES - 40
    assert second["total_changed"] == len(losing) == first["changed"] + second["changed"]
    fc, ed = await _records(world)
    new_fc, new_ed = _new_since(counts, fc), _new_since(counts, ed)
    assert set(new_fc) == losing and set(new_ed) == losing
    assert all(len(v) == 1 for v in new_ed.values())  # resumed, not repeated
    for f, (rec,) in new_ed.items():
        e = EligibilityDecided.model_validate_json(rec.value)
        assert e.rule_version == "rules-it.2" and e.decile == state[f]["decile"]
        assert {d.programme: d.eligible for d in e.decisions}["sembako"] is False
    replayed = await _state(world)
    assert all(s["rule_version"] == "rules-it.2" for s in replayed.values())
    for f, (rec,) in new_ed.items():
        _stored_as_decided(replayed[f], EligibilityDecided.model_validate_json(rec.value))
    assert {f: s["decile"] for f, s in replayed.items()} == {f: s["decile"] for f, s in state.items()}

    # replaying the same versions again, spread over two processes, finds nothing to publish
    counts = _counts(fc)
    rc, third = await _command(world, "classify.replay", "--processes", "2", "--batch-size", "20", env=env,
                               timeout=600)  # two more interpreters to start on shared cores
    assert rc == 0 and third["resumed"] is False and third["changed"] == 0 and third["reclassified"] == 0, third
    # two processes share SLICES_PER_PROCESS slices each, every one gone through once
    assert third["slices"] == 2 * SLICES_PER_PROCESS and third["examined"] == FAMILIES, third
    assert third["finished"] is True, third
    slices = await world.fetch("classify", "select examined, finished_at from replay_slices where run_id = $1",
                               third["run_id"])
    assert len(slices) == 2 * SLICES_PER_PROCESS and all(s["finished_at"] for s in slices)
    assert sum(s["examined"] for s in slices) == FAMILIES
    assert _counts((await _records(world))[0]) == counts

    # ------------------------------------------------ the final ranking: per regency/city
    state = await _state(world)
    by_regency: dict[str, list] = {}
    for fid, s in state.items():
        by_regency.setdefault(fid[:4], []).append((fid, s["rank_value"]))
    per_regency = {fid: d for values in by_regency.values() for fid, d in rank_deciles(values).items()}
    moving = {fid for fid, d in per_regency.items() if d != state[fid]["decile"]}
    assert len(by_regency) > 1 and moving
    rc, report = await _command(world, "classify.rerank", "--scope", "regency", env=env)
    assert rc == 0 and report["changed"] == len(moving) and len(report["partitions"]) == len(by_regency), report
    fc, ed = await _records(world)
    assert set(_new_since(counts, fc)) == moving and set(_new_since(counts, ed)) == moving
    regency_ranked = await _state(world)
    assert {f: s["decile"] for f, s in regency_ranked.items()} == per_regency
    assert all(s["decile_basis"].startswith(f"ranked: regency {f[:4]} at ") for f, s in regency_ranked.items())

    # ------------------------------------------------ on demand through the API: the service re-ranks
    counts = _counts(fc)
    async with httpx.AsyncClient(base_url=proc.url, timeout=30) as http:
        refused = await http.post("/v1/reranks", json={"scope": "regency"},
                                  headers=_bearer(Role.SUPERVISOR))
        assert refused.status_code == 403
        asked = await http.post("/v1/reranks", json={"scope": "regency"},
                                headers=_bearer(Role.ADMIN))
        assert asked.status_code == 202, asked.text
        request_id = asked.json()["request_id"]

        async def requested_rerank_done():
            return await world.fetchval("classify", "select run_id from rerank_requests where id = $1 "
                                                    "and done_at is not null", request_id)
        run_id = await eventually(requested_rerank_done, timeout=120, what="the requested re-rank done")
        run = (await world.fetch("classify", "select * from rerank_runs where id = $1", run_id))[0]
        assert run["reason"] == "request" and run["outcome"] == "finished" and run["scope"] == "regency"
        assert run["examined"] == FAMILIES and run["changed"] == 0  # the same ranking: nothing to re-publish
        shown = (await http.get("/v1/reranks", headers=_bearer(Role.SUPERVISOR))).json()
        assert shown["reranks"][0]["id"] == run_id and shown["reranks"][0]["state"] == "finished"
    assert _counts((await _records(world))[0]) == counts
