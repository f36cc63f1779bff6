"""Billing periods: names (YYYY-MM), lookups, status and the CLI's overview."""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import Decimal

from django.db.models import Count, Q, QuerySet, Sum

from chargeback.errors import Refused
from chargeback.money import ZERO

from ..models import PERIOD_REGEX, BillingPeriod, Charge, Import

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


@dataclass
class PeriodOverview:
    """One line of `periods list`: a period with its counts and exact totals."""

    period: BillingPeriod
    charges: int = 0
    flagged: int = 0
    flagged_billed: Decimal = ZERO
    list_total: Decimal = ZERO
    billed_total: Decimal = ZERO

    @property
    def discount(self) -> Decimal:
        return self.list_total - self.billed_total


def periods_overview() -> list[PeriodOverview]:
    """Every period, newest first, with charges, flagged and exact totals. List and billed come
    from the completed imports (exact sums of the charges each wrote; amounts never change after
    import) when their charge counts agree with the period's charges, else from the charges."""
    flagged_q = Q(review_state=Charge.ReviewState.FLAGGED)
    counts = {
        row["period_id"]: row
        for row in Charge.objects.values("period_id")
        .annotate(n=Count("id"), flagged=Count("id", filter=flagged_q))
        .order_by()
    }
    flagged_billed = {
        period_id: total or ZERO
        for period_id, total in Charge.objects.filter(flagged_q)
        .values("period_id")
        .annotate(billed=Sum("billed_cost"))
        .values_list("period_id", "billed")
        .order_by()
    }
    imported = {
        row["period_id"]: row
        for row in Import.objects.filter(status=Import.Status.COMPLETED, period__isnull=False)
        .values("period_id")
        .annotate(n=Sum("charges_created"), list_total=Sum("list_total"), billed=Sum("billed_total"))
        .order_by()
    }
    result = []
    for period in BillingPeriod.objects.order_by("-period"):
        row = PeriodOverview(period=period)
        count = counts.get(period.pk)
        if count:
            row.charges, row.flagged = count["n"], count["flagged"]
            row.flagged_billed = flagged_billed.get(period.pk, ZERO)
            totals = imported.get(period.pk)
            if totals is not None and totals["n"] == row.charges:
                row.list_total = totals["list_total"] or ZERO
                row.billed_total = totals["billed"] or ZERO
            else:
                charges = Charge.objects.filter(period=period)
                row.list_total = exact_sum(charges, "list_cost")
                row.billed_total = exact_sum(charges, "billed_cost")
        result.append(row)
    return result


def periods_with_totals(queryset: QuerySet[BillingPeriod]) -> QuerySet[BillingPeriod]:
    """Periods annotated for lists: charges, list and billed (from completed imports), flagged
    charges and PIs (from the period's indexes)."""
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
