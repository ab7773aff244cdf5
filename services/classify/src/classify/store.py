"""Classify's database: one row per family with its latest classification and what it
rests on (its HouseholdProfile, versions, rank value, decile basis), rankings, and the
events a classification publishes. Shared by the handlers, re-rank and replay.

A family's row keeps its profile (classify's input: ages, coded answers, area, ids), never
the interview: no name, NIK, KK number, address, GPS or birth date (migration 005)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import asyncpg

from classify.domain import Classification, VerifyDecision, classify
from classify.model import PmtModel, PovertyLines, RuleSet
from classify.ranking import NATIONAL, CutPoints, Placement, reference_placement
from regsosek.contracts import (
    EligibilityDecided,
    FamilyClassified,
    FkpAdjustment,
    HouseholdProfile,
    InterviewFlagged,
    ProgrammeDecision,
    WelfareGroup,
)
from regsosek.messaging import Outbox
from regsosek.topics import Topic

SOURCE = "/regsosek/classify"


@dataclass(frozen=True)
class Config:
    """The configured model, poverty lines and rules."""

    model: PmtModel
    lines: PovertyLines
    rules: RuleSet

    @property
    def versions(self) -> tuple[str, str, str]:
        return self.model.version, self.lines.version, self.rules.version

    def classify(self, p: HouseholdProfile, fkp: WelfareGroup | None, placement: Placement) -> Classification:
        return classify(p, self.model, self.lines, self.rules, fkp, placement)


def _iso(at: datetime) -> str:
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def scope_words(partition: str) -> str:
    return "national" if partition == NATIONAL else f"province {partition}"


def ranked_basis(partition: str, ranked_at: datetime, families: int, area: str | None) -> str:
    basis = f"ranked: {scope_words(partition)} at {_iso(ranked_at)} among {families} families"
    if area:
        basis += f" (area {area} re-ranked after village consultation)"
    return basis


async def placement_for(conn: asyncpg.Connection, sls_id: str, model: PmtModel) -> Placement:
    """Cut-points of the latest ranking covering the family's province, else the model's reference."""
    r = await conn.fetchrow(
        "select id, partition, families, cutpoints, ranked_at from rankings where partition = any($1::text[]) "
        "order by id desc limit 1", [NATIONAL, sls_id[:2]],
    )
    if r is None:
        return reference_placement(model.version, model.decile_cutpoints)
    basis = (f"provisional: cut-points of the {scope_words(r['partition'])} ranking at {_iso(r['ranked_at'])} "
             f"among {r['families']} families")
    return CutPoints(tuple(r["cutpoints"]), basis, r["id"])


async def fkp_groups(conn: asyncpg.Connection, family_ids: Sequence[str]) -> dict[str, WelfareGroup]:
    """The latest village consultation decision of each family that has one."""
    rows = await conn.fetch(
        "select distinct on (family_id) family_id, welfare_group from fkp_adjustments "
        "where family_id = any($1::text[]) order by family_id, decided_at desc, received_at desc", list(family_ids),
    )
    return {r["family_id"]: WelfareGroup(r["welfare_group"]) for r in rows}


_SAVE = """insert into families (family_id, sls_id, submission_id, version, profile, predicted, welfare_group,
                                 decile, model_version, rule_version, eligible, rank_value, decile_basis,
                                 lines_version, eligibility, ranking_id)
           values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)
           on conflict (family_id) do update set submission_id = excluded.submission_id,
             version = excluded.version, profile = excluded.profile, predicted = excluded.predicted,
             welfare_group = excluded.welfare_group, decile = excluded.decile,
             model_version = excluded.model_version, rule_version = excluded.rule_version,
             eligible = excluded.eligible, rank_value = excluded.rank_value, decile_basis = excluded.decile_basis,
             lines_version = excluded.lines_version, eligibility = excluded.eligibility,
             ranking_id = excluded.ranking_id, updated_at = now()"""


def save_args(p: HouseholdProfile, c: Classification, cfg: Config, ranking_id: int | None,
              profile_doc: dict | None = None) -> tuple:
    """The row of one family; `profile_doc` spares re-serialising a profile read from the table."""
    return (p.family_id, p.sls_id, p.submission_id, p.version,
            profile_doc if profile_doc is not None else p.model_dump(mode="json"),
            c.predicted, int(c.welfare_group), c.decile, cfg.model.version, cfg.rules.version,
            [d.programme for d in c.decisions if d.eligible], c.rank_value, c.decile_basis, cfg.lines.version,
            c.eligibility, ranking_id)


async def save(conn: asyncpg.Connection, p: HouseholdProfile, c: Classification, cfg: Config,
               ranking_id: int | None) -> None:
    await conn.execute(_SAVE, *save_args(p, c, cfg, ranking_id))


async def save_many(conn: asyncpg.Connection, rows: list[tuple]) -> None:
    """Many families' rows (from save_args) in one pipelined round trip."""
    if rows:
        await conn.executemany(_SAVE, rows)


