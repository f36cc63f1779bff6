"""Admin of charge queries: the reviewers' queue (the changelist, open queries first), a query's
page, and its resolve page. Answering needs `statements.change_chargequery` (reviewers and
billing admins); viewers read the queue and answers only. Screens call services."""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.contrib.admin.utils import flatten_fieldsets
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.html import format_html

from accounts import roles
from billing.admin.base import CurrencyAdminMixin, currency, money
from billing.spending import pi_spending_url, project_spending_url
from chargeback.errors import Refused

from .. import spending_admin
from ..models import ChargeQuery
from . import selectors, services
from .forms import QueryResolveForm


class QueryStateFilter(admin.SimpleListFilter):
    """Open queries by default: the list is the reviewers' queue."""

    title = "state"
    parameter_name = "state"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [("resolved", "Resolved"), ("all", "All")]

    def choices(self, changelist: Any) -> Any:
        for value, label in ((None, "Open"), ("resolved", "Resolved"), ("all", "All")):
            yield {
                "selected": self.value() == value,
                "query_string": changelist.get_query_string({self.parameter_name: value})
                if value
                else changelist.get_query_string(remove=[self.parameter_name]),
                "display": label,
            }

    def queryset(self, request: HttpRequest, queryset: QuerySet[ChargeQuery]) -> QuerySet[ChargeQuery]:
        if self.value() == "all":
            return queryset
        if self.value() == "resolved":
            return queryset.filter(state=ChargeQuery.State.RESOLVED)
        return queryset.filter(state=ChargeQuery.State.OPEN)


