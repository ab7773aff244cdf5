"""Classify: PMT welfare groups, deciles and programme eligibility. The service's composition root
(`definition`). The operator commands (commands.py: re-rank, replay) build theirs from the same
parts: `settings.load_config`, `reclassify.reclassifier`, `store.MIGRATIONS`, which, unlike this
module, import neither the web framework nor the Kafka client (a command starts in half the time)."""

from __future__ import annotations

from classify.api import status_router
from classify.handlers import Classifier
from classify.publisher import Publisher
from classify.reclassify import Reclassifier, RerankTasks
from classify.settings import ClassifySettings, load_config
from classify.store import MIGRATIONS
from regsosek.service import Runtime, ServiceDefinition, build_app, serve
from regsosek.topics import Topic


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
