"""The stored phase's pure parts: how a template row is written again under new identifiers
(load.stored), the --stored list, target 4's verdict and the stored rows of the report. No
PostgreSQL: the rows are made here as asyncpg would return them."""

from __future__ import annotations

import argparse
import uuid

import pytest

from regsosek_tools.bench import disk_shortfall, families_needed, parse_args, parse_counts
from regsosek_tools.load.stored import (
    Clone,
    Column,
    Templates,
    Villages,
    io_between,
    new_event_id,
    new_hash,
    new_uuid,
    reads_between,
    sls_numbers,
)
from regsosek_tools.report.bench import comparison_rows, ratios, stored_verdict

SLS_A = "64010100010003"  # village 6401010001, SLS 0003
SLS_B = "64010100010007"  # same village
SLS_C = "64720200050012"  # another village
SUB = uuid.UUID("5b0c7e2a-1d7e-4a43-9a39-0f6f6a1c2b11")
SUBSCRIPTION = uuid.UUID("0e8a1f00-0000-4000-8000-000000000001")


def interviews() -> Clone:
    cols = [Column("family_id", "text"), Column("sls_id", "text"), Column("submission_id", "uuid"),
            Column("version", "int4"), Column("body", "jsonb"), Column("state", "text"), Column("kk_hash", "text"),
            Column("decision_seq", "int8")]
    body = f'{{"family_id": "{SLS_A}-0001-001", "location": {{"sls_id": "{SLS_A}"}}}}'
    return Clone("interviews", cols, [(f"{SLS_A}-0001-001", SLS_A, SUB, 2, body, "verified", "ab" * 32, 7)])


def test_column_kinds_follow_names_and_types():
    assert Column("id", "int8", "nextval('outbox_id_seq'::regclass)").kind == "serial"
    assert Column("family_id", "text").kind == "family"
    assert Column("sls_id", "text").kind == "sls"
    assert Column("submission_id", "uuid").kind == "uuid"
    assert Column("subscription_id", "uuid").kind == "keep"  # subscriptions are not cloned
    assert Column("event_id", "text").kind == "event"
    assert Column("nik_hash", "bytea").kind == "hash"
    assert Column("kk_hash", "text").kind == "hash"
    assert Column("body", "jsonb").kind == "text"
    assert Column("body_enc", "bytea").kind == "keep"  # sealed bodies are copied as they are
    assert Column("version", "int4").kind == "keep"


def test_a_round_moves_every_identifier_and_keeps_the_decision():
    t = interviews()
    sls = sls_numbers([SLS_A], 1, Villages([SLS_A[:10]]))
    (row,) = list(t.records(1, sls))
    family, sls_id, sub, version, body, state, kk, seq = row
    new_sls = sls[SLS_A]
    assert new_sls[:10] == SLS_A[:10] and new_sls != SLS_A  # another SLS of the same village
    assert family == f"{new_sls}-0001-001" and sls_id == new_sls
    assert sub == new_uuid(SUB, 1) and sub != SUB
    assert SLS_A not in body and body.count(new_sls) == 2
    assert (version, state, seq) == (2, "verified", 7)
    assert len(kk) == 64 and kk != "ab" * 32


def test_the_same_identifier_maps_the_same_in_every_table_and_differently_in_every_round():
    assert new_uuid(SUB, 3) == new_uuid(SUB, 3)
    assert len({new_uuid(SUB, k) for k in range(1, 200)}) == 199
    nik = bytes(range(32))
    assert new_hash(nik, 5) == new_hash(nik, 5) and len(new_hash(nik, 5)) == 32
    assert len({new_hash(nik, k) for k in range(1, 200)}) == 199
    assert new_hash("xyz", 2) == "xyz~2"  # not hex of an even length: still distinct per round


