"""Run the whole pipeline on a synthetic sample and report what came out.

On a local stack that is already up (bash scripts/stack.sh up), this starts intake,
verify, classify, notify, the operations console and the reference programme receiver,
subscribes the receiver at notify, submits the SLS rosters and then the family interviews through
intake's HTTP API (as the officers of each SLS, some one by one, some in batches),
follows every submission until it reaches a final state, and prints a summary:
verification outcomes against the sample's expectations, welfare groups, deciles,
eligibility per programme, events at the receiver, throughput and latency.

    python -m regsosek_tools.run --families 500 --seed 7
    python -m regsosek_tools.run --families 200 --serve     # then keep everything running
    python -m regsosek_tools.run --families 0 --serve       # only start and serve

Exit status: 0 when every family reached a final state, every outcome matched the
expectation and (with notify) every new decision reached the receiver; 1 otherwise;
2 when the run could not start.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.util
import json
import os
import signal
import sys
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path

import httpx

from regsosek.auth import Role, mint
from regsosek.contracts import FamilyInterview
from regsosek.contracts.interview import DIFFICULTY_MIN_AGE, Diploma, Industry, current_codes
from regsosek.programmes import PROGRAMME_CODES
from regsosek.progress import Progress
from regsosek_tools import living
from regsosek_tools import receiver as receiver_mod
from regsosek_tools.consultation import consultation_ok, forum_plans, hold_forums, print_consultation
from regsosek_tools.processes import DEFAULT_PORTS, ROOT, ServiceNotReady, ServiceProcess, pipeline, port_in_use, running
from regsosek_tools.report.run import dist, print_report
from regsosek_tools.sample import Sample, generate, officer_areas, officer_for
from regsosek_tools.world import Stack, StackDown, local_auth_env

RUNNER_PROGRAMME = "programme-reference-receiver"


class SetupError(Exception):
    """The run could not start: the stack, a service or the subscription is missing."""


@dataclass
class Track:
    """One interview's way through the pipeline, as seen from outside."""

    iv: FamilyInterview
    expected: str
    via: str = ""  # single | batch
    sent_at: float | None = None
    receipt: str | None = None  # accepted | duplicate_of_earlier_receipt | error
    error: str | None = None
    final: str | None = None  # decided | flagged | accounted (a non-response: no verdict by design)
    final_at: float | None = None
    outcome: str | None = None  # verification outcome or flag reason
    welfare_group: int | None = None
    decile: int | None = None
    # the group of the family's first classification (the census's): what the village forums' plan
    # starts from, so that a run again plans the same decisions (a group change of the first run
    # shows in welfare_group, the latest)
    census_group: int | None = None
    eligible: list[str] = field(default_factory=list)
    complete: bool = False
    received_ts: datetime | None = None  # intake's receipt time (server clock)
    final_ts: datetime | None = None  # when the final step happened (the deciding service's clock)
    polls: int = 0
    next_poll: float = 0.0

    @property
    def submission_id(self) -> str:
        return str(self.iv.submission_id)

    @property
    def family_id(self) -> str:
        return self.iv.family_id


@dataclass
class Endpoints:
    intake: str
    notify: str
    receiver: str
    callback: str
    console: str = ""
    classify: str = ""
    verify: str = ""


class Tokens:
    """Tokens signed with the local key pair (.local/auth/, made on first use), as `make token` makes them."""

    def __init__(self) -> None:
        self._officers: dict[str, str] = {}
        self.admin = mint(subject="pipeline-runner", role=Role.ADMIN, areas=[])
        # the reference receiver stands for every programme, in East Kalimantan (64)
        self.programme = mint(subject=RUNNER_PROGRAMME, role=Role.PROGRAMME, areas=["64"],
                              programmes=list(PROGRAMME_CODES))

    def officer(self, officer_id: str) -> str:
        if officer_id not in self._officers:
            self._officers[officer_id] = mint(subject=officer_id, role=Role.OFFICER,
                                              areas=officer_areas(officer_id))
        return self._officers[officer_id]


