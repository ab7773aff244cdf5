"""Intake's HTTP API for field officers, supervisors and village officials: each route parses,
authorises and hands over to intake.handlers; the answer's status code says the outcome."""

from __future__ import annotations

import asyncio
from typing import Any
from uuid import UUID

import orjson
from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, Field, ValidationError

from intake import domain
from intake.domain import Conflict, Erased, Invalid, Journey, Problem
from intake.handlers import Caller, Denied, IntakeHandlers, Result
from intake.settings import IntakeSettings
from regsosek import audit
from regsosek.auth import Principal, Role
from regsosek.bearer import bearer
from regsosek.contracts import FamilyInterview, FkpAdjustment, SlsRoster, VerificationResolved
from regsosek.service import runtime_of


class ProblemList(BaseModel):
    errors: list[dict[str, str]] = Field(description="Each problem: JSON pointer `path` and `reason`")


class ReceiptOut(BaseModel):
    submission_id: UUID
    kind: str
    sls_id: str
    family_id: str | None
    version: int | None
    event_id: str
    received_at: str
    warnings: list[dict[str, str]]
    status: str = Field(description="accepted, or duplicate_of_earlier_receipt for a repeated identical submission")


RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"model": ReceiptOut, "description": "Same submission id and content as before: the original receipt"},
    401: {"description": "Missing, invalid or expired token"},
    403: {"description": "Role or assigned area does not allow this"},
    409: {"description": "Submission id already used for different content"},
    410: {"description": "The family's identifiers were erased (POST /v1/families/{id}/erasure); nothing accepted"},
    413: {"description": "Request too large"},
    422: {"model": ProblemList, "description": "Every problem, by JSON pointer path"},
}


# A later submission about an erased family is refused: accepting it would quietly undo the erasure
# (an offline device re-uploading), and an erased family is not re-registered by accident.
ERASED = {"reason": "this family's identifiers were erased; its submissions are no longer accepted"}
CONFLICT = {"reason": "submission_id already used for different content"}


class BatchIn(BaseModel):
    interviews: list[dict[str, Any]] = Field(
        min_length=1, description="Family interviews, each a FamilyInterview; each gets its own result"
    )


def batch_items(body: bytes) -> list[dict[str, Any]] | Invalid:
    """A batch's items (each a JSON object), or every problem of a body that is not a batch. The
    common case is read with orjson; anything it does not take as a batch is read as BatchIn (the
    problems are pydantic's, and what pydantic accepts beyond orjson is accepted as before)."""
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError:
        doc = None
    if isinstance(doc, dict) and isinstance(items := doc.get("interviews"), list) and items \
            and all(isinstance(i, dict) for i in items):
        return items
    try:
        return BatchIn.model_validate_json(body).interviews
    except ValidationError as e:
        return Invalid(pydantic_problems(e))


def pydantic_problems(e: ValidationError, prefix: str = "") -> list[Problem]:
    out = []
    for err in e.errors(include_input=False, include_url=False):
        loc = [str(x) for x in err["loc"]]
        out.append(Problem(prefix + "/" + "/".join(loc) if loc else prefix or "/", err["msg"]))
    return out


def invalid_response(problems: list[Problem]) -> JSONResponse:
    return JSONResponse({"errors": [p.as_dict() for p in problems]}, status_code=422)


def caller(request: Request, principal: Principal) -> Caller:
    return Caller(principal, *audit.request_ids(request))


def _forbidden(p: Principal) -> HTTPException:
    """Refused for the SLS's area. The answer does not name the SLS: the caller knows the one it sent,
    and one it did not send (of a stored submission or family) is not its to learn."""
    return HTTPException(403, {"reason": f"the SLS is not in the areas assigned to {p.subject}"})


def _authorise(p: Principal, sls_id: str) -> None:
    if not p.may_act_for(sls_id):
        raise _forbidden(p)


