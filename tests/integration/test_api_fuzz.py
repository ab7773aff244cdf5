"""Every service's HTTP API on the real stack, fuzzed from its own OpenAPI document: schemathesis
generates valid and invalid bodies, query strings and paths for every operation, as each role
that the operation answers. Every answer must be below 500, and no 4xx answer may repeat a value
of the request it refuses (api_fuzz_checks.py: the values may be NIKs, names or secrets).

The DCI endpoints are reached too; their requests must also be signed by a registered requester
(test_dci.py), which generated requests are not, so the fuzz stops at their signature check."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from api_fuzz_checks import repeated_values, request_values
from itkit import ROOT, World, token

pytestmark = pytest.mark.integration

ST = Path(sys.executable).with_name("st")
SERVICES = ["intake", "verify", "classify", "notify", "console"]

# (service, role): each role its routes answer beyond a 403 (admin reaches the operations routes).
RUNS = [
    ("intake", "officer"), ("intake", "supervisor"), ("intake", "village_official"), ("intake", "admin"),
    ("verify", "supervisor"), ("verify", "admin"),
    ("classify", "admin"),
    ("notify", "programme"), ("notify", "admin"),
    ("console", "admin"),
]


@pytest.fixture(scope="module")
async def every_service(stack):
    world = await World(SERVICES).setup()
    try:
        await world.start(*SERVICES)
        yield world
    finally:
        await world.teardown()


@pytest.mark.parametrize(("service", "role"), RUNS, ids=[f"{s}-{r}" for s, r in RUNS])
async def test_no_server_error_and_no_refused_value_repeated(every_service, service, role):
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
    assert run.returncode == 0, f"fuzz run of {service} as {role} found failures:\n{tail}"
    counts = re.search(r"(\d+) generated, (\d+) passed\s*$", run.stdout, re.MULTILINE)
    assert counts, f"no test-case summary in the fuzz output:\n{tail}"
    generated, passed = map(int, counts.groups())
    assert generated >= 30 and passed == generated, tail


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
