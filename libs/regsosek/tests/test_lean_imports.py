"""What writes to a service's store, reads the settings or runs an operator command imports neither
the web framework nor the Kafka client: a command (python -m classify.replay) and its worker
processes start in about half the time.
Each case imports its module in a fresh interpreter and lists which heavy packages came with it."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

import regsosek.messaging as messaging

HEAVY = ("fastapi", "starlette", "faststream", "aiokafka", "httpx", "uvicorn")


def heavy_imported_by(statement: str) -> list[str]:
    probe = f"import sys, json\n{statement}\nprint(json.dumps(sorted(m for m in {HEAVY!r} if m in sys.modules)))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60)
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("statement", [
    "from regsosek.messaging import Outbox, UnitOfWork",
    "from regsosek.messaging.unit_of_work import unit_of_work",
    "from regsosek import audit",
    "from regsosek.settings import TokenSettings; TokenSettings().token_verifier()",
    "from regsosek.composition import open_command",
])
def test_writing_side_imports_no_web_framework_or_kafka_client(statement: str) -> None:
    assert heavy_imported_by(statement) == []


def test_the_consumer_side_still_brings_the_kafka_client() -> None:
    # the probe itself can see them: the lean cases above are not empty because it cannot
    assert {"aiokafka", "faststream"} <= set(heavy_imported_by("from regsosek.messaging import EventConsumer"))


def test_every_exported_name_is_the_object_of_its_module() -> None:
    from regsosek.messaging import consumer, outbox, relay, unit_of_work

    modules = (consumer, outbox, relay, unit_of_work)
    for name in messaging.__all__:
        owners = [m for m in modules if getattr(m, name, None) is getattr(messaging, name)]
        assert owners, name
        assert any(m.__name__.endswith(messaging._MODULE_OF[name]) for m in owners), name


def test_an_unknown_name_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="no_such_thing"):
        messaging.no_such_thing  # noqa: B018 - the access is the test
