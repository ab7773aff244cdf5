"""The living registry in the sample and in `make run` (docs/DOMAIN.md, after the census): a few
updates of families the census registered (a death and a birth confirmed in the field, a housing
change the field check does not confirm) and a complaint that ends in a correction after a re-visit.

`situations(sample)` picks them from the sample (deterministic per seed: a re-run replays the same
submissions and gets their receipts again); `run(...)` submits them through intake's API once the
census families are decided, follows each to its final state and returns the summary rows
`print_summary` prints.
"""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from dataclasses import dataclass
from datetime import date, timedelta

import httpx

from regsosek.auth import Role, mint
from regsosek.contracts import FamilyInterview
from regsosek_tools.sample import Sample

OCCURRED = date(2023, 3, 1)  # after the collection period: changes until then are on the form


@dataclass(frozen=True)
class Situation:
    """One post-census situation: what is submitted, in order, and the final state expected."""

    name: str  # death_confirmed, birth_confirmed, housing_not_confirmed, complaint_corrected
    family_id: str
    sls_id: str
    submissions: list[tuple[str, str, dict]]  # (role, path, body)
    follow: str  # the submission id whose journey (or complaint) is followed
    expected: str  # the journey's final state, or the complaint's status


def _uuid(rng: random.Random) -> str:
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


def _update(rng: random.Random, fid: str, change: dict, outcome: str, channel: str = "village") -> list:
    sls = fid[:14]
    update = {"submission_id": _uuid(rng), "family_id": fid, "sls_id": sls, "channel": channel,
              "reported_by": f"VIL-{sls[:10]}", "occurred_on": OCCURRED.isoformat(), "change": change}
    check = {"submission_id": _uuid(rng), "update_id": update["submission_id"], "family_id": fid, "sls_id": sls,
             "outcome": outcome, "checked_on": (OCCURRED + timedelta(days=5)).isoformat(),
             "checked_by": f"PML-{sls[:7]}"}
    return [("village_official" if channel == "village" else "supervisor", "/v1/updates", update),
            ("supervisor", "/v1/field-checks", check)]


def _newborn(line_no: int, rng: random.Random) -> dict:
    return {"line_no": line_no, "name": "Bayi", "sex": rng.choice(["male", "female"]),
            "date_of_birth": OCCURRED.isoformat(), "relationship": "child", "marital_status": "never_married",
            "school": "never", "highest_diploma": "none", "worked_last_week": False}


def _complaint(rng: random.Random, fid: str, housing: dict) -> list:
    sls = fid[:14]
    complaint = {"submission_id": _uuid(rng), "family_id": fid, "sls_id": sls, "complainant": "family",
                 "subject": "decision", "description": "the dwelling was recorded better than it is",
                 "filed_by": f"VIL-{sls[:10]}", "filed_at": "2023-05-10T09:00:00+08:00"}

    def outcome(kind: str, **more) -> dict:
        return {"submission_id": _uuid(rng), "complaint_id": complaint["submission_id"], "family_id": fid,
                "sls_id": sls, "outcome": kind, "decided_by": f"PML-{sls[:7]}", "decided_on": "2023-05-20", **more}

    poorer = {**housing, "floor_area_m2": max(6.0, round(housing["floor_area_m2"] / 2, 1)), "floor": "earth"}
    return [("village_official", "/v1/complaints", complaint),
            ("supervisor", "/v1/complaint-outcomes", outcome("revisit")),
            ("supervisor", "/v1/complaint-outcomes",
             outcome("correction", correction={"kind": "housing_change", "housing": poorer}))]


def _housing_doc(iv: FamilyInterview) -> dict:
    """A clean family's housing as a document (`situations` picks families with one)."""
    if iv.housing is None:
        raise ValueError("a non-response form has no housing")
    return iv.housing.model_dump(mode="json", exclude_none=True)


