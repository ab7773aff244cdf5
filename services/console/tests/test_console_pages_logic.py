"""Sign-in checks, the local token, words in both languages and the charts' text alternatives."""

from __future__ import annotations

import string
from datetime import UTC, date, datetime

import pytest

from console import charts, i18n
from console.api import safe_next
from console.session import local_token
from console.settings import ConsoleSettings
from console.signin import sign_in_problems
from regsosek.auth import Role, TokenVerifier
from regsosek.contracts.details import (
    BASIS_RANKED_AREA,
    BASIS_WITHIN_FKP_GROUP,
    CATALOGUE,
    FAMILY_IN_STATE,
    NOT_ON_ROSTER,
    REJECTED_BY_SUPERVISOR,
    SCOPE_REGENCY,
    STILL_FLAGGED,
    UPDATE_APPLIED,
    UPDATE_NOT_APPLIED,
    UPDATE_WAITED_IN_VAIN,
)
from regsosek.jwks import JwksFile


def test_sign_in_problems_name_each_field():
    assert sign_in_problems("supervisor", "SPV-1", ["6472010"], "") == {}
    assert sign_in_problems("king", "", ["64x"], "") == {"role": "signin.bad_role", "subject": "signin.bad_subject",
                                                         "area": "signin.bad_area"}
    assert sign_in_problems("programme", "PKH", ["64"], "") == {"programme": "signin.bad_programme"}
    assert sign_in_problems("officer", "O", ["６４"], "") == {"area": "signin.bad_area"}  # fullwidth digits


def test_the_local_token_is_for_the_console_and_the_services_it_calls(tmp_path, monkeypatch):
    monkeypatch.setenv("REGSOSEK_LOCAL_AUTH_DIR", str(tmp_path))
    settings = ConsoleSettings()
    token = local_token(settings, role=Role.PROGRAMME, subject="PKH", areas=["64"], programmes=["pkh"])
    from regsosek.auth import local_jwks_file

    for audience in ("regsosek-console", "regsosek-intake", "regsosek-notify", "regsosek-classify"):
        p = TokenVerifier(JwksFile(local_jwks_file()), issuer="regsosek-local", audience=audience).verify_sync(token)
        assert (p.subject, p.role, p.areas, p.programmes) == ("PKH", Role.PROGRAMME, ("64",), ("pkh",))


def test_local_sign_in_is_refused_in_production():
    settings = ConsoleSettings(env="production", auth_jwks_url="https://idp.example/jwks", auth_issuer="idp",
                               auth_audience="regsosek-console")
    with pytest.raises(PermissionError):
        local_token(settings, role=Role.ADMIN, subject="A", areas=["64"], programmes=[])


def test_return_paths_stay_on_the_console():
    assert safe_next("/worklist?x=1") == "/worklist?x=1"
    assert safe_next("//evil.example/") == "/" and safe_next("https://evil.example/") == "/" and safe_next(None) == "/"


def test_both_languages_have_every_key():
    assert set(i18n.catalogue("id")) == set(i18n.catalogue("en"))
    assert i18n.Words("en")("page.worklist") == "Work list" and i18n.Words("xx").lang == "id"
    assert i18n.Words("en")("work.flagged", n=3) == "Flagged (3)"


def test_every_verification_detail_has_words_in_both_languages_english_as_verify_writes_it():
    for template in CATALOGUE:
        ident, english = i18n.catalogue("id")[f"detail.{template.code}"], i18n.catalogue("en")[f"detail.{template.code}"]
        assert english == template.text
        assert {n for _, n, _, _ in string.Formatter().parse(ident) if n} == set(template.fields), template.code


def test_every_code_a_detail_can_hold_has_words_in_both_languages():
    from regsosek.contracts.updates import UpdateBasis, UpdateKind

    for lang in ("id", "en"):
        words = i18n.catalogue(lang)
        assert all(f"update_kind.{k.value}" in words for k in UpdateKind), lang
        assert all(f"update_basis.{b.value}" in words for b in UpdateBasis), lang
        assert all(f"verify_state.{s}" in words for s in ("held", "flagged", "rejected", "non_response")), lang


