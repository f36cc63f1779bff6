"""Admin pages of the billing app that are not plain model screens: the dashboard, the review
queue and its confirmation page, attribution correction, period transitions, flag-rule tests
and re-evaluation, and the upload page with its JSON endpoints.

Each view checks the user's role (accounts.roles), calls one service or selector, and turns
`Refused` into an error message. The ModelAdmins in billing/admin.py mount them (get_urls).
"""

from __future__ import annotations

import copy
import datetime as dt
import logging
import os
import tempfile
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from django.conf import settings
from django.contrib import messages
from django.contrib.admin import helpers
from django.contrib.admin.options import IncorrectLookupParameters
from django.core.exceptions import PermissionDenied
from django.core.files.uploadedfile import UploadedFile
from django.db.models import Count, QuerySet, Sum
from django.http import (
    FileResponse,
    Http404,
    HttpRequest,
    HttpResponse,
    HttpResponseRedirect,
    JsonResponse,
    QueryDict,
)
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import NoReverseMatch, reverse
from django.utils import timezone
from django.utils.http import url_has_allowed_host_and_scheme

from accounts import roles
from accounts import selectors as account_selectors
from accounts import services as account_services
from chargeback.downloads import download_name
from chargeback.errors import Refused
from chargeback.money import ZERO, currency_symbol, format_money

from . import selectors, services, tasks
from .forms import (
    CorrectAttributionForm,
    PeriodCloseForm,
    PeriodFinalizeForm,
    PeriodReopenForm,
    ReevaluateForm,
    ReviewDecisionForm,
    UploadForm,
)
from .models import BillingPeriod, Charge, Import, Source

logger = logging.getLogger(__name__)

ACCEPTED_UPLOADS = (".csv", ".csv.gz")
MAX_LISTED_IDS = 20_000  # charges named one by one (a page's selection); more go by filter


# --- the chosen period ------------------------------------------------------------------------


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
        account_services.preference_period_set(user=request.user, period=period.period)


def rankings_if_cached(period: BillingPeriod) -> selectors.PeriodRankings | None:
    return selectors.period_rankings_cached(period)


def _warm_rankings(periods: list[str]) -> None:
    """Recompute the cached rankings of periods whose charges just changed (a task; eager by default)."""
    for period in periods:
        try:
            tasks.period_rankings_warm.delay(period)
        except Exception:  # the cache is an optimisation: never fail the action that changed data
            logger.exception("could not refresh the rankings of %s", period)


def _currency() -> str:
    return selectors.billing_settings_get().currency_code


def _safe_next(request: HttpRequest, value: str | None, default: str) -> str:
    if value and url_has_allowed_host_and_scheme(value, allowed_hosts={request.get_host()}):
        return value
    return default


def _admin_context(request: HttpRequest, model_admin: Any, title: str, **extra: Any) -> dict[str, Any]:
    return {
        **model_admin.admin_site.each_context(request),
        "title": title,
        "opts": model_admin.model._meta,
        "app_label": model_admin.model._meta.app_label,
        "currency": _currency(),
        **extra,
    }


# --- dashboard ----------------------------------------------------------------------------------


def dashboard_context(request: HttpRequest) -> dict[str, Any]:
    """Everything the admin index shows for the chosen period."""
    if not request.user.has_perm("billing.view_charge"):
        return {}
    period = selected_period(request)
    _remember_period(request, period)
    code = _currency()
    context: dict[str, Any] = {
        "ocb_dashboard": True,
        "currency": code,
        "periods": list(BillingPeriod.objects.order_by("-period")[:60]),
        "period": period,
        "can_review": roles.can_review(request.user),
        "can_import": roles.can_import(request.user),
        "recent_imports": list(Import.objects.select_related("source", "period").order_by("-id")[:8]),
    }
    if period is None:
        return context
    totals = selectors.period_totals(period)
    rankings = selectors.period_rankings(period)
    history = selectors.billed_by_source_history(period)
    top_max = max((p.billed_total for p in rankings.top_projects), default=ZERO)
    context.update(
        totals=totals,
        rankings=rankings,
        source_chart=source_chart(history, code),
        top_projects=[
            {
                "project": p,
                "percent": float(p.billed_total * 100 / top_max)
                if top_max > 0 and p.billed_total > 0
                else 0.0,
            }
            for p in rankings.top_projects
        ],
        charges_url=reverse("admin:billing_charge_changelist") + f"?period={period.period}",
        review_url=reverse("admin:billing_charge_review") + f"?period={period.period}",
        period_url=reverse("admin:billing_billingperiod_change", args=[period.pk]),
    )
    return context


