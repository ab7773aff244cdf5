"""Classify's configuration (environment, prefix REGSOSEK_)."""

from pathlib import Path

from regsosek.settings import ServiceSettings

from classify.model import DATA


class ClassifySettings(ServiceSettings):
    service_name: str = "classify"
    http_port: int = 8003
    pmt_model_file: Path = DATA / "pmt-illustrative-2022.1.yaml"
    poverty_lines_file: Path = DATA / "poverty-lines-2022.yaml"
    rules_file: Path = DATA / "eligibility-2022.1.yaml"