def test_a_stored_event_id_keeps_its_time_and_a_random_one_stays_random():
    v7 = "01a2378a-3344-70c8-a0f8-ecd75bcf91b8"
    clones = [new_event_id(v7, k) for k in range(1, 200)]
    assert len(set(clones)) == 199 and v7 not in clones
    assert all(uuid.UUID(c).version == 7 and c[:13] == v7[:13] for c in clones)  # same 48-bit time
    v4 = str(SUB)
    assert new_event_id(v4, 1) == new_event_id(v4, 1) != v4
    assert new_event_id("test-event", 1) != new_event_id("test-event", 2)  # not a UUID at all


def test_serial_columns_are_left_to_their_sequence():
    cols = [Column("id", "int8", "nextval('x')"), Column("event_id", "text"), Column("topic", "text")]
    t = Clone("inbox", cols, [(41, "e-1", "bench.interview-verified")])
    assert t.names == ["event_id", "topic"]
    (row,) = list(t.records(2, {}))
    assert row[0] != "e-1" and uuid.UUID(row[0]) and row[1] == "bench.interview-verified"


def test_rows_without_an_sls_keep_their_text_and_kept_uuids():
    cols = [Column("subscription_id", "uuid"), Column("family_id", "text")]
    t = Clone("subscription_families", cols, [(SUBSCRIPTION, f"{SLS_C}-0002-003")])
    sls = sls_numbers([SLS_C], 4, Villages([SLS_C[:10]]))
    (row,) = list(t.records(4, sls))
    assert tuple(row) == (SUBSCRIPTION, f"{sls[SLS_C]}-0002-003")


def test_stored_sls_fill_the_template_villages_then_others_then_other_provinces():
    template = [SLS_A, SLS_B, SLS_C]
    villages = Villages([s[:10] for s in template], others=["6401010002"], per_village=4)
    seen: set[str] = set(template)
    per_village: dict[str, int] = {}
    for k in range(1, 7):  # 18 slots: 2 template villages x 4, 1 other x 4, then 6 made up
        m = sls_numbers(template, k, villages)
        assert all(len(v) == 14 and v.isdigit() and int(v[10:]) >= 1000 for v in m.values())
        assert not seen & set(m.values())
        seen |= set(m.values())
        for v in m.values():
            per_village[v[:10]] = per_village.get(v[:10], 0) + 1
    assert per_village[SLS_A[:10]] == 4 and per_village[SLS_C[:10]] == 4 and per_village["6401010002"] == 4
    elsewhere = [v for v in per_village if v[:2] != "64"]
    assert len(elsewhere) == 2 and max(per_village.values()) == 4


def test_the_same_round_gets_the_same_sls():
    villages = Villages([SLS_A[:10]])
    assert sls_numbers([SLS_A, SLS_C], 9, villages) == sls_numbers([SLS_C, SLS_A], 9, villages)


def test_rounds_for_whole_rounds_of_the_template():
    t = Templates([], families_per_round=450)
    assert t.rounds_for(0) == 0 and t.rounds_for(1) == 1 and t.rounds_for(450) == 1 and t.rounds_for(451) == 2


def test_rounds_write_one_copy_per_round():
    t = interviews()
    tpl = Templates([], families_per_round=1)
    tpl.template_sls = [SLS_A]
    tpl.villages = Villages([SLS_A[:10]])
    rows = list(t.rounds(range(1, 4), tpl.sls_of))
    assert len(rows) == 3 and len({r[0] for r in rows}) == 3


# ---------------------------------------------------------------- command line and report


def test_parse_counts_sorts_and_allows_the_empty_store():
    assert parse_counts("2000000,0, 200_000") == [0, 200000, 2000000]
    with pytest.raises(argparse.ArgumentTypeError):
        parse_counts("-1")
    with pytest.raises(argparse.ArgumentTypeError):
        parse_counts("many")


def test_stored_adds_its_phase_and_its_families():
    a = parse_args(["--quick", "--phases", "throughput", "--stored", "0,1000", "--families", "300", "--warmup", "50"])
    assert "stored" in a.phases and a.stored == [0, 1000] and a.stored_families == 300
    assert families_needed(a) == 50 + 300 + (50 + 300) * 2
    d = parse_args(["--phases", "stored"])
    assert d.stored == [0, 200_000, 2_000_000]
    assert parse_args([]).stored == []


