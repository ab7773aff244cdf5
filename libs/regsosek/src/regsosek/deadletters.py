"""Operator command for the `dead-letter` topic: list, inspect and re-drive dead letters.

Why: a consumer dead-letters a record it cannot apply (bad envelope or body, unknown
type, a handler's permanent failure, e.g. a bug) so that its partition keeps flowing.
Once the cause is fixed (a redeploy, the missing data arrived), the record must reach
its service again, exactly as it was. This command re-produces the original key, value
and headers (without the `dlq_*` ones, plus `dlq_redriven_from=<partition:offset>`) to
the original topic through an idempotent producer with acks=all. The consumers' inbox
(which no longer keeps the id of a dead-lettered event) applies it once; re-driving it
again changes nothing.

Inspection never shows personal data in clear: record bodies (interviews, rosters)
carry NIK, KK numbers, names and dates of birth, so `show` masks every body value
except a small safelist of non-personal keys, and every free text printed is scrubbed
of long digit runs (NIK/KK are 16 digits). See docs/DEADLETTERS.md.

  python -m regsosek.deadletters list [--service S] [--topic T] [--reason-contains X] [--since ISO] [--json]
  python -m regsosek.deadletters show PARTITION:OFFSET [--json]
  python -m regsosek.deadletters redrive (PARTITION:OFFSET ... | --all | filters) [--dry-run]

Reads REGSOSEK_KAFKA_BOOTSTRAP, REGSOSEK_TOPIC_PREFIX and the TLS/SASL settings (REGSOSEK_KAFKA_SECURITY_PROTOCOL,
REGSOSEK_KAFKA_SASL_*, REGSOSEK_KAFKA_SSL_*; regsosek.kafka_security) like the services.

Audit: `show` and `redrive` touch citizens' records, so each is written to the audit log (regsosek.audit:
actor, action `deadletter.show` / `deadletter.redrive`, the address, no values) of the database named by
REGSOSEK_DATABASE_URL, before anything is shown or sent: the operator runs the command where the service
whose dead letters they handle runs, with its database. The actor is `--actor` or REGSOSEK_OPERATOR.
In production (REGSOSEK_ENV=production) both are required: no audit, no access. Locally, without them,
the command says it is not audited.
Exit codes: 0 done (also: nothing matched), 2 usage, 3 broker unavailable or topic
missing (nothing or only the listed part re-driven; re-driving again is safe),
4 no dead letter at an address, 5 refused (the dead letter names no known original topic).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import re
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError

from regsosek.kafka_security import InsecureKafkaSettings, KafkaClientSettings, client_options
from regsosek.settings import ServiceSettings
from regsosek.topics import Topic, topic_prefix, wire_name

log = logging.getLogger("regsosek.deadletters")

EXIT_OK, EXIT_USAGE, EXIT_BROKER, EXIT_NOT_FOUND, EXIT_REFUSED = 0, 2, 3, 4, 5

DLQ_PREFIX = "dlq_"
REDRIVEN_FROM = "dlq_redriven_from"

Headers = list[tuple[str, bytes | None]]
Address = tuple[int, int]


class CommandError(Exception):
    """A failure the operator can act on: its message says what to do, `code` is the exit code."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


# ---------------------------------------------------------------- what may be shown

_UUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
_SLS = re.compile(r"^[0-9]{14}$")
_FAMILY = re.compile(r"^[0-9]{14}-[0-9]{4}-[0-9]{3}$")
_TOKEN = re.compile(r"^[a-z0-9][a-z0-9_.\-]{0,39}$")  # an enumeration value or a version label
_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")  # a schema field name (a body's keys could be anything)
_LONG_DIGITS = re.compile(r"[0-9]{15,}")  # NIK and KK numbers are 16 digits; an SLS id is 14


def _is_uuid(v: Any) -> bool:
    return isinstance(v, str) and bool(_UUID.match(v))


