"""Shared by the statement services: their logger, period status names, the PI email filter."""

from __future__ import annotations

import logging

from billing.models import PI, BillingPeriod
from chargeback.errors import Refused

logger = logging.getLogger("statements.services")  # one name for the whole package (the logs show it)


Status = BillingPeriod.Status


def _pi_email(pi_email: str | None) -> str | None:
    if not pi_email:
        return None
    email = pi_email.strip().lower()
    if not PI.objects.filter(email=email).exists():
        raise Refused(f"no PI with email {email}")
    return email
