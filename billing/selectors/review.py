"""Review reads: flagged charges, the review queue by reason, a selection's totals."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from decimal import Decimal

from django.core.cache import cache
from django.db.models import Count, Q, QuerySet, Sum

from chargeback.money import ZERO

from ..models import BillingPeriod, Charge, ChargeFlag, FlagReason, FlagRule
from .charges import charges_with_flag
from .dashboard import RANKINGS_CACHE_SECONDS, period_fingerprint


def flagged_charges(period: BillingPeriod | None = None, reason: str | None = None) -> QuerySet[Charge]:
    charges = Charge.objects.filter(review_state=Charge.ReviewState.FLAGGED)
    if period is not None:
        charges = charges.filter(period=period)
    if reason:
        charges = charges_with_flag(charges, reason)
    return charges.select_related("source", "period").order_by("id")


@dataclass
class ReasonGroup:
    """Flagged charges of a period sharing one flag reason (a charge with two reasons is in both)."""

    key: str  # a FlagReason value, or "rule:<name>"
    label: str
    count: int = 0
    billed: Decimal = ZERO


def review_queue_groups(period: BillingPeriod) -> list[ReasonGroup]:
    """The period's flagged charges grouped by flag reason, largest amount first.

    Summing a big period's flagged charges reads tens of thousands of rows, so the sums are cached
    under the period's fingerprint (decisions, imports, corrections) and the flags' and rules'
    state: re-evaluating the rules writes new flags (ids only grow) even where no charge changes
    state, and a renamed or deleted rule changes the rules' names."""
    rules = dict(FlagRule.objects.order_by("id").values_list("id", "name"))
    newest_flag = ChargeFlag.objects.order_by("-id").values_list("id", flat=True).first()
    state = hashlib.sha256(repr((period_fingerprint(period), newest_flag, rules)).encode()).hexdigest()[:32]
    cache_key = f"openchargeback:review-groups:v1:{period.pk}:{state}"
    rows = cache.get(cache_key)
    if rows is None:
        rows = list(
            ChargeFlag.objects.filter(charge__period=period, charge__review_state=Charge.ReviewState.FLAGGED)
            .values_list("reason", "rule_id")
            .annotate(n=Count("charge_id"), billed=Sum("charge__billed_cost"))
            .order_by()
        )
        cache.set(cache_key, rows, RANKINGS_CACHE_SECONDS)
    labels = dict(FlagReason.choices)
    groups = []
    for reason, rule_id, n, billed in rows:
        if reason == FlagReason.RULE:
            rule_name = rules.get(rule_id)
            key = f"rule:{rule_name}" if rule_name else "rule"
            label = f"Rule: {rule_name}" if rule_name else "Flag rule (deleted)"
        else:
            key, label = reason, labels.get(reason, reason)
        groups.append(ReasonGroup(key=key, label=label, count=n, billed=billed or ZERO))
    return sorted(groups, key=lambda g: (-g.billed, g.label))


@dataclass
class SelectionSummary:
    """What a review action would touch: how many charges, how much money, in which states and periods."""

    count: int = 0
    billed: Decimal = ZERO
    by_state: dict[str, int] = field(default_factory=dict)
    periods: list[str] = field(default_factory=list)
    finalized: list[str] = field(default_factory=list)


def charges_selection_summary(queryset: QuerySet[Charge]) -> SelectionSummary:
    summary = SelectionSummary()
    periods = dict(BillingPeriod.objects.values_list("id", "status"))
    names = dict(BillingPeriod.objects.values_list("id", "period"))
    for period_id, state, n, billed in (
        queryset.order_by()
        .values_list("period_id", "review_state")
        .annotate(n=Count("id"), billed=Sum("billed_cost"))
        .order_by()
    ):
        summary.count += n
        summary.billed += billed or ZERO
        summary.by_state[state] = summary.by_state.get(state, 0) + n
        if names[period_id] not in summary.periods:
            summary.periods.append(names[period_id])
            if periods[period_id] == BillingPeriod.Status.FINALIZED:
                summary.finalized.append(names[period_id])
    summary.periods.sort()
    summary.finalized.sort()
    return summary


# Flags that say the charge's fund/org cannot be debited: approving bills it, but the journal
# refuses a statement without a (valid) fund/org. Correcting the attribution is the way out.
FUND_ORG_FLAGS = (FlagReason.MISSING_FUND_ORG, FlagReason.INVALID_FUND_ORG)


@dataclass
class ApprovalRisk:
    """Charges of a selection that approving will not make exportable."""

    count: int = 0
    billed: Decimal = ZERO
    reasons: list[tuple[str, int]] = field(default_factory=list)  # (why, how many charges)
    charge_id: int | None = None  # the charge to correct, when there is exactly one


def charges_approval_risk(queryset: QuerySet[Charge]) -> ApprovalRisk:
    """Which selected charges the journal will refuse once approved: no fund/org, a fund/org flagged
    missing or invalid, or whatever a higher layer objects to (extensions.approval_checks)."""
    from ..extensions import approval_objections

    risk = ApprovalRisk()
    at_risk = queryset.filter(
        (Q(fund_org="") & (Q(project__isnull=True) | Q(project__fund_org="")))
        | Q(pk__in=ChargeFlag.objects.filter(reason__in=FUND_ORG_FLAGS).values("charge_id"))
    ).exclude(review_state=Charge.ReviewState.REJECTED)
    row = at_risk.order_by().aggregate(n=Count("id"), billed=Sum("billed_cost"))
    if row["n"]:
        risk.count, risk.billed = row["n"], row["billed"] or ZERO
        risk.reasons.append(("no valid fund/org to debit (flagged missing or invalid fund/org)", row["n"]))
        if row["n"] == 1:
            risk.charge_id = at_risk.values_list("pk", flat=True).first()
    for reason, n in approval_objections(queryset.exclude(pk__in=at_risk.values("pk"))):
        risk.count += n
        risk.reasons.append((reason, n))
    return risk
