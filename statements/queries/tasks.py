"""Celery task of charge queries (registered through statements/tasks.py)."""

from __future__ import annotations

from celery import shared_task

from . import services


@shared_task(name="statements.query_notify", acks_late=True, reject_on_worker_lost=True)
def query_notify(query_id: int) -> bool:
    """Email a resolved query's answer (once; a repeated task sends nothing)."""
    return services.query_notify(query_id=query_id)
