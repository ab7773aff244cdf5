"""Classify: PMT welfare groups, deciles and programme eligibility. Wiring only."""

from __future__ import annotations

from pathlib import Path

from regsosek.service import ServiceDefinition, build_app, serve
from regsosek.topics import Topic

from classify.handlers import Classifier
from classify.model import PmtModel, PovertyLines, RuleSet
from classify.settings import ClassifySettings

MIGRATIONS = Path(__file__).resolve().parents[2] / "migrations"


def definition(settings: ClassifySettings | None = None) -> ServiceDefinition:
    settings = settings or ClassifySettings()
    classifier = Classifier(PmtModel.load(settings.pmt_model_file), PovertyLines.load(settings.poverty_lines_file),
                            RuleSet.load(settings.rules_file))
    return ServiceDefinition(
        name="classify", settings=settings, migrations=MIGRATIONS, handlers=classifier.handlers(),
        topics=[Topic.INTERVIEW_VERIFIED, Topic.FKP_ADJUSTMENT], title="Regsosek classify",
    )


def main() -> None:
    serve(build_app(definition()))
