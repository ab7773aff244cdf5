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


def verify(secret: str, token: str) -> Principal:
    claims = jwt.decode(token, secret, algorithms=["HS256"], options={"require": ["sub", "role", "exp"]})
    return Principal(str(claims["sub"]), Role(claims["role"]), tuple(claims.get("areas") or ()))


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
    secret = os.environ.get("REGSOSEK_AUTH_SECRET", LOCAL_DEFAULT_SECRET)
    print(mint(secret, subject=a.sub, role=Role(a.role), areas=a.area, ttl_s=a.ttl))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
