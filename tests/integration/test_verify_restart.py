"""Verify's held interviews survive a crash, and a roster that comes late still decides them:

- interviews held for a missing roster, verify SIGKILLed, more traffic (the roster among it)
  while it is down, restart: every held interview is decided once, nothing is lost;
- an interview flagged "no roster" after the hold timeout is decided when the roster comes.
"""

from __future__ import annotations

import asyncio
import json
import signal

import pytest
from test_verify_procedure import WAIT, completions, drained, fresh_sls, outcomes, send_interview, send_roster, wait_outcomes

from regsosek.topics import Topic

from itkit import World, eventually, family, family_id_of, read_topic

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
async def world(stack):
    w = await World(["verify"]).setup()
    try:
        yield w
    finally:
        await w.teardown()


async def held(w: World, sls: str) -> int:
    return await w.fetchval("verify", "select count(*) from interviews where sls_id = $1 and state = 'held'", sls)


async def test_restart_while_interviews_are_held(world, producer):
    try:
        await _restart_while_held(world, producer)
    finally:
        await asyncio.gather(*(p.stop() for p in world.processes))  # the next test starts its own


async def _restart_while_held(world, producer):
    (verify,) = await world.start("verify")
    sls = fresh_sls()
    fams = [family(sls, b) for b in range(1, 5)]
    fams[2][0]["status"] = "moved"
    fids = [family_id_of(iv) for _, iv in fams]
    for _, iv in fams[:3]:
        await send_interview(producer, world, iv)
    await eventually(lambda: _equals(held(world, sls), 3), timeout=WAIT, what="three interviews held")

    verify._proc.kill(signal.SIGKILL)  # a crash: no graceful shutdown
    assert await verify.wait_exit(10) == -signal.SIGKILL

    # While verify is down: one more interview, then the roster.
    await send_interview(producer, world, fams[3][1])
    await send_roster(producer, world, sls, [e for e, _ in fams])
    (verify,) = await world.start("verify")

    got = await wait_outcomes(world, {f: 1 for f in fids}, "every interview decided after the restart")
    await drained(world)
    got = await outcomes(world)
    assert [got[f] for f in fids] == [[("verified", "verified", 1)], [("verified", "verified", 1)],
                                      [("flagged", "roster_says_moved", 1)], [("verified", "verified", 1)]]
    assert await held(world, sls) == 0
    history = await world.fetch("verify", "select family_id, cause from verification_history where sls_id = $1", sls)
    causes = dict(sorted((h["family_id"], h["cause"]) for h in history))
    assert len(history) == 4 and [causes[f] for f in fids[:3]] == ["roster"] * 3, history
    # the interview sent while verify was down was decided whichever of it and the roster came first
    assert causes[fids[3]] in ("interview", "roster")
    (done,) = await completions(world, sls)
    assert (done["expected"], done["interviewed"], done["verified"], done["flagged"], done["absent"]) == (4, 4, 3, 1, 0)
    assert verify.alive


async def test_no_roster_after_timeout_then_the_roster_decides_it(world, producer):
    assert not any(p.alive for p in world.processes)
    await world.start("verify", REGSOSEK_HOLD_TIMEOUT_S="1", REGSOSEK_HOLD_SWEEP_INTERVAL_S="0.3")
    sls = fresh_sls()
    entry, iv = family(sls, 1)
    fid = family_id_of(iv)
    await send_interview(producer, world, iv)
    got = await wait_outcomes(world, {fid: 1}, "the interview flagged no_roster after the hold timeout")
    assert got[fid] == [("flagged", "no_roster", 1)]
    flagged = [r for r in await _records(world, Topic.INTERVIEW_FLAGGED) if r["family_id"] == fid]
    assert flagged[0]["detail"].startswith("no SLS roster arrived within")

    await send_roster(producer, world, sls, [entry])
    got = await wait_outcomes(world, {fid: 2}, "the late roster to decide the family")
    assert got[fid] == [("flagged", "no_roster", 1), ("verified", "verified", 1)]
    causes = [r["cause"] for r in await world.fetch(
        "verify", "select cause from verification_history where family_id = $1 order by id", fid)]
    assert causes == ["hold_timeout", "roster_revision"]
    await eventually(lambda: completions(world, sls), timeout=WAIT, what="the SLS complete")


async def _equals(awaitable, expected):
    return await awaitable == expected


async def _records(w: World, topic: Topic) -> list[dict]:
    return [json.loads(r.value) for r in await read_topic(w.topic(topic))]
