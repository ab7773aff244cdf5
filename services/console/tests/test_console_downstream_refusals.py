"""When a service the console calls with the person's token refuses it (401: not valid there, e.g. its
audience is missing; 403: not allowed), the console says so in words, with the service and its reason, and
answers as a refusal: never a 500. The services are stand-ins here; tests/browser calls the real ones."""

from __future__ import annotations

import uuid
from urllib.parse import unquote

import httpx
import pytest
from fastapi import FastAPI

from console import i18n
from console.api import Pages, Viewer
from console.gateway import Answer
from console.session import COOKIE, local_token
from console.settings import ConsoleSettings
from regsosek.auth import Principal, Role

REFUSED = {"detail": {"reason": "token audience is not regsosek-notify"}}


class RefusingServices:
    """Every service answers `status` with a reason, as the services' bearer check does."""

    def __init__(self, status: int) -> None:
        self.status = status

    def _no(self, service: str) -> Answer:
        return Answer(self.status, {"detail": {"reason": f"token audience is not regsosek-{service}"}}, service)

    async def subscriptions(self, token: str) -> Answer:
        return self._no("notify")

    async def subscription_action(self, token: str, sub_id, action: str) -> Answer:
        return self._no("notify")

    async def policy(self, token: str) -> Answer:
        return self._no("classify")

    async def reranks(self, token: str) -> Answer:
        return self._no("classify")


@pytest.fixture
def settings(tmp_path, monkeypatch) -> ConsoleSettings:
    monkeypatch.setenv("REGSOSEK_LOCAL_AUTH_DIR", str(tmp_path))
    return ConsoleSettings()


async def _client(settings: ConsoleSettings, status: int) -> httpx.AsyncClient:
    app = FastAPI()
    app.include_router(Pages(settings, RefusingServices(status)).router())
    cookie = local_token(settings, role=Role.PROGRAMME, subject="PKH-1", areas=["64"], programmes=["pkh"])
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://console",
                             cookies={COOKIE: cookie, "regsosek_lang": "en"})


@pytest.mark.parametrize("status", [401, 403])
async def test_the_integrator_page_says_notify_refused_the_token(settings, status):
    async with await _client(settings, status) as c:
        r = await c.get("/integrator")
    assert r.status_code == 403
    assert "notify refused your sign-in" in r.text and f"HTTP {status}" in r.text and "regsosek-notify" in r.text


async def test_an_action_notify_refuses_returns_to_the_page_with_the_reason(settings):
    async with await _client(settings, 401) as c:
        r = await c.post(f"/integrator/{uuid.uuid4()}/test-event")
    assert r.status_code == 303
    refused = unquote(r.headers["location"].split("refused=", 1)[1])
    assert "notify refused your sign-in" in refused and "HTTP 401" in refused


async def test_the_policy_page_says_classify_refused_and_keeps_the_rest(settings):
    pages = Pages(settings, RefusingServices(401))
    v = Viewer(Principal("SPV", Role.SUPERVISOR, ("64",)), "token", i18n.Words("en"))
    policy, reranks, problem = await pages.classify_status(v)
    assert policy is None and reranks is None
    assert problem.startswith("classify refused your sign-in") and "regsosek-classify" in problem


def test_a_refused_answer_is_denied_and_others_are_not():
    assert Answer(401, REFUSED, "notify").denied and Answer(403, None, "notify").denied
    assert not Answer(422, None, "notify").denied and not Answer(500, None, "notify").denied
