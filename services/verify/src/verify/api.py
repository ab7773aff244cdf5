"""Verify's HTTP API: verification progress by area (counts only, no personal data), for
census staff with a token, in their own areas, with small counts withheld (verify.disclosure)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Literal

import asyncpg
from fastapi import APIRouter, HTTPException, Query, Request
from pydantic import BaseModel, Field

from regsosek.auth import Principal, Role
from regsosek.bearer import bearer
from regsosek.contracts.identifiers import AreaPrefixOrEmpty
from regsosek.service import runtime_of
from verify import domain
from verify.disclosure import progress_figures
from verify.settings import VerifySettings
from verify.store import VerifyStore


class Counts(BaseModel):
    prefix: str = Field(description="SLS id prefix: 2 digits province, 4 regency, 7 district, 10 village, 14 SLS")
    sls: int = Field(description="SLS with a roster")
    sls_complete: int = Field(description="SLS whose every roster family is accounted for")
    expected: int = Field(description="families on the rosters")
    interviewed: int = Field(description="decided interviews (verified + flagged)")
    verified: int | None = Field(description="null when withheld with `flagged`")
    flagged: int | None = Field(description="flagged or rejected by a supervisor; null when 1-4 in one SLS")
    absent: int | None = Field(
        description="roster families confirmed moved, dissolved or unknown and not interviewed; null when 1-4 in one SLS")
    outstanding: int | None = Field(
        description="roster families neither interviewed nor confirmed absent nor recorded as a non-response; null "
                    "when withheld with `absent` or `non_response`")
    non_response: int | None = Field(
        default=0, description="roster families whose form records a non-response (refused, moved, not found, no "
                               "competent respondent) and that no other interview accounts for; null when 1-4 in one SLS")
    held: int = Field(description="interviews waiting for their SLS roster")
    suppressed: list[str] = Field(default_factory=list,
                                  description="figures withheld (null) because they could single out a household")


class ProgressOut(BaseModel):
    prefix: str
    by: str | None
    totals: Counts
    groups: list[Counts] = Field(description="one entry per area at the level of `by` (empty without `by`)")


def progress_router(settings: VerifySettings,
                    store_of: Callable[[asyncpg.Connection], VerifyStore] = VerifyStore) -> APIRouter:
    """GET /v1/progress, with the service's settings (its token verifier) and store."""
    router = APIRouter(prefix="/v1", tags=["progress"])
    # Census operations: officers, supervisors and village officials for their assigned areas; admin everywhere.
    staff = bearer(lambda r: settings.token_verifier(), Role.OFFICER, Role.SUPERVISOR, Role.VILLAGE_OFFICIAL)

    @router.get("/progress", response_model=ProgressOut, summary="Verification progress by SLS id prefix")
    async def progress(
        request: Request,
        prefix: Annotated[AreaPrefixOrEmpty, Query(description="e.g. 64 (province), 6472 (regency)")] = "",
        by: Annotated[Literal["province", "regency", "district", "village", "sls"] | None,
                      Query(description="also break the totals down by this level")] = None,
        principal: Principal = staff,
    ) -> ProgressOut:
        prefix = area_asked(principal, prefix)
        try:
            length = domain.group_length(prefix, by)
        except ValueError as e:
            raise HTTPException(422, str(e)) from None
        async with runtime_of(request).pool.acquire() as conn:
            rows = await store_of(conn).progress_by_prefix(prefix, length)
        totals, groups = progress_figures(rows, prefix, by is not None)
        return ProgressOut(prefix=prefix, by=by, totals=Counts(**totals), groups=[Counts(**g) for g in groups])

    return router


def area_asked(principal: Principal, prefix: str) -> str:
    """The area the caller may see: the prefix asked for, or (none asked) the caller's one area;
    the nation is for admins."""
    if not prefix and principal.role is not Role.ADMIN:
        if len(principal.areas) != 1:  # the nation is for admins; one area is the caller's own
            raise HTTPException(422, {"errors": [{"path": "/prefix", "reason": "prefix required: name one of your areas"}]})
        prefix = principal.areas[0]
    if principal.role is not Role.ADMIN and not any(prefix.startswith(a) for a in principal.areas):
        raise HTTPException(403, {"reason": f"the prefix is not within the areas assigned to {principal.subject}"})
    return prefix
