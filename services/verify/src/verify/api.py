"""Verify's HTTP API: verification progress by area (counts only, no personal data)."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, HTTPException, Query, Request
from pydantic import BaseModel, Field

from regsosek.contracts.identifiers import AreaPrefixOrEmpty
from regsosek.service import runtime_of

from verify import domain, store

router = APIRouter(prefix="/v1", tags=["progress"])


class Counts(BaseModel):
    prefix: str = Field(description="SLS id prefix: 2 digits province, 4 regency, 7 district, 10 village, 14 SLS")
    sls: int = Field(description="SLS with a roster")
    sls_complete: int = Field(description="SLS whose every roster family is accounted for")
    expected: int = Field(description="families on the rosters")
    interviewed: int = Field(description="decided interviews (verified + flagged)")
    verified: int
    flagged: int = Field(description="flagged or rejected by a supervisor")
    absent: int = Field(description="roster families confirmed moved, dissolved or unknown and not interviewed")
    outstanding: int = Field(description="roster families neither interviewed nor confirmed absent")
    held: int = Field(description="interviews waiting for their SLS roster")


class ProgressOut(BaseModel):
    prefix: str
    by: str | None
    totals: Counts
    groups: list[Counts] = Field(description="one entry per area at the level of `by` (empty without `by`)")


_COUNTS = ("sls", "sls_complete", "expected", "interviewed", "verified", "flagged", "absent", "outstanding", "held")


@router.get("/progress", response_model=ProgressOut, summary="Verification progress by SLS id prefix")
async def progress(
    request: Request,
    prefix: Annotated[AreaPrefixOrEmpty, Query(description="e.g. 64 (province), 6472 (regency)")] = "",
    by: Annotated[Literal["province", "regency", "district", "village", "sls"] | None,
                  Query(description="also break the totals down by this level")] = None,
) -> ProgressOut:
    try:
        length = domain.group_length(prefix, by)
    except ValueError as e:
        raise HTTPException(422, str(e)) from None
    async with runtime_of(request).pool.acquire() as conn:
        rows = await store.progress_by_prefix(conn, prefix, length)
    groups = [Counts(prefix=r["grp"], **{k: int(r[k]) for k in _COUNTS}) for r in rows]
    totals = Counts(prefix=prefix, **{k: sum(getattr(g, k) for g in groups) for k in _COUNTS})
    return ProgressOut(prefix=prefix, by=by, totals=totals, groups=groups if by else [])