def _auth(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


async def _post(client: httpx.AsyncClient, url: str, body: dict, token: str, attempts: int = 6) -> httpx.Response:
    """POST with retries on connection errors, 5xx and 429 (submissions are idempotent)."""
    delay = 0.2
    for i in range(attempts):
        try:
            r = await client.post(url, json=body, headers=_auth(token))
            if r.status_code < 500 and r.status_code != 429:
                return r
            if i == attempts - 1:
                return r
        except httpx.TransportError:
            if i == attempts - 1:
                raise
        await asyncio.sleep(delay)
        delay = min(delay * 2, 3.0)
    raise AssertionError("unreachable")


def _parse_ts(value) -> datetime | None:
    try:
        return datetime.fromisoformat(value) if isinstance(value, str) else None
    except ValueError:
        return None


class Runner:
    def __init__(self, sample: Sample, ep: Endpoints, tokens: Tokens, *, concurrency: int, batch_every: int,
                 batch_size: int, timeout: float, notify: bool, poll_interval: float, poll_max: float,
                 quiet: bool) -> None:
        self.sample, self.ep, self.tokens = sample, ep, tokens
        self.concurrency, self.batch_every, self.batch_size = concurrency, batch_every, batch_size
        self.timeout, self.notify, self.quiet = timeout, notify, quiet
        self.poll_interval, self.poll_max = poll_interval, poll_max
        self.tracks = {str(iv.submission_id): Track(iv, sample.expected[iv.family_id]) for iv in sample.interviews}
        self.by_family = {t.family_id: t for t in self.tracks.values()}
        self.sem = asyncio.Semaphore(concurrency)  # submissions
        self.poll_sem = asyncio.Semaphore(max(4, concurrency // 2))  # status polls: not queued behind submissions
        self.roster_receipts: Counter[str] = Counter()
        self.errors: list[str] = []
        self.first_sent: float | None = None
        self.all_sent = asyncio.Event()
        self.polls = 0
        self.receiver_stats: dict = {}
        self.receiver_families: dict = {}
        self.subscription_id: str | None = None
        self._last_progress = 0.0
        self._bar: Progress | None = None  # regsosek.progress, made on the first progress()
        self.t0 = time.monotonic()
        self.cpu0 = time.process_time()

    # ------------------------------------------------------------ subscription

    async def subscribe(self, client: httpx.AsyncClient, secret: str) -> str:
        base = f"{self.ep.notify}/v1/subscriptions"
        try:
            r = await client.get(base, headers=_auth(self.tokens.programme))
        except httpx.TransportError as e:
            raise SetupError(f"notify is not reachable at {self.ep.notify} ({type(e).__name__}); "
                             "start it, or run with --no-notify") from None
        if r.status_code == 404:
            raise SetupError(f"notify at {self.ep.notify} has no subscription API yet (404); run with --no-notify")
        if r.status_code == 200:  # remove what an earlier run of this tool left behind
            for s in r.json().get("subscriptions", []):
                if s.get("callback_url") == self.ep.callback and s.get("owner") == RUNNER_PROGRAMME:
                    await client.delete(f"{base}/{s['id']}", headers=_auth(self.tokens.programme))
        body = {"callback_url": self.ep.callback, "secret": secret,
                "filters": {"programmes": [], "area_prefixes": ["64"], "welfare_groups": [],
                            "event_types": ["eligibility-decided"]}}
        r = await client.post(base, json=body, headers=_auth(self.tokens.programme))
        if r.status_code != 201:
            raise SetupError(f"creating the subscription at notify failed: HTTP {r.status_code} {r.text[:300]}")
        self.subscription_id = r.json()["id"]
        return self.subscription_id

    async def unsubscribe(self, client: httpx.AsyncClient) -> None:
        if self.subscription_id:
            with contextlib.suppress(httpx.HTTPError):
                await client.delete(f"{self.ep.notify}/v1/subscriptions/{self.subscription_id}",
                                    headers=_auth(self.tokens.programme))

    # ------------------------------------------------------------ submission

    async def submit_rosters(self, client: httpx.AsyncClient) -> None:
        async def one(roster) -> None:
            async with self.sem:
                try:
                    r = await _post(client, f"{self.ep.intake}/v1/rosters", roster.model_dump(mode="json"),
                                    self.tokens.officer(roster.officer_id))
                except httpx.HTTPError as e:
                    self.roster_receipts["error"] += 1
                    self.errors.append(f"roster {roster.sls_id}: {type(e).__name__}")
                    return
            if r.status_code in (200, 202):
                self.roster_receipts[r.json().get("status", "accepted")] += 1
            else:
                self.roster_receipts["error"] += 1
                self.errors.append(f"roster {roster.sls_id}: HTTP {r.status_code} {r.text[:300]}")

        await asyncio.gather(*(one(r) for r in self.sample.rosters))

    def _receipt(self, t: Track, status: int, body: dict) -> None:
        if status in (200, 202):
            t.receipt = body.get("status", "accepted")
            t.next_poll = time.monotonic() + self.poll_interval
            if not t.iv.result.responded:
                # a refusal (moved, not found, ...) gets no verdict: verify counts it in its SLS's progress
                t.final, t.final_at, t.outcome, t.complete = "accounted", time.monotonic(), t.iv.result.value, True
        else:
            t.receipt, t.error = "error", f"HTTP {status}: {json.dumps(body)[:400]}"
            t.complete = True
            self.errors.append(f"interview {t.family_id}: {t.error}")

    async def submit_interviews(self, client: httpx.AsyncClient, interviews: list[FamilyInterview]) -> None:
        """Interviews of every `batch_every`-th SLS go as batches (offline upload), the rest one by one."""
        sls_index = {r.sls_id: i for i, r in enumerate(self.sample.rosters)}
        singles: list[FamilyInterview] = []
        batches: dict[str, list[FamilyInterview]] = {}
        for iv in interviews:
            sid = iv.location.sls_id
            if self.batch_every and sls_index[sid] % self.batch_every == self.batch_every - 1:
                batches.setdefault(sid, []).append(iv)
            else:
                singles.append(iv)

        async def single(iv: FamilyInterview) -> None:
            t = self.tracks[str(iv.submission_id)]
            async with self.sem:
                t.via, t.sent_at = "single", time.monotonic()
                self.first_sent = self.first_sent or t.sent_at
                try:
                    r = await _post(client, f"{self.ep.intake}/v1/interviews", iv.model_dump(mode="json"),
                                    self.tokens.officer(iv.officer_id))
                    self._receipt(t, r.status_code, r.json())
                except (httpx.HTTPError, ValueError) as e:
                    self._receipt(t, 0, {"error": type(e).__name__})

        async def batch(ivs: list[FamilyInterview]) -> None:
            ts = [self.tracks[str(iv.submission_id)] for iv in ivs]
            async with self.sem:
                now = time.monotonic()
                self.first_sent = self.first_sent or now
                for t in ts:
                    t.via, t.sent_at = "batch", now
                try:
                    r = await _post(client, f"{self.ep.intake}/v1/interviews:batch",
                                    {"interviews": [iv.model_dump(mode="json") for iv in ivs]},
                                    self.tokens.officer(ivs[0].officer_id))
                    body = r.json()
                except (httpx.HTTPError, ValueError) as e:
                    r, body = None, {"error": type(e).__name__}
            if r is None or r.status_code != 200:
                for t in ts:
                    self._receipt(t, r.status_code if r is not None else 0, body)
                return
            for item in body["results"]:
                self._receipt(ts[item["index"]], item["status"], item.get("receipt", item))

        jobs = [single(iv) for iv in singles]
        for ivs in batches.values():
            jobs += [batch(ivs[i:i + self.batch_size]) for i in range(0, len(ivs), self.batch_size)]
        await asyncio.gather(*jobs)

    async def submit_all(self, client: httpx.AsyncClient) -> None:
        try:
            first, second = self.sample.waves()
            await self.submit_interviews(client, first)
            if second:
                # A duplicate NIK is flagged on the family that claims it second: wait for the first ones.
                donors = [self.by_family[f] for f in set(self.sample.depends_on.values())]
                deadline = time.monotonic() + self.timeout
                while time.monotonic() < deadline:
                    if all(d.final or d.receipt == "error" for d in donors):
                        break
                    await asyncio.sleep(0.1)
                await self.submit_interviews(client, second)
        finally:
            self.all_sent.set()

    # ------------------------------------------------------------ following

    def _apply(self, t: Track, body: dict) -> None:
        steps = {s["step"]: s for s in body.get("journey", [])}
        t.received_ts = t.received_ts or _parse_ts(body.get("received_at"))
        if body.get("final") and t.final is None:
            t.final, t.final_at = body["final"], time.monotonic()
            t.final_ts = _parse_ts(steps.get("eligibility" if t.final == "decided" else "flagged", {}).get("at"))
        if "verified" in steps:
            t.outcome = steps["verified"].get("outcome")
        elif "flagged" in steps:
            t.outcome = steps["flagged"].get("reason")
        if "classified" in steps:
            t.welfare_group, t.decile = steps["classified"].get("welfare_group"), steps["classified"].get("decile")
            t.census_group = next(s for s in body["journey"] if s["step"] == "classified").get("welfare_group")
        if "eligibility" in steps:
            t.eligible = sorted(steps["eligibility"].get("eligible") or [])
        if t.final == "flagged" or (t.final == "decided" and "verified" in steps and "classified" in steps):
            t.complete = True

    async def follow(self, client: httpx.AsyncClient) -> None:
        """Poll each submission's status until it is final, backing off per submission
        (poll_interval growing to poll_max) so that thousands in flight stay cheap."""
        deadline = time.monotonic() + self.timeout
        headers = _auth(self.tokens.admin)

        async def poll(t: Track) -> None:
            async with self.poll_sem:
                with contextlib.suppress(httpx.HTTPError, ValueError):
                    r = await client.get(f"{self.ep.intake}/v1/submissions/{t.submission_id}", headers=headers)
                    if r.status_code == 200:
                        self._apply(t, r.json())
            self.polls += 1
            t.polls += 1
            # Decided but a step not yet recorded: it is moments away, look again soon.
            wait = self.poll_interval if t.final else min(self.poll_max, self.poll_interval * 1.5 ** t.polls)
            t.next_poll = time.monotonic() + wait

        last_receiver = 0.0
        while True:
            now = time.monotonic()
            pending = [t for t in self.tracks.values() if t.receipt and t.receipt != "error" and not t.complete]
            if (not pending and self.all_sent.is_set()) or now > deadline:
                break
            due = [t for t in pending if t.next_poll <= now]
            if due:
                await asyncio.gather(*(poll(t) for t in due))
            if self.notify and time.monotonic() - last_receiver > 1.0:
                last_receiver = time.monotonic()
                with contextlib.suppress(httpx.HTTPError, ValueError):
                    self.receiver_stats = (await client.get(f"{self.ep.receiver}/stats")).json()
            self.progress()
            upcoming = [t.next_poll for t in pending if t.next_poll > time.monotonic()]
            await asyncio.sleep(min(max(0.02, min(upcoming, default=0.05) - time.monotonic()), 0.25))
        self.progress(force=True)

    async def follow_receiver(self, client: httpx.AsyncClient, wait_s: float) -> None:
        """Wait until every family newly decided in this run has reached the receiver."""
        want = {t.family_id for t in self.tracks.values() if t.final == "decided" and t.receipt == "accepted"}
        deadline = time.monotonic() + wait_s
        while True:
            with contextlib.suppress(httpx.HTTPError, ValueError):
                self.receiver_stats = (await client.get(f"{self.ep.receiver}/stats")).json()
                self.receiver_families = (await client.get(f"{self.ep.receiver}/families")).json()["families"]
            if want <= set(self.receiver_families) or time.monotonic() > deadline:
                return
            self.progress()
            await asyncio.sleep(0.5)

    def progress(self, force: bool = False) -> None:
        """On a terminal, a bar of families reaching a final state (rate, ETA) with the other counts beside
        it; elsewhere a line every 5 s (regsosek.progress)."""
        if self.quiet:
            return
        now = time.monotonic()
        ts = self.tracks.values()
        sent = sum(t.receipt is not None for t in ts)
        final = Counter(t.final for t in ts if t.final)
        if self._bar is None:
            self._bar = Progress("final", len(self.tracks), unit="families", log_every_s=1e9)
        self._bar.advance_to(sum(final.values()))
        detail = (f"submitted {sent}/{len(self.tracks)} (decided {final['decided']}, flagged {final['flagged']})"
                  + (f" receiver {self.receiver_stats.get('unique', 0)} events" if self.notify and self.receiver_stats
                     else ""))
        if self._bar.note(detail):
            if force:
                self._bar.close()
                self._bar = None
            return
        if not force and now - self._last_progress < 5.0:
            return
        self._last_progress = now
        f = self._bar.fields()
        eta = f", ETA {f['eta_s']}s" if "eta_s" in f else ""
        print(f"[{now - self.t0:6.1f}s] final {sum(final.values())}/{len(self.tracks)} families, "
              f"{f['rate_per_s']}/s{eta}; {detail}", file=sys.stderr, flush=True)

    # ------------------------------------------------------------ report

    def field_outcomes(self) -> dict[str, dict[str, int]]:
        """Per field situation of the sample (refused, split_off, member_died): families and those
        that came out as expected (a refusal accounted for, the others verified)."""
        rows: dict[str, dict[str, int]] = {}
        for fid, situation in sorted(self.sample.situations.items()):
            t = self.by_family.get(fid)
            if t is None:
                continue
            row = rows.setdefault(situation, {"families": 0, "as_expected": 0})
            row["families"] += 1
            row["as_expected"] += t.outcome == t.expected
        return rows

    async def verify_non_responses(self, client: httpx.AsyncClient) -> int | None:
        """Roster families verify counts as accounted for by a non-response, province-wide (None
        when unknown or withheld for small counts)."""
        if not self.ep.verify:
            return None
        with contextlib.suppress(httpx.HTTPError, ValueError, KeyError):
            r = await client.get(f"{self.ep.verify}/v1/progress", params={"prefix": "64"},
                                 headers=_auth(self.tokens.admin))
            if r.status_code == 200:
                return r.json()["totals"].get("non_response")
        return None

    def report(self) -> dict:
        ts = list(self.tracks.values())
        outcome_rows = {}
        for key in sorted({t.expected for t in ts} | {t.outcome for t in ts if t.outcome}):
            outcome_rows[key] = {"actual": sum(t.outcome == key for t in ts),
                                 "expected": sum(t.expected == key for t in ts),
                                 "matched": sum(t.outcome == key == t.expected for t in ts)}
        mismatches = [{"family_id": t.family_id, "expected": t.expected, "actual": t.outcome or "(no final state)"}
                      for t in ts if t.outcome != t.expected]
        new = [t for t in ts if t.receipt == "accepted" and t.final_at and t.sent_at]
        observed = [t.final_at - t.sent_at for t in new if t.final_at is not None and t.sent_at is not None]
        exact = [(t.final_ts - t.received_ts).total_seconds() for t in new if t.final_ts and t.received_ts]
        finals = [t.final_at for t in ts if t.final_at]
        span = (max(finals) - self.first_sent) if finals and self.first_sent else None
        server_span = None
        if exact:
            server_span = (max(t.final_ts for t in new if t.final_ts)
                           - min(t.received_ts for t in new if t.received_ts)).total_seconds()
        delivery = []
        for t in new:
            rec = self.receiver_families.get(t.family_id)
            received = _parse_ts(rec.get("received_at")) if rec else None  # an unreadable time is not counted
            if t.final == "decided" and t.final_ts and received is not None:
                delivery.append((received - t.final_ts).total_seconds())
        decided = [t for t in ts if t.final == "decided"]
        new_decided = {t.family_id for t in decided if t.receipt == "accepted"}
        rep = {
            "seed": self.sample.seed,
            "families": len(ts),
            "sls": len(self.sample.rosters),
            "rosters": dict(self.roster_receipts),
            "receipts": dict(Counter(t.receipt or "not sent" for t in ts)),
            "via": dict(Counter(t.via for t in ts if t.via)),
            "final": dict(Counter(t.final or "not final" for t in ts)),
            "not_final": [t.family_id for t in ts if not t.final and t.receipt != "error"],
            "outcomes": outcome_rows,
            "expectations_matched": len(ts) - len(mismatches),
            "mismatches": mismatches,
            "welfare_groups": dict(sorted(Counter(t.welfare_group for t in decided if t.welfare_group).items())),
            "deciles": dict(sorted(Counter(t.decile for t in decided if t.decile).items())),
            "eligible_by_programme": dict(sorted(Counter(p for t in decided for p in t.eligible).items())),
            "throughput_families_per_s": (len(finals) / span) if span else None,
            "span_s": span,
            "pipeline_throughput_families_per_s": (len(exact) / server_span) if server_span else None,
            "pipeline_span_s": server_span,
            "latency_s": dist(exact),  # intake receipt -> decision/flag, from the services' own timestamps
            "observed_latency_s": dist(observed),  # request sent -> final state seen by polling
            "delivery_latency_s": dist(delivery),  # decision -> at the receiver
            "status_polls": self.polls,
            "runner_cpu_s": round(time.process_time() - self.cpu0, 2),
            "poll_max_s": self.poll_max,
            "errors": self.errors,
        }
        rep["field_outcomes"] = self.field_outcomes()
        rep["form_codes"] = self.sample.form_codes()
        if self.notify:
            got = set(self.receiver_families)
            rep["receiver"] = {**self.receiver_stats, "new_decided_families": len(new_decided),
                               "new_decided_missing": sorted(new_decided - got)}
            # Eligibility as the programme side saw it, for the families of this sample.
            rep["receiver_eligible_by_programme"] = dict(sorted(Counter(
                p for fid, rec in self.receiver_families.items() if fid in self.by_family
                for p in rec.get("eligible", [])).items()))
        return rep


def print_field_outcomes(rep: dict) -> None:
    """The sample's field situations and how they came out (docs/DOMAIN.md, field outcomes)."""
    rows = rep.get("field_outcomes") or {}
    if not rows:
        return
    print("  field outcomes (families: as expected) "
          + ", ".join(f"{k} {v['families']}: {v['as_expected']}" for k, v in rows.items()))
    print("    refused: accounted for without a verdict; split_off: matched to the prelisted KK and verified; "
          "member_died: a smaller household explained and verified")
    n = rep.get("verify_non_response_families")
    print(f"    verify's progress, province 64: {'withheld or unavailable' if n is None else n} roster families "
          "accounted for by a non-response")


def print_form_codes(rep: dict) -> None:
    """How much of the form's full code lists the sample sent (docs/FORM.md)."""
    codes = rep.get("form_codes") or {}
    if not codes:
        return
    lists: dict[str, Sequence[object]] = {"diploma": current_codes(Diploma), "industry": current_codes(Industry),
             "difficulty_domain": list(DIFFICULTY_MIN_AGE)}
    print("  form codes sent (distinct of the list: docs/FORM.md) "
          + ", ".join(f"{k} {len(v)} of {len(lists[k])}" for k, v in codes.items()))


def write_curl_material(sample: Sample) -> tuple[Path, FamilyInterview]:
    out = ROOT / ".local" / "sample"
    out.mkdir(parents=True, exist_ok=True)
    iv = sample.interviews[0]
    roster = next(r for r in sample.rosters if r.sls_id == iv.location.sls_id)
    (out / "interview.json").write_text(iv.model_dump_json(indent=1))
    (out / "roster.json").write_text(roster.model_dump_json(indent=1))
    return out, iv


def print_serve_help(ep: Endpoints, tokens: Tokens, sample: Sample, notify: bool, subscription: str | None) -> None:
    out, iv = write_curl_material(sample)
    officer = officer_for(iv.location.sls_id)
    rel = out.relative_to(ROOT) if Path.cwd().resolve() == ROOT else out
    print("\nRunning (Ctrl-C stops everything):")
    if ep.console:
        print(f"  console   {ep.console}/   (sign in with a role and an area; Bahasa Indonesia / English)")
    print(f"  intake    {ep.intake}/docs")
    if notify:
        print(f"  notify    {ep.notify}/docs   subscription {subscription}")
        print(f"  receiver  {ep.receiver}/stats  {ep.receiver}/events?family_id=...")
    print(f"\nA sample roster and interview are in {rel}/. As officer {officer}:")
    print(f"  export TOKEN={tokens.officer(officer)}")
    print(f"  curl -s -X POST {ep.intake}/v1/rosters -H \"Authorization: Bearer $TOKEN\" "
          f"-H 'content-type: application/json' --data @{rel}/roster.json")
    print(f"  curl -s -X POST {ep.intake}/v1/interviews -H \"Authorization: Bearer $TOKEN\" "
          f"-H 'content-type: application/json' --data @{rel}/interview.json")
    print(f"  curl -s {ep.intake}/v1/submissions/{iv.submission_id} -H \"Authorization: Bearer $TOKEN\"")
    print(f"Admin token:     {tokens.admin}")
    if notify:
        print(f"Programme token: {tokens.programme}")
        print(f"  curl -s {ep.notify}/v1/subscriptions -H \"Authorization: Bearer <programme token>\"")
    sys.stdout.flush()


async def wait_for_interrupt() -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    print("\nstopping...", file=sys.stderr)


def console_endpoint(port: int) -> str:
    """The operations console's address, when the console service is installed."""
    installed = importlib.util.find_spec("console") is not None and importlib.util.find_spec("console.app") is not None
    return f"http://127.0.0.1:{port}" if installed else ""


def console_service(ep: Endpoints) -> list[str]:
    return ["console"] if ep.console else []


def print_console_address(ep: Endpoints) -> None:
    if ep.console:
        print(f"Console: {ep.console}/ (stopped with this run; `make serve` keeps it running)")


def processes_to_start(a: argparse.Namespace, notify: bool, receiver_secret: str, ep: Endpoints) -> list[ServiceProcess]:
    """The pipeline's processes on the shared stack (the services' own databases, unprefixed topics),
    none with --no-start."""
    if a.no_start:
        return []
    try:
        Stack.from_env().check()
    except StackDown as e:
        raise SetupError(str(e)) from None
    if notify and (importlib.util.find_spec("notify") is None or importlib.util.find_spec("notify.app") is None):
        raise SetupError("the notify service is not available yet (no notify.app module); run with --no-notify")
    # the services verify tokens against the local key pair's public keys (the runner signs)
    env = local_auth_env()
    # the console calls intake's, notify's and classify's APIs on behalf of the signed-in person
    env.update({"REGSOSEK_INTAKE_URL": ep.intake, "REGSOSEK_NOTIFY_URL": ep.notify,
                "REGSOSEK_CLASSIFY_URL": ep.classify})
    if a.env:
        env.update(dict(kv.split("=", 1) for kv in a.env))
    names = ["intake", "verify", "classify"] + (["notify", "receiver"] if notify else []) + console_service(ep)
    return pipeline(names, port_offset=a.port_offset, env=env, receiver_env={"REGSOSEK_RECEIVER_SECRET": receiver_secret})


async def run(a: argparse.Namespace) -> int:
    notify = not a.no_notify
    receiver_secret = os.environ.get("REGSOSEK_RECEIVER_SECRET", receiver_mod.DEFAULT_SECRET)
    port = {n: p + a.port_offset for n, p in DEFAULT_PORTS.items()}
    ep = Endpoints(intake=f"http://127.0.0.1:{port['intake']}", notify=f"http://127.0.0.1:{port['notify']}",
                   receiver=f"http://127.0.0.1:{port['receiver']}",
                   callback=f"http://127.0.0.1:{port['receiver']}/notify",
                   classify=f"http://127.0.0.1:{port['classify']}")
    ep.console = console_endpoint(port["console"])
    ep.verify = f"http://127.0.0.1:{port['verify']}"
    sample = generate(a.seed, max(a.families, 1), field_outcomes=True)
    if a.families == 0:
        sample = Sample(seed=a.seed, rosters=sample.rosters, interviews=sample.interviews[:0], expected={})
    curl_sample = generate(a.seed, 1)

    procs = processes_to_start(a, notify, receiver_secret, ep)
    if a.no_start and notify and not port_in_use(port["receiver"]):
        raise SetupError(f"--no-start: nothing listens on the receiver port {port['receiver']}")

    tokens = Tokens()
    timeout = a.timeout or (120 + 0.05 * len(sample.interviews))
    runner = Runner(sample, ep, tokens, concurrency=a.concurrency, batch_every=a.batch_every, batch_size=a.batch_size,
                    timeout=timeout, notify=notify, poll_interval=a.poll_interval, poll_max=a.poll_max,
                    quiet=a.quiet)
    ctx: contextlib.AbstractAsyncContextManager[dict[str, ServiceProcess]] = contextlib.nullcontext({})
    if procs:
        ctx = running(procs, timeout=a.start_timeout)
    limits = httpx.Limits(max_connections=a.concurrency + 8, max_keepalive_connections=a.concurrency + 8)
    try:
        async with ctx as started:
            if started and not a.quiet:
                print("started: " + ", ".join(f"{n} :{p.port} (pid {p.pid})" for n, p in started.items()),
                      file=sys.stderr)
            async with httpx.AsyncClient(timeout=30.0, limits=limits) as client:
                if notify:
                    await runner.subscribe(client, receiver_secret)
                rep = None
                try:
                    if sample.interviews:
                        runner.t0 = time.monotonic()
                        await runner.submit_rosters(client)
                        # Polling has its own connections: it must not queue behind submissions.
                        async with httpx.AsyncClient(timeout=30.0, limits=limits) as poll_client:
                            await asyncio.gather(runner.submit_all(client), runner.follow(poll_client))
                        if notify:
                            await runner.follow_receiver(client, a.receiver_wait)
                        rep = runner.report()
                        rep["verify_non_response_families"] = await runner.verify_non_responses(client)
                        print_report(rep, notify)
                        print_field_outcomes(rep)
                        print_form_codes(rep)
                        rep["living_registry"] = await living.run(client, ep.intake, sample)  # after the census
                        living.print_summary(rep["living_registry"])
                        rep["errors"] += living.problems(rep["living_registry"])
                        forums = await hold_forums(client, ep.intake, ep.classify, tokens.admin, forum_plans(
                            sample, {t.family_id: t.census_group for t in runner.tracks.values()
                                     if t.final == "decided" and t.census_group}))
                        rep["consultation"] = [asdict(f) for f in forums]
                        rep["consultation_ok"] = consultation_ok(forums)
                        print_consultation(forums)
                        if a.report:
                            Path(a.report).write_text(json.dumps(rep, indent=1, default=str))
                    if a.serve:
                        print_serve_help(ep, tokens, curl_sample, notify, runner.subscription_id)
                        await wait_for_interrupt()
                finally:
                    if not a.keep_subscription:
                        await runner.unsubscribe(client)
    except ServiceNotReady as e:
        raise SetupError(str(e)) from None
    if rep is None:
        return 0
    ok = (not rep["not_final"] and not rep["mismatches"] and not rep["errors"] and rep["consultation_ok"]
          and (not notify or not rep["receiver"]["new_decided_missing"]))
    print(f"\nRESULT: {'OK' if ok else 'FAILED'}")
    print_console_address(ep)
    return 0 if ok else 1


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m regsosek_tools.run", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--families", type=int, default=200, help="interviews to submit (0: none, with --serve)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--concurrency", type=int, default=32, help="requests in flight (submission and polling)")
    p.add_argument("--serve", action="store_true", help="afterwards keep everything running until Ctrl-C")
    p.add_argument("--no-notify", action="store_true", help="without notify and the receiver")
    p.add_argument("--no-start", action="store_true", help="use services already running on the ports")
    p.add_argument("--port-offset", type=int, default=0, help="add to every default port (8001..8004, 8009)")
    p.add_argument("--batch-every", type=int, default=4,
                   help="every n-th SLS uploads its interviews as batches (0: never)")
    p.add_argument("--batch-size", type=int, default=50)
    p.add_argument("--timeout", type=float, default=0, help="seconds to wait for final states (default 120 + N/20)")
    p.add_argument("--receiver-wait", type=float, default=60.0, help="seconds to wait for deliveries to arrive")
    p.add_argument("--start-timeout", type=float, default=90.0)
    p.add_argument("--poll-interval", type=float, default=0.25, help="first status poll after this many seconds")
    p.add_argument("--poll-max", type=float, default=2.0, help="status polls back off up to this interval")
    p.add_argument("--env", action="append", metavar="KEY=VALUE", help="extra environment for the services")
    p.add_argument("--keep-subscription", action="store_true")
    p.add_argument("--report", metavar="PATH", help="also write the summary as JSON")
    p.add_argument("--quiet", action="store_true", help="no progress line")
    a = p.parse_args(argv)
    if a.families < 0 or (a.families == 0 and not a.serve):
        p.error("--families must be positive (or 0 with --serve)")
    try:
        return asyncio.run(run(a))
    except SetupError as e:
        print(f"\nerror: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