def stored_outcome(row: asyncpg.Record) -> tuple[int, int, dict[str, bool]]:
    return row["welfare_group"], row["decile"], dict(row["eligibility"])


def publish(outbox: Outbox, p: HouseholdProfile, c: Classification, cfg: Config, decision_seq: int) -> None:
    """family-classified and eligibility-decided for one family, through the outbox, under the
    family's next decision sequence (`next_decision_seqs`)."""
    now = datetime.now(UTC)
    sls = p.sls_id
    outbox.publish(Topic.FAMILY_CLASSIFIED, sls, FamilyClassified(
        family_id=p.family_id, sls_id=sls, submission_id=p.submission_id, version=p.version,
        predicted_monthly_per_capita=round(c.predicted, 0), welfare_group=c.welfare_group, decile=c.decile,
        decile_basis=c.decile_basis, model_version=cfg.model.version, adjusted_by_fkp=c.adjusted_by_fkp,
        explanation=c.explanation, classified_at=now, decision_seq=decision_seq), subject=p.family_id)
    outbox.publish(Topic.ELIGIBILITY_DECIDED, sls, EligibilityDecided(
        family_id=p.family_id, sls_id=sls, submission_id=p.submission_id, version=p.version,
        welfare_group=c.welfare_group, decile=c.decile, model_version=cfg.model.version,
        rule_version=cfg.rules.version, decisions=c.decisions, decided_at=now, decision_seq=decision_seq),
        subject=p.family_id)


async def save_fkp(conn: asyncpg.Connection, a: FkpAdjustment) -> None:
    """Keep a village consultation decision (the audit trail; the latest per family applies)."""
    await conn.execute(
        "insert into fkp_adjustments (submission_id, family_id, welfare_group, reason, decided_by, decided_at) "
        "values ($1, $2, $3, $4, $5, $6) on conflict do nothing",
        a.submission_id, a.family_id, int(a.welfare_group), a.reason, a.decided_by, a.decided_at,
    )


async def profile_for_update(conn: asyncpg.Connection, family_id: str) -> HouseholdProfile | None:
    """The stored profile of a classified family (None: not classified), its row locked."""
    row = await conn.fetchrow("select profile from families where family_id = $1 for update", family_id)
    return None if row is None else HouseholdProfile.model_validate(row["profile"])


async def profiles(conn: asyncpg.Connection, family_ids: Sequence[str]) -> dict[str, dict]:
    """The stored profiles (as documents) of these families."""
    return {r["family_id"]: r["profile"] for r in await conn.fetch(
        "select family_id, profile from families where family_id = any($1::text[])", list(family_ids))}


async def mark_area(conn: asyncpg.Connection, regency: str, reason: str) -> None:
    """Ask for an area re-rank of `regency` (done by the service's background task)."""
    await conn.execute(
        "insert into rerank_areas (regency, reason) values ($1, $2) "
        "on conflict (regency) do update set reason = excluded.reason, requested_at = now()",
        regency, reason,
    )


async def classified_for_update(conn: asyncpg.Connection, family_id: str) -> asyncpg.Record:
    """Before a verify decision is weighed: whether the family is classified (its row locked,
    first, in the order re-rank and replay lock) and its latest FKP group, in one round trip."""
    return await conn.fetchrow(
        """with cur as (select version from families where family_id = $1 for update),
                fkp as (select welfare_group from fkp_adjustments where family_id = $1
                        order by decided_at desc, received_at desc limit 1)
           select exists (select 1 from cur) as classified, (select welfare_group from fkp) as fkp""",
        family_id)


def _aware(at: datetime) -> datetime:
    return at if at.tzinfo is not None else at.replace(tzinfo=UTC)  # '-infinity' reads as a naive datetime.min


async def verify_order(conn: asyncpg.Connection, family_id: str) -> VerifyDecision | None:
    """The newest of verify's decisions applied for the family (None: none yet), its row locked
    (created if missing, so two transactions on one family wait for each other)."""
    row = await conn.fetchrow(
        "insert into family_order (family_id) values ($1) on conflict (family_id) do update "
        "set family_id = excluded.family_id returning verify_seq, verify_version, verify_at, verified", family_id)
    if row["verified"] is None:
        return None
    return VerifyDecision(row["verify_seq"], row["verify_version"], _aware(row["verify_at"]), row["verified"])


