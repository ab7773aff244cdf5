"""Notify: programme subscriptions and reliable signed delivery. The composition root: settings, the
programme access rules and DCI requester registry (refusing to start on a bad one), the store
factory, the publisher, the handlers, the routers and the background tasks, built here and passed
to what needs them."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import yaml

from notify import store
from notify.api import subscriptions_router
from notify.dci import DciApi, DciCallbackWorker, load_requesters
from notify.delivery import DeliveryWorker
from notify.domain import AccessRules, parse_access
from notify.handlers import NotifyHandlers
from notify.publisher import Publisher
from notify.settings import NotifySettings
from notify.webhook_keys import webhook_keys_router
from regsosek import audit_api
from regsosek.key_rotation import KeyRotation
from regsosek.programmes import PROGRAMME_CODES
from regsosek.retention import Rule
from regsosek.service import ServiceDefinition, build_app, serve
from regsosek.topics import Topic

MIGRATIONS = Path(__file__).resolve().parents[2] / "migrations"


def load_access(path: str) -> AccessRules:
    """The programme access file (what each programme may receive); refuses to start on a bad one."""
    return parse_access(yaml.safe_load(Path(path).read_text(encoding="utf-8")), PROGRAMME_CODES)


def identity_key_rotation(settings: NotifySettings, report: Callable[[str], None]) -> KeyRotation:
    """python -m notify.rotate_identity_keys: the kept identity lists re-sealed under the current key."""
    ring = settings.identity_keyring()
    return KeyRotation("identity lists", lambda conn: store.NotifyStore(conn).count_identities_not_under(ring.current_kid),
                       lambda conn, batch: store.NotifyStore(conn).reseal_identity_batch(ring, batch),
                       ring.current_kid, report)


def definition(settings: NotifySettings | None = None) -> ServiceDefinition:
    settings = settings or NotifySettings()
    access = load_access(settings.programme_access_file)
    requesters = load_requesters(settings.dci_requesters_file)  # the DCI requester key registry
    publisher = Publisher()
    handlers = NotifyHandlers(access, store_for=store.store_in, identity_keys=settings.identity_keyring(),
                              nik_lookup_key=settings.nik_lookup_key)
    worker = DeliveryWorker(settings, publisher, store_for=store.store_in, stores=store.open_store)
    return ServiceDefinition(
        name="notify", settings=settings, migrations=MIGRATIONS, handlers=handlers.handlers(),
        topics=[Topic.ELIGIBILITY_DECIDED, Topic.FAMILY_ERASED, Topic.MEMBER_IDENTITIES],
        routers=[subscriptions_router(settings, stores=store.pool_stores), webhook_keys_router(settings), audit_api.router,
                 DciApi(settings, access, requesters, stores=store.pool_stores).router()],
        background=[worker.deliver_forever, worker.publish_lag_forever,
                    DciCallbackWorker(settings, requesters, stores=store.open_store).deliver_forever],
        retention=[Rule("delivery_payload", settings.delivery_payload_retention_days, store.expire_delivered_payloads),
                   Rule("dci_bookkeeping", settings.dci_bookkeeping_retention_days, store.expire_dci_bookkeeping),
                   Rule("superseded_identity_lists", settings.identity_superseded_retention_days,
                        store.expire_superseded_identities)],
        title="Regsosek notify", description="Programme systems subscribe to eligibility events and receive them, signed.",
    )


def main() -> None:
    serve(build_app(definition()))
