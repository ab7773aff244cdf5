"""Classify's configuration (environment, prefix REGSOSEK_), and the model, poverty lines and rules
files it names (`load_config`)."""

from __future__ import annotations

from pathlib import Path

from pydantic import field_validator

from classify import schedule
from classify.domain import Config
from classify.model import DATA, PmtModel, PovertyLines, RuleSet
from classify.ranking import SCOPES
from regsosek.settings import TokenSettings


class ClassifySettings(TokenSettings):  # bearer tokens: the status API, GET /v1/policy and /v1/reranks (REGSOSEK_AUTH_*)
    service_name: str = "classify"
    http_port: int = 8003
    pmt_model_file: Path = DATA / "pmt-illustrative-2022.1.yaml"
    poverty_lines_file: Path = DATA / "poverty-lines-2022.yaml"
    rules_file: Path = DATA / "eligibility-2022.1.yaml"
    decile_scope: str = "national"  # national | province | regency: the ranking area and scheduled re-ranks use
    area_rerank_poll_s: float = 1.0  # how often the service looks for re-ranks to do (asked, scheduled, FKP areas)
    rerank_schedule: str = "off"  # off | daily | weekly | monthly | quarterly | yearly | every <n>s|m|h|d (schedule.py)
    rerank_batch_size: int = 500  # families per transaction in replay
    rerank_page_size: int = 2000  # families per transaction (one page of the ranking) in a re-rank
    replay_processes: int = 1  # processes a replay is spread over (by family id range)

    @field_validator("rerank_schedule")
    @classmethod
    def _schedule(cls, v: str) -> str:
        return schedule.check(v)

    @field_validator("decile_scope")
    @classmethod
    def _scope(cls, v: str) -> str:
        if v not in SCOPES:
            raise ValueError(f"one of {', '.join(SCOPES)}")
        return v


def load_config(settings: ClassifySettings) -> Config:
    """The model, poverty lines and rules files the settings name."""
    return Config(PmtModel.load(settings.pmt_model_file), PovertyLines.load(settings.poverty_lines_file),
                  RuleSet.load(settings.rules_file))
