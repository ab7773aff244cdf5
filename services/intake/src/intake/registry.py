"""The living registry's HTTP routes (docs/DOMAIN.md, after the census): updates (pemutakhiran) and
their field check, complaints, their outcomes and their status. Each route parses, authorises (role
and assigned area) and hands over to intake.registry_handlers; answers as intake's other submissions
(202 accepted, 200 a repeat, 409, 410, 422 with every problem by JSON pointer)."""

from __future__ import annotations

from uuid import UUID

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import JSONResponse

from intake.api import RESPONSES, ReceiptOut, _authorise, _forbidden, _reply, caller
from intake.handlers import Denied
from intake.registry_domain import Closed
from intake.registry_handlers import RegistryHandlers, RegistryResult
from intake.settings import IntakeSettings
from regsosek.auth import Principal, Role
from regsosek.bearer import bearer
from regsosek.contracts.complaints import Complaint, ComplaintOutcome
from regsosek.contracts.updates import FamilyUpdate, FieldCheck
from regsosek.service import runtime_of


def _answer(result: RegistryResult) -> JSONResponse:
    if isinstance(result, Closed):
        raise HTTPException(409, {"reason": result.reason})
    return _reply(result)


def router(handlers: RegistryHandlers, settings: IntakeSettings) -> APIRouter:
    r = APIRouter(prefix="/v1", tags=["living registry"])
    reporter = bearer(lambda request: settings.token_verifier(), Role.VILLAGE_OFFICIAL, Role.SUPERVISOR)
    supervisor = bearer(lambda request: settings.token_verifier(), Role.SUPERVISOR)
    complainer = bearer(lambda request: settings.token_verifier(), Role.VILLAGE_OFFICIAL, Role.SUPERVISOR,
                        Role.PROGRAMME)

    def uow(request: Request):
        return runtime_of(request).unit_of_work

    @r.post("/updates", status_code=202, responses=RESPONSES, response_model=ReceiptOut,
            summary="Report an update of a registered family (pemutakhiran): birth, death, move, new family, housing",
            description="Through the village (village official) or the social affairs office (supervisor's token). "
            "It counts only once a supervisor confirms it in the field (POST /v1/field-checks); its journey "
            "(GET /v1/submissions/{id}) shows the check, then the family's re-verification, classification, "
            "eligibility and delivery. About a family not verified yet (its interview not arrived, waiting for its "
            "roster, or flagged) a confirmed update is kept: the journey shows `held` (waits_for, expires_at) and it "
            "applies once the family is verified. Changes that occurred during the collection period are recorded "
            "on the form.")
    async def report_update(request: Request, update: FamilyUpdate, principal: Principal = reporter):
        _authorise(principal, update.sls_id)
        return _answer(await handlers.report_update(uow(request), update, caller(request, principal)))

    @r.post("/field-checks", status_code=202, responses={**RESPONSES, 409: {
                "description": "The update was checked already by another field check (or the id was used)"}},
            response_model=ReceiptOut, summary="A supervisor's field check of an update: confirmed or not, with its date",
            description="Confirmed: the update counts and the family is re-verified and re-classified. Not confirmed: "
            "the update ends there. The check is made by someone other than who reported the update.")
    async def check_update(request: Request, check: FieldCheck, principal: Principal = supervisor):
        _authorise(principal, check.sls_id)
        return _answer(await handlers.check_update(uow(request), check, caller(request, principal)))

    @r.post("/complaints", status_code=202, responses=RESPONSES, response_model=ReceiptOut,
            summary="File a complaint (sanggahan) about a decision or an omission; its submission id is the complaint id",
            description="A family complains through its village or the social affairs office; a programme with its "
            "own token, about one of its programmes. GET /v1/complaints/{id} answers its status.")
    async def file_complaint(request: Request, complaint: Complaint, principal: Principal = complainer):
        _authorise(principal, complaint.sls_id)
        return _answer(await handlers.file_complaint(uow(request), complaint, caller(request, principal)))

    @r.post("/complaint-outcomes", status_code=202, responses={**RESPONSES, 409: {
                "description": "The complaint is closed (corrected or rejected), or the id was used"}},
            response_model=ReceiptOut, summary="A complaint's outcome: revisit, correction (with the change), or rejection "
            "with its reason",
            description="A correction's change counts like a confirmed update: the family is re-verified and "
            "re-classified, and the programmes get its new decision.")
    async def decide_complaint(request: Request, outcome: ComplaintOutcome, principal: Principal = supervisor):
        _authorise(principal, outcome.sls_id)
        return _answer(await handlers.decide_complaint(uow(request), outcome, caller(request, principal)))

    @r.get("/complaints/{complaint_id}", summary="A complaint's status: filed, revisit, corrected or rejected, with "
           "its outcomes (a rejection's reason, a correction's journey)",
           responses={401: RESPONSES[401], 403: RESPONSES[403], 404: {"description": "Unknown"}})
    async def complaint_status(request: Request, complaint_id: UUID, principal: Principal = complainer):
        view = await handlers.complaint(uow(request), complaint_id, caller(request, principal))
        if view is None:
            raise HTTPException(404, {"reason": "no such complaint"})
        if isinstance(view, Denied):
            raise _forbidden(principal)
        return view.as_dict()

    return r