def _is_count(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and 0 <= v < 1_000_000


def _is_token(v: Any) -> bool:
    return isinstance(v, str) and bool(_TOKEN.match(v))


# Body keys whose values are shown in clear, each with the check its value must pass
# (a value that fails it, e.g. a NIK typed into family_id, is masked like the rest).
# Ids of records and areas, counts, and process enumerations; nothing about a person
# (member attributes, housing, welfare group and decile of a family stay masked).
SAFE_KEYS: dict[str, Any] = {
    "submission_id": _is_uuid,
    "roster_submission_id": _is_uuid,
    "eligibility_event_id": _is_uuid,
    "subscription_id": _is_uuid,
    "family_id": lambda v: isinstance(v, str) and bool(_FAMILY.match(v)),
    "sls_id": lambda v: isinstance(v, str) and bool(_SLS.match(v)),
    "version": _is_count,
    "roster_revision": _is_count,
    "building_no": _is_count,
    "family_no": _is_count,
    "line_no": _is_count,
    "member_count": _is_count,
    "expected": _is_count,
    "interviewed": _is_count,
    "verified": _is_count,
    "flagged": _is_count,
    "absent": _is_count,
    "status": _is_token,  # roster: present/moved/dissolved/unknown/added
    "outcome": _is_token,  # verified/verified_added/...
    "decision": _is_token,  # supervisor: verify/reject
    "programme": _is_token,
    "model_version": _is_token,
    "rule_version": _is_token,
}

# Headers shown in clear (after scrubbing); any other header shows its name and length only.
_SHOWN_HEADERS = {"ce_id", "ce_type", "ce_source", "ce_specversion", "ce_time", "content-type", "traceparent"}


def scrub(text: str, limit: int = 500) -> str:
    """Free text fit for a terminal and a ticket: printable, bounded, no long digit runs."""
    text = "".join(c if c.isprintable() else "?" for c in text)
    text = _LONG_DIGITS.sub(lambda m: f"<{len(m.group())} digits>", text)
    return text if len(text) <= limit else text[:limit] + "…"


def _decoded(value: bytes | None) -> str | None:
    if value is None:
        return None
    try:
        return value.decode()
    except UnicodeDecodeError:
        return None


def mask_value(value: Any) -> Any:
    """A stand-in showing the type (and a string's length), never the content."""
    if value is None:
        return None
    if isinstance(value, bool):
        return "<bool>"
    if isinstance(value, int):
        return "<int>"
    if isinstance(value, float):
        return "<float>"
    if isinstance(value, str):
        return f"<str len={len(value)}>"
    if isinstance(value, list):
        return [mask_value(v) for v in value]
    if isinstance(value, dict):
        return mask_tree(value)
    return f"<{type(value).__name__}>"


def mask_tree(node: Any) -> Any:
    """A parsed JSON body with every value masked except safelisted keys that pass their check."""
    if isinstance(node, list):
        return [mask_tree(v) for v in node]
    if not isinstance(node, dict):
        return mask_value(node)
    out: dict[str, Any] = {}
    for i, (k, v) in enumerate(node.items()):
        key = k if isinstance(k, str) and _KEY.match(k) else f"<key #{i} len={len(str(k))}>"
        check = SAFE_KEYS.get(key)
        if check is not None and not isinstance(v, dict | list) and check(v):
            out[key] = v
        elif isinstance(v, dict | list):
            out[key] = mask_tree(v)
        else:
            out[key] = mask_value(v)
    return out


def mask_body(value: bytes | None) -> Any:
    if value is None:
        return None
    try:
        parsed = json.loads(value)
    except (UnicodeDecodeError, ValueError):
        return f"<not JSON: {len(value)} bytes>"
    return mask_tree(parsed)


def show_header(name: str, value: bytes | None) -> str:
    """One header's value as `show` prints it."""
    text = _decoded(value)
    size = 0 if value is None else len(value)
    if text is None:
        return f"<{size} bytes, not UTF-8>"
    if name.startswith(DLQ_PREFIX) or name in _SHOWN_HEADERS:
        return scrub(text)
    if name == "ce_subject":  # a family or SLS id; anything else in it is masked
        return text if _FAMILY.match(text) or _SLS.match(text) else f"<masked: str len={len(text)}>"
    return f"<masked: {size} bytes>"


# ---------------------------------------------------------------- dead letters


@dataclass(frozen=True, slots=True)
class DeadLetter:
    partition: int
    offset: int
    timestamp_ms: int
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes | None], ...]

    @classmethod
    def of(cls, record: Any) -> DeadLetter:
        return cls(record.partition, record.offset, record.timestamp, record.key, record.value,
                   tuple((k, v) for k, v in record.headers or ()))

    @property
    def address(self) -> str:
        return f"{self.partition}:{self.offset}"

    def header(self, name: str) -> str | None:
        """The last header of that name (a re-driven record dead-lettered again carries the newest last)."""
        found = None
        for k, v in self.headers:
            if k == name:
                found = _decoded(v)
        return found

    @property
    def time(self) -> datetime:
        return datetime.fromtimestamp(self.timestamp_ms / 1000, UTC)

    def summary(self) -> dict[str, Any]:
        """What `list` shows: address, origin, type and id, reason, when. No body, no key."""
        def text(name: str, limit: int = 200) -> str | None:
            v = self.header(name)
            return None if v is None else scrub(v, limit)

        def number(name: str) -> int | None:
            v = self.header(name)
            return int(v) if v is not None and v.isascii() and v.isdigit() else None

        return {
            "address": self.address,
            "partition": self.partition,
            "offset": self.offset,
            "time": self.time.isoformat(),
            "service": text("dlq_service", 64),
            "topic": text("dlq_topic", 249),
            "topic_partition": number("dlq_partition"),
            "topic_offset": number("dlq_offset"),
            "ce_type": text("ce_type"),
            "ce_id": text("ce_id"),
            "reason": text("dlq_reason", 500),
            "redriven_from": text(REDRIVEN_FROM, 40),
        }


