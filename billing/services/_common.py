"""Shared by the billing services: their logger and the period status names."""

from __future__ import annotations

import logging

from ..models import BillingPeriod

logger = logging.getLogger("billing.services")  # one name for the whole package (the logs show it)

Status = BillingPeriod.Status
