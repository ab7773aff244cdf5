"""The composition root (intake.app) wires the service and the key rotation command alike, from
settings passed in: no module state is set at start-up."""

from __future__ import annotations

from contextlib import asynccontextmanager

import uvicorn

from intake import app, store
from intake.settings import IntakeSettings
from regsosek import service, telemetry
from regsosek.contracts import (
    EligibilityDecided,
    EligibilityDelivered,
    FamilyClassified,
    InterviewFlagged,
    InterviewVerified,
    InterviewVerifiedV1,
    UpdateHeld,
)
from regsosek.key_rotation import KeyRotation

from intake_fakes import InMemoryIntakeStore


def test_definition_wires_consumers_routes_background_and_retention_from_the_settings():
    settings = IntakeSettings(env="local", submission_body_retention_days=30)
    d = app.definition(settings)
    assert d.settings is settings
    assert set(d.handlers) == {InterviewVerified, InterviewVerifiedV1, InterviewFlagged, FamilyClassified,
                               EligibilityDecided, EligibilityDelivered, UpdateHeld}
    assert [bg.__name__ for bg in d.background] == ["seal_clear_bodies"]
    assert [(r.name, r.days) for r in d.retention] == [("submission_body", 30)]
    paths = {route.path for r in d.routers for route in r.routes}
    assert {"/v1/interviews", "/v1/interviews:batch", "/v1/rosters", "/v1/resolutions", "/v1/fkp-adjustments",
            "/v1/submissions/{submission_id}", "/v1/families/{family_id}/erasure"} <= paths
    assert not hasattr(store, "keyring")  # the keys reach the store through its constructor only


def test_the_store_on_a_connection_seals_with_the_settings_keys():
    settings = IntakeSettings(env="local")
    s = app.store_on(settings)(None)
    assert isinstance(s, store.IntakeStore)
    assert app.key_rotation(settings, report=print).current_kid == settings.keyring().current_kid


class _Pool:
    @asynccontextmanager
    async def acquire(self):
        yield None


class _Stale(InMemoryIntakeStore):
    """Five bodies under an old key, re-sealed two at a time."""

    def __init__(self) -> None:
        super().__init__()
        self.left = 5

    async def unsealed_or_stale(self) -> int:
        return self.left

    async def reseal_batch(self, limit: int) -> int:
        n = min(limit, self.left)
        self.left -= n
        return n


def rotation_of(stale: _Stale, lines: list[str]) -> KeyRotation:
    return KeyRotation("bodies", lambda conn: stale.unsealed_or_stale(),
                       lambda conn, batch: stale.reseal_batch(batch), "k2", lines.append)


async def test_key_rotation_reseals_batch_by_batch_and_reports_progress():
    stale, lines = _Stale(), []
    left = await rotation_of(stale, lines).run(_Pool(), 2)
    assert left == 0 and stale.left == 0
    assert lines[0] == "current key k2: 5 bodies to seal or re-seal"
    assert [line.split(" (")[0] for line in lines[1:-1]] == ["re-sealed 2/5", "re-sealed 4/5", "re-sealed 5/5"]
    assert lines[-1] == "done: 5 re-sealed, 0 left"


async def test_a_dry_run_only_counts():
    stale, lines = _Stale(), []
    assert await rotation_of(stale, lines).run(_Pool(), 2, dry_run=True) == 5
    assert stale.left == 5 and len(lines) == 1


def test_main_serves_with_the_workers_the_settings_ask_for(monkeypatch):
    """REGSOSEK_HTTP_WORKERS: one process serves the app it was given; more start that many
    workers, each building its own app from the factory (tests/integration/test_intake_workers.py
    runs two)."""
    runs: list[tuple[object, dict]] = []
    monkeypatch.setattr(telemetry, "setup", lambda *a, **kw: None)  # no process-wide logging or tracing set-up
    monkeypatch.setattr(uvicorn, "run", lambda target, **kw: runs.append((target, kw)))
    monkeypatch.setenv("REGSOSEK_HTTP_WORKERS", "1")
    app.main()
    monkeypatch.setenv("REGSOSEK_HTTP_WORKERS", "3")
    app.main()
    (one, kw1), (many, kw3) = runs
    assert not isinstance(one, str) and "workers" not in kw1
    assert many == "intake.app:create_app" and kw3["factory"] is True and kw3["workers"] == 3
    assert kw3["port"] == kw1["port"] and kw3["timeout_worker_healthcheck"] == service.WORKER_PING_S


def test_a_service_without_a_factory_serves_with_one_process_whatever_the_setting(monkeypatch):
    runs: list[tuple[object, dict]] = []
    monkeypatch.setattr(telemetry, "setup", lambda *a, **kw: None)
    monkeypatch.setattr(uvicorn, "run", lambda target, **kw: runs.append((target, kw)))
    built = service.build_app(app.definition(IntakeSettings(env="local", http_workers=2)))
    service.serve(built)
    ((target, kw),) = runs
    assert target is built and "workers" not in kw and "factory" not in kw