@dataclass(frozen=True, slots=True)
class Filters:
    service: str | None = None
    topic: str | None = None
    reason_contains: str | None = None
    since: datetime | None = None

    @property
    def empty(self) -> bool:
        return not (self.service or self.topic or self.reason_contains or self.since)

    def matches(self, dl: DeadLetter, prefix: str) -> bool:
        if self.service is not None and dl.header("dlq_service") != self.service:
            return False
        if self.topic is not None and dl.header("dlq_topic") not in (self.topic, prefix + self.topic):
            return False
        if self.reason_contains is not None and self.reason_contains.lower() not in (dl.header("dlq_reason") or "").lower():
            return False
        return not (self.since is not None and dl.time < self.since)


def parse_address(text: str) -> Address:
    m = re.fullmatch(r"\s*(\d+):(\d+)\s*", text)
    if not m:
        raise CommandError(f"not a dead-letter address: {scrub(text, 40)!r} (expected PARTITION:OFFSET, "
                           "as printed by `list`)", EXIT_USAGE)
    return int(m.group(1)), int(m.group(2))


def parse_since(text: str) -> datetime:
    try:
        t = datetime.fromisoformat(text)
    except ValueError:
        raise CommandError(f"--since: not an ISO 8601 time: {scrub(text, 60)!r} (e.g. 2022-10-20T08:00:00+08:00)",
                           EXIT_USAGE) from None
    return t if t.tzinfo else t.replace(tzinfo=UTC)  # a time without offset is UTC


def redrive_headers(headers: Iterable[tuple[str, bytes | None]], address: str) -> Headers:
    """The original headers, in order, without the dead-letter ones, plus where it came from."""
    kept = [(k, v) for k, v in headers if not k.startswith(DLQ_PREFIX)]
    return kept + [(REDRIVEN_FROM, address.encode())]


