"""The console in a real browser (Debian's chromium through chromedriver, driven by Selenium) on the
real stack: intake, verify, classify, notify and the console as processes of one test world
(itkit.World: own topics, databases, ports), families submitted through intake's API.

Each person's main flow: operations sees progress move while families are submitted; a supervisor
resolves a flagged family and sees it become verified; anyone with an id sees the family's journey;
a village official records a consultation decision; a programme integrator pauses and resumes a
subscription; and the pages work by keyboard, with labels. The tests write a screenshot of each page
into docs/console/ (shown in the README).
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid

import httpx
import pytest
from console_browser import Browser, chromium_driver

from classify.app import load_config
from classify.settings import ClassifySettings
from regsosek import areas

from itkit import (
    BOOTSTRAP,
    ROOT,
    Submitter,
    World,
    eventually,
    family,
    family_id_of,
    free_port,
    new_sls_id,
    roster,
    token,
)

pytestmark = pytest.mark.integration

SHOTS = ROOT / "docs" / "console"
SERVICES = ["intake", "verify", "classify", "notify", "console"]


@pytest.fixture(scope="module")
async def world(stack):
    w = await World(SERVICES).setup()
    try:
        await w.start("intake", "verify", "classify", "notify")
        console = w.process("console", REGSOSEK_INTAKE_URL=f"http://127.0.0.1:{w.ports['intake']}",
                            REGSOSEK_NOTIFY_URL=f"http://127.0.0.1:{w.ports['notify']}",
                            REGSOSEK_CLASSIFY_URL=f"http://127.0.0.1:{w.ports['classify']}",
                            REGSOSEK_LIVE_INTERVAL_S="1").start()
        await console.wait_ready()
        yield w
    finally:
        await w.teardown()


@pytest.fixture(scope="module")
def browser(world):
    driver = chromium_driver()
    try:
        yield Browser(driver, f"http://127.0.0.1:{world.ports['console']}", SHOTS)
    finally:
        driver.quit()


@pytest.fixture
async def intake(world):
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{world.ports['intake']}", timeout=20) as c:
        yield Submitter(c)


async def classify_command(world: World, module: str, *args: str) -> tuple[int, str]:
    """An operator's classify command (python -m classify.rerank / .replay) on this world's classify database."""
    env = {**os.environ, "REGSOSEK_DATABASE_URL": world.dsn("classify"), "REGSOSEK_TOPIC_PREFIX": world.prefix,
           "REGSOSEK_KAFKA_BOOTSTRAP": BOOTSTRAP}
    p = await asyncio.to_thread(subprocess.run, [sys.executable, "-m", module, "--json", *args], env=env,
                                capture_output=True, text=True, timeout=120)
    return p.returncode, p.stdout + p.stderr


async def seen(browser: Browser, probe, what: str, timeout: float = 90):
    """Polls the browser (in a thread: Selenium blocks) until `probe(browser)` is truthy."""
    return await eventually(lambda: asyncio.to_thread(probe, browser), timeout=timeout, interval=0.5, what=what)


async def progress_of(world: World, cookie: str, area: str) -> dict:
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{world.ports['console']}", timeout=20,
                                 cookies={"regsosek_console": cookie}) as c:
        r = await c.get("/api/progress", params={"area": area})
        assert r.status_code == 200, r.text
        return r.json()


async def test_operations_sees_progress_move_while_families_are_submitted(world, browser, intake):
    # a regency no other test of the module submits in: its totals are exact whatever ran before
    sls = new_sls_id("6474")
    behind = next(s for s in (new_sls_id("6474") for _ in range(200)) if s[:7] != sls[:7])  # another district
    regency = sls[:4]
    entries, interviews = zip(*(family(sls, b) for b in range(1, 7)), strict=True)
    await intake.submit("/v1/rosters", roster(sls, list(entries)))
    # the RT head confirmed one family of the other SLS moved and one unknown (field outcomes: moved, not found)
    behind_entries = [{**family(behind, b)[0], "status": status}
                      for b, status in enumerate(("present", "moved", "unknown", "present"), start=1)]
    await intake.submit("/v1/rosters", roster(behind, behind_entries))
    browser.sign_in("admin", "OPS-IT", "64")
    browser.open(f"/operations?area={regency}")
    await seen(browser, lambda b: b.text("total-expected") == "10", "the rosters' ten expected families")
    browser.mark_document()
    assert browser.text("total-interviewed") == "0"

    # the family of building 6 refuses: its form records the refusal (no housing, no members living with it)
    refusal = {k: v for k, v in interviews[-1].items() if k not in ("housing", "economy")} | {"result": "refused",
                                                                                             "members": []}
    shown: list[int] = []
    for iv in (*interviews[:-1], refusal):
        await intake.submit("/v1/interviews", iv)
        shown.append(int(await asyncio.to_thread(browser.text, "total-interviewed")))
        await asyncio.sleep(0.7)
    await seen(browser, lambda b: b.text("total-verified") == "5" and b.text("total-refused") == "1",
               "five verified families and one refusal on the live page")
    assert browser.text("total-interviewed") == "5", "a refused family is counted under refused, not interviewed"
    assert browser.document_marked(), "the numbers must change in place (live update), not by reloading the page"
    assert shown == sorted(shown), f"progress never goes back: {shown}"
    assert browser.row_ids("table.progress") == [f"area-{behind[:7]}", f"area-{sls[:7]}"], \
        "the district falling behind (nothing interviewed) comes first"
    # the RT head's moved and unknown families are not reached (the regency's totals cover two SLS: exact)
    assert (browser.text("total-not_reached"), browser.text("total-moved"), browser.text("total-not_found"),
            browser.text("total-absent")) == ("2", "1", "1", "2")
    assert browser.text("total-completion") == "80%", "interviewed, refused and not reached: 8 of 10 accounted for"
    browser.shot("operations")
    # one SLS: operations sees the small counts withheld, the SLS's supervisor the exact figures
    browser.open(f"/operations?area={sls}")
    assert browser.text("total-expected") == "6" and browser.text("total-verified") == "5"
    assert browser.text("total-interviewed") == "5" and browser.withheld("total-refused")
    assert "1" not in browser.text("total-refused") and browser.withheld("total-completion")
    browser.shot("operations-sls-withheld")
    browser.sign_in("supervisor", "SPV-OPS", regency)
    browser.open(f"/operations?area={sls}")
    assert (browser.text("total-interviewed"), browser.text("total-refused"), browser.text("total-completion")) == \
        ("5", "1", "100%")
    assert not browser.withheld("total-refused")
    browser.open(f"/operations?area={regency}")
    assert browser.cell(f"area-{sls[:7]}", "refused") == "1"
    browser.shot("operations-supervisor")
    shown_json = (await progress_of(world, browser.session_cookie(), sls))["total"]
    assert (shown_json["interviewed"], shown_json["refused"], shown_json["suppressed"]) == (5, 1, [])
    refused_id = family_id_of(refusal)
    await seen(browser, lambda b: b.reload(f"/journey?id={refused_id}") or b.exists("journey-result"),
               "the refused family's journey")
    assert browser.find("journey-result").get_attribute("data-code") == "refused"
    assert browser.steps() == {"received"}, "a refusal is neither verified nor flagged"


async def test_supervisor_resolves_a_flagged_family_and_sees_it_verified(world, browser, intake):
    sls = new_sls_id("6472")
    entry, listed = family(sls, 1)
    _, unlisted = family(sls, 2)  # not on the roster: flagged not_on_roster
    await intake.submit("/v1/rosters", roster(sls, [entry]))
    await intake.submit("/v1/interviews", listed)
    await intake.submit("/v1/interviews", unlisted)
    fid = family_id_of(unlisted)

    browser.sign_in("supervisor", "SPV-IT", sls)
    await seen(browser, lambda b: b.reload("/worklist") or b.exists(f"flag-{fid}"), "the flagged family in the work list")
    card = browser.find(f"flag-{fid}")
    assert card.find_element("css selector", ".reason").get_attribute("data-code") == "not_on_roster"
    source = browser.page_source()
    identifiers = [unlisted["location"]["kk_number"], *(m["nik"] for m in unlisted["members"] if "nik" in m),
                   *(m["name"] for m in unlisted["members"])]
    assert not [x for x in identifiers if x in source], "the work list shows no NIK, KK number or name"
    browser.shot("worklist")
    browser.shot("worklist-phone", width=412)  # a supervisor's phone in the field
    browser.resolve(fid, "accept", "lives here, checked with the RT head")
    assert "intake" in browser.text_of("css selector", "p.notice")
    browser.mark_document()
    await seen(browser, lambda b: b.state_of(f"resolved-{fid}") == "verified" and not b.exists(f"flag-{fid}"),
               "the supervisor's decision applied: the family verified and out of the work list, on the open page")
    assert browser.document_marked(), "the result arrives on the open page (live), not by reloading it"
    browser.shot("worklist-resolved")

    # its journey, by the interview's submission id: received, flagged, the decision, verified, classified, eligibility
    wanted = {"received", "flagged", "resolution", "verified", "classified", "eligibility"}
    await seen(browser, lambda b: b.reload(f"/journey?id={unlisted['submission_id']}") or wanted <= b.steps(),
               "the whole journey")
    assert browser.text("journey-state") in ("Terverifikasi", "Verified")
    browser.shot("journey")


async def test_scope_a_supervisor_sees_no_family_outside_their_areas(world, browser, intake):
    sls, other = new_sls_id("6472"), new_sls_id("6471")
    entry, iv = family(other, 1)
    await intake.submit("/v1/rosters", roster(other, [entry]))
    await intake.submit("/v1/interviews", iv)
    browser.sign_in("admin", "OPS-IT", "64")
    await seen(browser, lambda b: b.reload(f"/journey?id={family_id_of(iv)}") or b.exists("timeline"),
               "the family, for operations")
    admin_view = await progress_of(world, browser.session_cookie(), "64")
    browser.sign_in("supervisor", "SPV-ELSEWHERE", sls)
    browser.open(f"/journey?id={family_id_of(iv)}")
    assert browser.exists("journey-missing") and not browser.exists("timeline")
    supervisor_view = await progress_of(world, browser.session_cookie(), "64")
    assert admin_view["total"]["interviewed"] >= 1 and admin_view["total"]["expected"] >= 1
    assert supervisor_view["total"] == {"area": "64", "expected": 0, "interviewed": 0, "verified": 0, "flagged": 0,
                                        "refused": 0, "not_reached": 0, "absent": 0, "moved": 0, "dissolved": 0,
                                        "not_found": 0, "no_respondent": 0, "completion": 0.0, "suppressed": []}, \
        "progress counts only the supervisor's own areas"
    browser.open("/integrator")
    assert "403" in browser.title() or browser.exists_css("p[role=alert]"), "the integrator page is not a supervisor's"


async def test_village_official_records_a_consultation_decision(world, browser, intake):
    sls = new_sls_id("6472")
    entry, iv = family(sls, 1)
    await intake.submit("/v1/rosters", roster(sls, [entry]))
    await intake.submit("/v1/interviews", iv)
    fid = family_id_of(iv)
    browser.sign_in("village_official", "DESA-IT", sls[:10])
    await seen(browser, lambda b: b.reload(f"/village?area={sls[:10]}") or b.exists_css(f"#fam-{fid} form.fkp"),
               "the classified family on the village page")
    row = browser.find(f"fam-{fid}")
    current = row.find_element("css selector", "select").get_attribute("value")
    new_group = "1" if current != "1" else "2"
    browser.record_fkp(fid, new_group, "musyawarah desa 2023")
    assert browser.exists_css("p.notice"), browser.page_source()[-3000:]
    await seen(browser, lambda b: b.reload(f"/village?area={sls[:10]}") or b.exists_css(f"#fam-{fid} .tag"),
               "the family re-classified with the village's decision")

    # the village's forum as held: opened, a decision by consensus and a family the census missed
    forum_id = str(uuid.uuid4())
    village = {"authorization": f"Bearer {token('village_official', 'DESA-IT', (sls[:10],))}"}
    opened = await intake.client.post("/v1/fkp-forums", headers=village, json={
        "forum_id": forum_id, "village_id": sls[:10], "sls_ids": [sls], "held_on": "2023-05-08",
        "participants": [{"role": "village_head", "count": 1}, {"role": "sls_head", "count": 3}]})
    assert opened.status_code == 202, opened.text
    for body in ({"family_id": fid, "kind": "confirmed", "reason": "as the consultation saw it"},
                 {"family_id": f"{sls}-0099-001", "kind": "added", "reason": "missed by the census"}):
        r = await intake.client.post(f"/v1/fkp-forums/{forum_id}/decisions", headers=village,
                                     json={"decision_id": str(uuid.uuid4()), **body})
        assert r.status_code == 202, r.text
    await seen(browser, lambda b: b.reload(f"/village?area={sls[:10]}")
               or len(b.driver.find_elements("css selector", f"#forum-{forum_id} table.forum-decisions tbody tr")) == 2,
               "the forum and its two decisions on the village page")
    checks = [c.text.strip() for c in browser.driver.find_elements("css selector", f"#forum-{forum_id} td.check")]
    assert "—" in checks and {"menunggu", "pending"} & set(checks), checks  # the added family waits for its check
    browser.shot("village")


async def test_policy_shows_the_model_lines_and_rules_in_force_and_a_replays_progress(world, browser, intake):
    sls = new_sls_id("6472")
    entries, interviews = zip(*(family(sls, b) for b in range(1, 3)), strict=True)
    await intake.submit("/v1/rosters", roster(sls, list(entries)))
    for iv in interviews:
        await intake.submit("/v1/interviews", iv)
    fids = [family_id_of(iv) for iv in interviews]
    async def classified() -> bool:
        n = await world.fetchval("classify", "select count(*) from families where family_id = any($1::text[])", fids)
        return n == 2

    await eventually(classified, timeout=90, what="both families classified")
    # an operator's re-rank, then a replay stopped after its first batch (it resumes on the next run)
    assert (await classify_command(world, "classify.rerank", "--scope", "national"))[0] == 0
    assert (await classify_command(world, "classify.replay", "--batch-size", "1", "--max-batches", "1"))[0] == 0
    browser.sign_in("supervisor", "SPV-POLICY", sls[:4])
    browser.open(f"/policy?area={sls[:4]}")
    in_force = load_config(ClassifySettings())  # the files classify runs with
    assert browser.text("model-version") == in_force.model.version
    assert browser.text("lines-version") == in_force.lines.version
    assert browser.text("rules-version") == in_force.rules.version
    assert "BPS" in browser.text("lines-source")
    coverage = areas.reference().urban_coverage()  # what the page says of per-village urban/rural
    said = browser.text("urban-coverage")  # Indonesian by default, English when chosen
    classified, villages = coverage["urban"] + coverage["rural"], coverage["villages"]
    assert f"{classified} dari {villages}" in said or f"{classified} of {villages}" in said, said
    assert "pkh" in browser.text("rules")
    replay = browser.driver.find_element("css selector", "#replays tbody tr")
    assert replay.get_attribute("data-state") == "interrupted", replay.text
    assert browser.exists_css("#rankings tbody tr")
    assert browser.find("rerank-running").get_attribute("data-running") == "no"
    await seen(browser, lambda b: b.reload(f"/policy?area={sls[:4]}") or b.exists(f"regency-{sls[:4]}"),
               "the regency's distribution")
    assert browser.exists("versions")
    browser.shot("policy")


async def test_programme_integrator_pauses_and_resumes_a_subscription(world, browser, intake):
    notify = f"http://127.0.0.1:{world.ports['notify']}"
    programme = {"authorization": f"Bearer {token('programme', 'PKH-IT', ('64',), ('pkh',))}"}
    async with httpx.AsyncClient(base_url=notify, timeout=20) as c:
        r = await c.post("/v1/subscriptions", headers=programme,
                         json={"callback_url": f"http://127.0.0.1:{free_port()}/hook", "signature": "ed25519",
                               "filters": {"area_prefixes": ["64"]}})
        assert r.status_code == 201, r.text
        sub_id = r.json()["id"]

        async def status() -> str:
            return (await c.get(f"/v1/subscriptions/{sub_id}", headers=programme)).json()["status"]

        # a family decided after the subscription: notify tries to deliver it to a callback nobody answers
        sls = new_sls_id("6472")
        entry, iv = family(sls, 1)
        await intake.submit("/v1/rosters", roster(sls, [entry]))
        await intake.submit("/v1/interviews", iv)
        browser.sign_in("programme", "PKH-IT", "64", programme="pkh")
        await seen(browser, lambda b: b.reload("/integrator") or b.exists_css(f"#sub-{sub_id} table.attempts"),
                   "the subscription's failed delivery attempts on the page")
        browser.click_css(f"#sub-{sub_id} button.pause")
        assert await status() == "paused"
        assert browser.exists_css(f"#sub-{sub_id} button.resume")
        browser.shot("integrator")
        browser.click_css(f"#sub-{sub_id} button.resume")
        assert await status() == "active"
        assert browser.exists_css(f"#sub-{sub_id} button.pause")
        browser.click_css(f"#sub-{sub_id} button.redeliver")
        assert browser.text_of("css selector", "p.notice") in ("Surat mati dijadwalkan untuk dikirim ulang.",
                                                               "Dead letters queued for re-delivery.")


async def test_programme_integrator_sends_a_test_event_that_reaches_the_receiver(world, browser):
    secret = "receiver-secret-" + uuid.uuid4().hex
    receiver = world.receiver(secret).start()
    await receiver.wait_ready()
    programme = {"authorization": f"Bearer {token('programme', 'PKH-TEST', ('64',), ('pkh',))}"}
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{world.ports['notify']}", timeout=20) as c:
        r = await c.post("/v1/subscriptions", headers=programme,
                         json={"callback_url": receiver.url + "/notify", "secret": secret,
                               "filters": {"area_prefixes": ["6499"]}})  # no family of the tests lives there
        assert r.status_code == 201, r.text
        sub_id = r.json()["id"]
    browser.sign_in("programme", "PKH-TEST", "64", programme="pkh")
    browser.open("/integrator")
    browser.click_css(f"#sub-{sub_id} button.test-event")
    assert browser.text_of("css selector", "p.notice") in (
        "Peristiwa uji dijadwalkan: dikirim bersama pengiriman berikutnya langganan ini.",
        "Test event queued: it goes out with the subscription's next delivery.")

    async def received() -> list[dict]:
        async with httpx.AsyncClient(base_url=receiver.url, timeout=10) as c:
            return [e for e in (await c.get("/events", params={"with_data": "true"})).json()["events"]
                    if e["event_type"] == "regsosek.test"]

    (event,) = await eventually(received, timeout=60, what="the test event at the reference receiver")
    assert event["data"]["test"] is True and event["data"]["subscription_id"] == sub_id
    assert not {"family_id", "sls_id", "welfare_group", "decisions"} & set(event["data"])
    await seen(browser, lambda b: b.reload("/integrator") or b.exists_css(f"#sub-{sub_id} table.attempts"),
               "the test event's delivery among the attempts")
    assert "delivered" in browser.text_of("css selector", f"#sub-{sub_id} table.attempts tbody tr")
    browser.shot("integrator-test-event")


async def test_the_journey_shows_a_programme_systems_acknowledgement(world, browser, intake):
    secret = "receiver-secret-" + uuid.uuid4().hex
    receiver = world.receiver(secret).start()
    await receiver.wait_ready()
    sls = new_sls_id("6472")
    programme = {"authorization": f"Bearer {token('programme', 'PKH-RECEIVER', ('64',), ('pkh',))}"}
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{world.ports['notify']}", timeout=20) as c:
        r = await c.post("/v1/subscriptions", headers=programme,
                         json={"callback_url": receiver.url + "/notify", "secret": secret,
                               "filters": {"area_prefixes": [sls]}})
        assert r.status_code == 201, r.text
    entry, iv = family(sls, 1)
    await intake.submit("/v1/rosters", roster(sls, [entry]))
    await intake.submit("/v1/interviews", iv)
    browser.sign_in("admin", "OPS-IT", "64")
    await seen(browser, lambda b: b.reload(f"/journey?id={family_id_of(iv)}") or "delivered" in b.steps(),
               "the delivered step in the family's journey")
    delivered = browser.text_of("css selector", "#timeline li[data-step=delivered]")
    assert "PKH-RECEIVER" in delivered


async def test_keyboard_and_labels(world, browser):
    browser.sign_out()
    browser.open("/signin")
    browser.shot("signin")
    browser.keyboard_sign_in("supervisor", "SPV-KEYS", "6472")
    assert browser.path() == "/worklist"
    for page in ("/worklist", "/operations?area=6472", "/journey", "/village?area=6472", "/policy"):
        browser.open(page)
        assert browser.unlabelled_fields() == [], page
        assert browser.landmarks() >= {"banner", "navigation", "main", "contentinfo"}, page
        assert browser.first_tab_goes_to_skip_link(), page
    browser.open("/lang/en?next=/worklist")
    assert browser.text_of("css selector", "h1") == "Supervisor's work list"
    browser.open("/lang/id?next=/worklist")
    assert browser.text_of("css selector", "h1") == "Daftar kerja pengawas"


async def test_the_console_refuses_bad_input_with_the_field(world, browser):
    base = f"http://127.0.0.1:{world.ports['console']}"
    async with httpx.AsyncClient(base_url=base, timeout=20) as c:
        r = await c.post("/signin", data={"role": "supervisor", "subject": "X", "area": "64x", "next": "/"})
        assert r.status_code == 422 and "area-problem" in r.text
        r = await c.get("/api/progress")
        assert r.status_code == 401
        browser.sign_in("supervisor", "SPV-IT", "64")
    async with httpx.AsyncClient(base_url=base, timeout=20, cookies={"regsosek_console": browser.session_cookie()}) as c:
        r = await c.get("/api/progress", params={"area": "123"})
        assert r.status_code == 422 and "area" in r.text
        r = await c.get("/api/progress", params={"area": "64"})
        assert r.status_code == 200 and r.json()["area"] == "64"
        r = await c.post("/worklist/resolve", data={"family_id": "x", "sls_id": "1", "kind": "maybe"})
        assert r.status_code == 422


async def test_erasure_removes_the_family_from_the_console(world, browser, intake):
    sls = new_sls_id("6472")
    entry, iv = family(sls, 1)
    await intake.submit("/v1/rosters", roster(sls, [entry]))
    await intake.submit("/v1/interviews", iv)
    fid = family_id_of(iv)
    browser.sign_in("admin", "OPS-IT", "64")
    await seen(browser, lambda b: b.reload(f"/journey?id={fid}") or b.exists("timeline"), "the family's journey")
    admin = {"authorization": f"Bearer {token('admin', 'ADM-IT', ())}"}
    r = await intake.client.post(f"/v1/families/{fid}/erasure", json={"reason": "data_subject_request"}, headers=admin)
    assert r.status_code == 202, r.text
    await seen(browser, lambda b: b.reload(f"/journey?id={fid}") or b.exists("journey-missing"),
               "the family gone from the read model")
    assert await world.fetchval("console", "select count(*) from journey_steps where family_id = $1", fid) == 0
    assert await world.fetchval("console", "select count(*) from audit_log where action = 'family.erase' "
                                           "and object_id = $1", fid) == 1

