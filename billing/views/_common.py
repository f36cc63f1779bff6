"""Shared by the admin's own pages: the chosen period, the currency, safe redirects, the admin context."""

from __future__ import annotations

import logging
from typing import Any

from django.http import (
    HttpRequest,
)
from django.utils.http import url_has_allowed_host_and_scheme

from accounts import selectors as account_selectors
from chargeback.admin_helpers import admin_page_context

from .. import selectors
from ..models import BillingPeriod
from ..services import users as user_services

logger = logging.getLogger("billing.views")  # one name for the whole package (the logs show it)


MAX_LISTED_IDS = 20_000  # charges named one by one (a page's selection); more go by filter


def selected_period(request: HttpRequest) -> BillingPeriod | None:
    """The period a page shows: ?period=, else the user's remembered choice, else the latest."""
    for value in (request.GET.get("period"), account_selectors.preference_period_get(request.user)):
        if value:
            period = BillingPeriod.objects.filter(period=value).first()
            if period is not None:
                return period
    return selectors.period_default()


def _remember_period(request: HttpRequest, period: BillingPeriod | None) -> None:
    if period is None or request.GET.get("period") != period.period:
        return
    if account_selectors.preference_period_get(request.user) != period.period:
        user_services.preference_period_set(user=request.user, period=period.period)


def _request_memo(request: HttpRequest) -> dict[tuple[str, Any], Any]:
    """Reads that the parts of one page (its filters, header and list) share, done once per request."""
    return request.__dict__.setdefault("_openchargeback_memo", {})


def period_named(request: HttpRequest, value: str) -> BillingPeriod | None:
    """The period called `value` (e.g. "2025-12"), read once per request."""
    memo = _request_memo(request)
    if ("period", value) not in memo:
        memo["period", value] = BillingPeriod.objects.filter(period=value).first()
    return memo["period", value]


def rankings_if_cached(
    period: BillingPeriod, request: HttpRequest | None = None
) -> selectors.PeriodRankings | None:
    """The period's cached rankings, never computed here (read once per request, given one)."""
    if request is None:
        return selectors.period_rankings_cached(period)
    memo = _request_memo(request)
    if ("rankings", period.pk) not in memo:
        memo["rankings", period.pk] = selectors.period_rankings_cached(period)
    return memo["rankings", period.pk]


def _safe_next(request: HttpRequest, value: str | None, default: str) -> str:
    if value and url_has_allowed_host_and_scheme(value, allowed_hosts={request.get_host()}):
        return value
    return default


def _admin_context(request: HttpRequest, model_admin: Any, title: str, **extra: Any) -> dict[str, Any]:
    return admin_page_context(request, title, model_admin, currency=selectors.currency_code(), **extra)
