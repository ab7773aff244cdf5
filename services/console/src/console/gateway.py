"""The owning services' public HTTP APIs, called by the console's server on behalf of the signed-in
person, with that person's token (backend-for-frontend: the browser talks only to the console, so
no cross-origin requests and the token never reaches page scripts). The services decide and
authorise as they do for any client; the console shows their answer."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any
from uuid import UUID

import httpx

from console.settings import ConsoleSettings

log = logging.getLogger("console.gateway")


class Unavailable(Exception):
    """The service did not answer (down, timed out); the page says so and nothing is lost."""

    def __init__(self, service: str) -> None:
        super().__init__(f"{service} is not answering")
        self.service = service


@dataclass(frozen=True)
class Answer:
    status: int
    body: Any
    service: str = ""

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    @property
    def denied(self) -> bool:
        """The service refused the person's token (401) or what it allows (403): said as such, never a 500."""
        return self.status in (401, 403)

    def reason(self) -> str:
        """The service's reason for a refusal (its `reason`, or each error's path and reason)."""
        b = self.body
        if isinstance(b, dict):
            b = b.get("detail", b)
        if isinstance(b, dict) and "reason" in b:
            return str(b["reason"])
        if isinstance(b, dict) and isinstance(b.get("errors"), list):
            return "; ".join(f"{e.get('path', '')} {e.get('reason', e.get('msg', ''))}".strip() for e in b["errors"])
        return f"HTTP {self.status}"


class Gateway:
    def __init__(self, settings: ConsoleSettings) -> None:
        self.settings = settings

    async def _call(self, service: str, base: str, method: str, path: str, token: str, body: Any = None,
                    params: dict | None = None) -> Answer:
        try:
            async with httpx.AsyncClient(base_url=base, timeout=self.settings.upstream_timeout_s) as client:
                r = await client.request(method, path, json=body, params=params,
                                         headers={"authorization": f"Bearer {token}"})
        except httpx.HTTPError as e:
            log.warning("upstream call failed", exc_info=True,
                        extra={"fields": {"service": service, "error": type(e).__name__}})
            raise Unavailable(service) from None
        try:
            data = r.json()
        except ValueError:
            data = None
        if r.status_code in (401, 403):  # the reason only (never the token)
            log.warning("upstream refused the token", extra={"fields": {"service": service, "status": r.status_code}})
        return Answer(r.status_code, data, service)

    # ------------------------------------------------------------ intake

    async def resolve(self, token: str, resolution: dict) -> Answer:
        return await self._call("intake", self.settings.intake_url, "POST", "/v1/resolutions", token, resolution)

    async def fkp_decision(self, token: str, adjustment: dict) -> Answer:
        return await self._call("intake", self.settings.intake_url, "POST", "/v1/fkp-adjustments", token, adjustment)

    # ------------------------------------------------------------ classify

    async def policy(self, token: str) -> Answer:
        return await self._call("classify", self.settings.classify_url, "GET", "/v1/policy", token)

    async def reranks(self, token: str) -> Answer:
        return await self._call("classify", self.settings.classify_url, "GET", "/v1/reranks", token)

    # ------------------------------------------------------------ notify

    async def subscriptions(self, token: str) -> Answer:
        return await self._call("notify", self.settings.notify_url, "GET", "/v1/subscriptions", token)

    async def subscription(self, token: str, sub_id: UUID) -> Answer:
        return await self._call("notify", self.settings.notify_url, "GET", f"/v1/subscriptions/{sub_id}", token)

    async def attempts(self, token: str, sub_id: UUID, limit: int = 10) -> Answer:
        return await self._call("notify", self.settings.notify_url, "GET", f"/v1/subscriptions/{sub_id}/log", token,
                                params={"limit": limit})

    async def dead_letters(self, token: str, sub_id: UUID, limit: int = 20) -> Answer:
        return await self._call("notify", self.settings.notify_url, "GET", f"/v1/subscriptions/{sub_id}/deliveries",
                                token, params={"status": "dead", "limit": limit})

    async def subscription_view(self, token: str, listed: dict) -> dict:
        """A listed subscription with its figures, recent attempts and dead letters (what notify answers of them)."""
        sub_id = UUID(listed["id"])
        one, log, dead = await asyncio.gather(self.subscription(token, sub_id), self.attempts(token, sub_id),
                                              self.dead_letters(token, sub_id))
        return {**(one.body if one.ok else listed),
                "attempts": (log.body or {}).get("attempts", []) if log.ok else [],
                "dead_letters": (dead.body or {}).get("deliveries", []) if dead.ok else []}

    async def subscription_action(self, token: str, sub_id: UUID, action: str) -> Answer:
        if action == "redeliver":
            return await self._call("notify", self.settings.notify_url, "POST", f"/v1/subscriptions/{sub_id}/redeliver",
                                    token, {"dead_letters": True})
        if action == "test-event":
            return await self._call("notify", self.settings.notify_url, "POST", f"/v1/subscriptions/{sub_id}/test-event",
                                    token)
        if action not in ("pause", "resume"):
            raise ValueError(f"unknown subscription action {action!r}")
        return await self._call("notify", self.settings.notify_url, "POST", f"/v1/subscriptions/{sub_id}/{action}", token)
