"""Retention of verify's interview bodies (docs/RETENTION.md): emptied once final and old, on the
in-memory store; the SQL of the real store: tests/integration/test_field_outcomes.py."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from test_verify_field_outcomes import refusal
from test_verify_handlers import Verify, family, interview, resolution, roster

from regsosek.contracts import RosterStatus, SupervisorDecision
from regsosek.messaging import PermanentError
from verify.settings import VerifySettings

DAY = 24 * 3600.0


def at(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


async def test_final_bodies_expire_once_old_and_flagged_or_held_ones_stay():
    v = Verify()
    await v.send(roster(family(1), family(2, RosterStatus.MOVED), family(3)))
    verified, flagged, refused = interview(building=1), interview(building=2), refusal(3)
    for iv in (verified, flagged, refused):
        await v.send(iv)
    held = interview("64720100010009", 1)
    await v.send(held)
    assert await v.store.expire_bodies(at(0), 100) == 0  # decided at 0: not before the cut-off
    v.store.now = 91 * DAY
    assert await v.store.expire_bodies(at(90 * DAY), 1) == 1  # at most `limit` per statement
    assert await v.store.expire_bodies(at(90 * DAY), 100) == 1
    assert await v.store.expire_bodies(at(90 * DAY), 100) == 0
    bodies = {fid: row.interview is not None for fid, row in v.store.interviews.items()}
    assert bodies == {verified.family_id: False, refused.family_id: False, flagged.family_id: True,
                      held.family_id: True}
    assert v.state(verified.family_id) == ("verified", "verified", 1)  # the outcome stays
    with pytest.raises(PermanentError, match="expired"):
        await v.send(resolution(verified.family_id, SupervisorDecision.REJECT))


def test_the_retention_is_a_positive_setting_with_a_default():
    assert VerifySettings(env="local").interview_body_retention_days == 90
    assert VerifySettings(env="local", interview_body_retention_days=30).interview_body_retention_days == 30
    with pytest.raises(ValueError):
        VerifySettings(env="local", interview_body_retention_days=0)