def _reply(result: Result) -> JSONResponse:
    if isinstance(result, Invalid):
        return invalid_response(result.problems)
    if isinstance(result, Conflict):
        raise HTTPException(409, CONFLICT)
    if isinstance(result, Erased):
        raise HTTPException(410, ERASED)
    return JSONResponse(result.as_dict(), status_code=200 if result.replayed else 202)


def _item(i: int, result: Result) -> dict:
    if isinstance(result, Invalid):
        return {"index": i, "status": 422, "errors": [p.as_dict() for p in result.problems]}
    if isinstance(result, Erased):
        return {"index": i, "status": 410, **ERASED}
    if isinstance(result, Conflict):
        return {"index": i, "status": 409, **CONFLICT}
    return {"index": i, "status": 200 if result.replayed else 202, "receipt": result.as_dict()}


def journey_out(j: Journey) -> dict:
    sub = j.submission
    return {
        "submission_id": str(sub.submission_id), "kind": sub.kind, "sls_id": sub.sls_id,
        "family_id": sub.family_id, "version": sub.version, "trace_id": sub.trace_id,
        "received_at": sub.received_at.isoformat(), "warnings": sub.warnings,
        "journey": [{"step": s.step, **s.detail, "decision_seq": s.decision_seq} for s in j.steps],
        "final": j.final,
    }


def router(handlers: IntakeHandlers, settings: IntakeSettings) -> APIRouter:
    """Intake's routes, bound to its handlers; tokens checked with the settings' verifier."""
    r = APIRouter(prefix="/v1")
    _submission_routes(r, handlers, settings)
    _status_route(r, handlers, settings)
    return r


def _submission_routes(r: APIRouter, handlers: IntakeHandlers, settings: IntakeSettings) -> None:
    # one route per form, each a few lines, declared together with the roles they accept
    officer = bearer(lambda request: settings.token_verifier(), Role.OFFICER)
    supervisor = bearer(lambda request: settings.token_verifier(), Role.SUPERVISOR)
    village = bearer(lambda request: settings.token_verifier(), Role.VILLAGE_OFFICIAL)

    async def submitted(request: Request, data: domain.Submitted, principal: Principal) -> JSONResponse:
        if problems := domain.placement_problems(data):  # checked before the caller's areas, as always
            return invalid_response(problems)
        _authorise(principal, domain.sls_of(data))
        return _reply(await handlers.submit(runtime_of(request).unit_of_work, data, caller(request, principal)))

    @r.post("/interviews", status_code=202, responses=RESPONSES, response_model=ReceiptOut,
            summary="Submit one family interview (form REGSOSEK22-K)",
            description="The form as the field found the family. A non-response (`result` refused, moved, not_found "
            "or no_competent_respondent) carries no housing and no member living with the family: it accounts for "
            "its roster family in the SLS's progress and gets no verification outcome, so its journey shows no "
            "verified or flagged step. Members keep their presence code (died, moved, not found, new member), which "
            "explains a member count that differs from the roster; a family split off a prelisted KK gives "
            "`kk_status` split_off and the `parent_kk_number` it is matched by. Warnings (not errors): NIK area or "
            "birth-date digits that differ from the form.")
    async def submit_interview(request: Request, interview: FamilyInterview, principal: Principal = officer):
        return await submitted(request, interview, principal)

    # A batch is read, parsed and handled only while one of `max_batch_uploads` places is free: each
    # in progress holds its interviews as models (~3 MB per 100), and 16 devices uploading at once
    # took intake from 98 to 204 MB (BENCHMARKS.md, intake round 3). Waiting uploads hold no more than
    # what the server buffers of their body; the CPU is as busy with two in progress (one awaiting the database) as with all.
    uploads = asyncio.Semaphore(settings.max_batch_uploads)

    @r.post("/interviews:batch", summary="Upload many interviews after offline work; each item answered alone",
            responses={401: RESPONSES[401], 403: RESPONSES[403], 413: RESPONSES[413],
                       422: {"model": ProblemList, "description": "The body is not a batch: every problem"}},
            openapi_extra={"requestBody": {"required": True, "content": {
                "application/json": {"schema": BatchIn.model_json_schema()}}}})
    async def submit_batch(request: Request, principal: Principal = officer):
        async with uploads:
            # parsed here, once the token is checked and a place is free (not before, as a body parameter)
            items = batch_items(await request.body())
            if isinstance(items, Invalid):
                return invalid_response(items.problems)
            return await upload(handlers, settings, request, items, principal)

    @r.post("/rosters", status_code=202, responses=RESPONSES, response_model=ReceiptOut,
            summary="Submit an SLS roster (VK1) as confirmed with the RT head")
    async def submit_roster(request: Request, roster: SlsRoster, principal: Principal = officer):
        return await submitted(request, roster, principal)

    @r.post("/resolutions", status_code=202, responses=RESPONSES, response_model=ReceiptOut,
            summary="A supervisor's decision on a flagged family")
    async def submit_resolution(request: Request, resolution: VerificationResolved, principal: Principal = supervisor):
        return await submitted(request, resolution, principal)

    @r.post("/fkp-adjustments", status_code=202, responses=RESPONSES, response_model=ReceiptOut,
            summary="A village consultation (FKP) decision moving a family's welfare group")
    async def submit_fkp(request: Request, adjustment: FkpAdjustment, principal: Principal = village):
        return await submitted(request, adjustment, principal)


