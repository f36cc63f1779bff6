"""The admin's statement runs: preview, issue, send unsent, resend failed (on the period page and
the statements list). Billing admins only; each run is a Celery task (services.runs) whose page
polls its progress. Thin: the services decide, these only check the role and show the outcome."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from django.contrib import messages
from django.core.exceptions import PermissionDenied
from django.http import FileResponse, Http404, HttpRequest, HttpResponse, HttpResponseRedirect, JsonResponse
from django.template.response import TemplateResponse
from django.urls import reverse

from accounts import roles
from billing.models import BillingPeriod
from chargeback.admin_helpers import admin_page_context
from chargeback.errors import Refused
from chargeback.money import format_money

from . import selectors, tasks
from .previews import preview_folder
from .services import runs

RUN_TITLES = {
    "preview": "Preview statements",
    "issue": "Issue statements",
    "send": "Send unsent statements",
    "resend": "Resend failed emails",
}


def can_run_statements(user: Any) -> bool:
    """Issuing and sending a whole period's statements is the billing admins' step (the one that
    manages periods); reviewers may still send single statements from the list."""
    return roles.can_manage_periods(user)


def _period(request: HttpRequest, value: str | None) -> BillingPeriod:
    period = BillingPeriod.objects.filter(period=value or "").first()
    if period is None:
        raise Http404("no such period")
    return period


def period_url(period: BillingPeriod) -> str:
    return reverse("admin:billing_billingperiod_change", args=[period.pk])


def statements_preview_view(request: HttpRequest, model_admin: Any) -> HttpResponse:
    """What issuing would do now, per PI × project (new, revised, unchanged, withdrawn), what is
    held back, and DRAFT PDFs to open. POST: it writes preview files (and is audited)."""
    if not can_run_statements(request.user):
        raise PermissionDenied
    if request.method != "POST":
        return HttpResponse(status=405)
    period = _period(request, request.POST.get("period"))
    try:
        outcome, preview = runs.statements_preview_run(period=period.period, actor=request.user)
    except Refused as exc:
        messages.error(request, str(exc))
        return HttpResponseRedirect(period_url(period))
    currency = outcome.currency
    rows = []
    for result in outcome.statements + outcome.withdrawn:
        rows.append(
            {
                "label": result.label,
                "status": result.status,
                "replaces": result.replaces,
                "pi_email": result.pi_email,
                "project": result.project_code or "(no project)",
                "fund_org": result.fund_org or "—",
                "billed": format_money(result.billed_total, currency),
                "held_back": format_money(result.held_back_amount, currency)
                if result.held_back_count
                else "",
                "held_back_count": result.held_back_count,
            }
        )
    drafts = [
        {
            "label": result.label,
            "name": path.name,
            "url": reverse("admin:statements_statement_preview_pdf", args=[period.period, path.name]),
        }
        # statements_preview writes one file per draft, in number order.
        for (result, _draft), path in zip(
            sorted(outcome.drafts, key=lambda d: d[0].number), preview.files, strict=False
        )
    ]
    context = admin_page_context(
        request,
        f"Preview statements {period.period}",
        model_admin,
        period=period,
        period_url=period_url(period),
        rows=rows,
        drafts=drafts,
        counts={
            "new": outcome.count("new"),
            "revised": outcome.count("revised"),
            "unchanged": outcome.count("unchanged"),
            "withdrawn": len(outcome.withdrawn),
        },
        due=format_money(outcome.billed_total, currency),
        held_back=format_money(outcome.held_back_billed, currency),
        held_back_count=outcome.held_back_count,
        held_back_elsewhere=[
            {
                "pi": h.pi_email or "(unattributed)",
                "project": h.project_code or "(no project)",
                "count": h.count,
                "billed": format_money(h.billed, currency),
            }
            for h in outcome.held_back_elsewhere
        ],
        unbillable=format_money(outcome.unbillable_billed, currency) if outcome.unbillable_count else "",
        unbillable_count=outcome.unbillable_count,
        issue_url=reverse("admin:statements_statement_run", args=["issue"]),
    )
    return TemplateResponse(request, "admin/statements/statement/preview.html", context)


def statements_preview_pdf(request: HttpRequest, model_admin: Any, period: str, name: str) -> FileResponse:
    """A DRAFT PDF of the latest preview (only a file of that period's preview folder)."""
    if not can_run_statements(request.user):
        raise PermissionDenied
    _period(request, period)
    folder = preview_folder(period)
    path = folder / Path(name).name
    if name != path.name or path.suffix != ".pdf" or not path.is_file():
        raise Http404("no such preview")
    return FileResponse(path.open("rb"), filename=path.name, content_type="application/pdf")


def statements_run_start(request: HttpRequest, model_admin: Any, kind: str) -> HttpResponse:
    """POST: start an issue / send / resend run as a task and show its progress page."""
    if not can_run_statements(request.user):
        raise PermissionDenied
    if request.method != "POST":
        return HttpResponse(status=405)
    if kind not in runs.RUN_KINDS:
        raise Http404("no such run")
    period = _period(request, request.POST.get("period"))
    run = runs.statement_run_start(kind=kind, period=period.period, actor=request.user)
    tasks.statements_run.delay(run.pk)
    return HttpResponseRedirect(reverse("admin:statements_statement_run_page", args=[run.pk]))


def _run_status(request: HttpRequest, run_id: str) -> dict[str, Any]:
    """The run's status after recording its latest progress (see runs.statement_run_refresh)."""
    if not can_run_statements(request.user):
        raise PermissionDenied
    run = selectors.statement_run_get(run_id)
    if run is None:
        raise Http404("no such run")
    run = runs.statement_run_refresh(run_id=run.pk) or run
    return selectors.statement_run_status(run)


def statements_run_page(request: HttpRequest, model_admin: Any, run_id: str) -> HttpResponse:
    status = _run_status(request, run_id)
    period = _period(request, status["period"])
    context = admin_page_context(
        request,
        f"{RUN_TITLES[status['kind']]} {period.period}",
        model_admin,
        period=period,
        period_url=period_url(period),
        status=status,
        status_url=reverse("admin:statements_statement_run_status", args=[status["run"]]),
        statements_url=reverse("admin:statements_statement_changelist") + f"?period__id__exact={period.pk}",
        runs_url=reverse("admin:statements_statementrun_changelist") + f"?period__id__exact={period.pk}",
    )
    return TemplateResponse(request, "admin/statements/statement/run.html", context)


def statements_run_status(request: HttpRequest, model_admin: Any, run_id: str) -> JsonResponse:
    return JsonResponse(_run_status(request, run_id))
