"""Which of verify's decisions classify applies: the newest by verify's decision sequence,
whatever order the verified and flagged topics deliver them in."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from classify.domain import VerifyDecision, is_family_decision, supersedes
from regsosek.contracts import FlagReason

T0 = datetime(2022, 10, 20, 10, tzinfo=UTC)


def verified(seq: int, version: int = 1, at: datetime = T0) -> VerifyDecision:
    return VerifyDecision(seq, version, at, verified=True)


def flagged(seq: int, version: int = 1, at: datetime = T0) -> VerifyDecision:
    return VerifyDecision(seq, version, at, verified=False)


def applied_in(order: list[VerifyDecision]) -> list[VerifyDecision]:
    """What a consumer applies, fed `order`, keeping the newest applied as classify does."""
    stored, out = None, []
    for d in order:
        if supersedes(d, stored):
            stored = d
            out.append(d)
    return out


def test_first_decision_applies():
    assert supersedes(verified(1), None)
    assert supersedes(flagged(1), None)


def test_flag_before_the_verification_it_withdraws_makes_it_stale():
    assert applied_in([flagged(2), verified(1)]) == [flagged(2)]  # the family ends not eligible


def test_stale_flag_after_a_supervisors_verification_is_ignored():
    assert applied_in([verified(1), verified(3), flagged(2)]) == [verified(1), verified(3)]


def test_any_arrival_order_ends_on_the_highest_sequence():
    decisions = [verified(1), flagged(2), verified(3), flagged(4, version=2)]
    for order in (decisions, decisions[::-1], [decisions[2], decisions[0], decisions[3], decisions[1]]):
        assert applied_in(order)[-1] == decisions[-1]


def test_the_same_decision_again_is_not_newer():
    assert not supersedes(verified(3), verified(3))
    assert not supersedes(flagged(3), flagged(3))


def test_sequence_wins_over_version_and_time():
    late_clock = T0 + timedelta(hours=1)
    assert not supersedes(flagged(2, version=1, at=late_clock), verified(3, version=1, at=T0))
    assert supersedes(verified(3, at=T0), flagged(2, at=late_clock))


def test_events_without_a_sequence_are_older_than_any_sequenced_one():
    assert not supersedes(flagged(0, version=9, at=T0 + timedelta(days=1)), verified(1))
    assert supersedes(verified(1), flagged(0, version=9))


def test_events_without_a_sequence_order_by_version_then_time():
    v1 = verified(0, version=1, at=T0)
    flag = flagged(0, version=1, at=T0 + timedelta(seconds=1))
    assert applied_in([v1, flag, v1]) == [v1, flag]  # the old verification arriving late changes nothing
    assert supersedes(verified(0, version=2, at=T0), flag)  # a newer version
    assert not supersedes(flagged(0, version=1, at=T0 + timedelta(days=1)), verified(0, version=2))


def test_a_duplicate_interview_or_update_not_applicable_flag_is_not_a_decision_about_the_family():
    about_a_submission = (FlagReason.DUPLICATE_INTERVIEW, FlagReason.UPDATE_NOT_APPLICABLE)
    assert not any(is_family_decision(r) for r in about_a_submission)
    assert all(is_family_decision(r) for r in FlagReason if r not in about_a_submission)