SERIES_COLORS = 8


def _nice_ceiling(value: Decimal) -> Decimal:
    """The smallest 1, 2, 2.5 or 5 × 10^k that is at least `value` (for chart axes)."""
    if value <= 0:
        return Decimal(1)
    exponent = value.adjusted()
    for step in (Decimal(1), Decimal(2), Decimal("2.5"), Decimal(5), Decimal(10)):
        candidate = step.scaleb(exponent)
        if candidate >= value:
            return candidate
    return Decimal(10).scaleb(exponent)


def _short_money(value: Decimal, currency: str) -> str:
    """Axis labels: "$0", "$750", "$1.25k", "$2M"."""
    symbol = currency_symbol(currency).strip()
    sign, value = ("-" if value < 0 else ""), abs(value)
    suffix = ""
    for limit, name in ((Decimal(10) ** 9, "B"), (Decimal(10) ** 6, "M"), (Decimal(10) ** 3, "k")):
        if value >= limit:
            value, suffix = value / limit, name
            break
    text = f"{value:,.2f}".rstrip("0").rstrip(".")
    return f"{sign}{symbol}{text}{suffix}"


def source_chart(history: selectors.SourceHistory, currency: str) -> dict[str, Any]:
    """Geometry of the stacked column chart (billed per source per period) as inline SVG."""
    width, height, left, right, top, bottom = 1160, 300, 70, 10, 14, 34
    plot_w, plot_h = width - left - right, height - top - bottom
    n = max(1, len(history.periods))
    totals = [max(ZERO, history.total(i)) for i in range(len(history.periods))]
    ceiling = _nice_ceiling(max(totals, default=ZERO))
    slot = plot_w / n
    bar_w = min(48.0, slot * 0.64)
    colors = {slug: i % SERIES_COLORS for i, (slug, _) in enumerate(history.sources)}
    names = dict(history.sources)
    bars = []
    for i, label in enumerate(history.periods):
        x = left + slot * i + (slot - bar_w) / 2
        y = float(top + plot_h)
        segments = []
        for slug, series in history.billed.items():
            amount = series[i]
            if amount <= 0:
                continue
            h = float(amount / ceiling) * plot_h
            y -= h
            segments.append(
                {
                    "x": round(x, 1),
                    "y": round(y, 1),
                    "w": round(bar_w, 1),
                    "h": round(max(h, 0.5), 1),
                    "color": colors[slug],
                    "title": f"{label} · {names[slug]}: {format_money(amount, currency)}",
                }
            )
        year, month = label.split("-")
        bars.append(
            {
                "segments": segments,
                "label": dt.date(int(year), int(month), 1).strftime("%b"),
                "year": year if (i == 0 or month == "01") else "",
                "label_x": round(x + bar_w / 2, 1),
                "total": format_money(history.total(i), currency),
                "total_y": round(y - 4, 1),
            }
        )
    ticks = []
    for k in range(5):
        value = ceiling * k / 4
        ticks.append({"y": round(top + plot_h - plot_h * k / 4, 1), "label": _short_money(value, currency)})
    return {
        "width": width,
        "height": height,
        "left": left,
        "plot_right": width - right,
        "axis_y": top + plot_h,
        "label_y": top + plot_h + 16,
        "year_y": top + plot_h + 29,
        "bars": bars,
        "ticks": ticks,
        "legend": [{"name": name, "slug": slug, "color": colors[slug]} for slug, name in history.sources],
        "empty": not any(totals),
    }


