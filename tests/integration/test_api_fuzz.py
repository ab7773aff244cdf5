"""Every service's HTTP API on the real stack, fuzzed from its own OpenAPI document: schemathesis
generates valid and invalid bodies, query strings and paths for every operation, as each role
that the operation answers. Every answer must be below 500, and no 4xx answer may repeat a value
of the request it refuses (api_fuzz_checks.py: the values may be NIKs, names or secrets).

The DCI endpoints are reached too; their requests must also be signed by a registered requester,
which requests generated from notify's document are not, so here the fuzz stops at the signature
check. test_dci.py fuzzes them from the DCI specification with signed requests.

The console's pages and forms are not in its OpenAPI document (they are HTML for people): they
are fuzzed with generated query strings and form fields, signed in as each role, and must
never answer 5xx either (a form re-shown with what the person typed is not a leak: it is theirs)."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from console.session import LANG_COOKIE
from console.signin import HOME
from regsosek.auth import Role

from api_fuzz_checks import repeated_values, request_values
from itkit import ROOT, World, token

pytestmark = pytest.mark.integration

ST = Path(sys.executable).with_name("st")
SERVICES = ["intake", "verify", "classify", "notify", "console"]

# (service, role, fewest generated requests): each role its routes answer beyond a 403 (admin reaches
# the operations routes); the fewest is well under what a run generates (seeded: the same each run).
RUNS = [
    ("intake", "officer", 100), ("intake", "supervisor", 100), ("intake", "village_official", 100),
    ("intake", "programme", 100), ("intake", "admin", 100),
    ("verify", "officer", 30), ("verify", "supervisor", 30), ("verify", "village_official", 30), ("verify", "admin", 30),
    ("classify", "admin", 30),
    ("notify", "programme", 100), ("notify", "admin", 100),
    ("console", "admin", 30),
]


@pytest.fixture(scope="module")
async def every_service(stack):
    world = await World(SERVICES).setup()
    try:
        await world.start(*SERVICES[:-1])
        upstream = {f"REGSOSEK_{s.upper()}_URL": f"http://127.0.0.1:{world.ports[s]}" for s in ("intake", "notify", "classify")}
        await world.start("console", **upstream)
        yield world
    finally:
        await world.teardown()


@pytest.mark.parametrize(("service", "role", "fewest"), RUNS, ids=[f"{s}-{r}" for s, r, _ in RUNS])
async def test_no_server_error_and_no_refused_value_repeated(every_service, service, role, fewest):
    base = f"http://127.0.0.1:{every_service.ports[service]}"
    bearer = token(role, f"FUZZ-{role}", ("6472",))
    env = {**os.environ, "NO_COLOR": "1", "SCHEMATHESIS_HOOKS": "api_fuzz_checks",
           "PYTHONPATH": os.pathsep.join([str(ROOT / "tests" / "integration"), os.environ.get("PYTHONPATH", "")])}
    run = await asyncio.to_thread(
        subprocess.run,
        [str(ST), "run", f"{base}/openapi.json", "--checks", "not_a_server_error,no_request_value_in_errors",
         "-H", f"Authorization: Bearer {bearer}", "--max-examples", "25", "--seed", "2022",
         "--request-timeout", "20", "--no-color"],
        capture_output=True, text=True, timeout=900, cwd=ROOT, env=env,
    )
    tail = run.stdout[-4000:] + run.stderr[-2000:]
    assert run.returncode == 0, f"fuzz run of {service} as {role} found failures:\n{tail}"  # a failed check exits 1
    generated = re.search(r"(\d+) generated", run.stdout)
    assert generated, f"no test-case summary in the fuzz output:\n{tail}"
    assert int(generated.group(1)) >= fewest, tail


def test_the_check_finds_a_refused_value_repeated_and_ignores_what_the_schema_names():
    """The check itself can fail: a refusal repeating a NIK or a secret from the body is found, as
    sent or JSON-escaped; field names, short values and the schema's own words are not."""
    body = {"members": [{"nik": "3171234567890123"}], "secret": 'se"cret-value', "status": "complete", "n": 7}
    values = list(request_values(body, {"limit": 987654321}))
    schema = '{"enum": ["complete", "refused"]}'
    answer = '{"errors": [{"path": "/members/0/nik", "reason": "3171234567890123 is taken"}], "x": "se\\"cret-value"}'
    assert repeated_values(values, answer, schema) == ["3171234567890123", 'se"cret-value']
    assert repeated_values(values, '{"reason": "status complete; limit at most 1000; members"}', schema) == []
    assert repeated_values(values, '{"reason": "limit 987654321 is too large"}', schema) == ["987654321"]


