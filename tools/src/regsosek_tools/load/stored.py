"""Stored state in bulk: N more families in each service's own database, as the services wrote them.

The bench's stored phase (python -m regsosek_tools.bench --stored 0,200000,2000000) asks how the
pipeline's throughput holds up once millions of families are already stored. Pushing millions of
families through the pipeline would take hours; this writes them with PostgreSQL COPY instead
(asyncpg's copy_records_to_table), cloned from what the services themselves wrote in the same
world:

1. `Templates.read` takes every row the services have stored so far (the rosters and the families of
   the bench's warm-up and empty-store measurement) from every table of each service's database:
   intake's submissions and journey, verify's rosters, interviews, NIK claims and history, classify's
   profiles and decision order, notify's per-family decisions, deliveries and subscription families,
   and every service's inbox. Not cloned: what is not per family (schema_migrations, the outboxes,
   subscriptions, rankings, replay runs, areas waiting for a re-rank).
2. Each round k writes one copy of those rows under new identifiers (`Clone`): every template SLS
   becomes a new SLS (numbered from 1000; the sample draws 0001-0999) in a village `Villages`
   assigns, SLS_PER_VILLAGE to a village: first the villages the bench's own families live in (so
   their village-wide look-ups, e.g. verify's KK matching across the village's SLS, see a village's
   worth of stored neighbours, no more), then the province's other villages, then villages of other
   provinces (a national registry: most of it lies elsewhere). Family ids, prefix look-ups and every
   index thus see a registry of that size with a village's realistic density. Submission, event and
   erasure ids (UUIDs) and keyed hashes (NIK claims, KK hashes, content hashes) become new values
   derived from the old one and k, the same in every table and database, so what refers to what
   still does. Text and JSON holding the old SLS id get the new one. Serial ids are left to their
   sequences; other columns are copied as they are (decisions, versions, sealed bodies, times).

The families measured after a load are the bench's own new families in the bench's SLSes: their
rosters, NIK look-ups, SLS recounts, inbox checks and per-family rows land among the stored ones.
Stored families themselves are not read by the measured ones, except through those indexes.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import uuid_utils

# Tables that do not hold per-family state (or hold what the stored phase must not multiply).
NOT_CLONED = frozenset({"schema_migrations", "outbox", "outbox_rejected", "subscriptions", "rankings",
                        "replay_runs", "rerank_areas"})
KEPT_UUIDS = frozenset({"subscription_id"})  # refer to rows that are not cloned
EVENT_ID_COLUMNS = frozenset({"event_id", "message_id"})
SLS_DIGITS = 14  # 10-digit BPS village code + 4-digit SLS number
FIRST_STORED_SLS = 1000  # the sample's SLS numbers are 0001-0999 (regsosek_tools.sample)
SLS_PER_VILLAGE = 20  # stored SLS given to one village (assumed; Indonesia has ~84,000 villages)
# BPS province codes; villages of those other than the sample's (64) are made up: prov+regency+district+village
PROVINCES = ("11", "12", "13", "14", "15", "16", "17", "18", "19", "21", "31", "32", "33", "34", "35", "36", "51",
             "52", "53", "61", "62", "63", "65", "71", "72", "73", "74", "75", "76", "81", "82", "91", "92", "94")
COUNTED = ("verify", "interviews")  # one row per family interviewed: what "families stored" counts
MAX_TEMPLATE_FAMILIES = 3_000  # a round's families at most (whole SLS): what one round holds in memory


class TemplateTooSmall(RuntimeError):
    """The world holds no family to clone from."""


# ---------------------------------------------------------------- what each column becomes


@dataclass(frozen=True)
class Column:
    name: str
    udt: str  # PostgreSQL type name (information_schema.columns.udt_name)
    default: str | None = None

    @property
    def kind(self) -> str:
        """How a clone writes the column: serial (left to its sequence), family, sls, uuid, event,
        hash, text (the SLS id replaced inside) or keep."""
        if self.default and self.default.startswith("nextval("):
            return "serial"
        if self.name == "family_id":
            return "family"
        if self.name == "sls_id":
            return "sls"
        if self.udt == "uuid":
            return "keep" if self.name in KEPT_UUIDS else "uuid"
        if self.name in EVENT_ID_COLUMNS:
            return "event"
        if self.name.endswith("_hash"):
            return "hash"
        if self.udt in ("text", "varchar", "json", "jsonb"):
            return "text"
        return "keep"


def _salt(k: int) -> bytes:
    return k.to_bytes(4, "big")


def new_uuid(old: uuid.UUID, k: int) -> str:
    """Round k's UUID for `old`, as 32 hex digits (what COPY takes for a uuid column, cheaper than a UUID)."""
    return hashlib.blake2b(old.bytes + _salt(k), digest_size=16).hexdigest()


