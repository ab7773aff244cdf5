"""Intake's routes for the village consultation as held (FKP; docs/CONSULTATION.md): village
officials of the village open, record and close its forum; an officer of the SLS records the
ground check of a family the forum added. Each route parses, authorises, hands over to
intake.consultation_handlers and shapes the answer: 202 recorded, 200 the same request again,
403 another area, 404 unknown, 409 in conflict with what is recorded, 422 every problem by JSON pointer."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import JSONResponse

from intake.api import caller, invalid_response
from intake.consultation import DecisionIn, ForumOpening, GroundCheckIn, Refused, forum_out
from intake.consultation_handlers import Answer, ConsultationHandlers
from intake.domain import Invalid, Problem
from intake.settings import IntakeSettings
from regsosek.auth import Principal, Role
from regsosek.bearer import bearer
from regsosek.contracts.identifiers import is_family_id
from regsosek.service import runtime_of

RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"description": "The same request as before: what was recorded then"},
    401: {"description": "Missing, invalid or expired token"},
    403: {"description": "The village or SLS is not in the caller's areas"},
    404: {"description": "No such forum, or no such added family in it"},
    409: {"description": "In conflict with what is recorded (id used for other content, forum closed, "
                         "village has its forum, family decided already)"},
    422: {"description": "Every problem, by JSON pointer path"},
}


def _reply(answer: Answer) -> JSONResponse:
    if isinstance(answer, Invalid):
        return invalid_response(answer.problems)
    if isinstance(answer, Refused):
        raise HTTPException(answer.status, {"reason": answer.reason})
    return JSONResponse(answer.body, status_code=200 if answer.replayed else 202)


def _authorise(p: Principal, area: str) -> None:
    if not p.may_act_for(area):
        raise HTTPException(403, {"reason": f"the area is not in the areas assigned to {p.subject}"})


def router(handlers: ConsultationHandlers, settings: IntakeSettings) -> APIRouter:
    r = APIRouter(prefix="/v1/fkp-forums", tags=["village consultation (FKP)"])
    village = bearer(lambda request: settings.token_verifier(), Role.VILLAGE_OFFICIAL)
    officer = bearer(lambda request: settings.token_verifier(), Role.OFFICER)
    staff = bearer(lambda request: settings.token_verifier(), Role.OFFICER, Role.SUPERVISOR, Role.VILLAGE_OFFICIAL)

    def tx(request: Request):
        return runtime_of(request).unit_of_work

    @r.post("", status_code=202, responses=RESPONSES, summary="Open the village's forum (one per village)",
            description="The forum's SLS (all in its village), the day it is held and its participants as roles "
            "and counts (no names; who opened it is the caller). For village officials of the whole village.")
    async def open_forum(request: Request, opening: ForumOpening, principal: Principal = village):
        _authorise(principal, opening.village_id)
        return _reply(await handlers.open_forum(tx(request), opening, caller(request, principal)))

    @r.post("/{forum_id}/decisions", status_code=202, responses=RESPONSES,
            summary="Record a decision by consensus about one family",
            description="group_change (with welfare_group), confirmed, moved (the whole family moved away), died "
            "(the family head died, the family dissolved), or added (a family missed by the census, under the "
            "building and family serials the forum gives it; counted once an officer's ground check found it). "
            "One decision per family per forum; none once the forum is closed.")
    async def record_decision(request: Request, forum_id: UUID, decision: DecisionIn, principal: Principal = village):
        _authorise(principal, decision.family_id[:14])
        return _reply(await handlers.record_decision(tx(request), forum_id, decision, caller(request, principal)))

    @r.post("/{forum_id}/close", status_code=202, responses=RESPONSES,
            summary="Close the forum: its regency is re-ranked once, when every decision has been applied")
    async def close_forum(request: Request, forum_id: UUID, principal: Principal = village):
        return _reply(await handlers.close_forum(tx(request), forum_id, caller(request, principal),
                                                 principal.may_act_for))

    @r.post("/{forum_id}/added-families/{family_id}/ground-check", status_code=202, responses=RESPONSES,
            summary="An officer's ground check of a family the forum added",
            description="found, with the family's interview (form REGSOSEK22-K, checked as every interview; dated "
            "the day of the check, on or after the forum), which is then verified as a family added to its SLS and "
            "classified; or not_found, and the addition lapses. The interview's journey: GET /v1/submissions/{id}.")
    async def ground_check(request: Request, forum_id: UUID, family_id: str, check: GroundCheckIn,
                           principal: Principal = officer):
        if not is_family_id(family_id):
            return invalid_response([Problem("/family_id", "family id must be <14 digits>-<4 digits>-<3 digits>")])
        _authorise(principal, family_id[:14])
        return _reply(await handlers.ground_check(tx(request), forum_id, family_id, check, caller(request, principal)))

    @r.get("/{forum_id}", responses={k: RESPONSES[k] for k in (401, 403, 404)},
           summary="The forum, its decisions and each added family's ground check")
    async def forum(request: Request, forum_id: UUID, principal: Principal = staff):
        view = await handlers.forum_view(tx(request), forum_id, caller(request, principal))
        if isinstance(view, Refused):
            raise HTTPException(view.status, {"reason": view.reason})
        record, decisions = view
        return {**forum_out(record), "decision_list": decisions}

    return r