def redrive_target(dl: DeadLetter, prefix: str) -> str:
    """The dead letter's original topic, if it is one of this environment's topics."""
    topic = dl.header("dlq_topic")
    names = {t.value for t in Topic if t is not Topic.DEAD_LETTER}
    if topic is None or not topic.startswith(prefix) or topic[len(prefix):] not in names:
        shown = "none" if topic is None else repr(scrub(topic, 249))
        raise CommandError(f"dead letter {dl.address}: its dlq_topic header ({shown}) is not a topic of this "
                           f"environment (prefix {prefix!r}); not re-driven", EXIT_REFUSED)
    return topic


# ---------------------------------------------------------------- Kafka


class Broker:
    """The dead-letter topic of one environment, read with a group-less consumer (it
    commits nothing and joins no group, so it never disturbs the services)."""

    def __init__(self, bootstrap: str, prefix: str, timeout_s: float,
                 security: KafkaClientSettings | None = None) -> None:
        self.bootstrap, self.prefix, self.timeout_s = bootstrap, prefix, timeout_s
        self.security = security  # TLS and SASL (regsosek.kafka_security); None: from the environment
        self.topic = wire_name(Topic.DEAD_LETTER.value, prefix)
        self.consumer: Any = None
        self.partitions: list[int] = []
        self.existing: set[str] = set()

    async def __aenter__(self) -> Broker:
        self.consumer = AIOKafkaConsumer(bootstrap_servers=self.bootstrap, group_id=None, enable_auto_commit=False,
                                         auto_offset_reset="earliest", request_timeout_ms=int(self.timeout_s * 1000),
                                         **client_options(self.security))
        try:
            await asyncio.wait_for(self.consumer.start(), self.timeout_s)
            self.existing = set(await asyncio.wait_for(self.consumer.topics(), self.timeout_s))
        except (KafkaError, OSError, TimeoutError) as e:
            await self.consumer.stop()
            raise CommandError(f"cannot reach Kafka at {self.bootstrap} ({type(e).__name__}); check "
                               "REGSOSEK_KAFKA_BOOTSTRAP and that the broker is up", EXIT_BROKER) from e
        if self.topic not in self.existing:
            await self.consumer.stop()
            raise CommandError(f"topic {self.topic!r} does not exist on {self.bootstrap}; check "
                               "REGSOSEK_TOPIC_PREFIX", EXIT_BROKER)
        admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap, request_timeout_ms=int(self.timeout_s * 1000),
                                    **client_options(self.security))
        try:
            await asyncio.wait_for(admin.start(), self.timeout_s)
            (described,) = await asyncio.wait_for(admin.describe_topics([self.topic]), self.timeout_s)
        except (KafkaError, OSError, TimeoutError) as e:
            await self.consumer.stop()
            raise CommandError(f"cannot describe {self.topic!r} on {self.bootstrap} ({type(e).__name__}); "
                               "try again", EXIT_BROKER) from e
        finally:
            await admin.close()
        self.partitions = sorted(p["partition"] for p in described.get("partitions") or ())
        if not self.partitions:
            await self.consumer.stop()
            raise CommandError(f"topic {self.topic!r} has no partitions visible on {self.bootstrap}; try again",
                               EXIT_BROKER)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.consumer.stop()

    def _tp(self, partition: int) -> TopicPartition:
        return TopicPartition(self.topic, partition)

    async def read_all(self) -> list[DeadLetter]:
        """Every dead letter from the earliest retained offset to the end offsets taken now."""
        tps = [self._tp(p) for p in self.partitions]
        c = self.consumer
        c.assign(tps)
        await c.seek_to_beginning(*tps)
        end = await c.end_offsets(tps)
        out: list[DeadLetter] = []
        deadline = asyncio.get_running_loop().time() + max(self.timeout_s, 60.0)
        while behind := [tp for tp in tps if await c.position(tp) < end[tp]]:
            if asyncio.get_running_loop().time() > deadline:
                raise CommandError(f"could not read {self.topic} to its end in time; the broker may be "
                                   "overloaded, try again", EXIT_BROKER)
            for recs in (await c.getmany(*behind, timeout_ms=500)).values():
                out.extend(DeadLetter.of(r) for r in recs if r.offset < end[self._tp(r.partition)])
        return sorted(out, key=lambda d: (d.partition, d.offset))

    async def read_at(self, addresses: Sequence[Address]) -> dict[Address, DeadLetter | None]:
        """The dead letters at these addresses (None: no record there, e.g. deleted by retention)."""
        c = self.consumer
        tps = sorted({self._tp(p) for p, _ in addresses if p in self.partitions}, key=lambda tp: tp.partition)
        found: dict[Address, DeadLetter | None] = {a: None for a in addresses}
        if not tps:
            return found
        c.assign(tps)
        begin, end = await c.beginning_offsets(tps), await c.end_offsets(tps)
        for p, o in addresses:
            tp = self._tp(p)
            if tp not in end or not begin[tp] <= o < end[tp]:
                continue
            c.seek(tp, o)
            deadline = asyncio.get_running_loop().time() + self.timeout_s
            while await c.position(tp) <= o and asyncio.get_running_loop().time() < deadline:
                for r in (await c.getmany(tp, timeout_ms=500)).get(tp, []):
                    if r.offset == o:
                        found[(p, o)] = DeadLetter.of(r)
        return found