# ---------------------------------------------------------------- the console's pages and forms

PAGES = ["/", "/signin", "/operations", "/operations/live", "/api/progress", "/worklist", "/worklist/live",
         "/journey", "/village", "/policy", "/integrator"]
FORMS = ["/worklist/resolve", "/village/fkp", "/integrator/00000000-0000-0000-0000-000000000000/pause",
         "/integrator/not-a-subscription/resume"]  # not /signin or /signout: they would change who is signed in
SIGN_INS = [("admin", "64"), ("supervisor", "6472"), ("village_official", "6472010001"),
            ("officer", "64720100010001"), ("programme", "64")]  # areas as each role holds them
values = st.one_of(st.text(max_size=40), st.from_regex(r"\d{1,16}", fullmatch=True),
                   st.text(alphabet="0123456789-", max_size=24), st.sampled_from(["", "verify", "reject", "1", "5"]))


def fuzz_console(base: str, role: str, area: str) -> tuple[list[tuple], dict[int, int]]:
    """Generated requests to every page and form as one signed-in person: the answers >= 500, and
    how many answers there were of each status."""
    failures: list[tuple] = []
    statuses: dict[int, int] = {}
    with httpx.Client(base_url=base, timeout=20, follow_redirects=False) as c:
        signed_in = c.post("/signin", data={"role": role, "subject": f"FUZZ-{role}", "area": area,
                                            "programme": "pkh" if role == "programme" else ""})
        home = HOME[Role(role)]
        assert signed_in.status_code == 303 and signed_in.headers["location"] == home, (role, signed_in.status_code)
        assert c.get(home).status_code == 200, role  # signed in: the role's own page answers

        def answered(r: httpx.Response, what: str) -> None:
            if what != "GET /signin":  # the sign-in page answers 200 to anyone
                statuses[r.status_code] = statuses.get(r.status_code, 0) + 1
            if r.status_code >= 500:
                failures.append((role, what, r.status_code))

        @settings(max_examples=100, deadline=None, database=None, derandomize=True, suppress_health_check=list(HealthCheck))
        @given(path=st.sampled_from(PAGES), area=values, wanted=values, lang=st.sampled_from(["en", "id", "xx"]))
        def pages(path, area, wanted, lang):
            c.cookies.set(LANG_COOKIE, lang)
            answered(c.get(path, params={"area": area, "id": wanted}), f"GET {path}")

        @settings(max_examples=100, deadline=None, database=None, derandomize=True, suppress_health_check=list(HealthCheck))
        @given(path=st.sampled_from(FORMS), family=values, sls=values, kind=values, group=values, note=values)
        def forms(path, family, sls, kind, group, note):
            answered(c.post(path, data={"family_id": family, "sls_id": sls, "kind": kind, "welfare_group": group,
                                        "note": note, "reason": note}), f"POST {path}")

        pages()
        forms()
    return failures, statuses


@pytest.mark.parametrize(("role", "area"), SIGN_INS, ids=[r for r, _ in SIGN_INS])
async def test_console_pages_and_forms_answer_no_server_error(every_service, role, area):
    base = f"http://127.0.0.1:{every_service.ports['console']}"
    failures, statuses = await asyncio.to_thread(fuzz_console, base, role, area)
    assert not failures, (failures[:10], statuses)
    assert statuses.get(200, 0) >= 3, statuses  # the person's own pages were reached, not only refusals
