"""Erasure of a family's identifiers (issue 11, item 8): POST /v1/families/{family_id}/erasure, admin only.

In one transaction intake removes the family's direct identifiers from every body it keeps
(domain.redact_family; bodies re-sealed), remembers the family as erased (its later submissions
get 410), writes an audit entry (ids and codes only) and publishes `family-erased` through the
outbox (IntakeHandlers.erase_family); verify, classify and notify each erase what they hold of it
and audit that. Repeating the request changes nothing and answers 200 with the first erasure.
"""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, HTTPException, Path, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from intake.api import caller
from intake.handlers import ErasureDone, IntakeHandlers
from intake.settings import IntakeSettings
from regsosek.auth import Principal, Role
from regsosek.bearer import bearer
from regsosek.contracts import ErasureReason
from regsosek.contracts.identifiers import is_family_id
from regsosek.service import runtime_of


class ErasureIn(BaseModel):
    reason: ErasureReason = Field(description="Why (a code: free text could name people)")
    reference: Annotated[str | None, Field(pattern=r"^[A-Za-z0-9_.:/-]{1,64}$",
                                           description="The case or ticket id of the request")] = None


class ErasureOut(BaseModel):
    erasure_id: uuid.UUID
    family_id: str
    reason: ErasureReason
    erased_at: str
    status: str = Field(description="erased, or already_erased for a repeated request")


def router(handlers: IntakeHandlers, settings: IntakeSettings) -> APIRouter:
    r = APIRouter(prefix="/v1", tags=["operations"])
    admin = bearer(lambda request: settings.token_verifier(), Role.ADMIN)

    @r.post("/families/{family_id}/erasure", status_code=202, response_model=ErasureOut,
            summary="Erase a family's identifiers in every service (admin only)",
            responses={200: {"model": ErasureOut, "description": "Already erased: the first erasure"},
                       401: {"description": "Missing, invalid or expired token"},
                       403: {"description": "Not admin"}, 422: {"description": "Not a family id"}})
    async def erase_family(request: Request, body: ErasureIn,
                           family_id: Annotated[str, Path(max_length=23)], principal: Principal = admin):
        if not is_family_id(family_id):
            raise HTTPException(422, {"errors": [{"path": "/family_id", "reason": "not a family id "
                                                  "(<14 digits>-<4 digits>-<3 digits>)"}]})
        done = await handlers.erase_family(runtime_of(request).unit_of_work, family_id, body.reason.value,
                                           body.reference, caller(request, principal))
        return _out(done)

    return r


def _out(done: ErasureDone) -> JSONResponse:
    return JSONResponse({"erasure_id": str(done.erasure_id), "family_id": done.family_id, "reason": str(done.reason),
                         "erased_at": done.erased_at.isoformat(),
                         "status": "already_erased" if done.replayed else "erased"},
                        status_code=200 if done.replayed else 202)
