"""The village consultation (FKP; docs/CONSULTATION.md) in a pipeline run: once the census families
are decided, one or two villages of the sample hold their forum through intake's API. Each forum
decides about some of its decided families by consensus (a group change, a confirmation, a family
moved away or a head who died) and adds a family the census missed; an officer's ground check finds
that family, which is then verified as added and classified; the forum is closed, and classify
re-ranks its regency once. The plans are drawn from the sample's seed, so a run again repeats the
same requests (intake answers them as repeats).

    plans = forum_plans(sample, decided)      # village -> what its forum will decide
    result = await hold_forums(client, ep, tokens, plans)
    print_consultation(result)
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import random
import time
import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import httpx

from regsosek.auth import Role, audience_of, mint
from regsosek.contracts import FamilyInterview
from regsosek_tools.sample import Sample, officer_for

FORUMS = 2
HELD_ON = "2023-05-08"  # within the consultation of 2-21 May 2023 (docs/DOMAIN.md)
CHECKED_ON = "2023-05-11"
ADDED_BUILDING = 9001  # the place a forum gives its added family: after every building the census numbered


@dataclass
class ForumPlan:
    forum_id: str
    village_id: str
    sls_ids: list[str]
    participants: list[dict]
    decisions: list[dict]  # the request bodies, decision ids included
    added: FamilyInterview  # the missed family's interview, brought by the ground check

    def opening(self) -> dict:
        return {"forum_id": self.forum_id, "village_id": self.village_id, "sls_ids": self.sls_ids,
                "held_on": HELD_ON, "participants": self.participants}


@dataclass
class ForumResult:
    village_id: str
    decisions: dict[str, int] = field(default_factory=dict)  # kind -> recorded
    refused: list[str] = field(default_factory=list)
    added_outcome: str | None = None  # verified_added (or a flag reason) once decided
    added_final: str | None = None
    closed: bool = False
    reranked: bool = False


def _uuid(rng: random.Random) -> str:
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


def _missed_family(rng: random.Random, like: FamilyInterview, sls_id: str, family_no: int) -> FamilyInterview:
    """A family the census missed, made from a census family of the village: its own place, no KK or NIK
    (a family without documents is the kind a census misses), interviewed on the day of the ground check."""
    doc = copy.deepcopy(like.model_dump(mode="json"))
    doc.update(submission_id=_uuid(rng), version=1, interviewed_at=f"{CHECKED_ON}T09:00:00+08:00")
    doc.pop("supervisor_check", None)
    doc["location"] = {**doc["location"], "sls_id": sls_id, "building_no": ADDED_BUILDING, "family_no": family_no,
                       "kk_number": None, "kk_status": "as_prelisted", "parent_kk_number": None}
    doc["members"] = [m for m in doc["members"] if m.get("presence", "lives_here") == "lives_here"] or doc["members"]
    for m in doc["members"]:
        m["nik"] = None
    return FamilyInterview.model_validate(doc)


def forum_plans(sample: Sample, decided: dict[str, int], forums: int = FORUMS) -> list[ForumPlan]:
    """Up to `forums` villages of the sample with decided families (`decided`: family id -> the welfare
    group the census gave it, not a later one, so that a run again plans the same decisions),
    each with its forum: a group change, a confirmation and, in turn, a family moved away or a head who
    died, and one added family."""
    rng = random.Random(f"regsosek-fkp:{sample.seed}")
    by_village: dict[str, list[str]] = defaultdict(list)
    for fid in sorted(decided):
        by_village[fid[:10]].append(fid)
    villages = [v for v in sorted(by_village) if len(by_village[v]) >= 3][:forums]
    interviews = {iv.family_id: iv for iv in sample.interviews}
    plans = []
    for i, village in enumerate(villages):
        fids = rng.sample(by_village[village], 3)
        changed, confirmed, removed = fids
        group = 1 if decided[changed] != 1 else 2
        kinds = [(changed, "group_change", "no regular income since the harvest failed", group),
                 (confirmed, "confirmed", "as the consultation saw the family", None),
                 (removed, "moved" if i % 2 == 0 else "died",
                  "moved to another regency" if i % 2 == 0 else "the head died; no member stayed", None)]
        sls_ids = sorted({r.sls_id for r in sample.rosters if r.sls_id.startswith(village)})
        added = _missed_family(rng, interviews[changed], sls_ids[0], 1)
        kinds.append((added.family_id, "added", "missed by the census: lives at the end of the river path", None))
        decisions = [{"decision_id": _uuid(rng), "family_id": f, "kind": k, "reason": reason,
                      **({"welfare_group": g} if g else {})} for f, k, reason, g in kinds]
        participants = [{"role": "village_head", "count": 1}, {"role": "sls_head", "count": len(sls_ids)},
                        {"role": "community_figure", "count": rng.randint(3, 8)}, {"role": "bps_officer", "count": 1}]
        plans.append(ForumPlan(_uuid(rng), village, sls_ids, participants, decisions, added))
    return plans


def _auth(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


async def _forum(client: httpx.AsyncClient, intake: str, classify: str, admin: str, plan: ForumPlan,
                 wait_s: float) -> ForumResult:
    result = ForumResult(plan.village_id)
    village = _auth(mint(subject=f"DESA-{plan.village_id}", role=Role.VILLAGE_OFFICIAL, areas=[plan.village_id]))
    officer_id = officer_for(plan.added.location.sls_id)
    officer = _auth(mint(subject=officer_id, role=Role.OFFICER, areas=[plan.village_id]))
    base = f"{intake}/v1/fkp-forums"
    r = await client.post(base, json=plan.opening(), headers=village)
    if r.status_code not in (200, 202):
        result.refused.append(f"open: {r.status_code} {r.text[:200]}")
        return result
    for d in plan.decisions:
        r = await client.post(f"{base}/{plan.forum_id}/decisions", json=d, headers=village)
        if r.status_code in (200, 202):
            result.decisions[d["kind"]] = result.decisions.get(d["kind"], 0) + 1
        else:
            result.refused.append(f"{d['kind']}: {r.status_code} {r.text[:200]}")
    r = await client.post(f"{base}/{plan.forum_id}/added-families/{plan.added.family_id}/ground-check",
                          json={"outcome": "found", "checked_on": CHECKED_ON,
                                "interview": plan.added.model_dump(mode="json")}, headers=officer)
    if r.status_code not in (200, 202):
        result.refused.append(f"ground check: {r.status_code} {r.text[:200]}")
    await _follow_added(client, intake, admin, plan, result, wait_s)
    r = await client.post(f"{base}/{plan.forum_id}/close", headers=village)
    result.closed = r.status_code in (200, 202)
    result.reranked = await _reranked(client, classify, plan.village_id[:4], wait_s)
    return result


async def _follow_added(client: httpx.AsyncClient, intake: str, admin: str, plan: ForumPlan, result: ForumResult,
                        wait_s: float) -> None:
    """Waits until the added family's interview is decided (verified and classified) or flagged."""
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.HTTPError, ValueError):
            r = await client.get(f"{intake}/v1/submissions/{plan.added.submission_id}", headers=_auth(admin))
            if r.status_code == 200 and (j := r.json())["final"]:
                verdicts = [s.get("outcome") or s.get("reason") for s in j["journey"] if s["step"] in ("verified", "flagged")]
                result.added_final, result.added_outcome = j["final"], verdicts[-1] if verdicts else None
                return
        await asyncio.sleep(0.5)


