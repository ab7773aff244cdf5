"""Bearer tokens (JWT, HS256) with a role and an assigned area.

Roles: officer (petugas), supervisor (pengawas), village_official (FKP),
programme (a subscribing programme system), admin. `areas` holds SLS id prefixes
(province, regency, village or a full SLS id) the holder may act for.

Mint one for local use: python -m regsosek.auth --role officer --sub OFC-1 --area 6472
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass
from enum import StrEnum

import jwt
from fastapi import Depends, HTTPException, Request

from regsosek.contracts.identifiers import is_ascii_digits

LOCAL_DEFAULT_SECRET = "local-development-secret-change-me-0123456789"


class Role(StrEnum):
    OFFICER = "officer"
    SUPERVISOR = "supervisor"
    VILLAGE_OFFICIAL = "village_official"
    PROGRAMME = "programme"
    ADMIN = "admin"


@dataclass(frozen=True)
class Principal:
    subject: str
    role: Role
    areas: tuple[str, ...]

    def may_act_for(self, sls_id: str) -> bool:
        return self.role is Role.ADMIN or any(sls_id.startswith(a) for a in self.areas)


def mint(secret: str, *, subject: str, role: Role, areas: list[str], ttl_s: int = 12 * 3600) -> str:
    now = int(time.time())
    return jwt.encode({"sub": subject, "role": role.value, "areas": areas, "iat": now, "exp": now + ttl_s},
                      secret, algorithm="HS256")


MAX_AREAS = 1000
MAX_SUBJECT_CHARS = 128


class InvalidClaims(jwt.InvalidTokenError, ValueError):
    """A correctly signed token whose claims are malformed; `reason` says which (never its value)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def verify(secret: str, token: str) -> Principal:
    """The principal of a valid token. Malformed claims are refused, never coerced or widened:
    `sub` a non-empty string, `role` one of `Role`, `exp` required (checked by PyJWT), `areas`
    absent (no areas) or a list of SLS id prefixes, each a string of 2-14 ASCII digits."""
    claims = jwt.decode(token, secret, algorithms=["HS256"], options={"require": ["sub", "role", "exp"]})
    sub = claims["sub"]
    if not isinstance(sub, str) or not sub.strip() or len(sub) > MAX_SUBJECT_CHARS or not sub.isprintable():
        raise InvalidClaims(f"sub claim must be a non-empty printable string of at most {MAX_SUBJECT_CHARS} characters")
    role = claims["role"]
    if not isinstance(role, str) or role not in Role._value2member_map_:
        raise InvalidClaims(f"role claim must be one of {', '.join(r.value for r in Role)}")
    areas = claims.get("areas", [])
    if not isinstance(areas, list):
        raise InvalidClaims("areas claim must be a list of SLS id prefixes")
    if len(areas) > MAX_AREAS:
        raise InvalidClaims(f"areas claim may hold at most {MAX_AREAS} prefixes")
    for a in areas:
        if not (isinstance(a, str) and is_ascii_digits(a, 2, 14)):
            raise InvalidClaims("areas claim elements must be strings of 2 to 14 ASCII digits (0-9)")
    return Principal(sub, Role(role), tuple(areas))


def bearer(secret_of, *roles: Role):
    """A FastAPI dependency: the verified principal, which must have one of `roles`."""

    async def dependency(request: Request) -> Principal:
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token:
            raise HTTPException(401, {"reason": "missing bearer token"}, headers={"WWW-Authenticate": "Bearer"})
        try:
            principal = verify(secret_of(request), token.strip())
        except jwt.ExpiredSignatureError:
            raise HTTPException(401, {"reason": "token expired"}, headers={"WWW-Authenticate": "Bearer"}) from None
        except InvalidClaims as e:
            raise HTTPException(401, {"reason": f"invalid token: {e.reason}"},
                                headers={"WWW-Authenticate": "Bearer"}) from None
        except jwt.exceptions.InvalidSubjectError:
            raise HTTPException(401, {"reason": "invalid token: sub claim must be a string"},
                                headers={"WWW-Authenticate": "Bearer"}) from None
        except jwt.MissingRequiredClaimError as e:
            raise HTTPException(401, {"reason": f"invalid token: {e.claim} claim is required"},
                                headers={"WWW-Authenticate": "Bearer"}) from None
        except (jwt.InvalidTokenError, ValueError):
            raise HTTPException(401, {"reason": "invalid token"}, headers={"WWW-Authenticate": "Bearer"}) from None
        if roles and principal.role not in roles and principal.role is not Role.ADMIN:
            raise HTTPException(403, {"reason": f"role {principal.role.value} may not do this; needs {', '.join(r.value for r in roles)}"})
        return principal

    return Depends(dependency)


def main(argv: list[str] | None = None) -> int:
    import os

    p = argparse.ArgumentParser(prog="python -m regsosek.auth", description="Mint a bearer token for local use")
    p.add_argument("--role", required=True, choices=[r.value for r in Role])
    p.add_argument("--sub", required=True)
    p.add_argument("--area", action="append", default=[], help="SLS id prefix; repeat for several")
    p.add_argument("--ttl", type=int, default=12 * 3600)
    a = p.parse_args(argv)
    if bad := [x for x in a.area if not is_ascii_digits(x, 2, 14)]:
        p.error(f"--area must be 2 to 14 ASCII digits (an SLS id prefix); got {len(bad)} that are not")
    secret = os.environ.get("REGSOSEK_AUTH_SECRET", LOCAL_DEFAULT_SECRET)
    print(mint(secret, subject=a.sub, role=Role(a.role), areas=a.area, ttl_s=a.ttl))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
