"""Classify: PMT welfare groups, deciles and programme eligibility. Wiring, and the
background task that re-ranks regencies marked by FKP adjustments."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

from classify.handlers import Classifier
from classify.model import PmtModel, PovertyLines, RuleSet
from classify.reclassify import Busy, StaleVersions, rerank
from classify.settings import ClassifySettings
from regsosek.db import Backoff, is_transient
from regsosek.service import Runtime, ServiceDefinition, build_app, serve
from regsosek.topics import Topic

MIGRATIONS = Path(__file__).resolve().parents[2] / "migrations"
log = logging.getLogger("classify.areas")


def load_classifier(settings: ClassifySettings) -> Classifier:
    return Classifier(PmtModel.load(settings.pmt_model_file), PovertyLines.load(settings.poverty_lines_file),
                      RuleSet.load(settings.rules_file))


def area_reranker(classifier: Classifier, settings: ClassifySettings):
    """Re-ranks, one at a time, the regencies FKP adjustments marked (rerank_areas)."""

    async def area_reranks(runtime: Runtime) -> None:
        backoff = Backoff(settings.retry_initial_s, settings.retry_max_s)
        while True:
            await asyncio.sleep(settings.area_rerank_poll_s)
            try:
                async with runtime.pool.acquire() as conn:
                    row = await conn.fetchrow("select regency, requested_at from rerank_areas order by requested_at limit 1")
                if row is None:
                    continue
                try:
                    report = await rerank(runtime.pool, classifier.config, settings.decile_scope, area=row["regency"],
                                          batch_size=settings.rerank_batch_size, wait=False,
                                          on_commit=runtime.wakeup.notify)
                except Busy:
                    continue  # a re-rank or replay is running; try again later
                except StaleVersions as e:
                    log.warning("area re-rank waits for a replay", extra={"fields": {"regency": row["regency"],
                                                                                    "stale": e.count}})
                    await asyncio.sleep(30 * settings.area_rerank_poll_s)
                    continue
                async with runtime.pool.acquire() as conn:
                    await conn.execute("delete from rerank_areas where regency = $1 and requested_at <= $2",
                                       row["regency"], row["requested_at"])
                log.info("area re-ranked", extra={"fields": {"regency": row["regency"], "changed": report.changed,
                                                             "examined": report.examined}})
                backoff.reset()
            except asyncio.CancelledError:
                raise
            except Exception as e:
                if is_transient(e):
                    log.warning("area re-rank interrupted, retrying", exc_info=True, extra={"fields": {"error": type(e).__name__}})
                else:
                    log.exception("area re-rank failed; retrying")
                await backoff.wait()

    return area_reranks


def definition(settings: ClassifySettings | None = None) -> ServiceDefinition:
    settings = settings or ClassifySettings()
    classifier = load_classifier(settings)
    return ServiceDefinition(
        name="classify", settings=settings, migrations=MIGRATIONS, handlers=classifier.handlers(),
        topics=[Topic.INTERVIEW_VERIFIED, Topic.INTERVIEW_FLAGGED, Topic.FKP_ADJUSTMENT, Topic.FAMILY_ERASED], title="Regsosek classify",
        background=[area_reranker(classifier, settings)],
    )


def main() -> None:
    serve(build_app(definition()))