def test_a_verification_detail_reads_in_the_readers_language():
    id_, en = i18n.Words("id"), i18n.Words("en")
    made = NOT_ON_ROSTER(building=2, family=1)
    assert id_.fact(made) == "Bangunan 2 keluarga 1 dan KK-nya tidak ada di prelist SLS"
    assert en.fact(made) == made
    nested = UPDATE_NOT_APPLIED(why=UPDATE_WAITED_IN_VAIN(why=STILL_FLAGGED(), days="30"))
    assert id_.fact(nested) == "Pemutakhiran tidak diterapkan: keluarga masih ditandai; tidak terverifikasi dalam 30 hari"
    basis = BASIS_WITHIN_FKP_GROUP(basis=BASIS_RANKED_AREA(scope=SCOPE_REGENCY(code="6472"), at="2022-11-01T08:30:00Z",
                                                         families=12, area="6472010"), group=2)
    assert id_.fact(basis) == ("diperingkat: kabupaten/kota 6472 pada 2022-11-01T08:30:00Z di antara 12 keluarga "
                               "(wilayah 6472010 diperingkat ulang setelah musyawarah desa); diperingkat dalam "
                               "kelompok kesejahteraan 2 yang ditetapkan musyawarah desa (FKP)")
    rejected = REJECTED_BY_SUPERVISOR(supervisor="SPV-7", reason="tinggal di RT sebelah")
    assert id_.fact(rejected) == "Ditolak oleh pengawas SPV-7: tinggal di RT sebelah"
    # codes in a detail are worded; in English the sentence stays the one verify wrote
    waited = UPDATE_NOT_APPLIED(why=FAMILY_IN_STATE(state="flagged"))
    assert id_.fact(waited) == "Pemutakhiran tidak diterapkan: keluarga berstatus ditandai, belum terverifikasi"
    assert en.fact(waited) == waited
    applied = UPDATE_APPLIED(kind="member_moved", basis="field_check")
    assert id_.fact(applied) == "Pemutakhiran anggota pindah diterapkan (cek lapangan)" and en.fact(applied) == applied
    # a supervisor's reason: the console's kind of decision worded, the note as written (even one that
    # happens to read as a detail)
    moved = REJECTED_BY_SUPERVISOR(supervisor="SPV-7", reason="moved: pindah ke RT 3")
    assert id_.fact(moved) == "Ditolak oleh pengawas SPV-7: Pindah (ditolak): pindah ke RT 3"
    assert id_.fact(REJECTED_BY_SUPERVISOR(supervisor="SPV-7", reason="national")).endswith(": national")
    # text no template made (an older event): shown as it came, in either language
    assert id_.fact("building 1 family 1 is not on the SLS roster") == "building 1 family 1 is not on the SLS roster"
    assert id_.fact(None) == "" and en.fact("") == ""


def test_a_resolutions_kind_is_worded_and_the_note_kept():
    from console import domain

    id_ = i18n.Words("id")
    assert id_.resolution(domain.resolution_reason("moved", "pindah ke RT 3")) == "Pindah (ditolak): pindah ke RT 3"
    assert id_.resolution(domain.resolution_reason("accept", "")) == "Diterima (tinggal di SLS ini)"
    assert i18n.Words("en").resolution("accept: seen") == "Accepted (lives in this SLS): seen"
    # a reason not made by the console (sent to intake directly) is shown as it came
    assert id_.resolution("lives here: checked") == "lives here: checked"


def test_a_rules_household_components_are_worded_and_an_unknown_one_shown_as_its_code():
    from classify.model import components
    from regsosek.contracts import household_profile
    from regsosek.contracts.interview import FamilyInterview
    from regsosek.examples import family_interview

    known = components(household_profile(FamilyInterview.model_validate(family_interview())))
    for lang in ("id", "en"):
        assert all(i18n.catalogue(lang).get(f"component.{c}") for c in known), lang
    assert i18n.Words("id").codes("component", ["pregnant_member", "new_component"]) == "ibu hamil, new_component"


def test_the_work_list_words_a_flags_facts_and_escapes_them():
    html = _render("_worklist.html", words="id",
                   **_worklist_context(REJECTED_BY_SUPERVISOR(supervisor="SPV-7", reason="<b>x</b>")))
    assert "Ditolak oleh pengawas SPV-7: &lt;b&gt;x&lt;/b&gt;" in html


def test_charts_say_in_words_what_they_show_and_escape_labels():
    svg = charts.distribution([1, 2, 0, 5], ["<b>", "M", "RM", "TM"], title="Groups & deciles")
    assert 'role="img"' in svg and "<b>" not in svg and "&lt;b&gt;: 1" in svg and "Groups &amp; deciles" in svg
    daily = charts.daily_chart([(date(2022, 10, 20), 4), (date(2022, 10, 21), 6)], 5.0, title="Daily", desc="plan 5")
    assert daily.count("<rect") == 2 and "stroke-dasharray" in daily and "2022-10-21: 6" in daily
    assert 'width="50.0"' in charts.completion_bar(0.5, "6472") and "50%" in charts.completion_bar(0.5, "6472")