@admin.register(ChargeQuery)
class ChargeQueryAdmin(CurrencyAdminMixin, admin.ModelAdmin):
    list_display = ("number", "who", "about", "amount_money", "state_label")
    list_display_links = ("number",)
    list_filter = (QueryStateFilter, "resolution", "period")
    search_fields = ("subject", "reason", "answer", "pi__email", "project_code", "raised_by_email")
    list_select_related = ("period", "pi", "source")
    ordering = ("created_at", "id")
    list_per_page = 50
    fieldsets = (
        (
            "Query",
            {
                "fields": (
                    "period",
                    "pi_link",
                    "project_link",
                    "source",
                    "charge_link",
                    "statement_link",
                    "subject",
                    "amount_money",
                    "reason",
                    "raised_by_email",
                    "created_at",
                )
            },
        ),
        (
            "Answer",
            {
                "fields": (
                    "state",
                    "resolution",
                    "answer",
                    "credit_money",
                    "resolved_by_name",
                    "resolved_at",
                    "notified_at",
                    "notify_error",
                )
            },
        ),
    )
    # Every field is read-only here: a query is answered on its resolve page.
    readonly_fields = tuple(flatten_fieldsets(fieldsets))
    change_form_template = "admin/statements/chargequery/change_form.html"
    change_list_template = "admin/statements/chargequery/change_list.html"

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # PIs raise queries in the portal

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def get_urls(self) -> list[Any]:
        return [
            path(
                "<int:object_id>/resolve/",
                self.admin_site.admin_view(self.resolve_view),
                name="statements_chargequery_resolve",
            ),
            *super().get_urls(),
        ]

    @admin.display(description="query", ordering="id")
    def number(self, query: ChargeQuery) -> str:
        return format_html(
            '#{}<span class="ocb-sub">{} · asked {}</span>',
            query.pk,
            query.period.period,
            query.created_at.strftime("%Y-%m-%d"),
        )

    @admin.display(description="PI · project", ordering="pi__email")
    def who(self, query: ChargeQuery) -> str:
        return format_html(
            '{}<span class="ocb-sub">{} · asked by {}</span>',
            self.pi_link(query),
            self.project_link(query),
            query.raised_by_email,
        )

    @admin.display(description="about")
    def about(self, query: ChargeQuery) -> str:
        reason = query.reason if len(query.reason) <= 120 else query.reason[:117] + "…"
        return format_html('{}<span class="ocb-sub">“{}”</span>', query.subject, reason)

    @admin.display(description="PI", ordering="pi__email")
    def pi_link(self, query: ChargeQuery) -> str:
        return spending_admin.pi_link(query.pi.email)

    @admin.display(description="project", ordering="project_code")
    def project_link(self, query: ChargeQuery) -> str:
        return spending_admin.project_link(query.project_code)

    @admin.display(description="amount")
    def amount_money(self, query: ChargeQuery) -> str:
        return money(query.amount)

    @admin.display(description="credit")
    def credit_money(self, query: ChargeQuery) -> str:
        return money(query.credit_amount) if query.credit_amount else "—"

    @admin.display(description="state", ordering="state")
    def state_label(self, query: ChargeQuery) -> str:
        if query.is_open:
            return format_html('<span class="ocb-badge ocb-badge-flagged">{}</span>', "Open")
        return format_html(
            '<span class="ocb-badge ocb-badge-approved">{}</span>', query.get_resolution_display()
        )

    @admin.display(description="charge")
    def charge_link(self, query: ChargeQuery) -> str:
        if not query.charge_id:
            return "—"
        return format_html(
            '<a href="{}">charge #{}</a>',
            reverse("admin:billing_charge_change", args=[query.charge_id]),
            query.charge_id,
        )

    @admin.display(description="statement")
    def statement_link(self, query: ChargeQuery) -> str:
        if not query.statement_id:
            return "—"
        return format_html(
            '<a href="{}">{}</a>',
            reverse("admin:statements_statement_change", args=[query.statement_id]),
            query.statement.label if query.statement else query.statement_id,
        )

    def changelist_view(self, request: HttpRequest, extra_context: dict[str, Any] | None = None) -> Any:
        # The queue needs the page's width more than the app list.
        return super().changelist_view(request, {"is_nav_sidebar_enabled": False, **(extra_context or {})})

    def change_view(
        self,
        request: HttpRequest,
        object_id: str,
        form_url: str = "",
        extra_context: dict[str, Any] | None = None,
    ) -> HttpResponse:
        query = get_object_or_404(ChargeQuery, pk=object_id) if object_id.isdigit() else None
        context = {
            **(extra_context or {}),
            "can_answer": roles.can_answer_queries(request.user) and query is not None and query.is_open,
            "resolve_url": reverse("admin:statements_chargequery_resolve", args=[object_id])
            if object_id.isdigit()
            else "",
        }
        return super().change_view(request, object_id, form_url, extra_context=context)

    def resolve_view(self, request: HttpRequest, object_id: int) -> HttpResponse:
        if not roles.can_answer_queries(request.user):
            raise PermissionDenied
        query = get_object_or_404(selectors.queries_base(), pk=object_id)
        change_url = reverse("admin:statements_chargequery_change", args=[query.pk])
        if not query.is_open:
            messages.info(request, f"Query #{query.pk} is already resolved.")
            return HttpResponseRedirect(change_url)
        initial = {"pi_email": query.pi.email, "project_id": query.project_code}
        if query.charge_id and query.charge is not None:
            initial["fund_org"] = query.charge.fund_org
        form = QueryResolveForm(request.POST or None, initial=initial)
        if request.method == "POST" and form.is_valid():
            try:
                services.query_resolve(query_id=query.pk, decision=form.decision(), actor=request.user)
            except Refused as exc:
                form.add_error(None, str(exc))
            else:
                messages.success(request, f"Query #{query.pk} resolved; the PI will be emailed the answer.")
                return HttpResponseRedirect(reverse("admin:statements_chargequery_changelist"))
        context = {
            **self.admin_site.each_context(request),
            "title": f"Resolve query #{query.pk}",
            "opts": self.model._meta,
            "app_label": self.model._meta.app_label,
            "query": query,
            "form": form,
            "currency": currency(),
            "change_url": change_url,
            "charge_url": reverse("admin:billing_charge_change", args=[query.charge_id])
            if query.charge_id
            else "",
            "pi_url": pi_spending_url(query.pi.email),
            "project_url": project_spending_url(query.project_code) if query.project_code else "",
        }
        return TemplateResponse(request, "admin/statements/chargequery/resolve.html", context)


def dashboard_queries(request: HttpRequest) -> dict[str, Any]:
    """The dashboard's card: open charge queries (for those who may see them)."""
    if not request.user.has_perm("statements.view_chargequery"):
        return {}
    return {
        "open_queries": selectors.queries_open_count(),
        "queries_url": reverse("admin:statements_chargequery_changelist"),
    }
