"""What every service answers to a request it refuses or fails on (installed by build_app): a 422
names each problem by JSON pointer and reason and never repeats the value it refused; a 500 says
only "internal error" and the log line has the exception's type and stack, not its message."""

from __future__ import annotations

import json
import logging
import logging.config
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Query
from fastapi.testclient import TestClient
from pydantic import BaseModel, Field

from regsosek.service import UVICORN_LOGGING, ServiceDefinition, build_app
from regsosek.settings import ServiceSettings
from regsosek.telemetry import JsonFormatter

NIK = "3171234567890123"
SECRET = "whsec-do-not-repeat-me-0123456789"


class Member(BaseModel):
    nik: Annotated[str, Field(pattern=r"^\d{16}$")]


class Family(BaseModel):
    members: list[Member]
    secret: Annotated[str, Field(max_length=8)]


def client() -> TestClient:
    router = APIRouter()

    @router.post("/families/{family_no}")
    async def families(family_no: int, family: Family, limit: Annotated[int, Query(le=10)] = 1):
        return {}

    @router.get("/boom/{family_id}")
    async def boom(family_id: str):
        raise RuntimeError(f"value in the message: {family_id}")

    settings = ServiceSettings(service_name="t")
    app = build_app(ServiceDefinition(name="t", settings=settings, migrations=Path("/nonexistent"), routers=[router]))
    return TestClient(app, raise_server_exceptions=False)  # no lifespan: no database or broker needed


def test_a_refused_request_gets_every_problem_by_pointer_and_never_its_values():
    body = {"members": [{"nik": NIK}, {"nik": NIK + "x"}], "secret": SECRET}
    r = client().post("/families/not-a-number", params={"limit": "987654321"}, json=body)
    assert r.status_code == 422
    problems = r.json()["errors"]
    assert {p["path"] for p in problems} == {"/path/family_no", "/query/limit", "/members/1/nik", "/secret"}
    assert all(p["reason"] for p in problems)
    for value in (NIK, SECRET, "987654321", "not-a-number"):
        assert value not in r.text


def test_a_body_that_is_not_json_is_named_without_repeating_it():
    r = client().post("/families/1", content=b'{"members": [' + NIK.encode(), headers={"content-type": "application/json"})
    assert r.status_code == 422
    assert NIK not in r.text and r.json()["errors"][0]["reason"]


def test_an_unexpected_failure_is_500_and_logged_with_its_stack_not_its_message(caplog):
    with caplog.at_level(logging.ERROR, logger="regsosek.service"):
        r = client().get(f"/boom/{NIK}")
    assert r.status_code == 500 and r.json() == {"reason": "internal error"} and NIK not in r.text
    (record,) = [x for x in caplog.records if x.getMessage() == "unhandled error"]
    line = json.loads(JsonFormatter("t").format(record))
    assert line["route"] == "/boom/{family_id}" and line["error"] == "RuntimeError"
    assert line["exc_type"] == "RuntimeError" and "boom" in json.dumps(line["exc_stack"])
    assert NIK not in json.dumps(line)


def test_uvicorn_logs_through_the_json_lines_and_not_the_exception_it_raises_again(caplog):
    """serve() hands uvicorn UVICORN_LOGGING: its records reach the root logger (telemetry's JSON
    lines, no exception messages), and its second report of an exception the app answered is dropped."""
    logging.config.dictConfig(UVICORN_LOGGING)
    error = logging.getLogger("uvicorn.error")
    assert error.handlers == [] and error.propagate
    with caplog.at_level(logging.INFO):
        try:
            raise RuntimeError(f"value in the message: {NIK}")
        except RuntimeError as e:
            error.error("Exception in ASGI application\n", exc_info=e)
        error.warning("Invalid HTTP request received.")
    assert [r.getMessage() for r in caplog.records if r.name == "uvicorn.error"] == ["Invalid HTTP request received."]