def situations(sample: Sample) -> list[Situation]:
    """Four families of the sample verified cleanly, each given one post-census situation."""
    rng = random.Random(f"regsosek-living:{sample.seed}")
    clean = [iv for iv in sample.interviews if sample.expected.get(iv.family_id) == "verified"
             and iv.family_id not in sample.situations and len(iv.residents) >= 2 and iv.housing is not None]
    if len(clean) < 4:
        return []
    death, birth, housing, complaint = rng.sample(clean, 4)
    out = []
    line = next(m.line_no for m in death.members[1:] if m.presence.resident)
    subs = _update(rng, death.family_id, {"kind": "death", "line_no": line}, "confirmed")
    out.append(Situation("death_confirmed", death.family_id, death.location.sls_id, subs,
                         subs[0][2]["submission_id"], "decided"))
    subs = _update(rng, birth.family_id, {"kind": "birth", "member": _newborn(
        max(m.line_no for m in birth.members) + 1, rng)}, "confirmed", channel="social_affairs")
    out.append(Situation("birth_confirmed", birth.family_id, birth.location.sls_id, subs,
                         subs[0][2]["submission_id"], "decided"))
    better = {**_housing_doc(housing), "roof": "concrete"}
    subs = _update(rng, housing.family_id, {"kind": "housing_change", "housing": better}, "not_confirmed")
    out.append(Situation("housing_not_confirmed", housing.family_id, housing.location.sls_id, subs,
                         subs[0][2]["submission_id"], "not_confirmed"))
    subs = _complaint(rng, complaint.family_id, _housing_doc(complaint))
    out.append(Situation("complaint_corrected", complaint.family_id, complaint.location.sls_id, subs,
                         subs[0][2]["submission_id"], "corrected"))
    return out


async def _final(client: httpx.AsyncClient, intake: str, s: Situation, admin: dict) -> str | None:
    """The followed submission's final state; for a complaint its status once its correction is decided."""
    if s.name.startswith("complaint"):
        r = await client.get(f"{intake}/v1/complaints/{s.follow}", headers=admin)
        if r.status_code != 200:
            return None
        body = r.json()
        corrections = [o for o in body["outcomes"] if o["outcome"] == "correction"]
        return body["status"] if corrections and any(x["step"] == "eligibility" for x in corrections[0]["journey"]) \
            else None
    r = await client.get(f"{intake}/v1/submissions/{s.follow}", headers=admin)
    return r.json().get("final") if r.status_code == 200 else None


async def run(client: httpx.AsyncClient, intake: str, sample: Sample, timeout: float = 90.0) -> dict:
    """Submits the situations (each as its roles would) and follows them: {name: {expected, actual,
    receipts}}; `errors` lists refused submissions."""
    admin = {"authorization": "Bearer " + mint(subject="pipeline-runner", role=Role.ADMIN, areas=[])}
    rows: dict[str, dict] = {}
    errors: list[str] = []
    picked = situations(sample)
    for s in picked:
        receipts = []
        for role, path, body in s.submissions:
            token = mint(subject=body.get("reported_by") or body.get("checked_by") or body.get("filed_by")
                         or body["decided_by"], role=Role(role), areas=[s.sls_id[:10]])
            r = await client.post(intake + path, json=body, headers={"authorization": f"Bearer {token}"})
            receipts.append(r.status_code)
            if r.status_code not in (200, 202):
                errors.append(f"{s.name} {path}: {r.status_code} {r.text[:200]}")
        rows[s.name] = {"family_id": s.family_id, "expected": s.expected, "actual": None, "receipts": receipts}
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and any(rows[s.name]["actual"] is None for s in picked):
        for s in picked:
            if rows[s.name]["actual"] is None:
                rows[s.name]["actual"] = await _final(client, intake, s, admin)
        await asyncio.sleep(0.5)
    return {"situations": rows, "errors": errors}


def problems(result: dict) -> list[str]:
    """Each situation that did not end as expected, and each refused submission."""
    return [*result["errors"], *(f"{name}: expected {row['expected']}, got {row['actual'] or '(not final)'}"
                                 for name, row in result["situations"].items() if row["actual"] != row["expected"])]


def print_summary(result: dict) -> None:
    rows = result["situations"]
    if not rows:
        return
    print("  living registry (after the census: updates with a field check, a complaint)")
    for name, row in rows.items():
        print(f"    {name:<24} expected {row['expected']:<14} got {row['actual'] or '(not final)':<14} "
              f"receipts {row['receipts']}")
