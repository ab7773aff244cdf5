"""Intake's commands of the living registry: updates, field checks, complaints and complaint outcomes
(intake.registry_domain decides; IntakeHandlers.accept keeps each as a submission, idempotent and
sealed, like any other). Each command is one transaction: load (store) → decide (domain) → accept
and save (store) → publish (publisher: family-update, for what counts) → audit."""

from __future__ import annotations

from dataclasses import dataclass
from uuid import UUID

from intake import domain, registry_domain
from intake.domain import Conflict, Invalid, JourneyEntry, Problem, Receipt, Submission
from intake.handlers import Caller, Denied, IntakeHandlers, Result, Transaction
from intake.registry_domain import ComplaintView, CountedUpdate, Refusal
from regsosek.contracts.complaints import Complaint, ComplaintOutcome
from regsosek.contracts.updates import FamilyUpdate, FieldCheck, FieldCheckOutcome
from regsosek.messaging import UnitOfWork


@dataclass(frozen=True)
class Closed:
    """The complaint is closed, or the update checked already (409, with why)."""

    reason: str


RegistryResult = Result | Closed


class RegistryHandlers:
    """Built by intake.app on the service's IntakeHandlers (their settings, store factory and publisher)."""

    def __init__(self, intake: IntakeHandlers) -> None:
        self.intake = intake

    def _checked(self, data, caller: Caller, extra: list[Problem]) -> Submission | Invalid:
        checked = domain.checked_submission(data, caller.principal.subject, collection=self.intake.collection)
        if isinstance(checked, Invalid) or extra:
            return Invalid([*(checked.problems if isinstance(checked, Invalid) else []), *extra])
        return checked

    async def _accept(self, uow: UnitOfWork, checked: Submission) -> Receipt | Conflict | domain.Erased:
        (result,) = await self.intake.accept(uow, [checked])
        return result

    async def report_update(self, transaction: Transaction, u: FamilyUpdate, caller: Caller) -> RegistryResult:
        """An update, kept until its field check (it does not count before)."""
        checked = self._checked(u, caller, registry_domain.update_problems(
            u, caller.principal.role, self.intake.settings.collection_end))
        if isinstance(checked, Invalid):
            return checked
        async with transaction() as uow:
            result = await self._accept(uow, checked)
            await self._audit(uow, caller, "update.report", checked, result)
        return result

    async def check_update(self, transaction: Transaction, check: FieldCheck, caller: Caller) -> RegistryResult:
        """A field check: a confirmed one makes the update count (family-update); either way it is a step
        of the update's journey."""
        checked = self._checked(check, caller, [])
        if isinstance(checked, Invalid):
            return checked
        check = checked.contract  # the actor recorded is the caller
        async with transaction() as uow:
            store = self.intake.store_for(uow)
            decision = registry_domain.decide_field_check(await store.update_record(check.update_id), check)
            if isinstance(decision, list):
                return Invalid(decision)
            if decision is Refusal.CONFLICT:
                return Closed("the update was checked already (by another field check)")
            result = await self._accept(uow, checked)
            if isinstance(result, Receipt) and not result.replayed:
                await store.save_field_check(check)
                step = "field_checked" if check.outcome is FieldCheckOutcome.CONFIRMED else "not_confirmed"
                await store.save_steps([JourneyEntry(check.update_id, step, {
                    "outcome": check.outcome.value, "checked_on": check.checked_on.isoformat(),
                    "check_id": str(check.submission_id)}, str(check.submission_id))])
                await self._count(uow, decision.counted)
            await self._audit(uow, caller, "update.field_check", checked, result)
        return result

    async def file_complaint(self, transaction: Transaction, c: Complaint, caller: Caller) -> RegistryResult:
        """A complaint, tracked from now on (status filed)."""
        p = caller.principal
        checked = self._checked(c, caller, registry_domain.complaint_problems(c, p.role, p.programmes))
        if isinstance(checked, Invalid):
            return checked
        async with transaction() as uow:
            result = await self._accept(uow, checked)
            if isinstance(result, Receipt) and not result.replayed:
                await self.intake.store_for(uow).save_complaint(checked.contract)
            await self._audit(uow, caller, "complaint.file", checked, result)
        return result

    async def decide_complaint(self, transaction: Transaction, o: ComplaintOutcome, caller: Caller) -> RegistryResult:
        """A complaint's outcome: its status moves on; a correction's change counts (family-update)."""
        checked = self._checked(o, caller, [])
        if isinstance(checked, Invalid):
            return checked
        o = checked.contract
        async with transaction() as uow:
            store = self.intake.store_for(uow)
            decision = registry_domain.decide_complaint_outcome(await store.complaint_record(o.complaint_id), o)
            if isinstance(decision, list):
                return Invalid(decision)
            if decision is Refusal.CONFLICT:
                return Closed("the complaint is closed (corrected or rejected)")
            result = await self._accept(uow, checked)
            if isinstance(result, Receipt) and not result.replayed:
                await store.save_complaint_outcome(o, decision.status.value)
                await self._count(uow, decision.counted)
            await self._audit(uow, caller, "complaint.outcome", checked, result)
        return result

    async def complaint(self, transaction: Transaction, complaint_id: UUID, caller: Caller
                        ) -> ComplaintView | Denied | None:
        """A complaint's status for a caller of its area (the read audited; another area's caller denied)."""
        async with transaction() as uow:
            store = self.intake.store_for(uow)
            view = await store.complaint_view(complaint_id)
            if view is None:
                return None
            allowed = caller.principal.may_act_for(view.complaint.sls_id)
            await store.record_audit(caller.audit("complaint.read", "complaint", complaint_id,
                                                  outcome="ok" if allowed else "denied"))
        return view if allowed else Denied(view.complaint.sls_id)

    async def _count(self, uow: UnitOfWork, counted: CountedUpdate | None) -> None:
        if counted is not None:
            base = await self.intake.store_for(uow).family_member_niks(counted.family_id)
            self.intake.publisher.family_updated(uow, counted, base)

    async def _audit(self, uow: UnitOfWork, caller: Caller, action: str, s: Submission, result: Result) -> None:
        """A decision about a family, audited with it in its transaction (replayed or ok)."""
        if isinstance(result, Receipt):
            await self.intake.store_for(uow).record_audit(caller.audit(
                action, "family", s.family_id, outcome="replayed" if result.replayed else "ok",
                detail={"submission_id": str(s.submission_id)}))
