"""The bearer-token dependency of HTTP endpoints: the verified principal of a request
(regsosek.auth verifies the token). Apart from regsosek.auth so that what only reads the
settings (an operator command) does not import the web framework."""

from __future__ import annotations

import jwt
from fastapi import Depends, HTTPException, Request

from regsosek.auth import Principal, Role, refusal_reason
from regsosek.jwks import KeysUnavailable


def bearer(verifier_of, *roles: Role):
    """A FastAPI dependency: the verified principal, which must have one of `roles`.
    `verifier_of(request)` gives the service's `TokenVerifier`."""

    async def dependency(request: Request) -> Principal:
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise HTTPException(401, {"reason": "missing bearer token"}, headers={"WWW-Authenticate": "Bearer"})
        try:
            principal = await verifier_of(request).verify(token.strip())
        except (jwt.InvalidTokenError, KeysUnavailable, ValueError) as e:
            raise HTTPException(401, {"reason": refusal_reason(e)}, headers={"WWW-Authenticate": "Bearer"}) from None
        if roles and principal.role not in roles and principal.role is not Role.ADMIN:
            needs = ", ".join(r.value for r in roles)
            raise HTTPException(403, {"reason": f"role {principal.role.value} may not do this; needs {needs}"})
        return principal

    return Depends(dependency)