async def record_verify_decision(conn: asyncpg.Connection, family_id: str, d: VerifyDecision,
                                 *, publishes: bool) -> int:
    """Verify's decision `d` is now the newest applied for the family (row locked by `verify_order`);
    a verification lifts any withdrawal. When classify publishes on it, the family's next decision
    sequence is taken and returned (else the current one)."""
    if d.verified:
        await conn.execute("delete from withdrawals where family_id = $1", family_id)
    return await conn.fetchval(
        "update family_order set verify_seq = $2, verify_version = $3, verify_at = $4, verified = $5, "
        "decision_seq = decision_seq + $6::int where family_id = $1 returning decision_seq",
        family_id, d.seq, d.version, d.at, d.verified, 1 if publishes else 0)


async def next_decision_seqs(conn: asyncpg.Connection, family_ids: Sequence[str]) -> dict[str, int]:
    """Each family's next decision sequence, for the classification about to be published
    (re-classification, FKP, re-rank, replay). Callers hold the families' rows."""
    if not family_ids:
        return {}
    rows = await conn.fetch(
        "insert into family_order (family_id, decision_seq) select unnest($1::text[]), 1 "
        "on conflict (family_id) do update set decision_seq = family_order.decision_seq + 1 "
        "returning family_id, decision_seq", list(family_ids))
    return {r["family_id"]: r["decision_seq"] for r in rows}


async def withdraw(conn: asyncpg.Connection, e: InterviewFlagged) -> asyncpg.Record | None:
    """Take a flagged family out of the classified population (if classified) and record why;
    returns its last classification, or None. Whether the flag applies at all is decided before
    (domain.supersedes)."""
    row = await conn.fetchrow(
        "delete from families where family_id = $1 returning family_id, sls_id, submission_id, version, "
        "welfare_group, decile", e.family_id)
    if row is None:
        return None
    await conn.execute(
        """insert into withdrawals (family_id, sls_id, version, reason, detail, flagged_at) values ($1, $2, $3, $4, $5, $6)
           on conflict (family_id) do update set version = excluded.version, reason = excluded.reason,
             detail = excluded.detail, flagged_at = excluded.flagged_at, withdrawn_at = now()""",
        e.family_id, e.sls_id, e.version, e.reason.value, e.detail, e.flagged_at)
    return row


def publish_withdrawal(outbox: Outbox, row: asyncpg.Record, e: InterviewFlagged, cfg: Config,
                       decision_seq: int) -> None:
    """Every programme: not eligible, because the family is no longer verified."""
    reason = f"verification withdrawn ({e.reason.value}): {e.detail}"[:500]
    outbox.publish(Topic.ELIGIBILITY_DECIDED, row["sls_id"], EligibilityDecided(
        family_id=row["family_id"], sls_id=row["sls_id"], submission_id=e.submission_id, version=e.version,
        welfare_group=WelfareGroup(row["welfare_group"]), decile=row["decile"], model_version=cfg.model.version,
        rule_version=cfg.rules.version,
        decisions=[ProgrammeDecision(programme=r.programme, eligible=False, rule_version=cfg.rules.version,
                                     reasons=[reason]) for r in cfg.rules.rules],
        decided_at=datetime.now(UTC), decision_seq=decision_seq), subject=row["family_id"])


# ---------------------------------------------------------------- erasure


async def is_erased(conn: asyncpg.Connection, family_id: str) -> bool:
    return bool(await conn.fetchval("select exists (select 1 from erased_families where family_id = $1)", family_id))


async def erase_family(conn: asyncpg.Connection, e) -> dict[str, int]:
    """Deletes the family's profile and classification, withdrawal and FKP decisions; remembers it
    erased (migration 006). Rows deleted per table (counts only)."""
    out = {}
    for table in ("families", "withdrawals", "fkp_adjustments"):
        status = await conn.execute(f"delete from {table} where family_id = $1", e.family_id)
        out[table] = int(status.rsplit(" ", 1)[-1])
    await conn.execute(
        "insert into erased_families (family_id, sls_id, erasure_id, reason, erased_at) values ($1, $2, $3, $4, $5) "
        "on conflict (family_id) do nothing", e.family_id, e.sls_id, e.erasure_id, e.reason.value, e.erased_at)
    return out
