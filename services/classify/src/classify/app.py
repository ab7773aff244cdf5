"""Classify: PMT welfare groups, deciles and programme eligibility. The composition root: the
service (`definition`) and the operator commands (commands.py: re-rank, replay) build their
parts through the functions here, from settings passed in."""

from __future__ import annotations

from pathlib import Path

from classify.api import status_router
from classify.domain import Config
from classify.handlers import Classifier
from classify.model import PmtModel, PovertyLines, RuleSet
from classify.publisher import Publisher
from classify.reclassify import Reclassifier, RerankTasks
from classify.settings import ClassifySettings
from regsosek.service import Runtime, ServiceDefinition, build_app, serve
from regsosek.topics import Topic

MIGRATIONS = Path(__file__).resolve().parents[2] / "migrations"


def load_config(settings: ClassifySettings) -> Config:
    """The model, poverty lines and rules files the settings name."""
    return Config(PmtModel.load(settings.pmt_model_file), PovertyLines.load(settings.poverty_lines_file),
                  RuleSet.load(settings.rules_file))


def rerank_tasks(reclassify: Reclassifier, settings: ClassifySettings):
    tasks = RerankTasks(reclassify, settings)

    async def rerank_tasks(runtime: Runtime) -> None:
        await tasks.run(runtime.pool, runtime.wakeup.notify)

    return rerank_tasks


def definition(settings: ClassifySettings | None = None) -> ServiceDefinition:
    settings = settings or ClassifySettings()
    config = load_config(settings)
    publisher = Publisher(config)
    classifier = Classifier(settings, config, publisher)
    return ServiceDefinition(
        name="classify", settings=settings, migrations=MIGRATIONS, handlers=classifier.handlers(),
        topics=[Topic.INTERVIEW_VERIFIED, Topic.INTERVIEW_FLAGGED, Topic.FKP_ADJUSTMENT, Topic.FAMILY_ERASED,
                Topic.FKP_FORUM, Topic.FKP_DECISION],
        title="Regsosek classify", background=[rerank_tasks(Reclassifier(config, publisher), settings)],
        routers=[status_router(settings, config)],
    )


def main() -> None:
    serve(build_app(definition()))
