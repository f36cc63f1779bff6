"""The admin's spending pages of a PI and of a project: billed, list and discount per period
over the last 24 periods (chart and table), by source, with their statements, the charges still
held back for review (open flags) and their charge queries.

The figures come from `billing.spending`; this module adds the statements and queries (it sits
above billing, as the statements app does). Mounted under /admin/spending/ by chargeback/urls.py
(through statements/spending_urls.py, by name, so the project's URLconf imports nothing above core).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from django.contrib import admin
from django.core.exceptions import PermissionDenied
from django.db.models import Q
from django.http import Http404, HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils.html import format_html
from django.utils.safestring import SafeString

from billing import spending
from billing.models import PI, Project
from billing.selectors import currency_code
from billing.views import source_chart
from chargeback.admin_helpers import admin_page_context

from .models import ChargeQuery, Statement


def pi_link(email: str) -> SafeString:
    """A PI's email linked to their spending page (the statements and queries lists)."""
    return format_html('<a href="{}">{}</a>', spending.pi_spending_url(email), email)


def project_link(project_code: str) -> SafeString | str:
    """A project id linked to its spending page; '(no project)' without one."""
    if not project_code:
        return "(no project)"
    return format_html('<a href="{}">{}</a>', spending.project_spending_url(project_code), project_code)


def _context(request: HttpRequest, title: str, **extra: Any) -> dict[str, Any]:
    # The per-period table needs the page's full width: no navigation sidebar.
    return admin_page_context(request, title, currency=currency_code(), is_nav_sidebar_enabled=False, **extra)


def _page(
    request: HttpRequest,
    *,
    title: str,
    subject: Any,
    data: spending.Spending,
    statements_q: Q,
    charges_filter: dict[str, str],
    kind: str,
    extra: dict[str, Any],
) -> HttpResponse:
    currency = currency_code()
    months = [p.period for p in data.periods]
    statements = list(
        Statement.objects.filter(statements_q, period__period__in=months)
        .exclude(state=Statement.State.SUPERSEDED)
        .select_related("period")
        .order_by("-period__period", "project_code", "pi_email")
    )
    charges_url = reverse("admin:billing_charge_changelist")
    rows = []
    for item in reversed(data.periods):  # newest first in the table
        query = {"period": item.period, **charges_filter}
        rows.append(
            {
                "item": item,
                "sources": [item.by_source.get(slug) for slug, _ in data.sources],
                "charges_url": charges_url + "?" + urlencode(query),
                "flagged_url": charges_url + "?" + urlencode({**query, "state": "flagged"}),
                "statements": [s for s in statements if s.period.period == item.period],
            }
        )
    queries = list(
        ChargeQuery.objects.filter(
            **{"pi": subject} if kind == "pi" else {"project_code": subject.project_id}
        ).select_related("period")[:20]
    )
    context = _context(
        request,
        title,
        kind=kind,
        subject=subject,
        data=data,
        rows=rows,
        source_totals=[data.source_totals()[slug] for slug, _ in data.sources],
        chart=source_chart(data.history(), currency),
        first=data.periods[0].period if data.periods else "",
        last=data.periods[-1].period if data.periods else "",
        statements_count=len(statements),
        queries=queries,
        charges_url=charges_url + "?" + urlencode(charges_filter),
        **extra,
    )
    return TemplateResponse(request, "admin/spending/spending.html", context)


def _require_view(request: HttpRequest) -> None:
    if not request.user.has_perm("billing.view_charge"):
        raise PermissionDenied


def pi_page(request: HttpRequest) -> HttpResponse:
    """/admin/spending/pi/?pi=EMAIL"""
    _require_view(request)
    pi = PI.objects.filter(email=(request.GET.get("pi") or "").strip().lower()).first()
    if pi is None:
        raise Http404("no such PI")
    projects = list(Project.objects.filter(pi=pi).order_by("project_id"))
    return _page(
        request,
        title=f"Spending of {pi.display_name}",
        subject=pi,
        data=spending.pi_spending(pi),
        statements_q=Q(pi=pi),
        charges_filter={"pi": pi.email},
        kind="pi",
        extra={
            "projects": [(p, spending.project_spending_url(p.project_id)) for p in projects],
            "change_url": reverse("admin:billing_pi_change", args=[pi.pk]),
        },
    )


def project_page(request: HttpRequest) -> HttpResponse:
    """/admin/spending/project/?project=PROJECT_ID"""
    _require_view(request)
    project = Project.objects.filter(project_id=request.GET.get("project") or "").select_related("pi").first()
    if project is None:
        raise Http404("no such project")
    return _page(
        request,
        title=f"Spending of project {project.project_id}",
        subject=project,
        data=spending.project_spending(project),
        statements_q=Q(project_code=project.project_id),
        charges_filter={"project": project.project_id},
        kind="project",
        extra={
            "pi_url": spending.pi_spending_url(project.pi.email),
            "change_url": reverse("admin:billing_project_change", args=[project.pk]),
        },
    )


def spending_urls() -> list[Any]:
    """The pages' URLs, relative to /admin/spending/ (statements/spending_urls.py)."""
    from django.urls import path

    return [
        path("pi/", admin.site.admin_view(pi_page), name="ocb_spending_pi"),
        path("project/", admin.site.admin_view(project_page), name="ocb_spending_project"),
    ]
