"""Intake's HTTP API for field officers, supervisors and village officials."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field, ValidationError

from intake import domain, store
from intake.domain import Problem
from regsosek import audit
from regsosek.auth import Principal, Role, bearer
from regsosek.contracts import FamilyInterview, FkpAdjustment, SlsRoster, VerificationResolved
from regsosek.service import runtime_of
from regsosek.topics import Topic

router = APIRouter(prefix="/v1")


def _verifier(request: Request):
    return runtime_of(request).settings.token_verifier()


OFFICER = bearer(_verifier, Role.OFFICER)
SUPERVISOR = bearer(_verifier, Role.SUPERVISOR)
VILLAGE = bearer(_verifier, Role.VILLAGE_OFFICIAL)
# A submission's journey (eligibility of every programme included) is for census staff of its area,
# not for programme systems: they get their own programmes' decisions from notify.
STAFF = bearer(_verifier, Role.OFFICER, Role.SUPERVISOR, Role.VILLAGE_OFFICIAL)


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


RESPONSES = {
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


def pydantic_problems(e: ValidationError, prefix: str = "") -> list[Problem]:
    out = []
    for err in e.errors(include_input=False, include_url=False):
        loc = [str(x) for x in err["loc"]]
        out.append(Problem(prefix + "/" + "/".join(loc) if loc else prefix or "/", err["msg"]))
    return out


def _authorise(p: Principal, sls_id: str) -> None:
    if not p.may_act_for(sls_id):
        raise HTTPException(403, {"reason": f"SLS {sls_id} is not in the areas assigned to {p.subject}"})


def _reply(receipt: store.Receipt) -> JSONResponse:
    return JSONResponse(receipt.as_dict(), status_code=200 if receipt.replayed else 202)


# Who did it is the token's subject, never the body's word: the officer of an interview or a roster,
# the supervisor of a resolution, the village official of an FKP decision. The body field stays
# (the contract requires it, so existing clients keep working) but its value is not trusted: a
# different value is replaced by the token's subject before anything is stored or published, and
# the receipt says so in a warning at the field's pointer.
ACTOR_FIELDS = {"interview": "officer_id", "roster": "officer_id", "resolution": "supervisor_id", "fkp": "decided_by"}


def _recorded_actor(data, kind: str, p: Principal):
    """`data` with its actor field set to the caller (token subject), and the warning if it was replaced."""
    name = ACTOR_FIELDS[kind]
    if getattr(data, name) == p.subject:
        return data, []
    try:
        data = type(data).model_validate({**data.model_dump(mode="json"), name: p.subject})
    except ValidationError:
        raise _Invalid([Problem(f"/{name}", f"the token's subject does not fit {name} (too long for the field)")]) \
            from None
    return data, [Problem(f"/{name}", "replaced by the token's subject: the actor recorded is the authenticated caller")]


def _interview_submission(request: Request, iv: FamilyInterview, p: Principal) -> store.Submission:
    """Checks beyond the contract; the submission to store, or _Invalid with every problem."""
    rt = runtime_of(request)
    iv, replaced = _recorded_actor(iv, "interview", p)
    errors, warnings = domain.check_interview(iv, collection=(rt.settings.collection_start, rt.settings.collection_end))
    warnings = [*warnings, *replaced]
    doc = iv.model_dump(mode="json")
    errors += domain.text_problems(doc)
    if errors:
        raise _Invalid(errors)
    return store.Submission(
        kind="interview", submission_id=iv.submission_id, sls_id=iv.location.sls_id, family_id=iv.family_id,
        version=iv.version, content_hash=domain.content_hash(doc), document=doc,
        data=domain.event_of(iv, rt.settings.nik_hash_key),  # published pseudonymised; `doc` is stored sealed
        topic=Topic.INTERVIEW_SUBMITTED, subject=iv.family_id, submitted_by=p.subject,
        warnings=[w.as_dict() for w in warnings],
    )


class _Invalid(Exception):
    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems


def invalid_response(problems: list[Problem]) -> JSONResponse:
    return JSONResponse({"errors": [p.as_dict() for p in problems]}, status_code=422)


@router.post("/interviews", status_code=202, responses=RESPONSES, response_model=ReceiptOut,
             summary="Submit one family interview (form REGSOSEK22-K)")
async def submit_interview(request: Request, interview: FamilyInterview, principal: Principal = OFFICER):
    _authorise(principal, interview.location.sls_id)
    try:
        submission = _interview_submission(request, interview, principal)
        async with runtime_of(request).unit_of_work() as uow:
            return _reply(await store.accept(uow, submission))
    except _Invalid as e:
        return invalid_response(e.problems)
    except store.ContentConflict:
        raise HTTPException(409, {"reason": "submission_id already used for different content"}) from None
    except store.FamilyWasErased:
        raise HTTPException(410, ERASED) from None


class BatchIn(BaseModel):
    interviews: list[dict[str, Any]] = Field(
        min_length=1, description="Family interviews, each a FamilyInterview; each gets its own result"
    )


@router.post("/interviews:batch", summary="Upload many interviews after offline work; each item answered alone",
             responses={401: RESPONSES[401], 403: RESPONSES[403], 413: RESPONSES[413]})
async def submit_batch(request: Request, batch: BatchIn, principal: Principal = OFFICER):
    rt = runtime_of(request)
    if len(batch.interviews) > rt.settings.max_batch_items:
        return invalid_response([Problem("/interviews", f"at most {rt.settings.max_batch_items} items per batch")])
    results: list[dict | None] = [None] * len(batch.interviews)
    pending: list[tuple[int, store.Submission]] = []
    for i, item in enumerate(batch.interviews):
        try:
            iv = FamilyInterview.model_validate(item)
            if not principal.may_act_for(iv.location.sls_id):
                results[i] = {"index": i, "status": 403, "reason": "SLS not in assigned areas"}
                continue
            pending.append((i, _interview_submission(request, iv, principal)))
        except ValidationError as e:
            results[i] = {"index": i, "status": 422, "errors": [p.as_dict() for p in pydantic_problems(e)]}
        except _Invalid as e:
            results[i] = {"index": i, "status": 422, "errors": [p.as_dict() for p in e.problems]}
    # every valid item in one transaction: one insert and one outbox write for the whole upload
    outcomes: list = []
    if pending:
        async with rt.unit_of_work() as uow:
            outcomes = await store.accept_many(uow, [s for _, s in pending])
    for (i, _), r in zip(pending, outcomes, strict=True):
        if isinstance(r, store.FamilyWasErased):
            results[i] = {"index": i, "status": 410, **ERASED}
        elif isinstance(r, store.ContentConflict):
            results[i] = {"index": i, "status": 409, "reason": "submission_id already used for different content"}
        else:
            results[i] = {"index": i, "status": 200 if r.replayed else 202, "receipt": r.as_dict()}
    return {"results": results}


_AUDITED = {"resolution": "resolution.submit", "fkp": "fkp.submit"}


async def _accept_simple(request: Request, *, kind: str, data, sls_id: str, family_id: str | None,
                         topic: Topic, subject: str, principal: Principal) -> JSONResponse:
    _authorise(principal, sls_id)
    try:
        data, replaced = _recorded_actor(data, kind, principal)
    except _Invalid as e:
        return invalid_response(e.problems)
    doc = data.model_dump(mode="json")
    if problems := domain.text_problems(doc):
        return invalid_response(problems)
    submission = store.Submission(kind=kind, submission_id=data.submission_id, sls_id=sls_id, family_id=family_id,
                                  version=None, content_hash=domain.content_hash(doc), document=doc,
                                  data=domain.event_of(data, runtime_of(request).settings.nik_hash_key),
                                  topic=topic, subject=subject, submitted_by=principal.subject,
                                  warnings=[w.as_dict() for w in replaced])
    try:
        async with runtime_of(request).unit_of_work() as uow:
            r = await store.accept(uow, submission)
            if kind in _AUDITED:  # a decision about a family: recorded with it, in its transaction
                await audit.record(uow.conn, audit.of_request(
                    request, principal, _AUDITED[kind], "family", family_id,
                    outcome="replayed" if r.replayed else "ok", detail={"submission_id": str(data.submission_id)}))
    except store.ContentConflict:
        raise HTTPException(409, {"reason": "submission_id already used for different content"}) from None
    except store.FamilyWasErased:
        raise HTTPException(410, ERASED) from None
    return _reply(r)


@router.post("/rosters", status_code=202, responses=RESPONSES, response_model=ReceiptOut,
             summary="Submit an SLS roster (VK1) as confirmed with the RT head")
async def submit_roster(request: Request, roster: SlsRoster, principal: Principal = OFFICER):
    if not domain.known_sls_area(roster.sls_id):
        return invalid_response([Problem("/sls_id", "SLS id's village is not in the area reference")])
    return await _accept_simple(request, kind="roster", data=roster, sls_id=roster.sls_id, family_id=None,
                                topic=Topic.SLS_ROSTER, subject=roster.sls_id, principal=principal)


@router.post("/resolutions", status_code=202, responses=RESPONSES, response_model=ReceiptOut,
             summary="A supervisor's decision on a flagged family")
async def submit_resolution(request: Request, resolution: VerificationResolved, principal: Principal = SUPERVISOR):
    if not resolution.family_id.startswith(resolution.sls_id):
        return invalid_response([Problem("/family_id", "family_id does not belong to sls_id")])
    return await _accept_simple(request, kind="resolution", data=resolution, sls_id=resolution.sls_id,
                                family_id=resolution.family_id, topic=Topic.VERIFICATION_RESOLVED,
                                subject=resolution.family_id, principal=principal)


@router.post("/fkp-adjustments", status_code=202, responses=RESPONSES, response_model=ReceiptOut,
             summary="A village consultation (FKP) decision moving a family's welfare group")
async def submit_fkp(request: Request, adjustment: FkpAdjustment, principal: Principal = VILLAGE):
    if not adjustment.family_id.startswith(adjustment.sls_id):
        return invalid_response([Problem("/family_id", "family_id does not belong to sls_id")])
    return await _accept_simple(request, kind="fkp", data=adjustment, sls_id=adjustment.sls_id,
                                family_id=adjustment.family_id, topic=Topic.FKP_ADJUSTMENT,
                                subject=adjustment.family_id, principal=principal)


@router.get("/submissions/{submission_id}", summary="A submission's journey: received, verified or flagged, "
            "classified, eligibility, notified", responses={401: RESPONSES[401], 403: RESPONSES[403], 404: {"description": "Unknown"}})
async def submission_status(request: Request, submission_id: UUID, principal: Principal = STAFF):
    async with runtime_of(request).pool.acquire() as conn:
        sub, steps = await store.journey(conn, submission_id)
    if sub is None:
        raise HTTPException(404, {"reason": "no such submission"})
    if not principal.may_act_for(sub["sls_id"]):
        await audit.record_read(request, principal, "submission.read", "submission", submission_id, outcome="denied")
    _authorise(principal, sub["sls_id"])
    # a read of a family's journey: who, which submission (and family id), when, from which request
    await audit.record_read(request, principal, "submission.read", "submission", submission_id,
                            detail={"family_id": sub["family_id"]} if sub["family_id"] else None)
    return {
        "submission_id": str(sub["submission_id"]), "kind": sub["kind"], "sls_id": sub["sls_id"],
        "family_id": sub["family_id"], "version": sub["version"], "trace_id": sub["trace_id"],
        "received_at": sub["received_at"].isoformat(), "warnings": sub["warnings"],
        "journey": [{"step": s["step"], **s["detail"], "decision_seq": s["decision_seq"]} for s in steps],
        "final": domain.final_state(sub["kind"], [domain.Step(s["step"], s["decision_seq"]) for s in steps]),
    }