def new_event_id(old: str, k: int) -> str:
    """Round k's event id for `old`. A time-ordered id (UUID version 7) keeps its time, its first 48
    bits, so stored events stay where the services put them in their inbox and delivery indexes: before
    the events of the families measured later, as a registry's older events are."""
    digest = hashlib.blake2b(old.encode() + _salt(k), digest_size=16).digest()
    try:
        was = uuid.UUID(old)
    except ValueError:
        was = None
    if was is None or was.version != 7:
        return str(uuid.UUID(bytes=digest))
    # its time, then the digest with version 7 and the RFC 9562 variant set (uuid.UUID takes
    # version=7 only from Python 3.14)
    return str(uuid_utils.UUID(bytes=was.bytes[:6] + digest[6:], version=7))


def new_hash(old: bytes | str, k: int) -> bytes | str:
    """A keyed hash's stand-in for round k: as long as the old one, bytes or hex as it was."""
    if isinstance(old, bytes):
        return hashlib.blake2b(old + _salt(k), digest_size=min(max(len(old), 1), 64)).digest()[:len(old)]
    size = len(old) // 2
    if len(old) % 2 or not 1 <= size <= 64:
        return f"{old}~{k}"
    return hashlib.blake2b(old.encode() + _salt(k), digest_size=size).hexdigest()


class Villages:
    """Where stored SLS go: the template's villages first, then `others` (the province's other
    villages), then made-up villages of the other provinces; SLS_PER_VILLAGE in each."""

    def __init__(self, template_villages: Sequence[str], others: Sequence[str] = (),
                 per_village: int = SLS_PER_VILLAGE) -> None:
        first = sorted(set(template_villages))
        self.known = first + sorted(set(others) - set(first))
        self.per_village = per_village
        self._elsewhere = _made_up_villages()
        self._list = list(self.known)

    def village(self, i: int) -> str:
        while i >= len(self._list):
            self._list.append(next(self._elsewhere))
        return self._list[i]

    def sls(self, slot: int) -> str:
        """The stored SLS of a slot (0, 1, ...): SLS_PER_VILLAGE consecutive slots share a village."""
        return f"{self.village(slot // self.per_village)}{FIRST_STORED_SLS + slot % self.per_village:04d}"


def _made_up_villages() -> Iterator[str]:
    for prov in PROVINCES:
        for regency in range(1, 80):
            for district in range(10, 1000, 10):
                for village in range(1, 1000):
                    yield f"{prov}{regency:02d}{district:03d}{village:03d}"


def sls_numbers(template_sls: Sequence[str], k: int, villages: Villages) -> dict[str, str]:
    """Round k's SLS for each template SLS: the next len(template_sls) slots of `villages`."""
    ordered = sorted(set(template_sls))
    base = (k - 1) * len(ordered)
    return {s: villages.sls(base + i) for i, s in enumerate(ordered)}