async def upload(handlers: IntakeHandlers, settings: IntakeSettings, request: Request, items: list[dict[str, Any]],
                 principal: Principal) -> Response:
    """A batch's items, each answered alone (422, 403, 409, 410, or its receipt); every valid one
    handed over at once (IntakeHandlers.submit_interviews)."""
    if len(items) > settings.max_batch_items:
        return invalid_response([Problem("/interviews", f"at most {settings.max_batch_items} items per batch")])
    results: list[dict | None] = [None] * len(items)
    parsed: list[tuple[int, FamilyInterview]] = []
    for i, item in enumerate(items):
        items[i] = {}  # the item's dicts are not kept once it is a model
        try:
            iv = FamilyInterview.model_validate(item)
        except ValidationError as e:
            results[i] = {"index": i, "status": 422, "errors": [p.as_dict() for p in pydantic_problems(e)]}
            continue
        if principal.may_act_for(iv.location.sls_id):
            parsed.append((i, iv))
        else:
            results[i] = {"index": i, "status": 403, "reason": "SLS not in assigned areas"}
    if parsed:
        answers = await handlers.submit_interviews(runtime_of(request).unit_of_work, [iv for _, iv in parsed],
                                                   caller(request, principal))
        for (i, _), answer in zip(parsed, answers, strict=True):
            results[i] = _item(i, answer)
    return Response(orjson.dumps({"results": results}), media_type="application/json")  # plain values: no encoder


def _status_route(r: APIRouter, handlers: IntakeHandlers, settings: IntakeSettings) -> None:
    # A submission's journey (eligibility of every programme included) is for census staff of its area,
    # not for programme systems: they get their own programmes' decisions from notify.
    staff = bearer(lambda request: settings.token_verifier(), Role.OFFICER, Role.SUPERVISOR, Role.VILLAGE_OFFICIAL)

    @r.get("/submissions/{submission_id}", summary="A submission's journey: received, verified or flagged, "
           "classified, eligibility, notified",
           responses={401: RESPONSES[401], 403: RESPONSES[403], 404: {"description": "Unknown"}})
    async def submission_status(request: Request, submission_id: UUID, principal: Principal = staff):
        journey = await handlers.journey(runtime_of(request).unit_of_work, submission_id, caller(request, principal))
        if journey is None:
            raise HTTPException(404, {"reason": "no such submission"})
        if isinstance(journey, Denied):
            raise _forbidden(principal)
        return journey_out(journey)
