"""The period page and its transitions (close, reopen, finalize)."""

from __future__ import annotations

from typing import Any

from django.contrib import messages
from django.core.exceptions import PermissionDenied
from django.http import (
    HttpRequest,
    HttpResponse,
    HttpResponseRedirect,
)
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import reverse

from accounts import roles
from chargeback.errors import Refused

from .. import extensions, selectors, services
from ..forms import (
    PeriodCloseForm,
    PeriodFinalizeForm,
    PeriodReopenForm,
)
from ..models import BillingPeriod
from ._common import _admin_context


def period_page_context(request: HttpRequest, period: BillingPeriod) -> dict[str, Any]:
    can_manage = roles.can_manage_periods(request.user)
    return {
        "currency": selectors.currency_code(),
        "totals": selectors.period_totals(period),
        "rankings": selectors.period_rankings(period),
        "period_imports": list(period.imports.select_related("source").order_by("-id")[:50]),
        "transitions": list(period.transitions.order_by("created_at", "id")),
        # Sections the layers above add (statements: the period's statements by state).
        "statements": None,
        **{name: panel(period) for name, panel in extensions.period_panels.items()},
        "finalize_problems": services.period_finalize_problems(period)
        if period.status == BillingPeriod.Status.CLOSED
        else [],
        "can_close": can_manage and period.status == BillingPeriod.Status.OPEN,
        "can_reopen": can_manage and period.status == BillingPeriod.Status.CLOSED,
        "can_finalize": can_manage and period.status == BillingPeriod.Status.CLOSED,
        "can_reevaluate": roles.can_review(request.user) and not period.is_finalized,
        # The statements panel's preview / issue / send buttons (billing admins, not finalized).
        "can_run_statements": can_manage and not period.is_finalized,
        "close_url": reverse("admin:billing_billingperiod_close", args=[period.pk]),
        "reopen_url": reverse("admin:billing_billingperiod_reopen", args=[period.pk]),
        "finalize_url": reverse("admin:billing_billingperiod_finalize", args=[period.pk]),
        "review_url": reverse("admin:billing_charge_review") + f"?period={period.period}",
        "charges_url": reverse("admin:billing_charge_changelist") + f"?period={period.period}",
        "reevaluate_url": reverse("admin:billing_flagrule_reevaluate") + f"?period={period.period}",
        "log_url": reverse("admin:billing_reviewlog_changelist") + f"?period={period.period}",
    }


TRANSITIONS: dict[str, tuple[Any, str, str]] = {
    "close": (PeriodCloseForm, "Close period", "closed"),
    "reopen": (PeriodReopenForm, "Reopen period", "reopened"),
    "finalize": (PeriodFinalizeForm, "Finalize period", "finalized"),
}


def period_transition(request: HttpRequest, model_admin: Any, object_id: str, name: str) -> HttpResponse:
    """Close, reopen (reason required) or finalize (irreversible, confirmed) a period."""
    if not roles.can_manage_periods(request.user):
        raise PermissionDenied
    period = get_object_or_404(BillingPeriod, pk=object_id)
    form_class, title, done = TRANSITIONS[name]
    period_url = reverse("admin:billing_billingperiod_change", args=[period.pk])
    form = form_class(request.POST if request.method == "POST" else None)
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        try:
            if name == "close":
                services.period_close(period=period.period, actor=request.user, note=data["note"])
            elif name == "reopen":
                services.period_reopen(period=period.period, reason=data["reason"], actor=request.user)
            else:
                services.period_finalize(period=period.period, actor=request.user, note=data["note"])
        except Refused as exc:
            messages.error(request, str(exc))
            return HttpResponseRedirect(period_url)
        messages.success(request, f"Period {period.period} {done}.")
        return HttpResponseRedirect(period_url)
    problems = services.period_finalize_problems(period) if name == "finalize" else []
    context = _admin_context(
        request,
        model_admin,
        f"{title} {period.period}",
        period=period,
        form=form,
        transition=name,
        problems=problems,
        period_url=period_url,
        totals=selectors.period_totals(period),
    )
    return TemplateResponse(request, "admin/billing/billingperiod/transition.html", context)
