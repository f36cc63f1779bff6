"""Billing periods: names (YYYY-MM), lookups, status and the CLI's overview."""

from __future__ import annotations

import re
from decimal import Decimal

from django.db.models import Count, QuerySet, Sum

from chargeback.errors import Refused
from chargeback.money import ZERO

from ..models import PERIOD_REGEX, BillingPeriod, Charge, Import
from .totals import PeriodTotals, periods_totals

BILLABLE_STATES = (Charge.ReviewState.OK, Charge.ReviewState.APPROVED)


_PERIOD_IN_NAME = re.compile(r"(?<![0-9])(20[0-9]{2})[-_]?(0[1-9]|1[0-2])(?![0-9])")


def validate_period(period: str) -> str:
    period = (period or "").strip()
    if not re.fullmatch(PERIOD_REGEX, period):
        raise Refused(f"invalid period {period!r}: expected YYYY-MM, e.g. 2025-01")
    return period


def period_get(period: str) -> BillingPeriod:
    period = validate_period(period)
    try:
        return BillingPeriod.objects.get(period=period)
    except BillingPeriod.DoesNotExist:
        raise Refused(f"period {period} does not exist") from None


def period_status(period: str) -> str | None:
    """The period's status, or None when it does not exist yet."""
    return (
        BillingPeriod.objects.filter(period=validate_period(period)).values_list("status", flat=True).first()
    )


def period_from_filename(name: str) -> str | None:
    """YYYY-MM, YYYYMM or YYYY_MM found in a file name."""
    match = _PERIOD_IN_NAME.search(name)
    return f"{match.group(1)}-{match.group(2)}" if match else None


def exact_sum(queryset: QuerySet, field_name: str) -> Decimal:
    """An exact Decimal sum (MoneyField sums are exact on SQLite and PostgreSQL alike)."""
    return queryset.aggregate(total=Sum(field_name))["total"] or ZERO


def periods_overview() -> list[PeriodTotals]:
    """Every period, newest first, with its totals (`periods_totals`: the one computation)."""
    periods = list(BillingPeriod.objects.order_by("-period"))
    totals = periods_totals(periods)
    return [totals[period.pk] for period in periods]


def periods_with_totals(queryset: QuerySet[BillingPeriod]) -> QuerySet[BillingPeriod]:
    """Periods annotated for the admin's sortable list: charges, list and billed (from completed
    imports, as `periods_totals` reads them first), flagged charges and PIs (from the period's
    indexes). Sortable columns need database annotations, so this is a query, not PeriodTotals."""
    from django.db.models import IntegerField, OuterRef, Subquery

    from chargeback.money import MoneyField

    completed = (
        Import.objects.filter(period=OuterRef("pk"), status=Import.Status.COMPLETED)
        .order_by()
        .values("period")
    )
    charges = Charge.objects.filter(period=OuterRef("pk")).order_by().values("period")
    return queryset.annotate(
        charge_count=Subquery(
            completed.annotate(s=Sum("charges_created")).values("s"), output_field=IntegerField()
        ),
        list_sum=Subquery(completed.annotate(s=Sum("list_total")).values("s"), output_field=MoneyField()),
        billed_sum=Subquery(completed.annotate(s=Sum("billed_total")).values("s"), output_field=MoneyField()),
        flagged_count=Subquery(
            charges.filter(review_state=Charge.ReviewState.FLAGGED).annotate(n=Count("id")).values("n"),
            output_field=IntegerField(),
        ),
        pi_count=Subquery(
            charges.filter(pi__isnull=False).annotate(n=Count("pi_id", distinct=True)).values("n"),
            output_field=IntegerField(),
        ),
    )
