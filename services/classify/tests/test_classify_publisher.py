"""The events classify publishes are written as JSON from the domain's values, without building the
contracts' models (classify.publisher): held here to the contracts byte for byte, over families with
and without individual programmes' members, FKP groups, withdrawals, and clocks with and without
microseconds or a UTC offset."""

from __future__ import annotations

import copy
import json
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import orjson
import pytest
from jsonschema import Draft202012Validator

from classify.domain import Classified, Config, FamilyState, Withdrawal, decide_flag
from classify.model import DATA, PmtModel, PovertyLines, RuleSet
from classify.publisher import Publisher
from classify.ranking import reference_placement
from regsosek.contracts import (
    EVENT_TYPES,
    Contribution,
    EligibilityDecided,
    FamilyClassified,
    FamilyInterview,
    FlagReason,
    HouseholdProfile,
    InterviewFlagged,
    MemberDecision,
    ProgrammeDecision,
    WelfareGroup,
    household_profile,
)
from regsosek.envelope import encode, read_headers
from regsosek.examples import family_interview
from regsosek.messaging import Outbox
from regsosek.topics import Topic

CONFIG = Config(PmtModel.load(DATA / "pmt-illustrative-2022.1.yaml"), PovertyLines.load(DATA / "poverty-lines-2022.yaml"),
                RuleSet.load(DATA / "eligibility-2022.1.yaml"))
PLACEMENT = reference_placement(CONFIG.model.version, CONFIG.model.decile_cutpoints)
SCHEMAS = Path(__file__).resolve().parents[3] / "docs" / "schemas"
CLOCKS = [datetime(2022, 11, 1, 3, 4, 5, tzinfo=UTC), datetime(2022, 11, 1, 3, 4, 5, 120034, tzinfo=UTC),
          datetime(2022, 11, 1, 11, 4, 5, 7, tzinfo=timezone(timedelta(hours=8)))]


def profiles() -> list[HouseholdProfile]:
    """The example family, and variations of its profile that change its decile, group and member decisions."""
    base = household_profile(FamilyInterview.model_validate(family_interview())).model_dump(mode="json")
    head, child = base["members"][0], base["members"][-1]
    out = [HouseholdProfile.model_validate(base)]
    for size, age, school, assets, area in [(8, 9, "attending", [], 12.0), (1, 70, "not_anymore", None, 400.0),
                                            (4, 17, "attending", [], 30.0), (12, 4, "never", ["car", "refrigerator"], 900.0),
                                            (40, 15, "attending", [], 10.0)]:
        doc = copy.deepcopy(base)
        doc["members"] = [head] + [{**child, "age": age + (i % 5), "school": school} for i in range(size - 1)]
        for line_no, m in enumerate(doc["members"], start=1):
            m["line_no"] = line_no
        if assets is not None:
            doc["economy"]["assets"] = assets
        doc["housing"]["floor_area_m2"] = area
        out.append(HouseholdProfile.model_validate(doc))
    return out


PROFILES = profiles()


def schema(event: str) -> Draft202012Validator:
    return Draft202012Validator(json.loads((SCHEMAS / f"{event}.v1.json").read_text()),
                                format_checker=Draft202012Validator.FORMAT_CHECKER)


def published(outbox: Outbox, topic: Topic) -> list:
    return [r for r in outbox.pending if r.topic == topic.wire]


def test_the_variations_cover_what_the_json_carries():
    assert len(PROFILES) >= 4
    cs = [CONFIG.classify(p, fkp, PLACEMENT) for p in PROFILES for fkp in (None, WelfareGroup.MISKIN)]
    assert any(c.member_decisions for c in cs) and any(c.adjusted_by_fkp for c in cs)
    assert len({c.decile for c in cs}) >= 3 and len({c.welfare_group for c in cs}) >= 2
    assert any(d.eligible for c in cs for d in c.decisions) and any(not m.eligible for c in cs for m in c.member_decisions)