class Clone:
    """One table's template rows, written again for round k under new identifiers."""

    def __init__(self, table: str, columns: Sequence[Column], rows: Sequence[Sequence[Any]]) -> None:
        self.table = table
        self.columns = [c for c in columns if c.kind != "serial"]
        keep = [i for i, c in enumerate(columns) if c.kind != "serial"]
        self.rows = [tuple(r[i] for i in keep) for r in rows]
        names = [c.name for c in self.columns]
        self._sls_at = names.index("sls_id") if "sls_id" in names else None
        self._family_at = names.index("family_id") if "family_id" in names else None

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.columns]

    def template_sls(self, row: Sequence[Any]) -> str | None:
        """The SLS a template row belongs to (its sls_id, else its family id's first 14 characters)."""
        if self._sls_at is not None and isinstance(row[self._sls_at], str):
            return row[self._sls_at]
        if self._family_at is not None and isinstance(row[self._family_at], str):
            return row[self._family_at][:SLS_DIGITS]
        return None

    def records(self, k: int, sls: dict[str, str]) -> Iterator[list]:
        """The template rows as round k writes them (`sls`: template SLS -> round k's SLS). Only the
        columns that change are touched (millions of rows go through here)."""
        changed = [(i, c.kind) for i, c in enumerate(self.columns) if c.kind not in ("keep", "serial")]
        texts = [i for i, kind in changed if kind == "text"]
        others = [(i, _REWRITE[kind]) for i, kind in changed if kind != "text"]
        for row in self.rows:
            out = list(row)
            for i, fn in others:
                if out[i] is not None:
                    out[i] = fn(out[i], k, sls)
            if texts and (old := self.template_sls(row)) and (new := sls.get(old)):
                for i in texts:
                    v = out[i]
                    if isinstance(v, str) and old in v:
                        out[i] = v.replace(old, new)
            yield out

    def rounds(self, ks: range, sls_of: Callable[[int], dict[str, str]]) -> Iterator[list]:
        for k in ks:
            yield from self.records(k, sls_of(k))


def _family(v: str, k: int, sls: dict[str, str]) -> str:
    own = sls.get(v[:SLS_DIGITS])  # a family's id starts with the SLS it was first listed in
    return own + v[SLS_DIGITS:] if own else f"{v}~{k}"


_REWRITE: dict[str, Callable[[Any, int, dict[str, str]], Any]] = {
    "family": _family,
    "sls": lambda v, k, sls: sls.get(v, v),
    "uuid": lambda v, k, sls: new_uuid(v, k),
    "event": lambda v, k, sls: new_event_id(v, k),
    "hash": lambda v, k, sls: new_hash(v, k),
}


# ---------------------------------------------------------------- the templates of a world


@dataclass
class Database:
    service: str
    dsn: str
    tables: list[Clone] = field(default_factory=list)


COLUMNS_SQL = """
select c.table_name, c.column_name, c.udt_name, c.column_default
  from information_schema.columns c
  join information_schema.tables t on t.table_schema = c.table_schema and t.table_name = c.table_name
 where c.table_schema = 'public' and t.table_type = 'BASE TABLE'
   and c.is_generated = 'NEVER' and c.is_identity = 'NO'
 order by c.table_name, c.ordinal_position
"""


