"""`GET /v1/audit`: the audit log over HTTP, admin only (regsosek.audit holds the log itself).

Apart from regsosek.audit so that what records entries (every service's store) does not import
the web framework.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Query, Request

from regsosek.audit import MAX_QUERY_ROWS, TOKEN, of_request, query, record
from regsosek.auth import Principal, Role
from regsosek.bearer import bearer


def _verifier(request: Request):
    from regsosek.service import runtime_of
    from regsosek.settings import TokenSettings

    settings = runtime_of(request).settings
    if not isinstance(settings, TokenSettings):
        raise TypeError("GET /v1/audit needs a service that verifies bearer tokens (TokenSettings)")
    return settings.token_verifier()


ADMIN = bearer(_verifier, Role.ADMIN)
router = APIRouter(prefix="/v1", tags=["operations"])


@router.get("/audit", summary="Audit log: who read or decided what (admin only)",
            responses={401: {"description": "Missing, invalid or expired token"}, 403: {"description": "Not admin"}})
async def audit_log(
    request: Request,
    since: Annotated[datetime | None, Query(description="entries at or after this time (ISO 8601)")] = None,
    until: Annotated[datetime | None, Query(description="entries before this time")] = None,
    actor: Annotated[str | None, Query(pattern=r"^[^\x00-\x1f\x7f]{1,128}$", description="token subject")] = None,
    object: Annotated[str | None,  # noqa: A002 - the query parameter's name
                      Query(pattern=TOKEN.pattern, description="object id: submission, family, subscription")] = None,
    action: Annotated[str | None, Query(pattern=r"^[a-z_.:-]{1,64}$")] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_QUERY_ROWS)] = 100,
    principal: Principal = ADMIN,
):
    from regsosek.service import runtime_of

    if since is not None and since.tzinfo is None:
        since = since.replace(tzinfo=UTC)
    if until is not None and until.tzinfo is None:
        until = until.replace(tzinfo=UTC)
    async with runtime_of(request).pool.acquire() as conn:
        rows = await query(conn, since=since, until=until, actor=actor, object_id=object, action=action, limit=limit)
        # reading the audit log is itself audited (its own insert)
        await record(conn, of_request(request, principal, "audit.read", "audit_log", None,
                                      detail={"rows": len(rows)}))
    return {"entries": rows}
