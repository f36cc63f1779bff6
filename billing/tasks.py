"""Celery tasks of the billing app: thin wrappers around services and selectors.

Without a broker (the embedded default) Celery runs them eagerly, inside the request that
queued them; with one, a worker runs them and the admin polls the Import's state.
"""

from __future__ import annotations

import logging
from typing import Any

from celery import shared_task
from django.contrib.auth import get_user_model

from chargeback.errors import Refused

from . import selectors, services
from .collection.tasks import collect_exports  # noqa: F401  (registered with the billing tasks)
from .models import BillingPeriod

logger = logging.getLogger(__name__)


@shared_task(name="billing.import_run")
def import_run(import_id: int, period: str | None = None, force: bool = False) -> dict[str, Any]:
    """Run a pending import (uploaded through the admin). A refused or invalid file leaves the
    Import failed with its errors, which is the result the admin shows: not a task failure."""
    try:
        outcome = services.import_execute(import_id=import_id, period=period or None, force=force)
    except Refused as exc:
        logger.info("import #%s refused: %s", import_id, exc)
        return {"import_id": import_id, "status": "failed", "error": str(exc)}
    period_rankings_warm.delay(outcome.period)
    return {
        "import_id": import_id,
        "status": outcome.status,
        "period": outcome.period,
        "charges": outcome.charges,
        "flagged": outcome.flagged,
    }


@shared_task(name="billing.period_rankings_warm")
def period_rankings_warm(period: str) -> float:
    """Compute the period's cached rankings (top PIs and projects) and totals after its charges
    changed, so the next dashboard view reads them from the cache; nothing to do when they are
    current (a review decision keeps the rankings and the amounts, and recounts only the flagged
    and rejected charges). Returns the seconds the rankings' computation took."""
    period_obj = BillingPeriod.objects.filter(period=period).first()
    if period_obj is None:
        return 0.0
    seconds = selectors.period_rankings(period_obj).seconds
    selectors.period_totals(period_obj)
    return seconds


@shared_task(name="billing.period_reevaluate_flags")
def period_reevaluate_flags(period: str, actor_id: int | None = None) -> int:
    """Run the flag rules again over the period's undecided charges; returns how many changed state."""
    actor = get_user_model().objects.filter(pk=actor_id).first() if actor_id else None
    changed = services.period_reevaluate_flags(period=period, actor=actor)
    period_rankings_warm.delay(period)
    return changed
