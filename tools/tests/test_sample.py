"""The synthetic sample: deterministic, valid for intake, and covering every verification path."""

from __future__ import annotations

from collections import Counter
from datetime import date

import pytest

from classify.domain import classify
from classify.model import DATA, PmtModel, PovertyLines, RuleSet
from intake import domain
from regsosek.auth import Role, TokenVerifier, local_jwks_file, mint
from regsosek.contracts import household_profile
from regsosek.jwks import JwksFile
from regsosek_tools.sample import LAT_RANGE, LON_RANGE, REGENCY_BY_CODE, generate, officer_areas, officer_for

COLLECTION = (date(2022, 10, 15), date(2022, 11, 20))


@pytest.fixture(scope="module")
def sample():
    return generate(20221015, 500, field_outcomes=True)


def dump(s):
    return ([r.model_dump(mode="json") for r in s.rosters], [iv.model_dump(mode="json") for iv in s.interviews],
            s.expected, s.depends_on, s.situations)


def test_same_seed_same_sample_and_other_seed_differs(sample):
    assert dump(generate(20221015, 500, field_outcomes=True)) == dump(sample)
    other = generate(20221016, 500)
    assert {iv.submission_id for iv in other.interviews}.isdisjoint({iv.submission_id for iv in sample.interviews})
    assert dump(other) != dump(sample)


def test_a_smaller_sample_is_a_prefix_of_a_larger_one(sample):
    small = generate(20221015, 120, field_outcomes=True)
    big = {iv.submission_id: iv for iv in sample.interviews}
    assert all(big[iv.submission_id] == iv for iv in small.interviews)
    assert small.rosters == sample.rosters[: len(small.rosters)]


def test_size_and_sls_shape(sample):
    assert len(sample.interviews) == 500
    assert len({iv.submission_id for iv in sample.interviews}) == 500
    assert len({iv.family_id for iv in sample.interviews}) == 500
    assert set(sample.expected) == {iv.family_id for iv in sample.interviews}
    sls_ids = [r.sls_id for r in sample.rosters]
    assert len(set(sls_ids)) == len(sls_ids)
    for r in sample.rosters:
        assert len(r.sls_id) == 14 and r.sls_id[:4] in REGENCY_BY_CODE
        assert 20 <= len(r.families) <= 40
    per_sls = Counter(iv.location.sls_id for iv in sample.interviews)
    assert all(n <= 40 for n in per_sls.values())


def test_every_sls_has_a_roster(sample):
    rostered = {r.sls_id for r in sample.rosters}
    assert {iv.location.sls_id for iv in sample.interviews} <= rostered


def test_every_interview_passes_intake_checks(sample):
    for iv in sample.interviews:
        errors, _ = domain.check_interview(iv, collection=COLLECTION)
        assert errors == [], (iv.family_id, errors)


def test_nik_digits_agree_with_member(sample):
    niks = Counter()
    for iv in sample.interviews:
        for m in iv.members:
            if m.nik is None:
                continue
            niks[m.nik] += 1
            dd, mm, yy = int(m.nik[6:8]), int(m.nik[8:10]), int(m.nik[10:12])
            assert (dd > 40) == (m.sex.value == "female")
            assert (dd - 40 if dd > 40 else dd, mm, yy) == (m.date_of_birth.day, m.date_of_birth.month,
                                                            m.date_of_birth.year % 100)
            assert m.nik[12:] != "0000"
    # A NIK appears twice only in the deliberate duplicate cases.
    assert sum(n - 1 for n in niks.values()) == Counter(sample.expected.values())["duplicate_nik"]


def test_members_are_realistic(sample):
    for iv in sample.interviews:
        if not iv.result.responded:
            continue
        day = iv.interviewed_at.date()
        head = iv.head
        assert head is not None and 20 <= head.age_on(day) <= 80
        assert iv.location.gps is not None
        assert LAT_RANGE[0] <= iv.location.gps.lat <= LAT_RANGE[1]
        assert LON_RANGE[0] <= iv.location.gps.lon <= LON_RANGE[1]
    rels = Counter(m.relationship.value for iv in sample.interviews for m in iv.members)
    assert {"head", "spouse", "child", "parent", "grandchild"} <= set(rels)


def test_expected_outcomes_cover_the_verification_paths(sample):
    seen = Counter(sample.expected.values())
    for outcome in ("verified", "verified_added", "not_on_roster", "roster_says_moved", "duplicate_nik",
                    "member_count_differs"):
        assert seen[outcome] >= 1, (outcome, seen)
    assert seen["verified"] > len(sample.interviews) * 0.7


def test_expected_outcomes_follow_verify_rules(sample):
    """The roster says what verify will conclude (duplicate NIKs aside, which need the claim order)."""
    from regsosek.contracts import pseudonymise_interview
    from regsosek.pseudonyms import kk_hash_hex
    from verify.domain import RosterEntry, decide

    key = "sample-test-key"
    rosters = {r.sls_id: [RosterEntry(f.building_no, f.family_no, kk_hash_hex(key, f.kk_number), f.member_count,
                                      f.status) for f in r.families] for r in sample.rosters}
    for iv in sample.interviews:
        want = sample.expected[iv.family_id]
        d = decide(pseudonymise_interview(iv, key), rosters[iv.location.sls_id])
        got = d.code
        assert got == ("verified" if want == "duplicate_nik" else want), iv.family_id


