"""Notify: programme subscriptions and reliable signed delivery. Wiring only."""

from __future__ import annotations

from pathlib import Path

import yaml

from notify import dci, handlers, store, webhook_keys
from notify.api import router
from notify.delivery import deliver_forever, publish_lag_forever
from notify.domain import AccessRules, parse_access
from notify.handlers import HANDLERS
from notify.settings import NotifySettings
from regsosek import audit
from regsosek.programmes import PROGRAMME_CODES
from regsosek.retention import Rule
from regsosek.service import ServiceDefinition, build_app, serve
from regsosek.topics import Topic

MIGRATIONS = Path(__file__).resolve().parents[2] / "migrations"


def load_access(path: str) -> AccessRules:
    """The programme access file (what each programme may receive); refuses to start on a bad one."""
    return parse_access(yaml.safe_load(Path(path).read_text(encoding="utf-8")), PROGRAMME_CODES)


def definition(settings: NotifySettings | None = None) -> ServiceDefinition:
    settings = settings or NotifySettings()
    handlers.access = load_access(settings.programme_access_file)
    dci.requesters(settings.dci_requesters_file)  # the DCI requester key registry: refuses to start on a bad one
    return ServiceDefinition(
        name="notify", settings=settings, migrations=MIGRATIONS, handlers=HANDLERS,
        topics=[Topic.ELIGIBILITY_DECIDED, Topic.FAMILY_ERASED], routers=[router, webhook_keys.router, audit.router, dci.router],
        background=[deliver_forever, publish_lag_forever],
        retention=[Rule("delivery_payload", settings.delivery_payload_retention_days, store.expire_delivered_payloads)],
        title="Regsosek notify", description="Programme systems subscribe to eligibility events and receive them, signed.",
    )


def main() -> None:
    serve(build_app(definition()))
