"""deploy/reset_offsets.py's command line (the Kafka part was run by hand on the local broker with a topic
prefix: RUNBOOK.md "The console"); here only what it refuses before connecting to anything."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "deploy" / "reset_offsets.py"


def _script():
    spec = importlib.util.spec_from_file_location("reset_offsets", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("argv", [
    ["console"],  # where to: required
    ["console", "--to-earliest", "--to-datetime", "2022-10-20T02:00:00+08:00"],  # one of them
    ["console", "--to-datetime", "2022-10-20T02:00:00"],  # a time without its offset is ambiguous
    ["console", "--to-datetime", "yesterday"],
    ["receiver", "--to-earliest"],  # consumes nothing in the registry
])
def test_refuses_before_touching_the_broker(argv, capsys):
    with pytest.raises(SystemExit) as e:
        _script().main(argv)
    assert e.value.code == 2
    assert "error:" in capsys.readouterr().err
