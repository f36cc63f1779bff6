"""Celery task of collection: run by beat (settings.CELERY_BEAT_SCHEDULE, `worker --beat`)."""

from __future__ import annotations

from typing import Any

from celery import shared_task

from . import services


@shared_task(name="billing.collect_exports")
def collect_exports(points: list[str] | None = None) -> dict[str, Any]:
    """Collect every enabled point (or the named ones); returns the counts of what happened."""
    report = services.collection_run(points=points, actor_name="beat")
    return {
        "counts": report.counts,
        "failed": [f"{p.point}: {f.key}: {f.error}" for p, f in report.failures],
        "point_errors": {p.point: p.error for p in report.points if p.error},
        "busy": [p.point for p in report.points if p.busy],
    }