def test_duplicate_niks_come_from_an_earlier_family_in_another_sls(sample):
    first, second = sample.waves()
    assert {iv.family_id for iv in second} == set(sample.depends_on)
    first_ids = {iv.family_id for iv in first}
    by_id = {iv.family_id: iv for iv in sample.interviews}
    for fid, donor in sample.depends_on.items():
        assert sample.expected[fid] == "duplicate_nik" and sample.expected[donor] == "verified"
        assert donor in first_ids and fid[:14] != donor[:14]
        shared = {m.nik for m in by_id[fid].members if m.nik} & {m.nik for m in by_id[donor].members if m.nik}
        assert len(shared) == 1


def test_officer_tokens_cover_their_sls(sample):
    verifier = TokenVerifier(JwksFile(local_jwks_file()), issuer="regsosek-local", audience="regsosek-intake")
    for r in sample.rosters:
        officer = officer_for(r.sls_id)
        assert r.officer_id == officer
        token = mint(subject=officer, role=Role.OFFICER, areas=officer_areas(officer))
        assert verifier.verify_sync(token).may_act_for(r.sls_id)
    for iv in sample.interviews:
        assert iv.officer_id == officer_for(iv.location.sls_id)


def test_pmt_groups_and_deciles_spread(sample):
    model = PmtModel.load(DATA / "pmt-illustrative-2022.1.yaml")
    lines = PovertyLines.load(DATA / "poverty-lines-2022.yaml")
    rules = RuleSet.load(DATA / "eligibility-2022.1.yaml")
    results = [classify(household_profile(iv), model, lines, rules) for iv in sample.interviews if iv.result.responded]
    groups = Counter(int(c.welfare_group) for c in results)
    deciles = Counter(c.decile for c in results)
    assert set(groups) == {1, 2, 3, 4}, groups
    assert set(deciles) == set(range(1, 11)), deciles
    assert max(deciles.values()) < 0.4 * len(results)
    eligible = Counter(d.programme for c in results for d in c.decisions if d.eligible)
    assert all(eligible[p] > 0 for p in ("pkh", "sembako", "pbi_jkn", "blt_desa", "pip")), eligible


def test_field_situations_are_a_small_deterministic_share(sample):
    seen = Counter(sample.situations.values())
    assert set(seen) == {"refused", "split_off", "member_died"}, seen
    assert sum(seen.values()) < 0.05 * len(sample.interviews)
    assert generate(7, 500, field_outcomes=True).situations != sample.situations


def test_without_field_outcomes_every_form_is_complete_as_before(sample):
    plain = generate(20221015, 500)
    assert plain.situations == {} and plain.rosters[0] == sample.rosters[0]
    assert all(iv.result.value == "complete" and iv.supervisor_check is None for iv in plain.interviews)
    assert all(m.presence.value == "lives_here" for iv in plain.interviews for m in iv.members)


def test_each_field_situation_is_on_the_form_as_verify_reads_it(sample):
    by_id = {iv.family_id: iv for iv in sample.interviews}
    rostered_kks = {f.kk_number for r in sample.rosters for f in r.families}
    for fid, situation in sample.situations.items():
        iv = by_id[fid]
        if situation == "refused":
            assert (iv.result.value, iv.housing, iv.members, sample.expected[fid]) == ("refused", None, [], "refused")
        elif situation == "split_off":
            loc = iv.location
            assert loc.kk_status.value == "split_off" and loc.parent_kk_number in rostered_kks
            assert loc.kk_number not in rostered_kks and sample.expected[fid] == "verified"
        else:
            assert [m.presence.value for m in iv.members].count("died") == 1
            assert iv.head is not None and sample.expected[fid] == "verified"


def test_every_responded_form_carries_its_supervisor_check(sample):
    for iv in sample.interviews:
        check = iv.supervisor_check
        assert (check is not None) == iv.result.responded
        if check:
            assert check.checked_on >= iv.interviewed_at.date()


def test_two_sls_show_every_field_situation():
    s = generate(5, 60, field_outcomes=True)
    assert len(s.rosters) >= 2
    assert set(s.situations.values()) == {"refused", "split_off", "member_died"}


def test_tiny_sample():
    s = generate(3, 1)
    assert len(s.interviews) == 1 and len(s.rosters) == 1
    with pytest.raises(ValueError):
        generate(3, 0)


def test_the_sample_sends_the_forms_full_code_lists(sample):
    """Diplomas, industries (jobs and own businesses) and difficulty domains from docs/FORM.md's lists,
    never this system's earlier codes (intake's checks, the age filters included, pass above)."""
    from regsosek.contracts.interview import DIFFICULTY_MIN_AGE, EARLIER_CODES, Diploma, Industry, current_codes

    codes = sample.form_codes()
    assert set(codes["diploma"]) == {c.value for c in current_codes(Diploma)}
    assert {c.value for c in Industry if c.agricultural} - {"agriculture"} <= set(codes["industry"])
    assert len(codes["industry"]) >= 20
    assert set(codes["difficulty_domain"]) == set(DIFFICULTY_MIN_AGE)
    assert not {c.value for c in EARLIER_CODES} & (set(codes["diploma"]) | set(codes["industry"]))
    businesses = [m.business for iv in sample.interviews for m in iv.members if m.has_business]
    assert businesses and all(b is not None and b.industry is not None for b in businesses)