# ---------------------------------------------------------------- commands


def _print_table(rows: list[dict[str, Any]]) -> None:
    for r in rows:
        origin = f"{r['topic']}[{r['topic_partition']}]@{r['topic_offset']}"
        again = f" (re-driven from {r['redriven_from']})" if r["redriven_from"] else ""
        print(f"{r['address']:>10}  {r['time'][:19]}Z  {r['service'] or '-'}  {origin}  {r['ce_type'] or '-'}  "
              f"ce_id={r['ce_id'] or '-'}{again}\n{'':>12}reason: {r['reason'] or '-'}")


async def cmd_list(broker: Broker, filters: Filters, as_json: bool) -> int:
    rows = [d.summary() for d in await broker.read_all() if filters.matches(d, broker.prefix)]
    if as_json:
        for r in rows:
            print(json.dumps(r, ensure_ascii=False))
    else:
        _print_table(rows)
        print(f"{len(rows)} dead letter(s) on {broker.topic}" + ("" if filters.empty else " matching the filters"),
              file=sys.stderr)
    return EXIT_OK


def _shown(dl: DeadLetter) -> dict[str, Any]:
    key = _decoded(dl.key)
    return {
        "address": dl.address,
        "time": dl.time.isoformat(),
        "key": None if dl.key is None else key if key is not None and _SLS.match(key)
        else f"<masked: {len(dl.key)} bytes>",
        "headers": [[k if _KEY.match(k.replace("-", "_")) else "<header>", show_header(k, v)] for k, v in dl.headers],
        "body": mask_body(dl.value),
        "body_bytes": None if dl.value is None else len(dl.value),
    }


async def cmd_show(broker: Broker, address: Address, as_json: bool, auditor: Auditor) -> int:
    dl = (await broker.read_at([address]))[address]
    if dl is None:
        raise CommandError(f"no dead letter at {address[0]}:{address[1]} on {broker.topic} (see `list` for "
                           "addresses; retention may have removed it)", EXIT_NOT_FOUND)
    await auditor.record("deadletter.show", [dl.address])
    shown = _shown(dl)
    if as_json:
        print(json.dumps(shown, ensure_ascii=False, indent=2))
        return EXIT_OK
    print(f"dead letter {shown['address']} on {broker.topic}, written {shown['time']}")
    print(f"key: {shown['key']}")
    print("headers:")
    for k, v in shown["headers"]:
        print(f"  {k}: {v}")
    print(f"body ({shown['body_bytes']} bytes; values masked except {', '.join(sorted(SAFE_KEYS))}):")
    print(json.dumps(shown["body"], ensure_ascii=False, indent=2))
    return EXIT_OK


