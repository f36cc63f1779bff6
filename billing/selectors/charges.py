"""Charges of large periods for the admin: the id range, filters, text search."""

from __future__ import annotations

from django.db.models import BigIntegerField, F, Func, QuerySet
from django.db.models.lookups import Exact

from ..models import BillingPeriod, Charge, ChargeFlag, Import


def period_charge_id_range(period: BillingPeriod) -> tuple[int, int] | None:
    """Lowest and highest charge id of the period, from the first and last charge of each of its
    imports and of the imports of no period (credits), two index lookups each, in one query,
    instead of a scan of the period."""
    from django.db.models import Max, Min, OuterRef, Q, Subquery

    # The import's own index walked to its first and last charge of the period: the period's
    # column is compared, never looked up in a (period, ...) index.
    ids = Charge.objects.filter(
        Exact(_unindexed_period_id(), period.pk), import_run_id=OuterRef("pk")
    ).values("id")
    ends = [
        end
        for pair in Import.objects.filter(Q(period=period) | Q(period__isnull=True))
        .order_by()
        .values_list(Subquery(ids.order_by("id")[:1]), Subquery(ids.order_by("-id")[:1]))
        for end in pair
        if end is not None
    ]
    if ends:
        return min(ends), max(ends)
    bounds = Charge.objects.filter(period=period).aggregate(lo=Min("id"), hi=Max("id"))
    return (bounds["lo"], bounds["hi"]) if bounds["lo"] is not None else None


def charges_in_period(
    queryset: QuerySet[Charge], period: BillingPeriod, *, use_index: bool
) -> QuerySet[Charge]:
    """The charges of `queryset` in `period`, filtered so that a newest-first page stays fast.

    On SQLite a filter on the period alone makes the planner pick a (period, ...) index and sort
    every charge of the period to find the newest 100 (half a second at a million charges).
    Unless another indexed column is filtered too (`use_index`), the period is matched without
    its index (`+period_id`) inside the period's id range, so SQLite walks the primary key
    backwards and stops after one page. PostgreSQL plans this well from its statistics.
    """
    from django.db import connections

    if use_index or connections[queryset.db].vendor != "sqlite":
        return queryset.filter(period=period)
    bounds = period_charge_id_range(period)
    if bounds is None:
        return queryset.none()
    return queryset.filter(Exact(_unindexed_period_id(), period.pk), id__gte=bounds[0], id__lte=bounds[1])


def _unindexed_period_id() -> Func:
    """The charge's period id as an expression no index answers (`+period_id`), so that SQLite
    reads the rows through another index or the primary key and only compares the period."""
    return Func(F("period_id"), template="+%(expressions)s", output_field=BigIntegerField())


def charges_with_flag(queryset: QuerySet[Charge], key: str) -> QuerySet[Charge]:
    """Charges carrying a flag reason (`missing_fund_org`, ...) or a rule's flag (`rule:<name>`: a
    rule is named by its name everywhere, in the CLI's --reason, flag summaries and admin links)."""
    if key.startswith("rule:"):
        flags = ChargeFlag.objects.filter(reason="rule", rule__name=key[5:])
    else:
        flags = ChargeFlag.objects.filter(reason=key)
    return queryset.filter(id__in=flags.values("charge_id"))
