"""Who is signed in: the token in the session cookie (or a bearer header from a proxy), verified like
every service verifies tokens, and the local sign-in that issues one.

Local use: the sign-in page mints a token with the checkout's local key pair (regsosek.auth, what
`make token` signs with) for the role, area and programme chosen, valid for the console and for the
services it calls on the person's behalf (intake, verify, notify, classify), and sets it in an HttpOnly,
SameSite=Strict cookie. Production (REGSOSEK_ENV=production): the local sign-in is refused; the
identity provider's tokens are accepted (bearer header or the same cookie, set by the sign-in proxy)
and verified against its JWK Set with this service's audience.
"""

from __future__ import annotations

import jwt
from fastapi import Request

from console.settings import ConsoleSettings
from regsosek.auth import LOCAL_AUDIENCES, Principal, Role, audience_of, mint, refusal_reason
from regsosek.jwks import KeysUnavailable

COOKIE = "regsosek_console"
LANG_COOKIE = "regsosek_lang"


class SignedOut(Exception):
    """No valid token: the page sends the person to sign in (with the reason, never the token)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def token_of(request: Request) -> str | None:
    scheme, _, value = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    return request.cookies.get(COOKIE) or None


async def principal_of(request: Request, settings: ConsoleSettings) -> tuple[Principal, str]:
    """The signed-in person and their token; SignedOut without a valid one."""
    token = token_of(request)
    if not token:
        raise SignedOut("not signed in")
    try:
        return await settings.token_verifier().verify(token), token
    except (jwt.InvalidTokenError, KeysUnavailable, ValueError) as e:
        raise SignedOut(refusal_reason(e)) from None


def local_token(settings: ConsoleSettings, *, role: Role, subject: str, areas: list[str], programmes: list[str]) -> str:
    """A token for local use, for the console and the services it calls with it."""
    if settings.production:
        raise PermissionError("local sign-in is refused in production: sign in through the identity provider")
    return mint(subject=subject, role=role, areas=areas, ttl_s=settings.session_ttl_s,
                programmes=programmes if role is Role.PROGRAMME else None,
                audience=[*LOCAL_AUDIENCES, audience_of("classify"), audience_of(settings.service_name)])


def cookie_options(settings: ConsoleSettings) -> dict:
    return {"httponly": True, "samesite": "strict", "secure": settings.production, "path": "/",
            "max_age": settings.session_ttl_s}