async def cmd_redrive(broker: Broker, addresses: list[Address], filters: Filters, dry_run: bool,
                      auditor: Auditor) -> int:
    if addresses:
        found = await broker.read_at(addresses)
        missing = [f"{p}:{o}" for (p, o), d in found.items() if d is None]
        if missing:
            raise CommandError(f"no dead letter at {', '.join(missing)} on {broker.topic}; nothing re-driven "
                               "(see `list` for addresses)", EXIT_NOT_FOUND)
        chosen = [d for d in found.values() if d is not None]
    else:
        chosen = [d for d in await broker.read_all() if filters.matches(d, broker.prefix)]
    if not chosen:
        print("no dead letters match; nothing re-driven", file=sys.stderr)
        return EXIT_OK
    # Check every target before sending anything: all or nothing for what the operator can get wrong.
    plan = [(d, redrive_target(d, broker.prefix)) for d in chosen]
    for d, topic in plan:
        if topic not in broker.existing:
            raise CommandError(f"dead letter {d.address}: original topic {topic!r} does not exist; nothing "
                               "re-driven", EXIT_BROKER)
    if dry_run:
        for d, topic in plan:
            s = d.summary()
            print(f"would re-drive {d.address} -> {topic}  {s['ce_type'] or '-'}  ce_id={s['ce_id'] or '-'}")
        print(f"dry run: {len(plan)} dead letter(s) would be re-driven", file=sys.stderr)
        return EXIT_OK
    await auditor.record("deadletter.redrive", [d.address for d, _ in plan])

    producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap, acks="all", enable_idempotence=True, linger_ms=0,
                                max_request_size=max([1_048_576] + [len(d.value or b"") + 65_536 for d, _ in plan]),
                                request_timeout_ms=int(broker.timeout_s * 1000), **client_options(broker.security))
    done = 0
    try:
        await asyncio.wait_for(producer.start(), broker.timeout_s)
        for d, topic in plan:
            md = await asyncio.wait_for(
                producer.send_and_wait(topic, value=d.value, key=d.key, headers=redrive_headers(d.headers, d.address)),
                broker.timeout_s)
            done += 1
            s = d.summary()
            print(f"re-driven {d.address} -> {topic}[{md.partition}]@{md.offset}  {s['ce_type'] or '-'}  "
                  f"ce_id={s['ce_id'] or '-'}", flush=True)
    except (KafkaError, OSError, TimeoutError) as e:
        raise CommandError(f"re-drive stopped after {done} of {len(plan)} ({type(e).__name__}): those printed above "
                           "were sent; run the same command again (consumers apply an event id once)",
                           EXIT_BROKER) from e
    finally:
        await producer.stop()
    print(f"{done} dead letter(s) re-driven", file=sys.stderr)
    return EXIT_OK


# ---------------------------------------------------------------- CLI


class Auditor:
    """Writes the command's audit entries into the audit_log of REGSOSEK_DATABASE_URL's database."""

    def __init__(self, settings: ServiceSettings, actor: str | None) -> None:
        self.settings, self.actor = settings, actor
        self.conn: Any = None
        production = settings.env.strip().lower() == "production"
        if production and (not actor or not settings.database_url):
            raise CommandError("in production, show and redrive are audited: give --actor (or REGSOSEK_OPERATOR) "
                               "and run where REGSOSEK_DATABASE_URL names the service's database", EXIT_USAGE)

    @property
    def enabled(self) -> bool:
        return bool(self.actor and self.settings.database_url)

    async def __aenter__(self) -> Auditor:
        if not self.enabled:
            print("not audited: no --actor / REGSOSEK_OPERATOR or no REGSOSEK_DATABASE_URL (required in production)",
                  file=sys.stderr)
            return self
        import asyncpg

        from regsosek.db import init_connection

        try:
            self.conn = await asyncpg.connect(self.settings.database_url, timeout=10)
            await init_connection(self.conn)  # jsonb as the services write it
        except (OSError, asyncpg.PostgresError) as e:
            raise CommandError(f"the audit log's database is unreachable ({type(e).__name__}); nothing shown or "
                               "re-driven", EXIT_BROKER) from e
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self.conn is not None:
            await self.conn.close()

    async def record(self, action: str, addresses: Iterable[str], **detail: Any) -> None:
        """One entry per address, in one transaction, before the action happens."""
        if self.conn is None:
            return
        from regsosek import audit

        entries = [audit.entry(self.actor or "", "operator", action, "dead_letter", a, detail=detail) for a in addresses]
        async with self.conn.transaction():
            for e in entries:
                await audit.record(self.conn, e)


