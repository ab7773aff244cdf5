"""A replay's worker process imports neither the web framework nor the Kafka client, so that it
starts soon after the command's own process has begun replaying. A spawned worker runs the
parent's main module again (as `__mp_main__`) before its first task: the probe does the same in
a fresh interpreter."""

from __future__ import annotations

import json
import pickle
import subprocess
import sys

from classify.domain import Config
from classify.model import DATA, PmtModel, PovertyLines, RuleSet
from classify.reclassify import ReplayReport
from classify.store import ReplaySlice


def test_a_worker_imports_no_web_framework_or_kafka_client() -> None:
    probe = ("import sys, json, runpy\nrunpy.run_module('classify.replay', run_name='__mp_main__')\n"
             "print(json.dumps(sorted(m for m in ('fastapi', 'starlette', 'faststream', 'aiokafka', 'httpx', "
             "'classify.app') if m in sys.modules)))")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60)
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []


def test_what_a_worker_is_handed_survives_pickling() -> None:
    # spawn pickles the slice's arguments: the command's loaded configuration among them
    config = Config(PmtModel.load(DATA / "pmt-illustrative-2022.1.yaml"),
                    PovertyLines.load(DATA / "poverty-lines-2022.yaml"), RuleSet.load(DATA / "eligibility-2022.1.yaml"))
    args = ("postgresql://x@h/db", config, ReplayReport(run_id=7, resumed=False, versions=config.versions),
            ReplaySlice(7, 2, "3201", "3202", False), 500, None)
    back = pickle.loads(pickle.dumps(args))
    assert back[1].versions == config.versions
    assert back[1].model.coefficients == config.model.coefficients
    assert back[2].run_id == 7 and back[3] == args[3]
