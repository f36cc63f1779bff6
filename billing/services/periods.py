"""Billing periods: open, close, reopen, finalize; every transition recorded."""

from __future__ import annotations

from typing import Any

from django.db import transaction
from django.utils import timezone

from chargeback.actors import actor_fields
from chargeback.errors import Refused

from .. import extensions, selectors
from ..models import (
    BillingPeriod,
    Charge,
    PeriodTransition,
)
from ._common import Status


def _record_transition(
    period: BillingPeriod, from_status: str, to_status: str, note: str, actor: Any, actor_name: str
) -> None:
    PeriodTransition.objects.create(
        period=period,
        from_status=from_status,
        to_status=to_status,
        note=note,
        **actor_fields(actor, actor_name),
    )


def _locked_period(period: str) -> BillingPeriod:
    return BillingPeriod.objects.select_for_update().get(pk=selectors.period_get(period).pk)


@transaction.atomic
def period_open(*, period: str, actor: Any = None, actor_name: str = "", note: str = "") -> BillingPeriod:
    """Create an open period. An existing open period is returned as it is."""
    period = selectors.validate_period(period)
    existing = BillingPeriod.objects.select_for_update().filter(period=period).first()
    if existing:
        if existing.status == Status.OPEN:
            return existing
        hint = " (reopen it with a reason)" if existing.status == Status.CLOSED else ""
        raise Refused(f"period {period} is {existing.status}{hint}")
    created = BillingPeriod.objects.create(period=period, status=Status.OPEN)
    _record_transition(created, "", Status.OPEN, note or "opened", actor, actor_name)
    return created


def period_ensure_open(*, period: str, actor: Any = None, actor_name: str = "") -> BillingPeriod:
    """The period for an import: created open if new; refused when closed or finalized."""
    try:
        return period_open(period=period, actor=actor, actor_name=actor_name, note="created by import")
    except Refused:
        existing = selectors.period_get(period)
        if existing.status == Status.FINALIZED:
            raise Refused(f"period {period} is finalized: it accepts no imports") from None
        raise Refused(
            f"period {period} is closed: it accepts no imports; reopen it first "
            f"(periods reopen {period} --reason ...)"
        ) from None


@transaction.atomic
def period_close(*, period: str, actor: Any = None, actor_name: str = "", note: str = "") -> BillingPeriod:
    """Close an open period (no more imports). A closed one is returned as it is (a cron job may
    close it twice); a finalized one is refused."""
    obj = _locked_period(period)
    if obj.status == Status.CLOSED:
        return obj
    if obj.status != Status.OPEN:
        raise Refused(f"period {obj.period} is {obj.status}; only an open period can be closed")
    obj.status, obj.closed_at = Status.CLOSED, timezone.now()
    obj.save(update_fields=["status", "closed_at"])
    _record_transition(obj, Status.OPEN, Status.CLOSED, note, actor, actor_name)
    return obj


@transaction.atomic
def period_reopen(*, period: str, reason: str, actor: Any = None, actor_name: str = "") -> BillingPeriod:
    if not (reason or "").strip():
        raise Refused("a reason is required to reopen a period")
    obj = _locked_period(period)
    if obj.status != Status.CLOSED:
        raise Refused(f"period {obj.period} is {obj.status}; only a closed period can be reopened")
    obj.status, obj.closed_at = Status.OPEN, None
    obj.save(update_fields=["status", "closed_at"])
    _record_transition(obj, Status.CLOSED, Status.OPEN, reason.strip(), actor, actor_name)
    return obj


def period_finalize_problems(period: BillingPeriod) -> list[str]:
    """Why the period cannot be finalized yet (empty when it can)."""
    problems = []
    if period.status != Status.CLOSED:
        problems.append(f"period {period.period} is {period.status}; close it first")
    flagged = Charge.objects.filter(period=period, review_state=Charge.ReviewState.FLAGGED).count()
    if flagged:
        problems.append(
            f"{flagged} charge{'s' if flagged != 1 else ''} still flagged; approve or reject them"
        )
    # The layers above add theirs (statements: every billable charge on a current statement with its PDF).
    problems += extensions.finalize_objections(period)
    return problems


@transaction.atomic
def period_finalize(*, period: str, actor: Any = None, actor_name: str = "", note: str = "") -> BillingPeriod:
    obj = _locked_period(period)
    if obj.status == Status.FINALIZED:
        raise Refused(f"period {obj.period} is already finalized")
    problems = period_finalize_problems(obj)
    if problems:
        raise Refused(f"period {obj.period} cannot be finalized: " + "; ".join(problems))
    obj.status, obj.finalized_at = Status.FINALIZED, timezone.now()
    obj.save(update_fields=["status", "finalized_at"])
    _record_transition(obj, Status.CLOSED, Status.FINALIZED, note, actor, actor_name)
    return obj


def _require_reviewable(period: BillingPeriod) -> None:
    if period.status == Status.FINALIZED:
        raise Refused(f"period {period.period} is finalized: no review changes")
