"""The services deploy/ and docker-compose.yml must run, read from the code: every service the topic
registry names as a producer or consumer, with its settings class's HTTP port and whether it verifies
bearer tokens. No list of services, ports, groups or topics is written in the tests."""

from __future__ import annotations

import importlib
from pathlib import Path

from regsosek.settings import ServiceSettings, TokenSettings
from regsosek.topics import specs

ROOT = Path(__file__).resolve().parents[2]


def registry_services() -> list[str]:
    """Every service topics.yaml names, in registry order."""
    names: list[str] = []
    for spec in specs():
        for name in (*spec.producers, *spec.consumers):
            if name not in names:
                names.append(name)
    return names


def settings_class(service: str) -> type[ServiceSettings]:
    """The service's own settings class (e.g. intake.settings.IntakeSettings)."""
    module = importlib.import_module(f"{service}.settings")
    classes = [v for v in vars(module).values() if isinstance(v, type) and issubclass(v, ServiceSettings)
               and v.__module__ == module.__name__]
    assert len(classes) == 1, f"{module.__name__} should define one settings class, found {classes}"
    return classes[0]


def http_port(service: str) -> int:
    """The port the service listens on by default (its settings class's field default, not the environment)."""
    return int(settings_class(service).model_fields["http_port"].default)


def verifies_tokens(service: str) -> bool:
    return issubclass(settings_class(service), TokenSettings)


def mints_local_tokens(service: str) -> bool:
    """The service signs tokens with the local key pair itself (the console's local sign-in), so it
    needs the private key of .local/auth/, not only its public JWK Set."""
    sources = (ROOT / "services" / service / "src").rglob("*.py")
    return any("local_signer" in p.read_text() or "mint(" in p.read_text() for p in sources)


SERVICES = registry_services()
