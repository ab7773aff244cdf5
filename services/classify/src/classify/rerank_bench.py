"""Re-rank and replay at scale: families/s and peak RSS against the number of stored families.

    python -m classify.rerank_bench --sizes 100000,1000000 [--replay-sizes 100000] [--scope regency]
                                    [--moved-share 0.05] [--processes 2] [--json out.json]

For each size: a database of its own on the PostgreSQL of REGSOSEK_PG_URL_BASE (created, given
classify's migrations, dropped afterwards unless --keep), N classified families bulk-loaded
with COPY (copies of a few hundred sample families with ids of their own, so their profiles
classify as real ones do), their deciles settled to the scope's ranking (each with the
eligibility its profile has at its settled decile, as the service stores it, and resting on
that ranking: a finished re-rank run with one ranking per partition, as after the service's
first re-rank), then `--moved-share` of them moved one decile (what a re-rank has to put back
and re-publish). Then, each timed
as an operator runs it (a process of its own, events left in the outbox: --outbox-only):

- `python -m classify.rerank --scope <scope>`: families/s = families ranked / wall time;
- for sizes in --replay-sizes, `python -m classify.replay --processes P` to a new rules
  version (every family classified again): families/s = families / wall time.

Peak RSS is the command's: the kernel's high-water mark (VmHWM) of the process, and of each
replay worker, read every 0.2 s while it runs (the largest of them). Output: one JSON object
per measurement (printed, and as a list in --json):
{"what": "rerank"|"replay", "families": N, "scope", "processes", "seconds", "families_per_s",
"peak_rss_mib", "changed", "moved_share", "load_average", "cpu_seconds", "db_cpu_seconds",
"cpu_us_per_family"} (the machine's 1-minute load average when the command ended: the share of the
cores it had; the command's own CPU time, its workers' included; the database server's CPU time over
the command's wall time, when the server runs on this machine, else null; and the two together per
family: the cost that does not depend on how busy the machine is). A replay's row adds
"startup_seconds" and "startup_cpu_seconds": the same command with --max-batches 0 just before (its
processes started, no family classified), the part of the figures that does not grow with N.
`bench_rerank(sizes, ...)` is the same from Python.

    python -m classify.rerank_bench --saves 20000

times instead what the profile's storage costs the handlers and replay, on a database of its own:
the save statement of `--saves` new families in batches of 500 (as a handler batch's flush), the
same families saved again (a re-verified family), and the read of their profiles in batches of 500
(as replay's page): wall, client CPU and database CPU seconds, CPU µs per family, and the table's
heap and total size.
The load generator needs the sample generator (regsosek_tools), so this runs from the
repository's environment, not from the service's image.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import orjson
import yaml

from classify import app
from classify.domain import Config
from classify.ranking import Ranked, cutpoints_of_tops, reference_placement
from classify.settings import ClassifySettings
from classify.store import PARTITION_SQL, ranked_basis
from regsosek import db

TEMPLATES = 400  # distinct sample families the loaded ones are copies of
COPY_CHUNK = 50_000
RSS_POLL_S = 0.2
_COLUMNS = ("family_id", "sls_id", "submission_id", "version", "profile", "predicted", "welfare_group", "decile",
            "model_version", "rule_version", "eligible", "rank_value", "decile_basis", "lines_version",
            "eligibility", "ranking_id", "member_eligibility")
_MARK = "99999999999999-9999-999"  # a template's family id, replaced by each copy's


def templates(cfg: Config, seed: int = 16) -> tuple[list[tuple[str, str, tuple]], list[tuple]]:
    """(sls id, profile JSON with _MARK as family id, the classification's columns) of sample families, and
    each template's eligibility at each decile (template, decile, eligible, eligibility, member eligibility):
    what its copies store once their deciles are settled."""
    from regsosek.contracts import household_profile
    from regsosek_tools.sample import generate

    placement = reference_placement(cfg.model.version, cfg.model.decile_cutpoints)
    out, outcomes = [], []
    for t, iv in enumerate(generate(seed, TEMPLATES).interviews):
        p = household_profile(iv)
        c = cfg.classify(p, None, placement)
        doc = p.model_dump(mode="json")
        doc["family_id"] = _MARK
        cols = (c.predicted, int(c.welfare_group), c.decile, cfg.model.version, cfg.rules.version,
                [d.programme for d in c.decisions if d.eligible], c.rank_value, c.decile_basis, cfg.lines.version,
                orjson.dumps(c.eligibility).decode(), None, orjson.dumps(c.member_eligibility).decode())
        out.append((p.sls_id, orjson.dumps(doc).decode(), cols))
        for decile in range(1, 11):
            d = cfg.classify(p, None, Ranked(decile, c.decile_basis))
            outcomes.append((t, decile, [x.programme for x in d.decisions if x.eligible],
                             orjson.dumps(d.eligibility).decode(), orjson.dumps(d.member_eligibility).decode()))
    return out, outcomes


def family_rows(n: int, tpl: list[tuple[str, str, tuple]]) -> Iterator[tuple]:
    """`n` families, copies of the templates in turn, each with a family id of its own in its template's SLS."""
    per_sls: dict[str, int] = {}
    for i in range(n):
        sls, profile, cols = tpl[i % len(tpl)]
        j = per_sls.get(sls, 0)
        per_sls[sls] = j + 1
        fid = f"{sls}-{j // 999 + 1:04d}-{j % 999 + 1:03d}"
        yield (fid, sls, uuid.UUID(int=i + 1), 1, profile.replace(_MARK, fid), *cols)


async def load(dsn: str, n: int, scope: str, moved_share: float, cfg: Config, *, ranked: bool = False) -> None:
    """N families by COPY, their deciles settled to the scope's ranking, then `moved_share` of them moved.
    `ranked`: the settled families rest on a finished re-rank of the scope (a run and one ranking per
    partition, each family's ranked basis and ranking id), as after the service's first re-rank; else they
    keep the provisional basis their classification gave them."""
    tpl, outcomes = templates(cfg)
    conn = await asyncpg.connect(dsn)  # jsonb as text: the profiles are JSON already
    try:
        rows = family_rows(n, tpl)
        while chunk := [r for _, r in zip(range(COPY_CHUNK), rows, strict=False)]:
            await conn.copy_records_to_table("families", records=chunk, columns=_COLUMNS)
        await conn.execute("create temporary table outcomes (template int, decile int, eligible text[], "
                           "eligibility text, member_eligibility text, primary key (template, decile))")
        await conn.copy_records_to_table("outcomes", records=outcomes)
        p = PARTITION_SQL[scope]
        ranked_sql = (f"select family_id, submission_id, {p} as partition, rank_value, "
                      f"((row_number() over w - 1) * 10 / count(*) over (partition by {p}) + 1)::int as decile "
                      f"from families window w as (partition by {p} order by rank_value, family_id)")
        basis = "f.decile_basis"
        ranking = "f.ranking_id"
        if ranked:
            await _ranked_run(conn, scope, ranked_sql, cfg)
            basis, ranking = "k.basis", "k.id"
        # each family's decile settled to the ranking, with its template's eligibility at that decile (the
        # template: the family's number in the load, from its submission id, modulo TEMPLATES)
        await conn.execute(
            f"update families f set decile = r.decile, eligible = o.eligible, eligibility = o.eligibility::jsonb, "
            f"member_eligibility = o.member_eligibility::jsonb, decile_basis = {basis}, ranking_id = {ranking} "
            f"from ({ranked_sql}) r join outcomes o on o.decile = r.decile "
            f"and o.template = (('x' || right(replace(r.submission_id::text, '-', ''), 8))::bit(32)::int - 1) "
            f"% {TEMPLATES} left join rankings k on k.partition = r.partition where f.family_id = r.family_id "
            f"and ({'true' if ranked else 'false'} or f.decile <> r.decile or f.eligibility <> o.eligibility::jsonb "
            "or f.eligible <> o.eligible or f.member_eligibility <> o.member_eligibility::jsonb)", timeout=7200)
        await conn.execute("update families set decile = case when decile = 10 then 9 else decile + 1 end "
                           "where (hashtext(family_id) & 1023) < $1", round(moved_share * 1024), timeout=7200)
        await conn.execute("vacuum analyze families", timeout=7200)
    finally:
        await conn.close()


async def _ranked_run(conn: asyncpg.Connection, scope: str, ranked_sql: str, cfg: Config) -> None:
    """A finished re-rank run of `scope` over every loaded family and its rankings (cut-points, basis)."""
    run = await conn.fetchrow(
        "insert into rerank_runs (scope, reason, model_version, ranked, cursor, examined, unchanged, finished_at, "
        "outcome) select $1, 'command', $2, count(*), max(family_id), count(*), count(*), now(), 'finished' "
        "from families returning id, ranked, started_at", scope, cfg.model.version)
    tops = await conn.fetch(f"select partition, decile, count(*)::int as n, max(rank_value) as top "
                            f"from ({ranked_sql}) r group by 1, 2", timeout=7200)
    by_partition: dict[str, dict[int, tuple[int, float]]] = {}
    for t in tops:
        by_partition.setdefault(t["partition"], {})[t["decile"]] = (t["n"], t["top"])
    await conn.executemany(
        "insert into rankings (scope, partition, model_version, families, cutpoints, run_id, basis, decile_sizes, "
        "ranked_at) values ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        [(scope, part, cfg.model.version, sum(k for k, _ in d.values()),
          cutpoints_of_tops({dec: top for dec, (_, top) in d.items()}), run["id"],
          ranked_basis(part, run["started_at"], sum(k for k, _ in d.values()), None),
          [d.get(dec, (0, 0.0))[0] for dec in range(1, 11)], run["started_at"]) for part, d in by_partition.items()])