def _add_filters(p: argparse.ArgumentParser) -> None:
    p.add_argument("--service", help="the service that dead-lettered it (dlq_service), e.g. verify")
    p.add_argument("--topic", help="its original topic, with or without the prefix, e.g. interview-submitted")
    p.add_argument("--reason-contains", help="case-insensitive text in dlq_reason")
    p.add_argument("--since", help="dead-lettered at or after this ISO 8601 time (UTC if no offset)")


def _filters(a: argparse.Namespace) -> Filters:
    return Filters(a.service, a.topic, a.reason_contains, parse_since(a.since) if a.since else None)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m regsosek.deadletters",
                                description="List, inspect (masked) and re-drive dead letters. Environment: "
                                            "REGSOSEK_KAFKA_BOOTSTRAP, REGSOSEK_TOPIC_PREFIX.")
    p.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for the broker (default 30)")
    p.add_argument("--actor", default=os.environ.get("REGSOSEK_OPERATOR") or None,
                   help="who runs the command, for the audit log (default REGSOSEK_OPERATOR)")
    sub = p.add_subparsers(dest="cmd", required=True)
    ls = sub.add_parser("list", help="dead letters with address, origin, type, id and reason")
    _add_filters(ls)
    ls.add_argument("--json", action="store_true", help="one JSON object per line")
    sh = sub.add_parser("show", help="one dead letter, headers and masked body")
    sh.add_argument("address", help="PARTITION:OFFSET as printed by list")
    sh.add_argument("--json", action="store_true")
    rd = sub.add_parser("redrive", help="re-produce dead letters to their original topics")
    rd.add_argument("addresses", nargs="*", help="PARTITION:OFFSET ... (or use filters / --all)")
    _add_filters(rd)
    rd.add_argument("--all", action="store_true", help="every dead letter (when no address or filter is given)")
    rd.add_argument("--dry-run", action="store_true", help="print what would be re-driven, send nothing")
    return p


async def run(a: argparse.Namespace) -> int:
    settings = ServiceSettings(service_name="deadletters")
    if a.cmd == "redrive":
        filters = _filters(a)
        addresses = [parse_address(x) for x in a.addresses]
        if addresses and not filters.empty:
            raise CommandError("give addresses or filters, not both", EXIT_USAGE)
        if not addresses and filters.empty and not a.all:
            raise CommandError("nothing selected: give PARTITION:OFFSET addresses, filters, or --all", EXIT_USAGE)
    elif a.cmd == "show":
        address = parse_address(a.address)
    else:
        filters = _filters(a)
    if a.cmd == "list":
        async with Broker(settings.kafka_bootstrap, topic_prefix(), a.timeout, settings) as broker:
            return await cmd_list(broker, filters, a.json)
    async with Auditor(settings, a.actor) as auditor, \
            Broker(settings.kafka_bootstrap, topic_prefix(), a.timeout, settings) as broker:
        if a.cmd == "show":
            return await cmd_show(broker, address, a.json, auditor)
        return await cmd_redrive(broker, addresses, filters, a.dry_run, auditor)


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s")
    a = parser().parse_args(argv)
    try:
        return asyncio.run(run(a))
    except CommandError as e:
        print(f"error: {e}", file=sys.stderr)
        return e.code
    except InsecureKafkaSettings as e:  # names the setting, never a value
        print(f"error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except KafkaError as e:
        log.error("Kafka failed", exc_info=True)
        print(f"error: Kafka failed ({type(e).__name__}); check the broker at REGSOSEK_KAFKA_BOOTSTRAP and run the "
              "command again (re-driving twice is safe)", file=sys.stderr)
        return EXIT_BROKER
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception:
        log.exception("unexpected failure (a bug: please report it with this trace)")
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