def _signin_app(settings: ConsoleSettings):
    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    from console.api import Pages
    from console.gateway import Gateway
    from console.signin import signin_router

    app = FastAPI()
    app.include_router(signin_router(settings, Pages(settings, Gateway(settings))))
    return TestClient(app)


def test_production_refuses_the_local_sign_in_page_and_form():
    client = _signin_app(ConsoleSettings(env="production", auth_jwks_url="https://idp.example/jwks", auth_issuer="idp",
                                         auth_audience="regsosek-console"))
    page = client.get("/signin")
    assert page.status_code == 403 and "identity provider" in client.get("/signin", cookies={"regsosek_lang": "en"}).text
    posted = client.post("/signin", data={"role": "admin", "subject": "A", "area": "64"}, follow_redirects=False)
    assert posted.status_code == 403 and "set-cookie" not in posted.headers


def test_local_sign_in_sets_a_strict_http_only_cookie_and_refuses_bad_fields(tmp_path, monkeypatch):
    monkeypatch.setenv("REGSOSEK_LOCAL_AUTH_DIR", str(tmp_path))
    client = _signin_app(ConsoleSettings())
    ok = client.post("/signin", data={"role": "supervisor", "subject": "SPV-1", "area": "6472010", "next": "/journey"},
                     follow_redirects=False)
    assert ok.status_code == 303 and ok.headers["location"] == "/journey"
    cookie = ok.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=strict" in cookie and "regsosek_console=" in cookie
    bad = client.post("/signin", data={"role": "supervisor", "subject": "SPV-1", "area": "64 abc"}, follow_redirects=False)
    assert bad.status_code == 422 and 'id="area-problem"' in bad.text and "set-cookie" not in bad.headers
    away = client.post("/signin", data={"role": "admin", "subject": "A", "area": "64", "next": "//evil.example/"},
                       follow_redirects=False)
    assert away.headers["location"] == "/operations"


def _render(name: str, *, words: str = "en", **context) -> str:
    from console.api import Pages
    from console.gateway import Gateway

    settings = ConsoleSettings()
    pages = Pages(settings, Gateway(settings))
    return pages.templates.get_template(name).render(t=i18n.Words(words), **context)


def _worklist_context(detail: str) -> dict:
    from console import domain

    flag = domain.FamilyState("64720100010001-0002-001", "64720100010001", verify_state=domain.VerifyState.FLAGGED,
                              verify_outcome="rejected_by_supervisor", verify_at=datetime(2022, 10, 20, tzinfo=UTC),
                              flag_detail=detail)
    return {"flagged": [flag], "resolved": [], "awaiting": lambda f: False, "resolutions": ["accept"]}


def test_the_progress_shows_a_withheld_figure_as_withheld_never_its_number():
    from console import domain

    one = domain.Progress("64720100010001", expected=9, interviewed=6, verified=6, refused=3, sls=1)
    big = domain.Progress("64720100010002", expected=9, interviewed=9, verified=9, sls=1)
    overall = domain.total("6472010001", [one, big])
    context = {"area": "6472010001", "overall": overall, "rows": [one, big], "days": [], "plan": 0.0,
               "child_level": "sls", "updated": "now", "charts": charts, "area_name": lambda a: "",
               "outcomes": domain.OUTCOMES}
    withheld = _render("_progress.html", withheld=domain.disclosure(overall, [one, big], exact=False), **context)
    assert 'id="total-refused" data-withheld="1"' in withheld and 'id="withheld-note"' in withheld
    row = withheld.split('id="area-64720100010001"')[1].split("</tr>")[0]
    assert '<td data-col="refused"><span class="withheld"' in row and '<td data-col="interviewed">6</td>' in row
    assert "33%" not in row and "100%" not in row, "the completion would give the refusals back"
    exact = _render("_progress.html", withheld=domain.disclosure(overall, [one, big], exact=True), **context)
    assert '<dd id="total-refused">3</dd>' in exact and 'class="withheld"' not in exact


def test_the_journey_shows_the_familys_result():
    from console import domain

    family = domain.FamilyState("64720100010001-0002-001", "64720100010001", result="refused")
    html = _render("journey.html", family=family, steps=[], wanted=family.family_id, responded=domain.responded,
                   lang="en", nav=[], me=None, path="/journey", query="", live_ms=3000, notice=None, refused=None)
    assert 'id="journey-result" data-code="refused">Refused<' in html
    assert "Accounted for without an interview" in html