# --- review -------------------------------------------------------------------------------------


def review_queue(request: HttpRequest, model_admin: Any) -> HttpResponse:
    """Flagged charges of the chosen period, grouped by reason, with the actions on them."""
    from .admin import LargeTablePaginator, _page_number

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
        paginator = LargeTablePaginator(charges, 50, page_number=_page_number(request))
        try:
            page = paginator.page(_page_number(request))
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
        text = f"{verb} {outcome.count:,} charge{'s' if outcome.count != 1 else ''} ({format_money(outcome.billed_total, _currency())} billed)."
        if outcome.skipped:
            text += f" {outcome.skipped:,} already {verb.lower()} left as they were."
        messages.success(request, text)
        _warm_rankings(summary.periods)
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
    )
    return TemplateResponse(request, "admin/billing/charge/decide.html", context)


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
        _warm_rankings([charge.period.period])
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


# --- periods ------------------------------------------------------------------------------------


def _statements_summary(period: BillingPeriod) -> dict[str, Any] | None:
    """Current statements of the period by state, when the statements app provides them."""
    try:
        from statements.models import Statement, StatementLine
    except ImportError:
        return None
    rows = (
        Statement.objects.filter(period=period)
        .exclude(state=Statement.State.SUPERSEDED)
        .values_list("state")
        .annotate(n=Count("id"), total=Sum("billed_total"))
        .order_by("state")
    )
    states = [{"state": state, "count": n, "total": total or ZERO} for state, n, total in rows]
    try:
        url = reverse("admin:statements_statement_changelist") + f"?period__id__exact={period.pk}"
    except NoReverseMatch:
        url = ""
    total = sum((s["total"] for s in states), ZERO)
    # The exact sum of the current statements' charges: the cent rule makes the statements differ
    # from it by rounding only (explained on the page when they do).
    exact = (
        StatementLine.objects.filter(statement__period=period)
        .exclude(statement__state=Statement.State.SUPERSEDED)
        .aggregate(s=Sum("billed_exact"))["s"]
        or ZERO
    )
    return {
        "states": states,
        "count": sum(s["count"] for s in states),
        "total": total,
        "exact": exact,
        "rounding": total - exact,
        "url": url,
    }


