"""The review queue and decisions on many charges; correcting a charge's attribution."""

from __future__ import annotations

import copy
from typing import Any
from urllib.parse import urlencode

from django.contrib import messages
from django.contrib.admin.options import IncorrectLookupParameters
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import (
    HttpRequest,
    HttpResponse,
    HttpResponseRedirect,
    QueryDict,
)
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils.html import format_html

from accounts import roles
from chargeback.admin_helpers import LargeTablePaginator, page_number
from chargeback.errors import Refused
from chargeback.money import format_money

from .. import extensions, selectors, services
from ..forms import (
    CorrectAttributionForm,
    ReviewDecisionForm,
)
from ..models import BillingPeriod, Charge
from ._common import (
    MAX_LISTED_IDS,
    _admin_context,
    _remember_period,
    _safe_next,
    selected_period,
)


def review_queue(request: HttpRequest, model_admin: Any) -> HttpResponse:
    """Flagged charges of the chosen period, grouped by reason, with the actions on them."""

    period = selected_period(request)
    _remember_period(request, period)
    reason = request.GET.get("reason", "")
    context = _admin_context(
        request,
        model_admin,
        "Review queue",
        periods=list(BillingPeriod.objects.order_by("-period")[:60]),
        period=period,
        reason=reason,
        can_review=roles.can_review(request.user),
    )
    if period is not None:
        filters = {"period": period.period, "state": Charge.ReviewState.FLAGGED}
        charges = Charge.objects.filter(period=period, review_state=Charge.ReviewState.FLAGGED)
        if reason:
            filters["reason"] = reason
            charges = selectors.charges_with_flag(charges, reason)
        charges = charges.select_related("source").defer("tags").order_by("-id")
        paginator = LargeTablePaginator(charges, 50, page_number=page_number(request))
        try:
            page = paginator.page(page_number(request))
        except Exception:
            page = paginator.page(1)
        here = request.get_full_path()
        groups = selectors.review_queue_groups(period)
        totals = selectors.period_totals(period)
        context.update(
            totals=totals,
            groups=groups,
            reason_label=next((g.label for g in groups if g.key == reason), reason),
            page=page,
            paginator=paginator,
            finalized=period.is_finalized,
            changelist_url=reverse("admin:billing_charge_changelist") + "?" + urlencode(filters),
            decide_url=reverse("admin:billing_charge_decide"),
            filter_query=urlencode(filters),
            here=here,
            log_url=reverse("admin:billing_reviewlog_changelist") + f"?period={period.period}",
            group_links=[
                {
                    "group": g,
                    "url": "?" + urlencode({"period": period.period, "reason": g.key}),
                    "filter": urlencode({**filters, "reason": g.key}),
                }
                for g in groups
            ],
        )
    return TemplateResponse(request, "admin/billing/charge/review_queue.html", context)


def _parse_ids(values: list[str]) -> list[int]:
    ids = []
    for value in values:
        for part in value.split(","):
            part = part.strip()
            if part.isdigit():
                ids.append(int(part))
    return ids


def charges_from_changelist_query(request: HttpRequest, model_admin: Any, query: str) -> QuerySet[Charge]:
    """The charges a changelist URL with this query string lists (its filters and search)."""
    fake = copy.copy(request)
    fake.GET = QueryDict(query)
    fake.method = "GET"
    changelist = model_admin.get_changelist_instance(fake)
    return changelist.get_queryset(fake)