@pytest.mark.parametrize("clock", CLOCKS)
@pytest.mark.parametrize("fkp", [None, WelfareGroup.SANGAT_MISKIN, WelfareGroup.TIDAK_MISKIN])
def test_classified_events_are_the_models_json_byte_for_byte(clock, fkp):
    for seq, p in enumerate(PROFILES):
        c = CONFIG.classify(p, fkp, PLACEMENT)
        outbox = Outbox("/regsosek/classify")
        Publisher(CONFIG, clock=lambda clock=clock: clock).classified(outbox, p, c, seq)
        [fc], [ed] = published(outbox, Topic.FAMILY_CLASSIFIED), published(outbox, Topic.ELIGIBILITY_DECIDED)

        model_fc = FamilyClassified(
            family_id=p.family_id, sls_id=p.sls_id, submission_id=p.submission_id, version=p.version,
            predicted_monthly_per_capita=round(c.predicted, 0), welfare_group=c.welfare_group, decile=c.decile,
            decile_basis=c.decile_basis, model_version=CONFIG.model.version, adjusted_by_fkp=c.adjusted_by_fkp,
            explanation=[Contribution(factor=f.factor, effect=f.effect) for f in c.explanation], classified_at=clock,
            decision_seq=seq)
        model_ed = EligibilityDecided(
            family_id=p.family_id, sls_id=p.sls_id, submission_id=p.submission_id, version=p.version,
            welfare_group=c.welfare_group, decile=c.decile, model_version=CONFIG.model.version,
            rule_version=CONFIG.rules.version,
            decisions=[ProgrammeDecision(programme=d.programme, eligible=d.eligible, rule_version=d.rule_version,
                                         reasons=d.reasons) for d in c.decisions],
            decided_at=clock, decision_seq=seq,
            member_decisions=[MemberDecision(line_no=m.line_no, programme=m.programme, eligible=m.eligible,
                                             rule_version=m.rule_version, reasons=m.reasons) for m in c.member_decisions])
        assert fc.value == encode(model_fc)
        assert ed.value == encode(model_ed)
        # what a strict reader (unknown fields refused) and an integrator's JSON Schema say of them
        assert FamilyClassified.model_validate_json(fc.value) == model_fc
        assert EligibilityDecided.model_validate_json(ed.value) == model_ed
        assert not list(schema("family.classified").iter_errors(orjson.loads(fc.value)))
        assert not list(schema("eligibility.decided").iter_errors(orjson.loads(ed.value)))
        assert read_headers(fc.headers).type == EVENT_TYPES[FamilyClassified]
        assert read_headers(ed.headers).type == EVENT_TYPES[EligibilityDecided]
        assert (fc.key, read_headers(ed.headers).subject) == (p.sls_id.encode(), p.family_id)


def test_every_field_of_the_contracts_is_written_in_their_order():
    """A field added to a contract fails here until the publisher writes it too."""
    p = PROFILES[0]
    outbox = Outbox("/regsosek/classify")
    Publisher(CONFIG, clock=lambda: CLOCKS[0]).classified(outbox, p, CONFIG.classify(p, None, PLACEMENT), 3)
    fc, ed = (orjson.loads(r.value) for r in outbox.pending)
    assert list(fc) == list(FamilyClassified.model_fields)
    assert list(ed) == list(EligibilityDecided.model_fields)
    assert [list(x) for x in fc["explanation"]] == [list(Contribution.model_fields)] * len(fc["explanation"])
    assert {tuple(x) for x in ed["decisions"]} == {tuple(ProgrammeDecision.model_fields)}
    assert {tuple(x) for x in ed["member_decisions"]} == {tuple(MemberDecision.model_fields)}


@pytest.mark.parametrize("clock", CLOCKS)
def test_a_withdrawal_is_the_models_json_byte_for_byte(clock):
    p = PROFILES[0]
    flag = InterviewFlagged(family_id=p.family_id, sls_id=p.sls_id, submission_id=p.submission_id, version=p.version,
                            reason=FlagReason.NOT_ON_ROSTER, detail="x" * 500, flagged_at=CLOCKS[0], decision_seq=4)
    state = FamilyState(p.family_id, classified=Classified(p.sls_id, WelfareGroup.MISKIN, 2))
    w = decide_flag(CONFIG, state, flag).withdrawal
    assert isinstance(w, Withdrawal)
    outbox = Outbox("/regsosek/classify")
    Publisher(CONFIG, clock=lambda: clock).withdrawn(outbox, w, 9)
    [ed] = published(outbox, Topic.ELIGIBILITY_DECIDED)
    model = EligibilityDecided(
        family_id=p.family_id, sls_id=p.sls_id, submission_id=p.submission_id, version=p.version,
        welfare_group=WelfareGroup.MISKIN, decile=2, model_version=CONFIG.model.version,
        rule_version=CONFIG.rules.version,
        decisions=[ProgrammeDecision(programme=d.programme, eligible=False, rule_version=d.rule_version,
                                     reasons=d.reasons) for d in w.decisions],
        decided_at=clock, decision_seq=9)
    assert ed.value == encode(model)
    assert all(len(r) == 500 for d in w.decisions for r in d.reasons)  # cut to what the contract allows
    assert EligibilityDecided.model_validate_json(ed.value) == model
    assert not list(schema("eligibility.decided").iter_errors(orjson.loads(ed.value)))


def test_rules_whose_reasons_would_break_the_contracts_are_refused_when_loaded(tmp_path):
    """The publisher does not validate each decision: a rules file that could produce a reason longer than
    the contracts allow (500 characters) or a programme code outside 1-40 characters is refused at load."""
    base = (DATA / "eligibility-2022.1.yaml").read_text()
    long = tmp_path / "long.yaml"
    long.write_text(base.replace("requires_any: [", "requires_any: [" + "pregnant_member, " * 40, 1))
    with pytest.raises(ValueError, match="could exceed 500"):
        RuleSet.load(long)
    code = tmp_path / "code.yaml"
    code.write_text(base.replace("\n  pkh:", "\n  " + "p" * 41 + ":", 1))
    with pytest.raises(ValueError, match="1 to 40 characters"):
        RuleSet.load(code)