def period_page_context(request: HttpRequest, period: BillingPeriod) -> dict[str, Any]:
    can_manage = roles.can_manage_periods(request.user)
    return {
        "currency": _currency(),
        "totals": selectors.period_totals(period),
        "rankings": selectors.period_rankings(period),
        "period_imports": list(period.imports.select_related("source").order_by("-id")[:50]),
        "transitions": list(period.transitions.order_by("created_at", "id")),
        "statements": _statements_summary(period),
        "finalize_problems": services.period_finalize_problems(period)
        if period.status == BillingPeriod.Status.CLOSED
        else [],
        "can_close": can_manage and period.status == BillingPeriod.Status.OPEN,
        "can_reopen": can_manage and period.status == BillingPeriod.Status.CLOSED,
        "can_finalize": can_manage and period.status == BillingPeriod.Status.CLOSED,
        "can_reevaluate": roles.can_review(request.user) and not period.is_finalized,
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


# --- flag rules ---------------------------------------------------------------------------------


def flag_rule_test(request: HttpRequest, model_admin: Any, object_id: str | None) -> HttpResponse:
    """The rule form posted with "Test": show what it would flag, save nothing."""
    obj = model_admin.get_object(request, object_id) if object_id else None
    if object_id and obj is None:
        raise Http404
    allowed = (
        model_admin.has_change_permission(request, obj) if obj else model_admin.has_add_permission(request)
    )
    if not allowed:
        raise PermissionDenied
    form_class = model_admin.get_form(request, obj, change=obj is not None)
    form = form_class(request.POST, instance=obj)
    preview = None
    if form.is_valid():
        data = form.cleaned_data
        period = data.get("test_period") or selected_period(request)
        if period is None:
            form.add_error("test_period", "There is no period to test against yet.")
        else:
            try:
                preview = selectors.flag_rule_preview(
                    period=period,
                    pattern=data["pattern"],
                    fields=list(data["fields"]),
                    mode=data["mode"],
                    source_id=data["source"].pk if data.get("source") else None,
                )
            except Refused as exc:
                form.add_error("pattern", str(exc))
    fieldsets = model_admin.get_fieldsets(request, obj)
    admin_form = helpers.AdminForm(
        form, list(fieldsets), {}, model_admin.get_readonly_fields(request, obj), model_admin=model_admin
    )
    context = {
        **model_admin.admin_site.each_context(request),
        "title": ("Change" if obj else "Add") + " flag rule",
        "subtitle": str(obj) if obj else None,
        "adminform": admin_form,
        "object_id": object_id,
        "original": obj,
        "is_popup": False,
        "to_field": None,
        "media": model_admin.media + admin_form.media,
        "inline_admin_formsets": [],
        "errors": helpers.AdminErrorList(form, []),
        "preserved_filters": model_admin.get_preserved_filters(request),
        "rule_preview": preview,
        "currency": _currency(),
        "state_labels": dict(Charge.ReviewState.choices),
    }
    return model_admin.render_change_form(request, context, add=obj is None, change=obj is not None, obj=obj)


def period_reevaluate(request: HttpRequest, model_admin: Any) -> HttpResponse:
    """Run the active rules again over a period's undecided (ok/flagged) charges."""
    if not roles.can_review(request.user):
        raise PermissionDenied
    period = selected_period(request)
    initial = {"period": period.period} if period and not period.is_finalized else {}
    form = ReevaluateForm(request.POST if request.method == "POST" else None, initial=initial)
    if request.method == "POST" and form.is_valid():
        chosen = form.cleaned_data["period"]
        try:
            result = tasks.period_reevaluate_flags.delay(chosen.period, request.user.pk)
        except Refused as exc:
            messages.error(request, str(exc))
            return HttpResponseRedirect(request.get_full_path())
        if settings.CELERY_TASK_ALWAYS_EAGER:
            changed = result.get()
            messages.success(
                request,
                f"Flags of {chosen.period} re-evaluated: {changed:,} charge{'s' if changed != 1 else ''} changed state.",
            )
        else:
            messages.info(
                request, f"Re-evaluation of {chosen.period} queued; the review queue updates when it ends."
            )
        return HttpResponseRedirect(reverse("admin:billing_charge_review") + f"?period={chosen.period}")
    context = _admin_context(
        request,
        model_admin,
        "Re-evaluate flags",
        form=form,
        rules=list(
            model_admin.model.objects.filter(is_active=True).select_related("source").order_by("name")
        ),
    )
    return TemplateResponse(request, "admin/billing/flagrule/reevaluate.html", context)


# --- imports ------------------------------------------------------------------------------------


def import_status_data(record: Import, currency: str) -> dict[str, Any]:
    """What the upload page shows of one import (and polls while it runs)."""
    done = record.status in (Import.Status.COMPLETED, Import.Status.FAILED, Import.Status.SUPERSEDED)
    started = record.started_at or record.created_at
    end = record.finished_at if done and record.finished_at else timezone.now()
    return {
        "id": record.pk,
        "name": record.original_name,
        "source": record.source.slug,
        # A file whose rows span several billing periods is one import per period.
        "period": ", ".join(str(i.period) for i in selectors.imports_of_same_file(record) if i.period_id)
        if done and record.period_id
        else (record.period.period if record.period_id and record.period else ""),
        "status": record.status,
        "status_label": record.get_status_display(),
        "done": done,
        "ok": record.status in (Import.Status.COMPLETED, Import.Status.SUPERSEDED),
        "rows": record.rows_read,
        "charges": record.charges_created,
        "flagged": record.charges_flagged,
        "carried": record.decisions_carried,
        "list_total": format_money(record.list_total, currency),
        "billed_total": format_money(record.billed_total, currency),
        "error": record.error_message,
        "errors": (record.errors or [])[:50],
        "error_count": len(record.errors or []),
        "warnings": record.warnings or [],
        "supersedes": record.supersedes_id,
        "seconds": round((end - started).total_seconds(), 1) if started and end else 0,
        "url": reverse("admin:billing_import_change", args=[record.pk]),
        "status_url": reverse("admin:billing_import_status", args=[record.pk]),
        "review_url": (reverse("admin:billing_charge_review") + f"?period={record.period.period}")
        if record.period_id and record.period and record.charges_flagged
        else "",
    }


def _guess(name: str, sources: list[Source]) -> dict[str, str]:
    source = selectors.source_for_filename(name, sources)
    return {
        "name": name,
        "source": source.slug if source else "",
        # No known source: the name's prefix, which the import creates on first sight.
        "new_source": "" if source else selectors.source_name_from_filename(name),
        "period": selectors.period_from_filename(name) or "",
    }


def _human_size(size: int) -> str:
    value, unit = float(size), "bytes"
    for unit in ("bytes", "KB", "MB", "GB", "TB"):
        if value < 1024 or unit == "TB":
            break
        value /= 1024
    return f"{value:,.0f} {unit}" if unit == "bytes" else f"{value:,.1f} {unit}".replace(".0 ", " ")


def _accepted(name: str) -> bool:
    return name.lower().endswith(ACCEPTED_UPLOADS)


def _refused_upload(name: str, limit: int) -> dict[str, Any]:
    return {
        "name": os.path.basename(name or "upload"),
        "status": "rejected",
        "status_label": "Not imported",
        "done": True,
        "ok": False,
        "error": f"The file is larger than the upload limit ({_human_size(limit)}); it was not stored.",
    }


def _start_import(request: HttpRequest, uploaded: UploadedFile, data: dict[str, Any]) -> dict[str, Any]:
    """Store one uploaded file as a pending Import and run it as a task (eager: right here)."""
    name = os.path.basename(uploaded.name or "upload.csv")
    limit = settings.OPENCHARGEBACK_UPLOAD_MAX_BYTES
    rejected = {"name": name, "status": "rejected", "status_label": "Not imported", "done": True, "ok": False}
    if not _accepted(name):
        return {**rejected, "error": "Only .csv and .csv.gz files can be imported."}
    if uploaded.size and uploaded.size > limit:
        return {**rejected, "error": f"The file is larger than the upload limit ({_human_size(limit)})."}
    source: Source | None
    if data.get("source"):
        try:
            source, _created = services.source_ensure(name=data["source"])  # a new name: created
        except Refused as exc:
            return {**rejected, "error": str(exc)}
    else:
        source = selectors.source_for_filename(name)
    if source is None:
        return {
            **rejected,
            "error": "The source could not be told from the file name: choose one, or name a new one.",
        }
    period = data.get("period") or selectors.period_from_filename(name) or None
    created_tmp = None
    try:
        if hasattr(uploaded, "temporary_file_path"):
            path = Path(uploaded.temporary_file_path())
        else:
            suffix = ".csv.gz" if name.lower().endswith(".gz") else ".csv"
            with tempfile.NamedTemporaryFile(suffix=suffix, delete=False) as handle:
                for chunk in uploaded.chunks():
                    handle.write(chunk)
            path = created_tmp = Path(handle.name)
        try:
            record = services.import_create(
                path=path,
                source=source,
                replace=bool(data.get("replace")),
                actor=request.user,
                original_name=name,
            )
        except Refused as exc:
            return {**rejected, "error": str(exc)}
    finally:
        if created_tmp is not None:
            created_tmp.unlink(missing_ok=True)
    try:
        tasks.import_run.delay(record.pk, period)
    except Exception:  # eager mode: the Import is already marked failed with the reason
        logger.exception("import #%s failed", record.pk)
    record.refresh_from_db()
    return import_status_data(record, _currency())


def import_upload(request: HttpRequest, model_admin: Any) -> HttpResponse:
    """Upload one or more FOCUS files: each becomes an Import run by a Celery task."""
    if not roles.can_import(request.user):
        raise PermissionDenied
    wants_json = "application/json" in request.headers.get("Accept", "")
    results: list[dict[str, Any]] = []
    form = UploadForm(request.POST if request.method == "POST" else None)
    if request.method == "POST":
        files = request.FILES.getlist("file")
        refused = getattr(request, "upload_refused", None)  # cut off while it streamed in
        if not files and not refused:
            form.add_error(None, "Choose at least one file.")
        if form.is_valid():
            results = [_start_import(request, uploaded, form.cleaned_data) for uploaded in files]
            if refused:
                results.append(_refused_upload(*refused))
        if wants_json:
            if not form.is_valid():
                return JsonResponse({"errors": form.errors.get_json_data()}, status=400)
            return JsonResponse({"results": results})
    sources = list(Source.objects.filter(is_active=True).order_by("slug"))
    context = _admin_context(
        request,
        model_admin,
        "Import billing files",
        form=form,
        results=results,
        sources=sources,
        sources_data=[{"slug": s.slug, "name": s.display_name} for s in sources],
        periods=list(BillingPeriod.objects.order_by("-period").values_list("period", "status")[:24]),
        max_bytes=settings.OPENCHARGEBACK_UPLOAD_MAX_BYTES,
        max_size=_human_size(settings.OPENCHARGEBACK_UPLOAD_MAX_BYTES),
        accepted=",".join(ACCEPTED_UPLOADS),
        guess_url=reverse("admin:billing_import_guess"),
        upload_url=reverse("admin:billing_import_upload"),
        history_url=reverse("admin:billing_import_changelist"),
        eager=settings.CELERY_TASK_ALWAYS_EAGER,
    )
    return TemplateResponse(request, "admin/billing/import/upload.html", context)


def import_guess(request: HttpRequest, model_admin: Any) -> JsonResponse:
    """Source and period guessed from file names: ?name=aws_2025-01.csv&name=..."""
    if not model_admin.has_view_permission(request):
        raise PermissionDenied
    sources = list(Source.objects.filter(is_active=True))
    return JsonResponse({"guesses": [_guess(name, sources) for name in request.GET.getlist("name")[:100]]})


def import_status(request: HttpRequest, model_admin: Any, object_id: str) -> JsonResponse:
    if not model_admin.has_view_permission(request):
        raise PermissionDenied
    record = get_object_or_404(Import.objects.select_related("source", "period"), pk=object_id)
    return JsonResponse(import_status_data(record, _currency()))


def import_download(request: HttpRequest, model_admin: Any, object_id: str) -> FileResponse:
    """The stored copy of an imported file, as uploaded."""
    if not model_admin.has_view_permission(request):
        raise PermissionDenied
    record = get_object_or_404(Import, pk=object_id)
    response = stored_file_response(record.file, record.original_name)
    logger.info("import #%s downloaded by %s", record.pk, request.user)
    return response


def stored_file_response(stored: Any, filename: str) -> FileResponse:
    """A stored file (from disk or object storage) streamed as a download; 404 when it is missing."""
    if not stored:
        raise Http404("no stored file")
    try:
        handle = stored.open("rb")
    except FileNotFoundError:
        raise Http404("the stored file is missing") from None
    return FileResponse(handle, as_attachment=True, filename=download_name(filename))