def test_stored_verdict_needs_two_million():
    r = {"stored_ratios": ratios([(0, 500.0), (200_000, 450.0)])}
    assert stored_verdict(r) == (0.9, 200_000, None)
    r = {"stored_ratios": ratios([(0, 500.0), (200_000, 450.0), (2_000_000, 390.0)])}
    assert stored_verdict(r) == (pytest.approx(0.78), 2_000_000, False)
    r = {"stored_ratios": ratios([(150, 500.0), (2_000_150, 420.0)])}
    assert stored_verdict(r)[2] is True
    assert stored_verdict({}) == (None, None, None)


def test_comparison_row_for_stored():
    r = {"bench": {"date": "2026-12-01", "commit": "abc1234"}, "machine": {"nproc": 2, "mem_gib": 24.0},
         "stored": [{"families": 300, "stored_families": 150}, {"families": 300, "stored_families": 20150}],
         "stored_ratios": ratios([(150, 100.0), (20150, 90.0)])}
    (row,) = comparison_rows(r)
    assert "families already stored" in row and "150 stored → 100.0" in row and "20,150: 0.90" in row


def test_reads_between_names_the_tables_read_whole_most_rows_first():
    before = {"verify.roster_families": {"seq_scan": 10, "seq_tup_read": 1000, "idx_scan": 5},
              "verify.interviews": {"seq_scan": 1, "seq_tup_read": 50, "idx_scan": 100}}
    after = {"verify.roster_families": {"seq_scan": 30, "seq_tup_read": 901000, "idx_scan": 5},
             "verify.interviews": {"seq_scan": 1, "seq_tup_read": 50, "idx_scan": 900},
             "classify.families": {"seq_scan": 2, "seq_tup_read": 70, "idx_scan": 0}}
    assert reads_between(before, after) == [
        {"table": "verify.roster_families", "seq_scan": 20, "seq_tup_read": 900000, "idx_scan": 0},
        {"table": "classify.families", "seq_scan": 2, "seq_tup_read": 70, "idx_scan": 0}]


def test_io_between_is_per_family_and_names_the_tables_read_most():
    before = {"verify.interviews": {"blks_read": 100, "blks_hit": 1000}, "intake.inbox": {"blks_read": 5, "blks_hit": 50},
              "*.wal": {"wal_records": 1000, "wal_fpi": 10, "wal_bytes": 100_000}}
    after = {"verify.interviews": {"blks_read": 300, "blks_hit": 5000}, "intake.inbox": {"blks_read": 905, "blks_hit": 50},
             "classify.families": {"blks_read": 0, "blks_hit": 1000},
             "*.wal": {"wal_records": 21000, "wal_fpi": 410, "wal_bytes": 4_100_000}}
    io = io_between(before, after, 100)
    assert io["blks_read_per_family"] == 11.0 and io["blks_hit_per_family"] == 50.0
    assert (io["wal_records_per_family"], io["wal_fpi_per_family"], io["wal_bytes_per_family"]) == (200, 4, 40_000)
    assert io["most_read"] == [{"table": "intake.inbox", "blks_read": 900, "blks_hit": 0},
                               {"table": "verify.interviews", "blks_read": 200, "blks_hit": 4000}]
    assert io_between(before, before, 0)["blks_read_per_family"] == 0


def test_a_load_that_would_fill_the_disk_is_refused_with_the_figures():
    kib17 = 17 * 1024
    assert disk_shortfall(kib17, 200_000, 76 * 2**30) is None  # ~4.9 GiB of 76
    reason = disk_shortfall(kib17, 2_000_000, 40 * 2**30)  # ~48.6 GiB of 40
    assert reason is not None and "2,000,000 more families" in reason and "40.0 GiB free" in reason
