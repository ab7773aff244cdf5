"""Retention of verify's interview bodies (docs/RETENTION.md): emptied once final and old, on the
in-memory store; the SQL of the real store: tests/integration/test_field_outcomes.py."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from test_verify_field_outcomes import refusal
from test_verify_handlers import Verify, family, interview, roster

from regsosek.contracts import RosterStatus
from verify.settings import VerifySettings

DAY = 24 * 3600.0


def at(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


async def test_non_response_bodies_expire_once_old_and_verified_flagged_or_held_ones_stay():
    """A verified family's body stays while it is registered (updates apply to it: verify.updates);
    a non-response form's goes after the retention; flagged and held ones stay until final."""
    v = Verify()
    await v.send(roster(family(1), family(2, RosterStatus.MOVED), family(3), family(4)))
    verified, flagged, refused, refused2 = interview(building=1), interview(building=2), refusal(3), refusal(4)
    for iv in (verified, flagged, refused, refused2):
        await v.send(iv)
    held = interview("64720100010009", 1)
    await v.send(held)
    assert await v.store.expire_bodies(at(0), 100) == 0  # decided at 0: not before the cut-off
    v.store.now = 91 * DAY
    assert await v.store.expire_bodies(at(90 * DAY), 1) == 1  # at most `limit` per statement
    assert await v.store.expire_bodies(at(90 * DAY), 100) == 1
    assert await v.store.expire_bodies(at(90 * DAY), 100) == 0
    bodies = {fid: row.interview is not None for fid, row in v.store.interviews.items()}
    assert bodies == {verified.family_id: True, refused.family_id: False, refused2.family_id: False,
                      flagged.family_id: True, held.family_id: True}
    assert v.state(refused.family_id)[0] == "non_response"  # the outcome stays


def test_the_retention_is_a_positive_setting_with_a_default():
    assert VerifySettings(env="local").interview_body_retention_days == 90
    assert VerifySettings(env="local", interview_body_retention_days=30).interview_body_retention_days == 30
    with pytest.raises(ValueError):
        VerifySettings(env="local", interview_body_retention_days=0)
