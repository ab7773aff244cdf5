"""Intake's commands of the living registry: updates, field checks, complaints and complaint outcomes
(intake.registry_domain decides; IntakeHandlers.accept keeps each as a submission, idempotent and
sealed, like any other). Each command is one transaction: load what the decision needs (store, once)
→ decide (registry_domain) → accept and save (store) → hand what counts to intake's one publisher
(family-update) → audit."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from uuid import UUID

from intake import domain, registry_domain
from intake.domain import Conflict, Invalid, JourneyEntry, Problem, Receipt, S, Submission
from intake.handlers import Caller, Denied, IntakeHandlers, Result, Transaction
from intake.registry_domain import Checked, Closed, ComplaintView, Resolved
from intake.store import IntakeStore
from regsosek.contracts.complaints import Complaint, ComplaintOutcome
from regsosek.contracts.updates import FamilyUpdate, FieldCheck, FieldCheckOutcome, UpdateHeld
from regsosek.messaging import Handler, Incoming, UnitOfWork

__all__ = ["Closed", "RegistryHandlers", "RegistryResult"]

RegistryResult = Result | Closed

class RegistryHandlers:
    """Built by intake.app on the service's IntakeHandlers (their settings, store factory and publisher)."""

    def __init__(self, intake: IntakeHandlers) -> None:
        self.intake = intake

    def _checked(self, data: S, caller: Caller, extra: list[Problem]) -> Submission[S] | Invalid:
        checked = domain.checked_submission(data, caller.principal.subject, collection=self.intake.collection)
        if isinstance(checked, Invalid) or extra:
            return Invalid([*(checked.problems if isinstance(checked, Invalid) else []), *extra])
        return checked

    async def report_update(self, transaction: Transaction, u: FamilyUpdate, caller: Caller) -> RegistryResult:
        """An update, kept until its field check (it does not count before)."""
        checked = self._checked(u, caller, registry_domain.update_problems(
            u, caller.principal.role, self.intake.settings.collection_end))
        if isinstance(checked, Invalid):
            return checked
        async with transaction() as uow:
            return await self._record(uow, caller, "update.report", checked)

    async def check_update(self, transaction: Transaction, check: FieldCheck, caller: Caller) -> RegistryResult:
        """A field check: a confirmed one makes the update count (family-update); either way it is a step
        of the update's journey."""
        checked = self._checked(check, caller, [])
        if isinstance(checked, Invalid):
            return checked
        check = checked.contract  # the actor recorded is the caller
        async with transaction() as uow:
            store = self.intake.store_for(uow)
            update = await store.update_record(check.update_id)
            base = await self._base_niks(store, check.family_id, check.outcome is FieldCheckOutcome.CONFIRMED)
            decision = registry_domain.decide_field_check(update, check)
            if not isinstance(decision, Checked):
                return decision

            async def save() -> None:
                await store.save_field_check(check)
                await store.save_steps([decision.step])

            return await self._record(uow, caller, "update.field_check", checked, save, decision, base)

    async def file_complaint(self, transaction: Transaction, c: Complaint, caller: Caller) -> RegistryResult:
        """A complaint, tracked from now on (status filed)."""
        p = caller.principal
        checked = self._checked(c, caller, registry_domain.complaint_problems(c, p.role, p.programmes))
        if isinstance(checked, Invalid):
            return checked
        async with transaction() as uow:
            store = self.intake.store_for(uow)
            return await self._record(uow, caller, "complaint.file", checked,
                                      lambda: store.save_complaint(checked.contract))

    async def decide_complaint(self, transaction: Transaction, o: ComplaintOutcome, caller: Caller) -> RegistryResult:
        """A complaint's outcome: its status moves on; a correction's change counts (family-update)."""
        checked = self._checked(o, caller, [])
        if isinstance(checked, Invalid):
            return checked
        o = checked.contract
        async with transaction() as uow:
            store = self.intake.store_for(uow)
            complaint = await store.complaint_record(o.complaint_id)
            base = await self._base_niks(store, o.family_id, o.correction is not None)
            decision = registry_domain.decide_complaint_outcome(complaint, o)
            if not isinstance(decision, Resolved):
                return decision
            return await self._record(uow, caller, "complaint.outcome", checked,
                                      lambda: store.save_complaint_outcome(o, decision.status.value), decision, base)

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

    # ------------------------------------------------------------ downstream events: the journey

    def consumers(self) -> dict[type, Handler]:
        return {UpdateHeld: self.on_update_held}

    async def on_update_held(self, uow: UnitOfWork, msg: Incoming) -> None:
        """Verify keeps an update that counts until its family is verified: a step of the update's journey
        (what it waits for and until when), recorded with the journey's other steps."""
        e: UpdateHeld = msg.data
        self.intake.record_step(uow, JourneyEntry(e.submission_id, "held", {
            "waits_for": e.waits_for.value, "at": e.held_at.isoformat(), "expires_at": e.expires_at.isoformat()},
            msg.envelope.id))

    # ------------------------------------------------------------ the shared steps

    @staticmethod
    async def _base_niks(store: IntakeStore, family_id: str, may_count: bool) -> dict[int, str]:
        """The NIKs of the family's latest interview, loaded with the decision's state when the command
        may make a change count (its identity list is built on them), else nothing."""
        return await store.family_member_niks(family_id) if may_count else {}

    async def _record(self, uow: UnitOfWork, caller: Caller, action: str, checked: Submission,
                      save: Callable[[], Awaitable[None]] | None = None,
                      decision: Checked | Resolved | None = None, base_niks: dict[int, str] | None = None) -> Result:
        """Every registry command's end: the submission accepted (idempotent: a repeat answers with its
        first receipt); a new one saved (`save`) and the change it makes count handed to the publisher
        (family-update, with the family's identity list); the decision audited about the family."""
        (result,) = await self.intake.accept(uow, [checked])
        if isinstance(result, Receipt) and not result.replayed:
            if save is not None:
                await save()
            if decision is not None and decision.counted is not None:
                self.intake.publisher.family_updated(uow, decision.counted, base_niks or {})
        await self._audit(uow, caller, action, checked, result)
        return result

    async def _audit(self, uow: UnitOfWork, caller: Caller, action: str, s: Submission,
                     result: Receipt | Conflict | domain.Erased) -> None:
        """A decision about a family, audited with it in its transaction (replayed or ok)."""
        if isinstance(result, Receipt):
            await self.intake.store_for(uow).record_audit(caller.audit(
                action, "family", s.family_id, outcome="replayed" if result.replayed else "ok",
                detail={"submission_id": str(s.submission_id)}))