def charges_decide(request: HttpRequest, model_admin: Any) -> HttpResponse:
    """The intermediate page of approve/reject: how many charges, how much money, and the note."""
    if not roles.can_review(request.user):
        raise PermissionDenied
    params = request.POST if request.method == "POST" else request.GET
    action = params.get("action", "")
    next_url = _safe_next(request, params.get("next"), reverse("admin:billing_charge_review"))
    if action not in ("approve", "reject"):
        messages.error(request, "Unknown review action.")
        return HttpResponseRedirect(next_url)
    ids = _parse_ids(params.getlist("ids"))
    query = params.get("filter")
    if len(ids) > MAX_LISTED_IDS:
        messages.error(request, "Too many charges listed one by one; select them with a filter instead.")
        return HttpResponseRedirect(next_url)
    if ids:
        queryset = Charge.objects.filter(id__in=ids)
        scope = f"{len(ids):,} selected charge{'s' if len(ids) != 1 else ''}"
    elif query is not None:
        try:
            queryset = charges_from_changelist_query(request, model_admin, query)
        except IncorrectLookupParameters:
            messages.error(request, "The filter of this selection is not valid any more.")
            return HttpResponseRedirect(next_url)
        scope = "every charge matching the filter"
    else:
        messages.warning(request, "Select the charges to approve or reject first.")
        return HttpResponseRedirect(next_url)
    summary = selectors.charges_selection_summary(queryset)
    risk = selectors.charges_approval_risk(queryset) if action == "approve" else selectors.ApprovalRisk()
    form = ReviewDecisionForm(request.POST if request.method == "POST" else None, action=action)
    if request.method == "POST" and form.is_valid():
        if not summary.count:
            messages.warning(request, "No charges matched: nothing was changed.")
            return HttpResponseRedirect(next_url)
        try:
            outcome = services.charges_review(
                action=action,
                charge_ids=queryset.order_by().values_list("id", flat=True),
                note=form.cleaned_data["note"],
                actor=request.user,
            )
        except Refused as exc:
            messages.error(request, str(exc))
            return HttpResponseRedirect(next_url)
        verb = "Approved" if action == "approve" else "Rejected"
        text = f"{verb} {outcome.count:,} charge{'s' if outcome.count != 1 else ''} ({format_money(outcome.billed_total, selectors.currency_code())} billed)."
        if outcome.skipped:
            text += f" {outcome.skipped:,} already {verb.lower()} left as they were."
        messages.success(request, text)
        if action == "approve":
            _regenerate_notice(request, summary.periods)
        return HttpResponseRedirect(next_url)
    context = _admin_context(
        request,
        model_admin,
        "Approve charges" if action == "approve" else "Reject charges",
        action=action,
        summary=summary,
        form=form,
        ids=",".join(map(str, ids)),
        filter_query=query if not ids else None,
        scope=scope,
        next_url=next_url,
        state_labels=dict(Charge.ReviewState.choices),
        risk=risk,
        correct_url=reverse("admin:billing_charge_correct", args=[risk.charge_id]) if risk.charge_id else "",
        fund_org_queue_url=reverse("admin:billing_charge_review")
        + "?"
        + urlencode({"period": summary.periods[0], "reason": "missing_fund_org"})
        if summary.periods
        else "",
    )
    return TemplateResponse(request, "admin/billing/charge/decide.html", context)


def _regenerate_notice(request: HttpRequest, periods: list[str]) -> None:
    """After approving: a period that already has statements bills differently now, so they must
    be issued again (the statements layer tells through its period panel)."""
    panel = extensions.period_panels.get("statements")
    if panel is None:
        return
    for period in BillingPeriod.objects.filter(period__in=periods).order_by("period"):
        issued = panel(period)
        if issued and issued.get("count"):
            url = reverse("admin:billing_billingperiod_change", args=[period.pk]) + "#ocb-statement-runs"
            messages.warning(
                request,
                format_html(
                    "Period {} already has statements: they must be regenerated to bill this decision. "
                    '<a href="{}">Issue statements of {}</a>',
                    period.period,
                    url,
                    period.period,
                ),
            )


def charge_page_context(request: HttpRequest, charge: Charge) -> dict[str, Any]:
    """The charge page's flags, review history and action links."""
    settings_obj = selectors.billing_settings_get()
    here = reverse("admin:billing_charge_change", args=[charge.pk])
    decide = reverse("admin:billing_charge_decide")
    return {
        "charge_flags": list(charge.flags.select_related("rule").order_by("id")),
        "review_history": list(charge.review_logs.order_by("created_at", "id")),
        "currency": settings_obj.currency_code,
        "reference_labels": (settings_obj.reference_1_label, settings_obj.reference_2_label),
        "can_review": roles.can_review(request.user) and not charge.period.is_finalized,
        "finalized": charge.period.is_finalized,
        "approve_url": decide + "?" + urlencode({"action": "approve", "ids": charge.pk, "next": here}),
        "reject_url": decide + "?" + urlencode({"action": "reject", "ids": charge.pk, "next": here}),
        "correct_url": reverse("admin:billing_charge_correct", args=[charge.pk]),
    }


def charge_correct(request: HttpRequest, model_admin: Any, object_id: str) -> HttpResponse:
    """Correct who pays for a charge; the flag rules run again on the corrected values."""
    if not roles.can_review(request.user):
        raise PermissionDenied
    charge = get_object_or_404(Charge.objects.select_related("period", "source"), pk=object_id)
    charge_url = reverse("admin:billing_charge_change", args=[charge.pk])
    form = CorrectAttributionForm(
        request.POST if request.method == "POST" else None,
        initial={"pi_email": charge.pi_email, "project_id": charge.project_code, "fund_org": charge.fund_org},
    )
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        try:
            corrected = services.charge_correct_attribution(
                charge_id=charge.pk,
                pi_email=data["pi_email"],
                project_id=data["project_id"],
                fund_org=data["fund_org"],
                note=data["note"],
                actor=request.user,
            )
        except Refused as exc:
            messages.error(request, str(exc))
            return HttpResponseRedirect(charge_url)
        state = corrected.get_review_state_display().lower()
        flags = f" ({corrected.flag_summary})" if corrected.flag_summary else ""
        messages.success(request, f"Attribution of charge #{charge.pk} corrected; it is now {state}{flags}.")
        return HttpResponseRedirect(charge_url)
    context = _admin_context(
        request,
        model_admin,
        f"Correct attribution of charge #{charge.pk}",
        charge=charge,
        form=form,
        charge_url=charge_url,
        finalized=charge.period.is_finalized,
    )
    return TemplateResponse(request, "admin/billing/charge/correct.html", context)