class Templates:
    """What a world's services have stored, read once, and written again in rounds with COPY."""

    def __init__(self, databases: Sequence[Database], families_per_round: int) -> None:
        self.databases = list(databases)
        self.families_per_round = families_per_round
        self.template_sls = sorted({s for d in self.databases for t in d.tables for r in t.rows
                                    if (s := t.template_sls(r)) and len(s) == SLS_DIGITS and s.isdigit()})
        self.villages = Villages([s[:10] for s in self.template_sls], _province_villages())
        self.next_round = 1
        self.sls_of = functools.lru_cache(maxsize=16)(self._sls_of)  # the databases load the same rounds at once

    @classmethod
    async def read(cls, dsns: dict[str, str], *, max_families: int = MAX_TEMPLATE_FAMILIES) -> Templates:
        """The cloned tables' rows of each service database (`dsns`: service -> DSN), of whole SLS
        holding at most about `max_families` families (after a long run the world holds more than a
        round needs in memory); tables whose rows name no SLS or family (inboxes, the journey) give
        the same share of their rows."""
        import asyncpg

        sls, share = await _template_sls(dsns[COUNTED[0]], max_families)
        databases = []
        for service, dsn in dsns.items():
            conn = await asyncpg.connect(dsn, timeout=30)
            try:
                columns: dict[str, list[Column]] = {}
                for r in await conn.fetch(COLUMNS_SQL):
                    columns.setdefault(r["table_name"], []).append(Column(r["column_name"], r["udt_name"],
                                                                          r["column_default"]))
                db = Database(service, dsn)
                for table, cols in sorted(columns.items()):
                    if table not in NOT_CLONED and (rows := await _template_rows(conn, table, cols, sls, share)):
                        db.tables.append(Clone(table, cols, rows))
                databases.append(db)
            finally:
                await conn.close()
        per_round = next((len(t.rows) for d in databases if d.service == COUNTED[0] for t in d.tables
                          if t.table == COUNTED[1]), 0)
        if not per_round:
            raise TemplateTooSmall(f"no {COUNTED[0]}.{COUNTED[1]} rows to clone: the world has no family stored yet")
        return cls(databases, per_round)

    def _sls_of(self, k: int) -> dict[str, str]:
        return sls_numbers(self.template_sls, k, self.villages)

    def rounds_for(self, families: int) -> int:
        """Rounds that add at least `families` families."""
        return -(-max(families, 0) // self.families_per_round)

    async def load(self, families: int, *, log: Callable[[str], None] = lambda _: None) -> dict:
        """Adds at least `families` families (whole rounds) to every database, COPY per table, the
        databases at the same time; then VACUUM ANALYZE of the tables written (autovacuum's steady
        state, so the planner sees the sizes). Returns what was written and how long it took."""
        n = self.rounds_for(families)
        if n == 0:
            return {"rounds": 0, "families": 0, "rows": 0, "seconds": 0.0, "databases": {}}
        ks = range(self.next_round, self.next_round + n)
        self.next_round += n
        log(f"stored: writing {n} round(s) of {self.families_per_round} families with COPY "
            f"({', '.join(f'{d.service} {len(d.tables)} tables' for d in self.databases)})")
        t0 = time.monotonic()
        per_db = await asyncio.gather(*(self._load_database(d, ks, log) for d in self.databases))
        seconds = time.monotonic() - t0
        dbs = {d.service: r for d, r in zip(self.databases, per_db, strict=True)}
        rows = sum(r["rows"] for r in per_db)
        return {"rounds": n, "families": n * self.families_per_round, "rows": rows, "seconds": seconds,
                "rows_per_s": rows / seconds if seconds else None, "databases": dbs}

    async def _load_database(self, db: Database, ks: range, log: Callable[[str], None]) -> dict:
        import asyncpg

        conn = await asyncpg.connect(db.dsn, timeout=30)
        out: dict[str, Any] = {"rows": 0, "copy_s": 0.0, "vacuum_s": 0.0, "tables": {}}
        try:
            for t in db.tables:
                t0 = time.monotonic()
                await conn.copy_records_to_table(t.table, records=t.rounds(ks, self.sls_of), columns=t.names)
                took = time.monotonic() - t0
                rows = len(t.rows) * len(ks)
                out["tables"][t.table] = {"rows": rows, "seconds": round(took, 2)}
                out["rows"] += rows
                out["copy_s"] += took
                log(f"stored: {db.service}.{t.table} +{rows:,} rows in {took:.1f} s")
            t0 = time.monotonic()
            for t in db.tables:
                await conn.execute(f"vacuum (analyze) {_q(t.table)}")
            out["vacuum_s"] = time.monotonic() - t0
        finally:
            await conn.close()
        return out


def _province_villages() -> list[str]:
    """The villages of the area reference the sample draws from (regsosek.areas)."""
    from regsosek import areas

    return sorted(areas.reference().villages)


async def _template_sls(dsn: str, max_families: int) -> tuple[list[str], float]:
    """Whole SLS (in id order) until they hold `max_families` families, and their share of all families."""
    import asyncpg

    conn = await asyncpg.connect(dsn, timeout=30)
    try:
        counts = await conn.fetch(f"select sls_id, count(*) n from {_q(COUNTED[1])} group by sls_id order by sls_id")
    finally:
        await conn.close()
    chosen, families = [], 0
    for r in counts:
        if families >= max_families:
            break
        chosen.append(r["sls_id"])
        families += r["n"]
    total = sum(r["n"] for r in counts)
    return chosen, (families / total if total else 0.0)


async def _template_rows(conn, table: str, cols: Sequence[Column], sls: list[str], share: float) -> list:
    names = {c.name for c in cols}
    select = f'select {", ".join(_q(c.name) for c in cols)} from {_q(table)}'
    if "sls_id" in names:
        return await conn.fetch(f"{select} where sls_id = any($1::text[])", sls)
    if "family_id" in names:
        return await conn.fetch(f"{select} where left(family_id, {SLS_DIGITS}) = any($1::text[])", sls)
    total = await conn.fetchval(f"select count(*) from {_q(table)}")
    return await conn.fetch(f"{select} limit $1", round(total * share))


async def count_families(dsn: str) -> int:
    """Families stored in a world (rows of verify's interviews, one per family interviewed)."""
    import asyncpg

    conn = await asyncpg.connect(dsn, timeout=30)
    try:
        return int(await conn.fetchval(f"select count(*) from {_q(COUNTED[1])}"))
    finally:
        await conn.close()


async def database_sizes(dsns: dict[str, str]) -> dict[str, int]:
    """Bytes on disk of each service database."""
    import asyncpg

    out = {}
    for service, dsn in dsns.items():
        conn = await asyncpg.connect(dsn, timeout=30)
        try:
            out[service] = int(await conn.fetchval("select pg_database_size(current_database())"))
        finally:
            await conn.close()
    return out


async def table_reads(dsns: dict[str, str]) -> dict[str, dict[str, int]]:
    """Per "service.table", the server's counters of sequential scans and rows they read, and of
    index scans (pg_stat_user_tables): the difference over a measured step says which tables were
    read whole while the registry grew."""
    import asyncpg

    out: dict[str, dict[str, int]] = {}
    for service, dsn in dsns.items():
        conn = await asyncpg.connect(dsn, timeout=30)
        try:
            for r in await conn.fetch("select relname, seq_scan, seq_tup_read, coalesce(idx_scan, 0) idx_scan "
                                      "from pg_stat_user_tables"):
                out[f"{service}.{r['relname']}"] = {"seq_scan": r["seq_scan"], "seq_tup_read": r["seq_tup_read"],
                                                    "idx_scan": r["idx_scan"]}
        finally:
            await conn.close()
    return out


def reads_between(before: dict[str, dict[str, int]], after: dict[str, dict[str, int]], top: int = 6) -> list[dict]:
    """The tables read most by sequential scans between two `table_reads`, most rows first."""
    rows: list[dict[str, Any]] = []
    for table, a in after.items():
        b = before.get(table, {})
        d = {k: a[k] - b.get(k, 0) for k in a}
        if d["seq_tup_read"] > 0:
            rows.append({"table": table, **d})
    return sorted(rows, key=lambda r: -r["seq_tup_read"])[:top]


async def table_io(dsns: dict[str, str]) -> dict[str, dict[str, int]]:
    """Per "service.table", the server's counters of table and index blocks found in shared buffers (hit)
    and read from outside them (read: the kernel's page cache or the disk), from pg_statio_user_tables; and
    under "*.wal" the cluster's WAL counters (pg_stat_wal: records, full-page images, bytes; PostgreSQL does
    not count WAL per database)."""
    import asyncpg

    out: dict[str, dict[str, int]] = {}
    for service, dsn in dsns.items():
        conn = await asyncpg.connect(dsn, timeout=30)
        try:
            for r in await conn.fetch("select relname, coalesce(heap_blks_read, 0) + coalesce(idx_blks_read, 0) "
                                      "+ coalesce(toast_blks_read, 0) + coalesce(tidx_blks_read, 0) as blks_read, "
                                      "coalesce(heap_blks_hit, 0) + coalesce(idx_blks_hit, 0) "
                                      "+ coalesce(toast_blks_hit, 0) + coalesce(tidx_blks_hit, 0) as blks_hit "
                                      "from pg_statio_user_tables"):
                out[f"{service}.{r['relname']}"] = {"blks_read": r["blks_read"], "blks_hit": r["blks_hit"]}
            if "*.wal" not in out:
                w = await conn.fetchrow("select wal_records, wal_fpi, wal_bytes::bigint as wal_bytes from pg_stat_wal")
                out["*.wal"] = dict(w)
        finally:
            await conn.close()
    return out


def io_between(before: dict[str, dict[str, int]], after: dict[str, dict[str, int]], units: int,
               top: int = 6) -> dict[str, Any]:
    """What a measured step of `units` families cost the database in blocks and WAL, between two `table_io`:
    per family, blocks read from outside shared buffers and found in them, WAL records, full-page images and
    bytes; and the tables with the most blocks read, most first."""
    d = {t: {k: v - before.get(t, {}).get(k, 0) for k, v in a.items()} for t, a in after.items()}
    wal = d.pop("*.wal", {})
    read = sum(x["blks_read"] for x in d.values())
    hit = sum(x["blks_hit"] for x in d.values())
    per = max(units, 1)
    most = sorted((t for t, x in d.items() if x["blks_read"] > 0), key=lambda t: -d[t]["blks_read"])
    tables: list[dict[str, Any]] = [{"table": t, **d[t]} for t in most]
    return {"blks_read_per_family": read / per, "blks_hit_per_family": hit / per,
            "wal_records_per_family": wal.get("wal_records", 0) / per, "wal_fpi_per_family": wal.get("wal_fpi", 0) / per,
            "wal_bytes_per_family": wal.get("wal_bytes", 0) / per, "most_read": tables[:top]}


async def reset_statements(dsn: str) -> bool:
    """Empties pg_stat_statements (the server's, every database's) before a measured step; False when the
    server does not load it (shared_preload_libraries), so the step has no per-statement figures."""
    import asyncpg

    conn = await asyncpg.connect(dsn, timeout=30)
    try:
        if not await conn.fetchval("select 'pg_stat_statements' = any(string_to_array(current_setting("
                                   "'shared_preload_libraries'), ', '))"):
            return False
        await conn.execute("create extension if not exists pg_stat_statements")
        await conn.execute("select pg_stat_statements_reset()")
        return True
    finally:
        await conn.close()


async def top_statements(dsn: str, databases: list[str], units: int, top: int = 12) -> list[dict]:
    """The statements that took the most execution time in `databases` since `reset_statements`, per family
    (`units`): calls, execution ms and blocks read from outside shared buffers a family, and the statement's
    text as PostgreSQL normalised it (constants as $n: no values)."""
    import asyncpg

    conn = await asyncpg.connect(dsn, timeout=30)
    try:
        rows = await conn.fetch(
            "select d.datname, s.query, sum(s.calls)::bigint calls, sum(s.total_exec_time) ms, "
            "sum(s.shared_blks_read)::bigint blks_read, sum(s.shared_blks_hit)::bigint blks_hit "
            "from pg_stat_statements s join pg_database d on d.oid = s.dbid where d.datname = any($1::text[]) "
            "group by 1, 2 order by 4 desc limit $2", databases, top)
    finally:
        await conn.close()
    per = max(units, 1)
    return [{"database": r["datname"], "statement": " ".join(r["query"].split())[:300],
             "calls_per_family": r["calls"] / per, "exec_ms_per_family": r["ms"] / per,
             "blks_read_per_family": r["blks_read"] / per, "blks_hit_per_family": r["blks_hit"] / per}
            for r in rows]


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'
