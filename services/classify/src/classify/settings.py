"""Classify's configuration (environment, prefix REGSOSEK_)."""

from pathlib import Path

from classify.model import DATA
from regsosek.settings import TokenSettings


class ClassifySettings(TokenSettings):  # bearer tokens: the status API, GET /v1/policy and /v1/reranks (REGSOSEK_AUTH_*)
    service_name: str = "classify"
    http_port: int = 8003
    pmt_model_file: Path = DATA / "pmt-illustrative-2022.1.yaml"
    poverty_lines_file: Path = DATA / "poverty-lines-2022.yaml"
    rules_file: Path = DATA / "eligibility-2022.1.yaml"
    decile_scope: str = "national"  # national | province: the ranking an FKP area re-rank uses
    area_rerank_poll_s: float = 1.0  # how often the service looks for regencies marked by FKP adjustments
    rerank_batch_size: int = 500  # families per transaction in re-rank and replay
