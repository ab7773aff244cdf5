"""Notify: programme subscriptions and reliable signed delivery. Wiring only."""

from __future__ import annotations

from pathlib import Path

from regsosek.service import ServiceDefinition, build_app, serve
from regsosek.topics import Topic

from notify.api import router
from notify.delivery import deliver_forever, publish_lag_forever
from notify.handlers import HANDLERS
from notify.settings import NotifySettings

MIGRATIONS = Path(__file__).resolve().parents[2] / "migrations"


def definition(settings: NotifySettings | None = None) -> ServiceDefinition:
    settings = settings or NotifySettings()
    return ServiceDefinition(
        name="notify", settings=settings, migrations=MIGRATIONS, handlers=HANDLERS,
        topics=[Topic.ELIGIBILITY_DECIDED], routers=[router], background=[deliver_forever, publish_lag_forever],
        title="Regsosek notify", description="Programme systems subscribe to eligibility events and receive them, signed.",
    )


def main() -> None:
    serve(build_app(definition()))
