"""Erasure of a family's identifiers (issue 11, item 8): POST /v1/families/{family_id}/erasure, admin only.

In one transaction intake removes the family's direct identifiers from every body it keeps
(store.erase_family with domain.redact_family; bodies re-sealed), remembers the family as erased
(its later submissions get 410), writes an audit entry (ids and codes only) and publishes
`family-erased` through the outbox; verify, classify and notify each erase what they hold of it
and audit that. Repeating the request changes nothing and answers 200 with the first erasure.
"""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, HTTPException, Path, Request
from pydantic import BaseModel, Field

from intake import domain, store
from regsosek import audit
from regsosek.auth import Principal, Role, bearer
from regsosek.contracts import ErasureReason, FamilyErased
from regsosek.contracts.identifiers import is_family_id
from regsosek.service import runtime_of
from regsosek.topics import Topic

router = APIRouter(prefix="/v1", tags=["operations"])


def _verifier(request: Request):
    return runtime_of(request).settings.token_verifier()


ADMIN = bearer(_verifier, Role.ADMIN)


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


@router.post("/families/{family_id}/erasure", status_code=202, response_model=ErasureOut,
             summary="Erase a family's identifiers in every service (admin only)",
             responses={200: {"model": ErasureOut, "description": "Already erased: the first erasure"},
                        401: {"description": "Missing, invalid or expired token"},
                        403: {"description": "Not admin"}, 422: {"description": "Not a family id"}})
async def erase_family(request: Request, body: ErasureIn,
                       family_id: Annotated[str, Path(max_length=23)], principal: Principal = ADMIN):
    if not is_family_id(family_id):
        raise HTTPException(422, {"errors": [{"path": "/family_id", "reason": "not a family id "
                                              "(<14 digits>-<4 digits>-<3 digits>)"}]})
    rt = runtime_of(request)
    sls_id = family_id[:14]
    async with rt.unit_of_work() as uow:
        await store.lock_sls_for_erasure(uow.conn, sls_id)
        earlier = await store.earlier_erasure(uow.conn, family_id)
        if earlier is not None:
            await audit.record(uow.conn, audit.of_request(request, principal, "family.erase", "family", family_id,
                                                          outcome="replayed",
                                                          detail={"erasure_id": str(earlier["erasure_id"])}))
            return _out(earlier["erasure_id"], family_id, earlier["reason"], earlier["erased_at"], "already_erased",
                        200)
        erasure_id = uuid.uuid4()
        erased_at, changed = await store.erase_family(
            uow.conn, family_id, sls_id, erasure_id, body.reason.value, body.reference, principal.subject,
            lambda kind, doc: domain.redact_family(kind, doc, family_id))
        uow.outbox.publish(Topic.FAMILY_ERASED, sls_id, FamilyErased(
            erasure_id=erasure_id, family_id=family_id, sls_id=sls_id, reason=body.reason, erased_at=erased_at),
            subject=family_id)
        await audit.record(uow.conn, audit.of_request(
            request, principal, "family.erase", "family", family_id,
            detail={"erasure_id": str(erasure_id), "reason": body.reason.value, "reference": body.reference,
                    **{f"{k}_bodies": v for k, v in sorted(changed.items())}}))
    return _out(erasure_id, family_id, body.reason.value, erased_at, "erased", 202)


def _out(erasure_id, family_id, reason, erased_at, status, code):
    from fastapi.responses import JSONResponse

    return JSONResponse({"erasure_id": str(erasure_id), "family_id": family_id, "reason": str(reason),
                         "erased_at": erased_at.isoformat(), "status": status}, status_code=code)
