"""Verify's database, all of its SQL: rosters (with history), interviews and their state, NIK
claims, the history of published outcomes, per-SLS progress, erasures and the audit log.

`VerifyStore` loads, for each event, one state value the domain decides on (`interview_state`,
`roster_state`, `resolution_state`, `hold_state`) and saves the domain's `Outcome` (`save`).
Everything that changes one SLS first takes that SLS's lock (`_lock_sls`), so instances sharing
the partitions never interleave on one SLS; NIK claims are nation-wide through their primary key.

No direct identifier is stored in clear (issue 11; docs/DATA_INVENTORY.md): interviews and
rosters are kept as intake publishes them (v2: NIK and KK numbers as keyed hashes, no names,
address or GPS), and an erased family keeps only ids and outcomes (`erase_family`)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import asyncpg

from regsosek import audit
from regsosek.contracts import (
    FamilyErased,
    FamilyInterview,
    FlagReason,
    InterviewSubmitted,
    RosterStatus,
    RosterSubmitted,
    VerificationResolved,
    pseudonymise_interview,
)
from regsosek.contracts.updates import FamilyUpdated
from regsosek.messaging import PermanentError
from verify.domain import (
    BODY_EXPIRES,
    NON_RESPONSE,
    Claim,
    ClaimsRaced,
    Decided,
    FamilyId,
    HoldState,
    Interview,
    InterviewState,
    Key,
    NewRoster,
    NikHash,
    Outcome,
    Progress,
    Rematch,
    ResolutionState,
    Roster,
    RosterEntry,
    RosterState,
    Stored,
    Verdict,
    VillageEntry,
)
from verify.updates import UpdateState, claimed_niks

SLS_LOCK = 7316003  # advisory lock namespace: one SLS's rosters, interviews and resolutions apply one at a time
TABLES_WITH_LEGACY_ROWS = ("interviews", "roster_history", "roster_families", "rosters")

_STORED = ("select family_id, sls_id, submission_id, version, state, outcome, detail, decision_seq, body, traceparent "
           "from interviews")


# An interview stored with its decision (on arrival, alone or a batch's): the row it replaces, whatever
# state that was in, takes the new submission, body, outcome and roster match.
_DECIDED_INSERT = ("insert into interviews (family_id, sls_id, submission_id, version, body, state, outcome, detail, "
                   "held_since, decided_at, traceparent, kk_hash, roster_building_no, roster_family_no, "
                   "roster_revision, decision_seq)")
_DECIDED_ON_CONFLICT = (
    "on conflict (family_id) do update set submission_id = excluded.submission_id, version = excluded.version, "
    "body = excluded.body, state = excluded.state, outcome = excluded.outcome, detail = excluded.detail, "
    "held_since = null, decided_at = now(), updated_at = now(), traceparent = excluded.traceparent, "
    "kk_hash = excluded.kk_hash, roster_building_no = excluded.roster_building_no, "
    "roster_family_no = excluded.roster_family_no, roster_revision = excluded.roster_revision, "
    "decision_seq = excluded.decision_seq")


def _decided_on_arrival(outcome: Outcome) -> Verdict | None:
    """The verdict of an outcome that claims an arriving interview's NIKs, stores it and decides it,
    and nothing else."""
    if outcome.held is None or outcome.roster is not None or outcome.rematches or outcome.resolution is not None:
        return None
    if outcome.held_update is not None or outcome.update_done is not None:
        return None
    if len(outcome.verdicts) != 1:
        return None
    v = outcome.verdicts[0]
    if len(outcome.claims) != 1 or outcome.claims[0].family_id != v.interview.family_id:
        return None
    return v if v.interview is outcome.held and v.changes_family else None


class VerifyStore:
    """Verify's tables over one connection (a unit of work's, inside its transaction). `cache`
    lives as long as the transaction (the unit of work's): the SLS locks taken and the SLS
    rosters read, so that a batch holding many of an SLS's families locks and reads it once.
    `legacy_key` reads interviews stored in the v1 shape (identifiers in clear, before migration
    004): without it such a row is a permanent error (the event is dead-lettered)."""

    def __init__(self, conn: asyncpg.Connection, *, cache: dict | None = None, legacy_key: str | None = None) -> None:
        self.conn = conn
        self.cache = {} if cache is None else cache
        self.legacy_key = legacy_key

    # ---------------------------------------------------------------- loading one state value

    async def _lock_sls(self, sls_id: str) -> None:
        """Serialises work on one SLS until the transaction ends (once per transaction). Without it,
        two instances could take a roster and an interview of the same SLS at once (they are on
        different topics, so possibly different consumers): the interview sees no roster, the
        roster sees no held interview, and the interview would wait for the hold timeout."""
        key = ("sls_lock", sls_id)
        if key not in self.cache:
            await self.conn.execute("select pg_advisory_xact_lock($1, hashtext($2))", SLS_LOCK, sls_id)
            self.cache[key] = True

    async def _lock_slss(self, sls_ids: Sequence[str]) -> None:
        """`_lock_sls` for several SLS in one statement, in the order given (sorted by the caller)."""
        todo = [s for s in sls_ids if ("sls_lock", s) not in self.cache]
        if todo:
            await self.conn.execute("select pg_advisory_xact_lock($1, hashtext(s)) from unnest($2::text[]) "
                                    "with ordinality as t(s, n) order by n", SLS_LOCK, todo)
            self.cache.update({("sls_lock", s): True for s in todo})

    async def interview_state(self, iv: Interview) -> InterviewState:
        """Under the SLS's lock: whether the family was erased, its stored interview (locked; no
        body: an arriving interview needs its version, submission and sequence), the SLS's roster,
        and who holds the interview's NIKs (one statement after the lock and the roster). Taken
        from `preload_interview_states` once (a second load of the family reads again)."""
        preloaded = self.cache.pop(("interview_state", iv.family_id, iv.submission_id), None)
        if preloaded is not None:
            return preloaded
        await self._lock_sls(iv.location.sls_id)
        roster = await self.roster(iv.location.sls_id)
        niks = sorted(iv.nik_hashes()) if roster is not None else []  # held without a roster: no claim to weigh
        row = await self.conn.fetchrow(
            """with cur as (select family_id, sls_id, submission_id, version, state, outcome, detail, decision_seq,
                                   null::jsonb as body, traceparent
                            from interviews where family_id = $1 for update)
               select exists (select 1 from erased_families where family_id = $1) as erased,
                      array(select row(nik_hash, family_id) from nik_claims where nik_hash = any($2::bytea[])) as holders,
                      cur.*
               from (select) as one left join cur on true""", iv.family_id, niks)
        if row["erased"]:
            return InterviewState(erased=True, stored=None, roster=None)
        holders = {bytes(h): f for h, f in row["holders"]}
        return InterviewState(False, None if row["family_id"] is None else self._stored(row), roster, holders)

    async def preload_interview_states(self, interviews: Sequence[Interview]) -> None:
        """What `interview_state` reads, for many families at once (a batch's interviews, each
        family once): their SLS locked (in one order), each SLS's roster read once, then their
        erasures, stored rows (locked, in family order) and their NIKs' holders in three
        statements, where one event took three. Each state is then `interview_state`'s once.

        The NIK holders are those before any of these interviews is saved; a claim that finds
        them changed raises ClaimsRaced as it would between any load and save, and the family is
        decided again on a fresh `interview_state`."""
        if not interviews:
            return
        slss = sorted({iv.location.sls_id for iv in interviews})
        await self._lock_slss(slss)
        rosters = await self.rosters_of(slss)
        ids = sorted({iv.family_id for iv in interviews})
        erased = {r["family_id"] for r in await self.conn.fetch(
            "select family_id from erased_families where family_id = any($1::text[])", ids)}
        rows = {r["family_id"]: r for r in await self.conn.fetch(
            "select family_id, sls_id, submission_id, version, state, outcome, detail, decision_seq, "
            "null::jsonb as body, traceparent from interviews where family_id = any($1::text[]) "
            "order by family_id for update", ids)}
        niks = sorted({h for iv in interviews if rosters[iv.location.sls_id] is not None for h in iv.nik_hashes()})
        holders = await self._nik_holders(dict.fromkeys(niks, 0))
        for iv in interviews:
            if iv.family_id in erased:
                state = InterviewState(erased=True, stored=None, roster=None)
            else:
                roster = rosters[iv.location.sls_id]
                mine = {h: holders[h] for h in iv.nik_hashes() if h in holders} if roster is not None else {}
                row = rows.get(iv.family_id)
                state = InterviewState(False, None if row is None else self._stored(row), roster, mine)
            self.cache[("interview_state", iv.family_id, iv.submission_id)] = state

    async def roster_state(self, r: RosterSubmitted) -> RosterState:
        """Under the SLS's lock: its roster's revision, its erased families, every interview of it
        (locked; held ones first in arrival order, then the decided ones) and its NIKs' holders."""
        await self._lock_sls(r.sls_id)
        revision = await self.conn.fetchval("select revision from rosters where sls_id = $1", r.sls_id)
        erased = await self.conn.fetch("select family_id from erased_families where sls_id = $1", r.sls_id)
        rows = await self.conn.fetch(
            _STORED + " where sls_id = $1 and body is not null "
            "order by state <> 'held', held_since, decided_at, family_id for update", r.sls_id)
        interviews = tuple(self._stored(row) for row in rows)
        kks = sorted({f.kk_hash for f in r.families if f.kk_hash})
        strays = tuple(self._stored(row) for row in await self.conn.fetch(
            _STORED + " where kk_hash = any($1::text[]) and left(sls_id, 10) = $2 and sls_id <> $3 and state = 'flagged' "
            "and outcome = $4 and body is not null order by family_id for update",
            kks, r.sls_id[:10], r.sls_id, FlagReason.NOT_ON_ROSTER.value)) if kks else ()
        holders = await self._nik_holders({h: 0 for s in interviews + strays for h in s.body.nik_hashes()})
        return RosterState(r.sls_id, revision or 0, frozenset(e["family_id"] for e in erased), interviews, holders,
                           await self._village(r.sls_id), strays)

    async def resolution_state(self, r: VerificationResolved) -> ResolutionState:
        """Under the SLS's lock (the family id begins with its SLS id): the family's stored
        interview (locked; its body None once erased) and the SLS's roster."""
        sls_id = r.family_id[:14]
        await self._lock_sls(sls_id)
        row = await self.conn.fetchrow(_STORED + " where family_id = $1 for update", r.family_id)
        return ResolutionState(None if row is None else self._stored(row), await self.roster(sls_id))

    async def hold_state(self, family_id: FamilyId, sls_id: str, timeout_s: float) -> HoldState:
        """Under the SLS's lock: the family's interview (locked) if it is still held and has been
        for longer than `timeout_s`, the SLS's roster and who holds the interview's NIKs."""
        await self._lock_sls(sls_id)
        row = await self.conn.fetchrow(
            _STORED + " where family_id = $1 and state = 'held' and body is not null "
            "and held_since < now() - make_interval(secs => $2) for update", family_id, timeout_s)
        if row is None:
            return HoldState(None, None)
        stored, roster = self._stored(row), await self.roster(sls_id)
        holders = await self._nik_holders(stored.body.nik_hashes()) if roster is not None else {}
        return HoldState(stored, roster, holders)

    async def update_state(self, e: FamilyUpdated) -> UpdateState:
        """Under the SLS's lock: whether the family was erased, its stored interview (locked, with its
        body), whether this update was applied already (a line of the family's history carries its id),
        the SLS's roster, who holds the NIKs the update brings and whether the update is kept already."""
        await self._lock_sls(e.sls_id)
        roster = await self.roster(e.sls_id)
        row = await self.conn.fetchrow(_STORED + " where family_id = $1 for update", e.family_id)
        flags = await self.conn.fetchrow(
            "select exists (select 1 from erased_families where family_id = $1) as erased, exists (select 1 from "
            "verification_history where family_id = $1 and submission_id = $2) as applied, "
            "exists (select 1 from held_updates where submission_id = $2) as kept", e.family_id, e.submission_id)
        holders = await self._nik_holders(dict.fromkeys(claimed_niks(e), 0))
        return UpdateState(flags["erased"], None if row is None else self._stored(row), flags["applied"], roster,
                           holders, flags["kept"])

    async def roster(self, sls_id: str) -> Roster | None:
        """The SLS's current roster, read once per transaction."""
        key = ("roster", sls_id)
        if key not in self.cache:
            self.cache[key] = await self._read_roster(sls_id)
        return self.cache[key]

    async def rosters_of(self, sls_ids: Sequence[str]) -> dict[str, Roster | None]:
        """`roster` for many SLS: those not read yet in this transaction in three statements (their
        heads, their entries, the KK-bearing entries of their villages), whatever their number."""
        todo = sorted({s for s in sls_ids if ("roster", s) not in self.cache})
        if len(todo) == 1:
            await self.roster(todo[0])
        elif todo:
            heads = {r["sls_id"]: r for r in await self.conn.fetch(
                "select sls_id, revision, submission_id from rosters where sls_id = any($1::text[])", todo)}
            entries: dict[str, list[RosterEntry]] = {}
            for r in await self.conn.fetch(
                    "select sls_id, building_no, family_no, kk_hash, member_count, status from roster_families "
                    "where sls_id = any($1::text[]) order by sls_id, building_no, family_no", sorted(heads)):
                entries.setdefault(r["sls_id"], []).append(self._entry(r))
            village = await self._villages(sorted({s[:10] for s in heads}))
            for sls_id in todo:
                head = heads.get(sls_id)
                self.cache[("roster", sls_id)] = None if head is None else Roster(
                    sls_id, head["revision"], head["submission_id"], entries.get(sls_id, []),
                    tuple(v for v in village.get(sls_id[:10], ()) if v.sls_id != sls_id))
        return {s: self.cache[("roster", s)] for s in sls_ids}

    @staticmethod
    def _entry(r: asyncpg.Record) -> RosterEntry:
        return RosterEntry(r["building_no"], r["family_no"], r["kk_hash"], r["member_count"], RosterStatus(r["status"]))

    async def _villages(self, villages: Sequence[str]) -> dict[str, list[VillageEntry]]:
        """The KK-bearing roster entries of every SLS of these villages (the first 10 digits), per
        village, in `_village`'s order."""
        out: dict[str, list[VillageEntry]] = {}
        for r in await self.conn.fetch(
                "select sls_id, building_no, family_no, kk_hash, member_count, status from roster_families "
                "where left(sls_id, 10) = any($1::text[]) and kk_hash is not null order by sls_id, building_no, "
                "family_no", villages):
            out.setdefault(r["sls_id"][:10], []).append(VillageEntry(r["sls_id"], self._entry(r)))
        return out

    async def _read_roster(self, sls_id: str) -> Roster | None:
        head = await self.conn.fetchrow("select revision, submission_id from rosters where sls_id = $1", sls_id)
        if head is None:
            return None
        rows = await self.conn.fetch(
            "select building_no, family_no, kk_hash, member_count, status from roster_families where sls_id = $1 "
            "order by building_no, family_no", sls_id)
        entries = [RosterEntry(r["building_no"], r["family_no"], r["kk_hash"], r["member_count"],
                               RosterStatus(r["status"])) for r in rows]
        return Roster(sls_id, head["revision"], head["submission_id"], entries, await self._village(sls_id))

    async def _village(self, sls_id: str) -> tuple[VillageEntry, ...]:
        """The KK-bearing roster entries of the other SLS of the village (SLS changes)."""
        rows = await self.conn.fetch(
            "select sls_id, building_no, family_no, kk_hash, member_count, status from roster_families "
            "where left(sls_id, 10) = $1 and sls_id <> $2 and kk_hash is not null order by sls_id, building_no, "
            "family_no", sls_id[:10], sls_id)
        return tuple(VillageEntry(r["sls_id"], RosterEntry(r["building_no"], r["family_no"], r["kk_hash"],
                                                           r["member_count"], RosterStatus(r["status"]))) for r in rows)

    async def _nik_holders(self, niks: dict[NikHash, int]) -> dict[NikHash, FamilyId]:
        """The family holding each of these NIKs (hashes), where one does."""
        if not niks:
            return {}
        rows = await self.conn.fetch("select nik_hash, family_id from nik_claims where nik_hash = any($1::bytea[])",
                                     sorted(niks))
        return {bytes(r["nik_hash"]): r["family_id"] for r in rows}

    def _stored(self, row: asyncpg.Record) -> Stored:
        body = row["body"]
        return Stored(row["family_id"], row["sls_id"], row["version"], str(row["submission_id"]), row["state"],
                      row["outcome"], row["detail"], row["decision_seq"],
                      None if body is None else self._interview_of(body), row["traceparent"])

    def _interview_of(self, body: dict) -> Interview:
        """A stored interview body: v2, or (stored before migration 004 and not yet converted) v1,
        pseudonymised on reading."""
        if "kk_number" in body["location"] or any("name" in m for m in body["members"]):
            if self.legacy_key is None:
                raise PermanentError("a stored interview of the v1 shape (identifiers in clear) needs "
                                     "REGSOSEK_LEGACY_NIK_HASH_KEY to be pseudonymised; re-drive it once that key is set")
            return pseudonymise_interview(FamilyInterview.model_validate(body), self.legacy_key)
        return InterviewSubmitted.model_validate(body)

    # ---------------------------------------------------------------- saving one outcome

    async def save(self, outcome: Outcome, *, traceparent: str | None = None) -> None:
        """Saves what one event decided, claims first: ClaimsRaced (nothing else written yet) when
        another family took one of the NIKs since they were loaded. `traceparent`: the trace a
        held interview resumes in when decided later."""
        arriving = _decided_on_arrival(outcome)
        if arriving is not None:  # the usual case, in one statement
            await self._claim_and_save_decided(outcome.claims[0], arriving, traceparent)
            return
        for claim in outcome.claims:
            await self._claim_niks(claim)
        if outcome.held is not None:
            await self._save_held(outcome.held, traceparent)
        if outcome.roster is not None:
            await self._save_roster(outcome.roster)
        for v in outcome.verdicts:
            await (self._save_verdict(v) if v.changes_family else self._add_history(v))
        for m in outcome.rematches:
            await self._set_match(m)
        if outcome.resolution is not None:
            await self._save_resolution(*outcome.resolution)
        if outcome.held_update is not None:
            e, why = outcome.held_update
            await self.conn.execute(
                "insert into held_updates (submission_id, family_id, sls_id, body, why) values ($1, $2, $3, $4::jsonb, $5) "
                "on conflict (submission_id) do nothing", e.submission_id, e.family_id, e.sls_id,
                e.model_dump(mode="json"), why.value)
        if outcome.update_done is not None:
            await self.conn.execute("delete from held_updates where submission_id = $1", outcome.update_done)

    async def save_together(self, outcomes: Sequence[tuple[Outcome, str | None]]) -> set[FamilyId]:
        """Saves what a batch's arriving interviews decided (`domain.on_interviews`: each family once,
        in the order decided), each with the trace it is held in: those decided at once (the usual
        case) in ONE statement for all, as `_claim_and_save_decided` saves one; the others (held,
        a duplicate's flag) one by one (`save`). Returns the families whose claim found the NIKs held
        otherwise than decided (another instance's family took one meanwhile): nothing but their
        claims is written, and each is decided again (as for `ClaimsRaced`)."""
        arriving = [(o.claims[0], v, t) for o, t in outcomes if (v := _decided_on_arrival(o)) is not None]
        raced: set[FamilyId] = set()
        if len(arriving) == 1:
            claim, v, traceparent = arriving[0]
            try:
                await self._claim_and_save_decided(claim, v, traceparent)
            except ClaimsRaced:
                raced.add(claim.family_id)
        elif arriving:
            raced |= await self._claim_and_save_all_decided(arriving)
        for outcome, traceparent in outcomes:
            if _decided_on_arrival(outcome) is None:
                try:
                    await self.save(outcome, traceparent=traceparent)
                except ClaimsRaced as e:
                    raced.add(str(e))
        return raced

    async def _claim_and_save_all_decided(self, arriving: Sequence[tuple[Claim, Verdict, str | None]]) -> set[FamilyId]:
        """`_claim_and_save_decided` for many families in one statement: every family's NIKs claimed
        (in NIK order, and for one NIK in the order the families were decided, so that the family the
        decision gave it to gets it), those it no longer lists released; each family's interview,
        outcome and history line written only where its claim leaves its NIKs held as decided. The
        families where it does not (nothing but their claims written)."""
        cols: list[list] = [[] for _ in range(15)]
        nik_family: list[str] = []
        nik_hash: list[bytes] = []
        nik_order: list[int] = []
        nik_kept: list[bool] = []
        for n, (claim, v, traceparent) in enumerate(arriving):
            iv, d = v.interview, v.decision
            building, family = v.matched or (None, None)
            for c, value in zip(cols, (iv.family_id, iv.location.sls_id, iv.submission_id, iv.version,
                                       iv.model_dump_json(), d.state, d.code, d.detail, traceparent,
                                       iv.location.kk_hash, building, family, v.roster_revision, v.decision_seq,
                                       v.cause), strict=True):
                c.append(value)
            for h, line in claim.niks.items():
                nik_family.append(claim.family_id)
                nik_hash.append(h)
                nik_order.append(n)
                nik_kept.append(line not in claim.clashes)
        row = await self.conn.fetchrow(
            f"""with arrival as (
                 select * from unnest($1::text[], $2::text[], $3::uuid[], $4::int[], $5::text[], $6::text[], $7::text[],
                                      $8::text[], $9::text[], $10::text[], $11::int[], $12::int[], $13::int[],
                                      $14::bigint[], $15::text[])
                   as a(family_id, sls_id, submission_id, version, body, state, outcome, detail, traceparent, kk_hash,
                        building_no, family_no, roster_revision, decision_seq, cause)),
                    nik as (select * from unnest($16::text[], $17::bytea[], $18::int[], $19::bool[])
                              as n(family_id, nik_hash, n, kept)),
                    mine as (select nik_hash, family_id from nik_claims where family_id = any($1::text[])),
                    dropped as (delete from nik_claims c where c.family_id = any($1::text[]) and not exists
                                  (select 1 from nik where nik.family_id = c.family_id and nik.nik_hash = c.nik_hash)),
                    claimed as (insert into nik_claims (nik_hash, family_id)
                                select nik_hash, family_id from nik order by nik_hash, n
                                on conflict do nothing returning nik_hash, family_id),
                    held as (select nik_hash, family_id from mine union select nik_hash, family_id from claimed),
                    raced as (select distinct nik.family_id from nik where nik.kept <> exists (
                                select 1 from held where held.family_id = nik.family_id
                                                     and held.nik_hash = nik.nik_hash)),
                    upd as (
                 {_DECIDED_INSERT}
                 select family_id, sls_id, submission_id, version, body::jsonb, state, outcome, detail, null, now(),
                        traceparent, kk_hash, building_no, family_no, roster_revision, decision_seq
                 from arrival where family_id not in (select family_id from raced)
                 {_DECIDED_ON_CONFLICT}
                 returning family_id, decision_seq),
                    hist as (
                 insert into verification_history (family_id, sls_id, submission_id, version, state, outcome, detail,
                                                   cause, roster_revision, decision_seq)
                 select a.family_id, a.sls_id, a.submission_id, a.version, a.state, a.outcome, a.detail, a.cause,
                        a.roster_revision, upd.decision_seq
                 from arrival a join upd on upd.family_id = a.family_id)
               select array(select family_id from raced) as raced""",
            *cols, nik_family, nik_hash, nik_order, nik_kept,
        )
        return set(row["raced"])

    async def _claim_niks(self, claim: Claim) -> None:
        """Claims each NIK for the family (dropping the ones it no longer lists); ClaimsRaced when
        the member lines another family holds are not the ones the decision was made on.

        The primary key makes this nation-wide and race-free: of two families claiming a NIK at
        the same moment, the second insert waits for the first commit and loses."""
        row = await self.conn.fetchrow(
            """with mine as (select nik_hash from nik_claims where family_id = $1),
                    dropped as (delete from nik_claims where family_id = $1 and not (nik_hash = any($2::bytea[]))),
                    claimed as (insert into nik_claims (nik_hash, family_id) select unnest($2::bytea[]), $1
                                on conflict do nothing returning nik_hash)
               select array(select nik_hash from mine) as mine, array(select nik_hash from claimed) as claimed""",
            claim.family_id, sorted(claim.niks),  # one lock order for every family: no deadlock between SLS sharing NIKs
        )
        # Not claimed now and not ours before: another family holds it (or just took it: the
        # insert waited for that transaction and found the row).
        held = {bytes(h) for h in row["mine"]} | {bytes(h) for h in row["claimed"]}
        if tuple(sorted(line for h, line in claim.niks.items() if h not in held)) != claim.clashes:
            raise ClaimsRaced(claim.family_id)

    async def _save_held(self, iv: Interview, traceparent: str | None) -> None:
        await self.conn.execute(
            """insert into interviews (family_id, sls_id, submission_id, version, body, state, held_since, traceparent,
                                      kk_hash)
               values ($1, $2, $3, $4, $5, 'held', now(), $6, $7)
               on conflict (family_id) do update set submission_id = excluded.submission_id, version = excluded.version,
                 body = excluded.body, state = 'held', outcome = null, detail = null, held_since = now(),
                 kk_hash = excluded.kk_hash,
                 decided_at = null, updated_at = now(), traceparent = excluded.traceparent,
                 roster_building_no = null, roster_family_no = null, roster_revision = null""",
            iv.family_id, iv.location.sls_id, iv.submission_id, iv.version, iv.model_dump(mode="json"), traceparent,
            iv.location.kk_hash,
        )

    async def _claim_and_save_decided(self, claim: Claim, v: Verdict, traceparent: str | None) -> None:
        """An arriving interview decided at once, in one statement: its NIKs claimed as `_claim_niks`
        does and, only when the claim leaves the NIKs held as the decision took them, the interview
        stored with its outcome and a line in its history (what `_save_held` and `_save_verdict`
        write). Otherwise ClaimsRaced, with nothing but the claim written (as `_claim_niks`)."""
        iv, d = v.interview, v.decision
        building, family = v.matched or (None, None)
        niks = sorted(claim.niks)  # one lock order for every family (see _claim_niks)
        expected_held = sorted(h for h, line in claim.niks.items() if line not in claim.clashes)
        ok = await self.conn.fetchval(
            f"""with mine as (select nik_hash from nik_claims where family_id = $1),
                    dropped as (delete from nik_claims where family_id = $1 and not (nik_hash = any($16::bytea[]))),
                    claimed as (insert into nik_claims (nik_hash, family_id) select unnest($16::bytea[]), $1
                                on conflict do nothing returning nik_hash),
                    verdict as (
                      select coalesce(array_agg(h order by h), '{{}}') = $17::bytea[] as ok from unnest($16::bytea[]) h
                      where h in (select nik_hash from mine union select nik_hash from claimed)),
                    upd as (
                 {_DECIDED_INSERT}
                 select $1::text, $2::text, $3::uuid, $4::int, $5::jsonb, $6::text, $7::text, $8::text, null, now(),
                        $9::text, $10::text, $11::int, $12::int, $13::int, $14::bigint
                 where (select ok from verdict)
                 {_DECIDED_ON_CONFLICT}
                 returning decision_seq),
                    hist as (
                 insert into verification_history (family_id, sls_id, submission_id, version, state, outcome, detail,
                                                   cause, roster_revision, decision_seq)
                 select $1, $2, $3, $4, $6, $7, $8, $15, $13, upd.decision_seq from upd)
               select ok from verdict""",
            iv.family_id, iv.location.sls_id, iv.submission_id, iv.version, iv.model_dump(mode="json"),
            d.state, d.code, d.detail, traceparent, iv.location.kk_hash, building, family, v.roster_revision,
            v.decision_seq, v.cause, niks, expected_held,
        )
        if not ok:
            raise ClaimsRaced(claim.family_id)

    async def _save_roster(self, new: NewRoster) -> None:
        """The roster revision as received (history) and as matched against (its entries). The
        revision is the stored one's next (the SLS is locked), as `new.roster` says."""
        r = new.received
        revision = await self.conn.fetchval(
            """insert into rosters (sls_id, revision, submission_id, officer_id, confirmed_by, confirmed_at)
               values ($1, 1, $2, $3, null, $4)
               on conflict (sls_id) do update set revision = rosters.revision + 1, submission_id = excluded.submission_id,
                 officer_id = excluded.officer_id, confirmed_by = null,
                 confirmed_at = excluded.confirmed_at, received_at = now()
               returning revision""",
            r.sls_id, r.submission_id, r.officer_id, r.confirmed_at,
        )
        if revision != new.roster.revision:
            raise RuntimeError(f"roster revision {revision} stored, {new.roster.revision} decided on")
        await self.conn.execute("insert into roster_history (sls_id, revision, submission_id, body) values ($1, $2, $3, $4)",
                                r.sls_id, revision, r.submission_id, r.model_dump(mode="json"))
        await self.conn.execute("delete from roster_families where sls_id = $1", r.sls_id)
        await self.conn.executemany(
            "insert into roster_families (sls_id, building_no, family_no, kk_hash, member_count, status) "
            "values ($1, $2, $3, $4, $5, $6)",
            [(r.sls_id, f.building_no, f.family_no, f.kk_hash, f.member_count, f.status.value) for f in r.families],
        )
        self.cache[("roster", r.sls_id)] = new.roster

    async def _save_verdict(self, v: Verdict) -> None:
        """The family's new outcome under the verdict's decision sequence, and a line in its history
        (one statement). The family's row is locked (see the state loads), so numbers never
        repeat or go back."""
        iv, d = v.interview, v.decision
        building, family = v.matched or (None, None)
        await self.conn.execute(
            """with upd as (
                 update interviews set state = $2, outcome = $3, detail = $4, held_since = null, decided_at = now(),
                   updated_at = now(), roster_building_no = $5, roster_family_no = $6, roster_revision = $7,
                   decision_seq = $12
                 where family_id = $1 returning decision_seq)
               insert into verification_history (family_id, sls_id, submission_id, version, state, outcome, detail,
                                                 cause, roster_revision, decision_seq)
               select $1, $8, $9, $10, $2, $3, $4, $11, $7, upd.decision_seq from upd""",
            iv.family_id, d.state, d.code, d.detail, building, family, v.roster_revision,
            iv.location.sls_id, iv.submission_id, iv.version, v.cause, v.decision_seq,
        )

    async def _add_history(self, v: Verdict) -> None:
        """A line in the family's history only (a duplicate interview's flag)."""
        iv, d = v.interview, v.decision
        await self.conn.execute(
            "insert into verification_history (family_id, sls_id, submission_id, version, state, outcome, detail, "
            "cause, roster_revision, decision_seq) values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
            iv.family_id, iv.location.sls_id, iv.submission_id, iv.version, d.state, d.code, d.detail, v.cause,
            v.roster_revision, v.decision_seq,
        )

    async def _set_match(self, m: Rematch) -> None:
        building, family = m.matched or (None, None)
        await self.conn.execute(
            "update interviews set roster_building_no = $2, roster_family_no = $3, roster_revision = $4 "
            "where family_id = $1", m.family_id, building, family, m.roster_revision,
        )

    async def _save_resolution(self, r: VerificationResolved, version: int) -> None:
        await self.conn.execute(
            "insert into resolutions (submission_id, family_id, decision, supervisor_id, reason, decided_at, version) "
            "values ($1, $2, $3, $4, $5, $6, $7) on conflict do nothing",
            r.submission_id, r.family_id, r.decision.value, r.supervisor_id, r.reason, r.decided_at, version,
        )

    # ---------------------------------------------------------------- holds

    async def expired_holds(self, timeout_s: float, limit: int = 500) -> list[tuple[FamilyId, str]]:
        """(family, SLS) of interviews held for longer than `timeout_s`, longest first."""
        rows = await self.conn.fetch(
            "select family_id, sls_id from interviews where state = 'held' "
            "and held_since < now() - make_interval(secs => $1) order by held_since limit $2", timeout_s, limit)
        return [(r["family_id"], r["sls_id"]) for r in rows]

    async def held_updates(self, families: Sequence[FamilyId]) -> list[FamilyUpdated]:
        """The updates kept for these families until they are verified, in the order they were kept. Asked
        after every transaction that verifies families: a table with no kept update (the census itself:
        updates come after it) is answered by one cheap probe, not by matching the batch's families."""
        if not await self.conn.fetchval("select exists (select 1 from held_updates)"):
            return []
        rows = await self.conn.fetch("select body from held_updates where family_id = any($1::text[]) "
                                     "order by held_since, submission_id", list(families))
        return [FamilyUpdated.model_validate(r["body"]) for r in rows]

    async def expired_update_holds(self, timeout_s: float, limit: int = 500) -> list[FamilyUpdated]:
        """Updates kept for longer than `timeout_s` (their family still not verified), longest first."""
        rows = await self.conn.fetch(
            "select body from held_updates where held_since < now() - make_interval(secs => $1) "
            "order by held_since, submission_id limit $2", timeout_s, limit)
        return [FamilyUpdated.model_validate(r["body"]) for r in rows]

    # ---------------------------------------------------------------- progress

    async def decided_in(self, sls_ids: Sequence[str]) -> dict[str, list[Decided]]:
        """Each SLS's decided interviews, as completeness counts them (one statement for all)."""
        out: dict[str, list[Decided]] = {s: [] for s in sls_ids}
        for r in await self.conn.fetch(
                "select sls_id, state, roster_building_no, roster_family_no from interviews "
                "where sls_id = any($1::text[]) and state <> 'held'", sorted(out)):
            out[r["sls_id"]].append(Decided(
                r["state"] == "verified",
                None if r["roster_building_no"] is None else (r["roster_building_no"], r["roster_family_no"]),
                r["state"] == NON_RESPONSE))
        return out

    async def relocated_in(self, sls_ids: Sequence[str]) -> dict[str, list[Key]]:
        """Per SLS, the entries of its roster whose KK a decided interview under another SLS of the
        village carries (the SLS was split, merged or renamed after it was interviewed); one statement."""
        out: dict[str, list[Key]] = {s: [] for s in sls_ids}
        for r in await self.conn.fetch(
                """select distinct rf.sls_id, rf.building_no, rf.family_no from roster_families rf
                   join interviews i on i.kk_hash = rf.kk_hash and i.state <> 'held' and i.sls_id <> rf.sls_id
                                     and left(i.sls_id, 10) = left(rf.sls_id, 10)
                   where rf.sls_id = any($1::text[]) and rf.kk_hash is not null""", sorted(out)):
            out[r["sls_id"]].append((r["building_no"], r["family_no"]))
        return out

    async def save_progress(self, counts: Sequence[tuple[Roster, Progress]]) -> set[str]:
        """Each SLS's counts under its roster revision (one statement for all); the SLS complete
        under their revision for the first time (one more statement when any is complete)."""
        if not counts:
            return set()
        cols = list(zip(*((r.sls_id, r.revision, p.expected, p.interviewed, p.verified, p.flagged, p.absent,
                           p.outstanding, p.complete, p.non_response) for r, p in sorted(counts, key=lambda c: c[0].sls_id)),
                        strict=True))
        await self.conn.execute(
            """insert into sls_progress (sls_id, roster_revision, expected, interviewed, verified, flagged, absent,
                                         outstanding, complete, non_response)
               select * from unnest($1::text[], $2::int[], $3::int[], $4::int[], $5::int[], $6::int[], $7::int[],
                                    $8::int[], $9::bool[], $10::int[])
               on conflict (sls_id) do update set roster_revision = excluded.roster_revision, expected = excluded.expected,
                 interviewed = excluded.interviewed, verified = excluded.verified, flagged = excluded.flagged,
                 absent = excluded.absent, outstanding = excluded.outstanding, complete = excluded.complete,
                 non_response = excluded.non_response, updated_at = now()""", *cols)
        complete = [(r, p) for r, p in counts if p.complete]
        if not complete:
            return set()
        cols = list(zip(*((r.sls_id, r.revision, p.expected, p.interviewed, p.verified, p.flagged, p.absent,
                           p.non_response) for r, p in complete), strict=True))
        return {r["sls_id"] for r in await self.conn.fetch(
            "insert into sls_completions (sls_id, roster_revision, expected, interviewed, verified, flagged, absent, "
            "non_response) select * from unnest($1::text[], $2::int[], $3::int[], $4::int[], $5::int[], $6::int[], "
            "$7::int[], $8::int[]) on conflict do nothing returning sls_id", *cols)}

    async def progress_by_prefix(self, prefix: str, length: int) -> list[dict[str, str | int]]:
        """Per group (the first `length` digits of the SLS id, as `grp`): rostered and complete SLS,
        summed counts and held interviews (of SLS whose roster has not come)."""
        rows = await self.conn.fetch(
            """with p as (
                 select left(sls_id, $2) as grp, count(*) as sls, count(*) filter (where complete) as sls_complete,
                        sum(expected) as expected, sum(interviewed) as interviewed, sum(verified) as verified,
                        sum(flagged) as flagged, sum(absent) as absent, sum(outstanding) as outstanding,
                        sum(non_response) as non_response
                 from sls_progress where sls_id like $1 || '%' group by 1),
               h as (
                 select left(sls_id, $2) as grp, count(*) as held
                 from interviews where state = 'held' and sls_id like $1 || '%' group by 1)
               select coalesce(p.grp, h.grp) as grp, coalesce(p.sls, 0) as sls,
                      coalesce(p.sls_complete, 0) as sls_complete,
                      coalesce(p.expected, 0) as expected, coalesce(p.interviewed, 0) as interviewed,
                      coalesce(p.verified, 0) as verified, coalesce(p.flagged, 0) as flagged,
                      coalesce(p.absent, 0) as absent, coalesce(p.outstanding, 0) as outstanding,
                      coalesce(p.non_response, 0) as non_response, coalesce(h.held, 0) as held
               from p full join h on p.grp = h.grp order by 1""",
            prefix, length,
        )
        return [{k: (v if k == "grp" else int(v)) for k, v in r.items()} for r in rows]

    # ---------------------------------------------------------------- retention

    async def expire_bodies(self, before: datetime, limit: int) -> int:
        """Empties up to `limit` interview bodies decided before `before` whose state is final
        (domain.BODY_EXPIRES: rejected or non-response; a verified family's body stays while it is registered),
        oldest first; rows a handler holds are skipped (the next pass takes
        them). The row stays: ids, outcome, roster match (progress figures), `body_expired_at`."""
        return int((await self.conn.execute(
            """update interviews set body = null, traceparent = null, body_expired_at = now()
               where family_id in (select family_id from interviews
                                   where body is not null and state = any($3::text[]) and decided_at < $1
                                   order by decided_at limit $2 for update skip locked)""",
            before, limit, list(BODY_EXPIRES))).split()[-1])

    # ---------------------------------------------------------------- erasure and the audit log

    async def erase_family(self, e: FamilyErased) -> dict[str, int]:
        """Erases what verify holds of the family (docs/DATA_INVENTORY.md): its NIK claims, its
        interview body (a decided family keeps its row without a body: state, outcome and roster
        match, so SLS progress figures stay; a held one is deleted), the KK hash of its roster entry in
        the current roster and every revision kept, and the free-text reasons of its supervisor
        resolutions. Remembers the family as erased, so a later record of it (a retained or re-driven
        interview) is ignored. Rows affected per table (counts only). Under the SLS's lock."""
        await self._lock_sls(e.sls_id)
        self.cache.pop(("roster", e.sls_id), None)  # its entry loses its KK hash: read it again
        building, family = int(e.family_id[15:19]), int(e.family_id[20:23])
        claims = await self.conn.execute("delete from nik_claims where family_id = $1", e.family_id)
        held = await self.conn.execute("delete from interviews where family_id = $1 and state = 'held'", e.family_id)
        bodies = await self.conn.execute("update interviews set body = null, erased_at = now(), traceparent = null, "
                                         "kk_hash = null "
                                         "where family_id = $1 and body is not null", e.family_id)
        entries = await self.conn.execute(
            "update roster_families set kk_hash = null, kk_number = null where sls_id = $1 and building_no = $2 "
            "and family_no = $3 and (kk_hash is not null or kk_number is not null)", e.sls_id, building, family)
        # every kept revision: the family's entry keeps serials, member count and status, loses its KK
        # (hash, or number and head name in a body stored before migration 004)
        history = await self.conn.execute(
            """update roster_history h set body = jsonb_set(h.body, '{families}', (
                 select jsonb_agg(case when (f->>'building_no')::int = $2 and (f->>'family_no')::int = $3
                                       then f - 'kk_hash' - 'kk_number' - 'head_name' else f end order by n)
                 from jsonb_array_elements(h.body->'families') with ordinality as t(f, n)))
               where h.sls_id = $1 and exists (select 1 from jsonb_array_elements(h.body->'families') f
                 where (f->>'building_no')::int = $2 and (f->>'family_no')::int = $3
                   and (f ? 'kk_hash' or f ? 'kk_number' or f ? 'head_name'))""", e.sls_id, building, family)
        reasons = await self.conn.execute("update resolutions set reason = '' where family_id = $1 and reason <> ''",
                                          e.family_id)
        updates = await self.conn.execute("delete from held_updates where family_id = $1", e.family_id)
        await self.conn.execute(
            "insert into erased_families (family_id, sls_id, erasure_id, reason, erased_at) values ($1, $2, $3, $4, $5) "
            "on conflict (family_id) do nothing", e.family_id, e.sls_id, e.erasure_id, e.reason.value, e.erased_at)
        return {name: int(status.rsplit(" ", 1)[-1]) for name, status in (
            ("nik_claims", claims), ("held", held), ("bodies", bodies), ("roster_entries", entries),
            ("roster_revisions", history), ("resolutions", reasons), ("held_updates", updates))}

    async def record_audit(self, entry: audit.Entry) -> None:
        """An audit log entry, in this transaction (regsosek.audit)."""
        await audit.record(self.conn, entry)

    # ---------------------------------------------------------------- rows stored before pseudonymised events

    async def legacy_rows(self, limit: int) -> dict[str, list[asyncpg.Record]]:
        """Rows still holding identifiers in clear (stored before migration 004), at most `limit` per table,
        locked (skip locked: several converters or instances never wait on each other)."""
        return {
            "interviews": await self.conn.fetch(
                "select family_id, body from interviews where body is not null and (body->'location' ? 'kk_number' "
                "or body->'location' ? 'address' or body->'members'->0 ? 'name') "
                "order by family_id limit $1 for update skip locked", limit),
            "roster_history": await self.conn.fetch(
                "select sls_id, revision, body from roster_history where body ? 'confirmed_by' "
                "order by sls_id, revision limit $1 for update skip locked", limit),
            "roster_families": await self.conn.fetch(
                "select sls_id, building_no, family_no, kk_number from roster_families where kk_number is not null "
                "order by sls_id, building_no, family_no limit $1 for update skip locked", limit),
            "rosters": await self.conn.fetch(
                "select sls_id from rosters where confirmed_by is not null order by sls_id limit $1 "
                "for update skip locked", limit),
        }

    async def replace_legacy(self, interviews: list[tuple[str, dict]],
                             revisions: list[tuple[str, int, dict]], entries: list[tuple[str, int, int, str]],
                             rosters: list[str]) -> None:
        """Writes the pseudonymised forms of legacy rows (see verify.pseudonymise)."""
        if interviews:
            await self.conn.executemany("update interviews set body = $2 where family_id = $1", interviews)
        if revisions:
            await self.conn.executemany("update roster_history set body = $3 where sls_id = $1 and revision = $2",
                                        revisions)
        if entries:
            await self.conn.executemany("update roster_families set kk_hash = $4, kk_number = null "
                                        "where sls_id = $1 and building_no = $2 and family_no = $3", entries)
        if rosters:
            await self.conn.execute("update rosters set confirmed_by = null where sls_id = any($1::text[])", rosters)

    async def vacuum_legacy_tables(self) -> None:
        """Rewrites the tables that held identifiers in clear, so that dead tuples do not keep the
        old values (outside a transaction)."""
        for t in TABLES_WITH_LEGACY_ROWS:
            await self.conn.execute(f"vacuum full {t}")