def peak_rss_mib(pid: int) -> float:
    """The largest peak RSS (VmHWM) among the process and its children (a replay's workers), in MiB."""
    peak = 0
    for p in [pid, *_children(pid)]:
        try:
            status = Path(f"/proc/{p}/status").read_text()
        except OSError:
            continue  # gone meanwhile
        peak = max(peak, next((int(line.split()[1]) for line in status.splitlines() if line.startswith("VmHWM:")), 0))
    return peak / 1024


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of the process and its children (a replay's workers) so far."""
    total = 0.0
    for p in [pid, *_children(pid)]:
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def _stat(pid: int) -> list[str] | None:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None


async def postmaster_pid(dsn: str) -> int | None:
    """The PostgreSQL server's process when it runs on this machine (None when it does not)."""
    conn = await asyncpg.connect(dsn)
    try:
        backend = await conn.fetchval("select pg_backend_pid()")
        fields = _stat(backend)
        return None if fields is None else int(fields[1])
    finally:
        await conn.close()


def server_cpu_seconds(postmaster: int | None) -> float | None:
    """CPU time of the database server so far: its live backends' and workers' and, through the postmaster's
    children's counters, those that have exited (None: the server is not on this machine)."""
    fields = None if postmaster is None else _stat(postmaster)
    if postmaster is None or fields is None:
        return None
    tick = os.sysconf("SC_CLK_TCK")
    total = sum(int(fields[i]) for i in (11, 12, 13, 14)) / tick
    for c in _children(postmaster):
        if (cf := _stat(c)) is not None:
            total += (int(cf[11]) + int(cf[12])) / tick
    return total


def _children(pid: int) -> list[int]:
    try:
        return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def timed(args: list[str], env: dict[str, str], postmaster: int | None = None) -> tuple[float, float, dict]:
    """Runs a command; (wall seconds, peak RSS MiB, its JSON report with "cpu_seconds" and "db_cpu_seconds"
    added). The peak is the kernel's high-water mark of each process, read every RSS_POLL_S while it runs (the
    last reading before it exits counts), as is the CPU time; the database server's CPU time over the same
    wall time is read from its processes (`postmaster`, when on this machine: every backend of the server,
    autovacuum included)."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        db_before = server_cpu_seconds(postmaster)
        start = time.perf_counter()
        proc = subprocess.Popen([sys.executable, "-m", *args, "--json", "--outbox-only"], env=env, stdout=out,
                                stderr=err)
        rss = cpu = 0.0
        while True:
            rss = max(rss, peak_rss_mib(proc.pid))
            cpu = max(cpu, cpu_seconds(proc.pid))
            try:  # returns as soon as it exits: the wall time is not rounded up to the polling period
                proc.wait(timeout=RSS_POLL_S)
                break
            except subprocess.TimeoutExpired:
                pass
        seconds = time.perf_counter() - start
        db_after = server_cpu_seconds(postmaster)
        out.seek(0)
        err.seek(0)
        if proc.returncode != 0:
            raise RuntimeError(f"{args[0]} exited {proc.returncode}: {err.read().decode()[-2000:]}")
        report = json.loads(out.read().decode().strip().splitlines()[-1])
    db = None if db_before is None or db_after is None else round(db_after - db_before, 1)
    return seconds, rss, {**report, "cpu_seconds": round(cpu, 1), "db_cpu_seconds": db}


async def _database(base: str, name: str, create: bool) -> None:
    conn = await asyncpg.connect(f"{base}/postgres")
    try:
        await conn.execute(f'drop database if exists "{name}" with (force)')
        if create:
            await conn.execute(f'create database "{name}"')
    finally:
        await conn.close()


async def _migrate(dsn: str) -> None:
    pool = await db.connect_pool(dsn, max_size=1)
    try:
        await db.migrate(pool, app.MIGRATIONS)
    finally:
        await pool.close()


def measure(n: int, *, scope: str, moved_share: float, replay: bool, processes: int, keep: bool = False) -> list[dict]:
    """The measurements of one size (see the module's docstring)."""
    settings = ClassifySettings()
    cfg = app.load_config(settings)
    base = settings.pg_url_base.rstrip("/")
    name = f"classify_rerank_bench_{n}_{os.getpid()}"
    dsn = f"{base}/{name}"
    env = {**os.environ, "REGSOSEK_DATABASE_URL": dsn}
    asyncio.run(_database(base, name, True))
    out = []
    try:
        asyncio.run(_migrate(dsn))
        asyncio.run(load(dsn, n, scope, moved_share, cfg, ranked=True))
        postmaster = asyncio.run(postmaster_pid(dsn))
        seconds, rss, r = timed(["classify.rerank", "--scope", scope], env, postmaster)
        out.append({"what": "rerank", "families": n, "scope": scope, "processes": 1, "seconds": round(seconds, 2),
                    "families_per_s": round(n / seconds), "peak_rss_mib": round(rss, 1), "changed": r["changed"],
                    "moved_share": moved_share, "load_average": os.getloadavg()[0], **_cpu(r, n)})
        if replay:
            with tempfile.TemporaryDirectory() as tmp:
                rules = yaml.safe_load(settings.rules_file.read_text(encoding="utf-8"))
                rules["version"] = f"{rules['version']}-bench"
                path = Path(tmp) / "rules-bench.yaml"
                path.write_text(yaml.safe_dump(rules, sort_keys=False), encoding="utf-8")  # the same order too
                renv = {**env, "REGSOSEK_RULES_FILE": str(path)}
                # start-up alone first (the run and its slices taken, the workers started, no batch): its CPU
                start_s, _, start = timed(["classify.replay", "--processes", str(processes), "--max-batches", "0"],
                                          renv, postmaster)
                seconds, rss, r = timed(["classify.replay", "--processes", str(processes)], renv, postmaster)
            out.append({"what": "replay", "families": n, "scope": None, "processes": processes,
                        "seconds": round(seconds, 2), "families_per_s": round(n / seconds),
                        "peak_rss_mib": round(rss, 1), "changed": r["changed"], "moved_share": None,
                        "load_average": os.getloadavg()[0], **_cpu(r, n),
                        "startup_seconds": round(start_s, 2), "startup_cpu_seconds": start["cpu_seconds"]})
    finally:
        if not keep:
            asyncio.run(_database(base, name, False))
    return out


def _cpu(report: dict, n: int) -> dict:
    """The command's and the database's CPU seconds, and their sum per family in µs (the machine-share-free
    cost: 20,000 families/s on two cores is at most 100 µs a family)."""
    total = report["cpu_seconds"] + (report["db_cpu_seconds"] or 0.0)
    return {"cpu_seconds": report["cpu_seconds"], "db_cpu_seconds": report["db_cpu_seconds"],
            "cpu_us_per_family": round(total / n * 1e6, 1)}


def bench_rerank(sizes: list[int], *, replay_sizes: list[int] | None = None, scope: str = "regency",
                 moved_share: float = 0.05, processes: int = 2) -> list[dict]:
    """Every measurement of every size, smallest first."""
    replay_sizes = sizes if replay_sizes is None else replay_sizes
    results = []
    for n in sorted(sizes):
        for m in measure(n, scope=scope, moved_share=moved_share, replay=n in replay_sizes, processes=processes):
            print(json.dumps(m), flush=True)
            results.append(m)
    return results


SAVE_BATCH = 500  # families per statement, as a handler batch's `flush` writes them


async def _save_costs(dsn: str, n: int, cfg: Config, postmaster: int | None) -> dict:
    """The handlers' write of `n` new families (classify's save statement, batches of SAVE_BATCH, one transaction
    each), the same families saved again (the update of a re-verified family), and the replay's read of their
    profiles (batches of SAVE_BATCH): client and database CPU seconds of each."""
    from classify.store import _SAVE

    tpl, _ = templates(cfg)
    rows = list(family_rows(n, tpl))
    conn = await asyncpg.connect(dsn)  # jsonb as text, as the bench's COPY
    out = {}
    try:
        async def saves() -> None:
            for i in range(0, n, SAVE_BATCH):
                async with conn.transaction():
                    await conn.executemany(_SAVE, rows[i:i + SAVE_BATCH])

        async def reads() -> None:
            for i in range(0, n, SAVE_BATCH):
                got = await conn.fetch("select family_id, profile from families where family_id = any($1::text[])",
                                       [r[0] for r in rows[i:i + SAVE_BATCH]])
                assert len(got) == len(rows[i:i + SAVE_BATCH])

        for what, step in (("insert", saves), ("update", saves), ("profile read", reads)):
            db_before, cpu_before, start = server_cpu_seconds(postmaster), time.process_time(), time.perf_counter()
            await step()
            wall, cpu, db_after = time.perf_counter() - start, time.process_time() - cpu_before, \
                server_cpu_seconds(postmaster)
            db_cpu = None if db_before is None or db_after is None else db_after - db_before
            out[what] = {"seconds": round(wall, 2), "cpu_seconds": round(cpu, 2),
                         "db_cpu_seconds": None if db_cpu is None else round(db_cpu, 2),
                         "cpu_us_per_family": round((cpu + (db_cpu or 0.0)) / n * 1e6, 1)}
        out["heap_mib"] = round(await conn.fetchval("select pg_relation_size('families')") / 2**20, 1)
        out["total_mib"] = round(await conn.fetchval("select pg_total_relation_size('families')") / 2**20, 1)
    finally:
        await conn.close()
    return out


def bench_saves(n: int) -> dict:
    """`_save_costs` on a database of its own (classify's migrations), dropped afterwards."""
    settings = ClassifySettings()
    cfg = app.load_config(settings)
    base = settings.pg_url_base.rstrip("/")
    name = f"classify_save_bench_{n}_{os.getpid()}"
    dsn = f"{base}/{name}"
    asyncio.run(_database(base, name, True))
    try:
        asyncio.run(_migrate(dsn))
        postmaster = asyncio.run(postmaster_pid(dsn))
        return {"what": "saves", "families": n, "load_average": os.getloadavg()[0],
                **asyncio.run(_save_costs(dsn, n, cfg, postmaster))}
    finally:
        asyncio.run(_database(base, name, False))


def _sizes(text: str) -> list[int]:
    return [int(s) for s in text.split(",") if s.strip()]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m classify.rerank_bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=_sizes, default=[100_000, 1_000_000], help="families stored, comma-separated")
    parser.add_argument("--replay-sizes", type=_sizes, default=None,
                        help="sizes at which to time a replay too (default: every size)")
    parser.add_argument("--scope", default="regency", choices=sorted(PARTITION_SQL))
    parser.add_argument("--moved-share", type=float, default=0.05,
                        help="share of families a re-rank moves back (and re-publishes)")
    parser.add_argument("--processes", type=int, default=2, help="processes the replay is spread over")
    parser.add_argument("--json", type=Path, default=None, help="write the measurements here as a JSON list")
    parser.add_argument("--saves", type=int, default=None,
                        help="instead: time the handlers' save of this many families, their re-save and the "
                             "replay's read of their profiles")
    args = parser.parse_args(argv)
    if args.saves:
        print(json.dumps(bench_saves(args.saves)), flush=True)
        return 0
    results = bench_rerank(args.sizes, replay_sizes=args.replay_sizes, scope=args.scope,
                           moved_share=args.moved_share, processes=args.processes)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
