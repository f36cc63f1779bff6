"""The open-period reminder, run by the `beat` service (settings.CELERY_BEAT_SCHEDULE)."""

from __future__ import annotations

import datetime as dt
import logging
from typing import Any

from celery import shared_task
from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.mail import send_mail
from django.utils import timezone

from billing.models import BillingPeriod

logger = logging.getLogger("chargeback.tasks")  # the name the logs have always shown

# Who is reminded: every active user allowed to change billing periods (billing admins, superusers).
REMINDER_PERMISSION = "billing.change_billingperiod"


def open_periods_ended_before(today: dt.date) -> list[BillingPeriod]:
    """Periods still open although their month is over, oldest first."""
    return [
        p
        for p in BillingPeriod.objects.filter(status=BillingPeriod.Status.OPEN).order_by("period")
        if p.end_date < today
    ]


def reminder_recipients() -> list[str]:
    # Name the model backend: with single sign-on on, Django refuses to guess between backends.
    users = get_user_model().objects.with_perm(
        REMINDER_PERMISSION, include_superusers=True, backend=settings.AUTHENTICATION_BACKENDS[0]
    )
    return sorted({u.email for u in users.filter(is_active=True) if u.email})


@shared_task(name="chargeback.tasks.remind_open_periods")
def remind_open_periods(today: str | None = None) -> dict[str, Any]:
    """Log, and email the billing admins, the past months whose period is still open."""
    day = dt.date.fromisoformat(today) if today else timezone.localdate()
    periods = [p.period for p in open_periods_ended_before(day)]
    if not periods:
        logger.info("no open periods to remind of", extra={"event": "open_periods_reminder", "periods": []})
        return {"periods": [], "recipients": 0}
    recipients = reminder_recipients()
    logger.warning(
        "periods still open: %s",
        ", ".join(periods),
        extra={"event": "open_periods_reminder", "periods": periods, "recipients": len(recipients)},
    )
    if recipients:
        lines = "\n".join(f"  - {p}" for p in periods)
        send_mail(
            subject=f"OpenChargeback: {len(periods)} billing period(s) still open",
            message=(
                "These billing periods are over but still open:\n\n"
                f"{lines}\n\n"
                "Close each one once its imports are complete and its flagged charges reviewed "
                "(`openchargeback periods close YYYY-MM` or the admin).\n"
            ),
            from_email=settings.DEFAULT_FROM_EMAIL,
            recipient_list=recipients,
        )
    return {"periods": periods, "recipients": len(recipients)}