async def _reranked(client: httpx.AsyncClient, classify: str, regency: str, wait_s: float) -> bool:
    """Whether classify ranked the regency as an area (after a forum's close) within `wait_s` (its status
    API, with a token for classify's audience)."""
    admin = mint(subject="pipeline-runner", role=Role.ADMIN, areas=[], audience=audience_of("classify"))
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.HTTPError, ValueError, KeyError):
            r = await client.get(f"{classify}/v1/reranks", params={"limit": 20}, headers=_auth(admin))
            body: dict[str, Any] = r.json() if r.status_code == 200 else {}
            waiting = any(a["regency"] == regency for a in body.get("areas_waiting", []))
            if not waiting and any(x.get("area") == regency for x in body.get("rankings", [])):
                return True
        await asyncio.sleep(0.5)
    return False


async def hold_forums(client: httpx.AsyncClient, intake: str, classify: str, admin: str, plans: list[ForumPlan],
                      wait_s: float = 60.0) -> list[ForumResult]:
    """Each planned forum, one after the other (a forum's re-rank waits for the one before)."""
    return [await _forum(client, intake, classify, admin, p, wait_s) for p in plans]


def consultation_ok(results: list[ForumResult]) -> bool:
    return all(not r.refused and r.closed and r.added_outcome == "verified_added" and r.added_final == "decided"
               for r in results)


def print_consultation(results: list[ForumResult]) -> None:
    if not results:
        return
    print("  village consultation (FKP): "
          + f"{len(results)} forum(s), {sum(sum(r.decisions.values()) for r in results)} decisions")
    for r in results:
        kinds = ", ".join(f"{k} {n}" for k, n in sorted(r.decisions.items()))
        print(f"    village {r.village_id}: {kinds}; added family {r.added_outcome or 'not decided'} "
              f"({r.added_final or 'no final state'}); {'closed' if r.closed else 'NOT closed'}; regency "
              f"{r.village_id[:4]} {'re-ranked' if r.reranked else 'not re-ranked yet'}")
        for problem in r.refused:
            print(f"      refused {problem}")
