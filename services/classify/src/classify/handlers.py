"""Classify's handlers: verified interviews and FKP adjustments in; family
classifications and programme eligibility out."""

from __future__ import annotations

from datetime import UTC, datetime

from regsosek.contracts import (
    EligibilityDecided,
    FamilyClassified,
    FamilyInterview,
    FkpAdjustment,
    InterviewVerified,
    WelfareGroup,
)
from regsosek.messaging import Incoming, UnitOfWork
from regsosek.topics import Topic

from classify.domain import classify
from classify.model import PmtModel, PovertyLines, RuleSet


class Classifier:
    def __init__(self, model: PmtModel, lines: PovertyLines, rules: RuleSet) -> None:
        self.model, self.lines, self.rules = model, lines, rules

    async def apply(self, uow: UnitOfWork, iv: FamilyInterview) -> None:
        conn = uow.conn
        fkp = await conn.fetchval(
            "select welfare_group from fkp_adjustments where family_id = $1 order by decided_at desc limit 1",
            iv.family_id,
        )
        c = classify(iv, self.model, self.lines, self.rules, WelfareGroup(fkp) if fkp else None)
        await conn.execute(
            """insert into families (family_id, sls_id, submission_id, version, interview, predicted, welfare_group,
                                     decile, model_version, rule_version, eligible)
               values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
               on conflict (family_id) do update set submission_id = excluded.submission_id,
                 version = excluded.version, interview = excluded.interview, predicted = excluded.predicted,
                 welfare_group = excluded.welfare_group, decile = excluded.decile,
                 model_version = excluded.model_version, rule_version = excluded.rule_version,
                 eligible = excluded.eligible, updated_at = now()""",
            iv.family_id, iv.location.sls_id, iv.submission_id, iv.version, iv.model_dump(mode="json"),
            c.predicted, int(c.welfare_group), c.decile, self.model.version, self.rules.version,
            [d.programme for d in c.decisions if d.eligible],
        )
        now = datetime.now(UTC)
        sls = iv.location.sls_id
        uow.outbox.publish(Topic.FAMILY_CLASSIFIED, sls, FamilyClassified(
            family_id=iv.family_id, sls_id=sls, submission_id=iv.submission_id, version=iv.version,
            predicted_monthly_per_capita=round(c.predicted, 0), welfare_group=c.welfare_group, decile=c.decile,
            decile_basis=f"provisional: reference cut-points of {self.model.version}",
            model_version=self.model.version, adjusted_by_fkp=c.adjusted_by_fkp, explanation=c.explanation,
            classified_at=now), subject=iv.family_id)
        uow.outbox.publish(Topic.ELIGIBILITY_DECIDED, sls, EligibilityDecided(
            family_id=iv.family_id, sls_id=sls, submission_id=iv.submission_id, version=iv.version,
            welfare_group=c.welfare_group, decile=c.decile, model_version=self.model.version,
            rule_version=self.rules.version, decisions=c.decisions, decided_at=now), subject=iv.family_id)

    async def on_verified(self, uow: UnitOfWork, msg: Incoming) -> None:
        e: InterviewVerified = msg.data
        stored = await uow.conn.fetchval("select version from families where family_id = $1 for update", e.family_id)
        if stored is not None and stored > e.interview.version:
            return  # superseded: a newer version of this family is already classified
        await self.apply(uow, e.interview)

    async def on_fkp(self, uow: UnitOfWork, msg: Incoming) -> None:
        a: FkpAdjustment = msg.data
        await uow.conn.execute(
            "insert into fkp_adjustments (submission_id, family_id, welfare_group, reason, decided_by, decided_at) "
            "values ($1, $2, $3, $4, $5, $6) on conflict do nothing",
            a.submission_id, a.family_id, int(a.welfare_group), a.reason, a.decided_by, a.decided_at,
        )
        row = await uow.conn.fetchrow("select interview from families where family_id = $1 for update", a.family_id)
        if row is not None:  # otherwise it applies when the family is classified
            await self.apply(uow, FamilyInterview.model_validate(row["interview"]))

    def handlers(self) -> dict:
        return {InterviewVerified: self.on_verified, FkpAdjustment: self.on_fkp}
