"""The finance reviewer's admin: charges, review, flag rules, periods, imports, settings.

Admin classes stay thin: every write goes through billing.services (so the CLI and the admin
obey the same rules), reads that need care at scale live in billing.selectors, and the pages
that are not plain model screens are in billing.views.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from decimal import Decimal
from functools import cached_property
from typing import Any
from urllib.parse import urlencode

from django.contrib import admin, messages
from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME
from django.contrib.admin.views.main import PAGE_VAR, SEARCH_VAR, ChangeList
from django.core.paginator import Page, Paginator
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseBase, HttpResponseRedirect
from django.urls import URLPattern, path, reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString

from accounts import roles
from chargeback.admin_hardening import typed_id
from chargeback.errors import Refused
from chargeback.money import format_money

from . import charge_search, selectors, services, views
from .forms import (
    AccountMappingForm,
    BillingSettingsForm,
    FlagRuleForm,
    PeriodOpenForm,
    SourceForm,
)
from .models import (
    PI,
    AccountMapping,
    BillingPeriod,
    BillingSettings,
    Charge,
    FlagReason,
    FlagRule,
    Import,
    Project,
    ReviewLog,
    Source,
)
from .templatetags.openchargeback import flag_labels

# --- money in the installation's currency ---------------------------------------------------

_currency: ContextVar[str | None] = ContextVar("openchargeback_currency", default=None)


def currency() -> str:
    """The currency of the page being rendered (read once per request, see `currency_scope`)."""
    return _currency.get() or selectors.billing_settings_get().currency_code


@contextmanager
def currency_scope() -> Iterator[None]:
    token = _currency.set(selectors.billing_settings_get().currency_code)
    try:
        yield
    finally:
        _currency.reset(token)


def money(value: Decimal | None) -> str:
    return format_money(value, currency()) if value is not None else "—"


def money_cell(value: Decimal | None) -> SafeString:
    css = "ocb-money ocb-negative" if value is not None and value < 0 else "ocb-money"
    return format_html('<span class="{}">{}</span>', css, money(value))


class CurrencyAdminMixin:
    """Renders list and form pages inside a currency scope, so money columns cost no query each."""

    def changelist_view(self, request: HttpRequest, extra_context: dict | None = None) -> HttpResponse:
        with currency_scope():
            response = super().changelist_view(request, extra_context)  # type: ignore[misc]
            if hasattr(response, "render"):
                response.render()
        return response

    def changeform_view(
        self,
        request: HttpRequest,
        object_id: str | None = None,
        form_url: str = "",
        extra_context: dict | None = None,
    ) -> HttpResponse:
        with currency_scope():
            response = super().changeform_view(request, object_id, form_url, extra_context)  # type: ignore[misc]
            if hasattr(response, "render"):
                response.render()
        return response


# --- pagination that never counts a million rows ---------------------------------------------


class LargeTablePaginator(Paginator):
    """Counts at most ten pages past the one shown.

    The requested page is read with one row of look-ahead; when it is the last page the count is
    exact for free, otherwise a count capped at ten pages further answers "more than N" (a
    million-row table is never counted in full). `capped` tells the templates.
    """

    def __init__(
        self,
        object_list: Any,
        per_page: int,
        orphans: int = 0,
        allow_empty_first_page: bool = True,
        page_number: int = 1,
        pages_ahead: int = 10,
    ) -> None:
        super().__init__(object_list, per_page, orphans, allow_empty_first_page)
        self.page_number = max(1, page_number)
        self.pages_ahead = pages_ahead
        self.capped = False
        self.cap = 0
        self._rows: list | None = None

    @cached_property
    def count(self) -> int:
        offset = (self.page_number - 1) * self.per_page
        rows = list(self.object_list[offset : offset + self.per_page + 1])
        if 0 < len(rows) <= self.per_page or (not rows and offset == 0):
            self._rows = rows
            return offset + len(rows)
        self._rows = rows[: self.per_page] if rows else None
        self.cap = offset + self.pages_ahead * self.per_page
        if self.pages_ahead == 0 and rows:
            # Counting ahead costs another scan (searches): "more than" the rows seen is enough.
            self.capped = True
            return self.cap + 1
        queryset: QuerySet = self.object_list  # type: ignore[assignment]
        counted = queryset.order_by().values("pk")[: self.cap + 1].count()
        self.capped = counted > self.cap
        return counted

    @property
    def page_rows(self) -> list | None:
        """The rows of the requested page, when they have been read already."""
        return self._rows

    def page(self, number: Any) -> Any:
        number = self.validate_number(number)
        if number == self.page_number and self._rows is not None:
            return Page(self._rows, number, self)
        return super().page(number)


# Past any real page, and small enough that its offset fits a 64-bit integer.
MAX_PAGE = 10_000_000


def _page_number(request: HttpRequest) -> int:
    value = request.GET.get(PAGE_VAR, "1")
    if not (value.isascii() and value.isdigit()):
        return 1
    return MAX_PAGE if len(value) > 8 else min(max(1, int(value)), MAX_PAGE)


class ConfigManagedMixin:
    """Pages of settings that a config.yaml read with -c manages say so (and which keys)."""

    config_keys: tuple[str, ...] = ()

    def _config_notice(self, request: HttpRequest) -> None:
        notice = selectors.config_managed_notice(self.config_keys)
        if notice:
            messages.info(request, notice)

    def changeform_view(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        if request.method == "GET":
            self._config_notice(request)
        return super().changeform_view(request, *args, **kwargs)  # type: ignore[misc]

    def changelist_view(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        if request.method == "GET":
            self._config_notice(request)
        return super().changelist_view(request, *args, **kwargs)  # type: ignore[misc]


class LargeTableAdminMixin:
    show_full_result_count = False
    list_per_page = 100
    list_max_show_all = 500

    def get_paginator(
        self,
        request: HttpRequest,
        queryset: QuerySet,
        per_page: int,
        orphans: int = 0,
        allow_empty_first_page: bool = True,
    ) -> LargeTablePaginator:
        searching = bool(request.GET.get(SEARCH_VAR, "").strip())
        return LargeTablePaginator(
            queryset,
            per_page,
            orphans,
            allow_empty_first_page,
            page_number=_page_number(request),
            pages_ahead=0 if searching else 10,
        )

    def get_changelist(self, request: HttpRequest, **kwargs: Any) -> type[ChangeList]:
        return LargeTableChangeList


class LargeTableChangeList(ChangeList):
    def get_results(self, request: HttpRequest) -> None:
        super().get_results(request)
        # A single page is listed from the rows the paginator read, not by running the query again.
        rows = getattr(self.paginator, "page_rows", None)
        if rows is not None and not self.multi_page and not (self.show_all and self.can_show_all):
            self.result_list = rows


class ReadOnlyAdminMixin:
    """Records written only by services: viewable, never added, edited or deleted in the admin."""

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


def _fieldset_names(fieldsets: Any) -> list[str]:
    """Every field named in fieldsets (pages that show everything read-only)."""
    return [name for _, options in fieldsets for name in options["fields"] if isinstance(name, str)]


def _badge(value: str, label: str) -> SafeString:
    return format_html('<span class="ocb-badge ocb-badge-{}">{}</span>', value, label)


# --- charges ------------------------------------------------------------------------------

# Filters whose column leads a (period, ...) index: with one of them the period filter keeps its
# index, otherwise it walks the primary key (see selectors.charges_in_period).
INDEXED_CHARGE_FILTERS = ("state", "source", "service", "pi")


class PeriodFilter(admin.SimpleListFilter):
    title = "period"
    parameter_name = "period"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [
            (p.period, p.period if p.status == BillingPeriod.Status.OPEN else f"{p.period} ({p.status})")
            for p in BillingPeriod.objects.order_by("-period")[:36]
        ]

    def queryset(self, request: HttpRequest, queryset: QuerySet) -> QuerySet:
        if not self.value():
            return queryset
        period = BillingPeriod.objects.filter(period=self.value()).first()
        if period is None:
            return queryset.none()
        if queryset.model is not Charge:
            return queryset.filter(period=period)
        indexed = any(request.GET.get(name) for name in INDEXED_CHARGE_FILTERS)
        return selectors.charges_in_period(queryset, period, use_index=indexed)


class SourceFilter(admin.SimpleListFilter):
    title = "source"
    parameter_name = "source"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [(s.slug, s.display_name or s.slug) for s in Source.objects.order_by("slug")]

    def queryset(self, request: HttpRequest, queryset: QuerySet) -> QuerySet:
        if not self.value():
            return queryset
        source_id = Source.objects.filter(slug=self.value()).values_list("id", flat=True).first()
        return queryset.filter(source_id=source_id) if source_id else queryset.none()


class ReviewStateFilter(admin.SimpleListFilter):
    title = "review state"
    parameter_name = "state"

    def lookups(self, request: HttpRequest, model_admin: Any) -> Any:
        return Charge.ReviewState.choices

    def queryset(self, request: HttpRequest, queryset: QuerySet) -> QuerySet:
        return queryset.filter(review_state=self.value()) if self.value() else queryset


class FlagReasonFilter(admin.SimpleListFilter):
    title = "flag reason"
    parameter_name = "reason"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        reasons = [(value, label) for value, label in FlagReason.choices if value != FlagReason.RULE]
        rules = [(f"rule:{r.pk}", f"Rule: {r.name}") for r in FlagRule.objects.order_by("name")]
        return reasons + rules

    def queryset(self, request: HttpRequest, queryset: QuerySet) -> QuerySet:
        value = self.value()
        return selectors.charges_with_flag(queryset, value) if value else queryset


class InputFilter(admin.SimpleListFilter):
    """A filter typed into a box (with suggestions), for columns with too many values to list."""

    template = "admin/billing/input_filter.html"
    placeholder = ""

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [("", "")]  # rendered as an input box; a non-empty list makes the filter visible

    def suggestions(self, request: HttpRequest) -> list[str]:
        return []

    def choices(self, changelist: Any) -> Iterator[Any]:  # type: ignore[override]
        other = {k: v for k, v in changelist.get_filters_params().items() if k != self.parameter_name}
        yield {
            "value": self.value() or "",
            "parameter_name": self.parameter_name,
            "placeholder": self.placeholder,
            "other_params": [(k, v[-1] if isinstance(v, list) else v) for k, v in other.items()],
            "clear_url": changelist.get_query_string(remove=[self.parameter_name]),
            "suggestions": self._suggestions,
        }

    def __init__(self, request: HttpRequest, params: Any, model: Any, model_admin: Any) -> None:
        super().__init__(request, params, model, model_admin)
        self._suggestions = self.suggestions(request)


def _chosen_period(request: HttpRequest) -> BillingPeriod | None:
    value = request.GET.get("period")
    return BillingPeriod.objects.filter(period=value).first() if value else None


def _cached_rankings(request: HttpRequest) -> selectors.PeriodRankings | None:
    period = _chosen_period(request)
    return views.rankings_if_cached(period) if period else None


class PIFilter(InputFilter):
    title = "PI"
    parameter_name = "pi"
    placeholder = "email, or “none”"

    def suggestions(self, request: HttpRequest) -> list[str]:
        rankings = _cached_rankings(request)
        if rankings:
            return [r.key for r in rankings.top_pis]
        return list(PI.objects.order_by("email").values_list("email", flat=True)[:300])

    def queryset(self, request: HttpRequest, queryset: QuerySet) -> QuerySet:
        value = (self.value() or "").strip().lower()
        if not value:
            return queryset
        if value == "none":
            return queryset.filter(pi__isnull=True)
        pi_id = PI.objects.filter(email=value).values_list("id", flat=True).first()
        return queryset.filter(pi_id=pi_id) if pi_id else queryset.none()


class ProjectFilter(InputFilter):
    title = "project"
    parameter_name = "project"
    placeholder = "project id, or “none”"

    def suggestions(self, request: HttpRequest) -> list[str]:
        rankings = _cached_rankings(request)
        if rankings:
            return [r.key for r in rankings.top_projects]
        return list(Project.objects.order_by("project_id").values_list("project_id", flat=True)[:300])

    def queryset(self, request: HttpRequest, queryset: QuerySet) -> QuerySet:
        value = (self.value() or "").strip()
        if not value:
            return queryset
        if value.lower() == "none":
            return queryset.filter(project__isnull=True)
        project_id = Project.objects.filter(project_id=value).values_list("id", flat=True).first()
        return queryset.filter(project_id=project_id) if project_id else queryset.none()


class ServiceFilter(InputFilter):
    title = "service"
    parameter_name = "service"
    placeholder = "service name"

    def suggestions(self, request: HttpRequest) -> list[str]:
        rankings = _cached_rankings(request)
        return rankings.services[:300] if rankings else []

    def queryset(self, request: HttpRequest, queryset: QuerySet) -> QuerySet:
        value = (self.value() or "").strip()
        return queryset.filter(service_name=value) if value else queryset


@admin.register(Charge)
class ChargeAdmin(CurrencyAdminMixin, LargeTableAdminMixin, admin.ModelAdmin):
    list_display = (
        "charge_col",
        "attribution_col",
        "charged_col",
        "list_col",
        "discount_col",
        "billed_col",
    )
    list_display_links = ("charge_col",)
    show_facets = admin.ShowFacets.NEVER  # facet counts would count a million rows per choice
    list_filter = (
        PeriodFilter,
        ReviewStateFilter,
        FlagReasonFilter,
        SourceFilter,
        PIFilter,
        ProjectFilter,
        ServiceFilter,
    )
    list_select_related = ("source", "period")
    search_fields = ("resource_id",)  # shows the search box; get_search_results does the searching
    search_help_text = (
        "PI email or name, project id or name, fund/org, reference, resource id or name, "
        "sub-account; #123 for charge 123."
    )
    ordering = ("-id",)
    sortable_by = ("charge_col", "list_col", "billed_col")
    actions = ("approve_action", "reject_action")
    change_list_template = "admin/billing/charge/change_list.html"
    change_form_template = "admin/billing/charge/change_form.html"
    fieldsets = (
        (
            "Charge",
            {"fields": ("period", "source", "import_link", "state_col", "flags_col", "line_count")},
        ),
        ("Cost", {"fields": ("cost_breakdown",)}),
        (
            "Attribution",
            {
                "fields": (
                    "pi_link",
                    "project_link",
                    "pi_email_col",
                    "project_code_col",
                    "fund_org",
                    "cost_center",
                    "reference_1_col",
                    "reference_2_col",
                    "attribution_source",
                )
            },
        ),
        (
            "Resource",
            {
                "fields": (
                    "resource_id",
                    "resource_name",
                    "service_name",
                    "service_category",
                    "charge_category",
                    "sub_account_id",
                    "region",
                    "sku_id",
                    "quantity_col",
                    "charge_period_start",
                    "charge_period_end",
                )
            },
        ),
        ("Tags", {"fields": ("tags_col",)}),
    )

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
        return _fieldset_names(self.fieldsets)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        # The charge page is read-only for everyone: decisions and corrections have their own pages.
        return obj is None and super().has_change_permission(request, obj)

    def get_queryset(self, request: HttpRequest) -> QuerySet:
        return super().get_queryset(request).defer("tags")

    def get_search_results(
        self, request: HttpRequest, queryset: QuerySet, search_term: str
    ) -> tuple[QuerySet, bool]:
        return charge_search.charges_matching(queryset, search_term), False

    def get_urls(self) -> list[URLPattern]:
        wrap = self.admin_site.admin_view
        return [
            path("review/", wrap(self.review_queue_view), name="billing_charge_review"),
            path("decide/", wrap(self.decide_view), name="billing_charge_decide"),
            path("<path:object_id>/correct/", wrap(self.correct_view), name="billing_charge_correct"),
            *super().get_urls(),
        ]

    def review_queue_view(self, request: HttpRequest) -> HttpResponse:
        with currency_scope():
            return views.review_queue(request, self)

    def decide_view(self, request: HttpRequest) -> HttpResponse:
        with currency_scope():
            return views.charges_decide(request, self)

    def correct_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        return views.charge_correct(request, self, object_id)

    def changelist_view(self, request: HttpRequest, extra_context: dict | None = None) -> HttpResponse:
        period = _chosen_period(request)
        context = {
            "chosen_period": period,
            "period_totals": selectors.period_totals(period) if period else None,
            "currency": selectors.billing_settings_get().currency_code,
            "can_review": roles.can_review(request.user),
            **(extra_context or {}),
        }
        return super().changelist_view(request, context)

    def change_view(
        self, request: HttpRequest, object_id: str, form_url: str = "", extra_context: dict | None = None
    ) -> HttpResponse:
        charge = Charge.objects.filter(pk=object_id).select_related("period").first()
        context = {
            "title": f"Charge #{charge.pk}" if charge else "Charge",
            "subtitle": f"{charge.service_name} · {charge.resource_name or charge.resource_id}"
            if charge
            else None,
            "show_save": False,
            "show_save_and_continue": False,
            "show_save_and_add_another": False,
            "show_delete": False,
            **(views.charge_page_context(request, charge) if charge else {}),
            **(extra_context or {}),
        }
        return super().change_view(request, object_id, form_url, context)

    # Actions: both lead to the confirmation page, which says how many charges and how much money.

    def _decide(self, request: HttpRequest, action: str) -> HttpResponseRedirect:
        params: dict[str, str] = {"action": action, "next": request.get_full_path()}
        if request.POST.get("select_across") == "1":
            params["filter"] = request.GET.urlencode()
        else:
            params["ids"] = ",".join(request.POST.getlist(ACTION_CHECKBOX_NAME))
        return HttpResponseRedirect(f"{reverse('admin:billing_charge_decide')}?{urlencode(params)}")

    @admin.action(description="Approve selected charges…", permissions=["change"])
    def approve_action(self, request: HttpRequest, queryset: QuerySet) -> HttpResponseRedirect:
        return self._decide(request, "approve")

    @admin.action(description="Reject selected charges…", permissions=["change"])
    def reject_action(self, request: HttpRequest, queryset: QuerySet) -> HttpResponseRedirect:
        return self._decide(request, "reject")

    # Columns.

    # Two-line cells keep the list readable beside the admin's sidebars.

    @admin.display(description="charge", ordering="id")
    def charge_col(self, obj: Charge) -> SafeString:
        return format_html(
            '#{} {}<span class="ocb-sub">{} · {}</span>{}',
            obj.pk,
            self.state_col(obj),
            obj.period.period,
            obj.source.slug,
            format_html('<span class="ocb-flags">{}</span>', self.flags_col(obj)) if obj.flag_summary else "",
        )

    @admin.display(description="PI · project · fund/org")
    def attribution_col(self, obj: Charge) -> SafeString:
        return format_html(
            '{}<span class="ocb-sub">{} · {}</span>',
            self.pi_col(obj),
            obj.project_code or "no project",
            obj.fund_org or "no fund/org",
        )

    @admin.display(description="service · resource")
    def charged_col(self, obj: Charge) -> SafeString:
        return format_html("{}{}", self.service_col(obj), self.resource_col(obj))

    @admin.display(description="review")
    def review_col(self, obj: Charge) -> SafeString:
        return format_html("{} {}", self.state_col(obj), self.flags_col(obj))

    @admin.display(description="period")
    def period_col(self, obj: Charge) -> str:
        return obj.period.period

    @admin.display(description="source")
    def source_col(self, obj: Charge) -> str:
        return obj.source.slug

    @admin.display(description="PI")
    def pi_col(self, obj: Charge) -> str | SafeString:
        return obj.pi_email or format_html('<span class="ocb-quiet">{}</span>', "unattributed")

    @admin.display(description="project")
    def project_col(self, obj: Charge) -> str:
        return obj.project_code or "—"

    @admin.display(description="service")
    def service_col(self, obj: Charge) -> str:
        if obj.charge_category and obj.charge_category != "Usage":
            return f"{obj.service_name} ({obj.charge_category})"
        return obj.service_name

    @admin.display(description="resource")
    def resource_col(self, obj: Charge) -> SafeString:
        text = obj.resource_name or obj.resource_id
        short = text if len(text) <= 30 else text[:12] + "…" + text[-16:]
        return format_html(
            '<span class="ocb-sub ocb-mono" title="{}">{}</span>', obj.resource_id or text, short
        )

    @admin.display(description="list", ordering="list_cost")
    def list_col(self, obj: Charge) -> SafeString:
        return money_cell(obj.list_cost)

    @admin.display(description="discount")
    def discount_col(self, obj: Charge) -> SafeString:
        return money_cell(obj.list_cost - obj.billed_cost)

    @admin.display(description="billed", ordering="billed_cost")
    def billed_col(self, obj: Charge) -> SafeString:
        return money_cell(obj.billed_cost)

    @admin.display(description="state")
    def state_col(self, obj: Charge) -> SafeString:
        return _badge(obj.review_state, obj.get_review_state_display())

    @admin.display(description="flags")
    def flags_col(self, obj: Charge) -> SafeString | str:
        if not obj.flag_summary:
            return ""
        return format_html_join(
            " ", '<span class="ocb-flag">{}</span>', ((f,) for f in flag_labels(obj.flag_summary))
        )

    # Fields of the charge page.

    @admin.display(description="import")
    def import_link(self, obj: Charge) -> SafeString:
        url = reverse("admin:billing_import_change", args=[obj.import_run_id])
        return format_html('<a href="{}">#{} {}</a>', url, obj.import_run_id, obj.import_run.original_name)

    @admin.display(description="cost")
    def cost_breakdown(self, obj: Charge) -> SafeString:
        discount = obj.list_cost - obj.billed_cost
        percent = f"{discount * 100 / obj.list_cost:.1f} %" if obj.list_cost else "—"
        rows = [
            ("List cost", obj.list_cost),
            ("Contracted cost", obj.contracted_cost),
            ("Billed cost", obj.billed_cost),
            ("Effective cost", obj.effective_cost),
        ]
        body = format_html_join(
            "",
            '<tr><th>{}</th><td class="ocb-money">{}</td><td class="ocb-quiet ocb-mono">{}</td></tr>',
            ((label, money(value), value) for label, value in rows),
        )
        return format_html(
            '<table class="ocb-breakdown">{}<tr class="ocb-total"><th>Discount</th>'
            '<td class="ocb-money">{}</td><td>{} of list</td></tr></table>',
            body,
            money(discount),
            percent,
        )

    @admin.display(description="PI")
    def pi_link(self, obj: Charge) -> SafeString | str:
        if obj.pi_id is None:
            return "— (unattributed)"
        url = reverse("admin:billing_pi_change", args=[obj.pi_id])
        return format_html('<a href="{}">{}</a>', url, obj.pi)

    @admin.display(description="project")
    def project_link(self, obj: Charge) -> SafeString | str:
        if obj.project_id is None:
            return "—"
        url = reverse("admin:billing_project_change", args=[obj.project_id])
        return format_html('<a href="{}">{}</a>', url, obj.project)

    @admin.display(description="PI email (as found)")
    def pi_email_col(self, obj: Charge) -> str:
        return obj.pi_email or "—"

    @admin.display(description="project id (as found)")
    def project_code_col(self, obj: Charge) -> str:
        return obj.project_code or "—"

    def _reference(self, value: str, label_field: str) -> SafeString:
        label = getattr(selectors.billing_settings_get(), label_field)
        return format_html('{} <span class="ocb-quiet">({})</span>', value or "—", label)

    @admin.display(description="reference 1")
    def reference_1_col(self, obj: Charge) -> SafeString:
        return self._reference(obj.reference_1, "reference_1_label")

    @admin.display(description="reference 2")
    def reference_2_col(self, obj: Charge) -> SafeString:
        return self._reference(obj.reference_2, "reference_2_label")

    @admin.display(description="quantity")
    def quantity_col(self, obj: Charge) -> str:
        if obj.quantity is None:
            return "—"
        return f"{obj.quantity.normalize():f} {obj.unit}".strip()

    @admin.display(description="tags")
    def tags_col(self, obj: Charge) -> SafeString:
        return format_html('<pre class="ocb-json">{}</pre>', json.dumps(obj.tags, indent=2, sort_keys=True))


@admin.register(ReviewLog)
class ReviewLogAdmin(CurrencyAdminMixin, LargeTableAdminMixin, ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = (
        "created_at",
        "action_col",
        "charge_link",
        "period",
        "transition",
        "billed",
        "actor_name",
        "note",
    )
    list_filter = ("action", PeriodFilter)
    show_facets = admin.ShowFacets.NEVER
    list_select_related = ("period",)
    search_fields = ("actor_name", "note")
    ordering = ("-id",)
    sortable_by = ("created_at",)

    def get_search_results(
        self, request: HttpRequest, queryset: QuerySet, search_term: str
    ) -> tuple[QuerySet, bool]:
        charge_id = typed_id(search_term)
        if charge_id is not None:
            return queryset.filter(charge_id=charge_id), False
        return super().get_search_results(request, queryset, search_term)

    @admin.display(description="action")
    def action_col(self, obj: ReviewLog) -> SafeString:
        return _badge(obj.action, obj.get_action_display())

    @admin.display(description="charge")
    def charge_link(self, obj: ReviewLog) -> SafeString | str:
        if obj.charge_id is None:
            return "(replaced by a re-import)"
        url = reverse("admin:billing_charge_change", args=[obj.charge_id])
        return format_html('<a href="{}">#{}</a>', url, obj.charge_id)

    @admin.display(description="state")
    def transition(self, obj: ReviewLog) -> str:
        return f"{obj.from_state} → {obj.to_state}"

    @admin.display(description="billed")
    def billed(self, obj: ReviewLog) -> SafeString:
        return money_cell(obj.billed_cost)


# --- flag rules -----------------------------------------------------------------------------


@admin.register(FlagRule)
class FlagRuleAdmin(ConfigManagedMixin, admin.ModelAdmin):
    config_keys = ("review",)
    form = FlagRuleForm
    list_display = ("name", "pattern_col", "fields_col", "mode", "source", "is_active", "flagged_now")
    list_filter = ("is_active", "mode", "source")
    search_fields = ("name", "pattern", "description")
    change_form_template = "admin/billing/flagrule/change_form.html"
    change_list_template = "admin/billing/flagrule/change_list.html"
    actions = ("enable_action", "disable_action")
    fieldsets = (
        (None, {"fields": ("name", "description", "is_active")}),
        ("Rule", {"fields": ("pattern", "fields", "mode", "source")}),
        ("Try it", {"fields": ("test_period",)}),
    )

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        # Deleting keeps old flags without their rule; disabling is the normal way to retire one.
        return super().has_delete_permission(request, obj) and request.user.has_perm(
            "billing.delete_flagrule"
        )

    def get_urls(self) -> list[URLPattern]:
        wrap = self.admin_site.admin_view
        return [
            path("reevaluate/", wrap(self.reevaluate_view), name="billing_flagrule_reevaluate"),
            *super().get_urls(),
        ]

    def reevaluate_view(self, request: HttpRequest) -> HttpResponse:
        return views.period_reevaluate(request, self)

    def get_form(self, request: HttpRequest, obj: Any = None, change: bool = False, **kwargs: Any) -> Any:
        form = super().get_form(request, obj, change, **kwargs)
        period = views.selected_period(request)
        if period:
            form.base_fields["test_period"].initial = period.period
        return form

    def changeform_view(
        self,
        request: HttpRequest,
        object_id: str | None = None,
        form_url: str = "",
        extra_context: dict | None = None,
    ) -> HttpResponse:
        with currency_scope():
            try:
                if request.method == "POST" and "_test" in request.POST:
                    response = views.flag_rule_test(request, self, object_id)
                else:
                    response = super().changeform_view(request, object_id, form_url, extra_context)
            except Refused as exc:  # the form checks first; this is a race with another editor
                messages.error(request, str(exc))
                return HttpResponseRedirect(request.get_full_path())
            if hasattr(response, "render"):
                response.render()
        return response

    def save_model(self, request: HttpRequest, obj: FlagRule, form: Any, change: bool) -> None:
        data = form.cleaned_data
        rule = services.flag_rule_save(
            name=data["name"],
            pattern=data["pattern"],
            fields=list(data["fields"]),
            mode=data["mode"],
            description=data.get("description", ""),
            source=data["source"].slug if data.get("source") else None,
            is_active=data.get("is_active", True),
            rule_id=obj.pk if change else None,
        )
        obj.pk = rule.pk
        obj.refresh_from_db()
        url = reverse("admin:billing_flagrule_reevaluate")
        messages.info(
            request,
            format_html(
                'Rules apply to new imports. <a href="{}">Re-evaluate a period</a> to apply this change '
                "to its undecided charges.",
                url,
            ),
        )

    def _set_active(self, request: HttpRequest, queryset: QuerySet, active: bool) -> None:
        for rule in queryset:
            services.flag_rule_save(
                name=rule.name,
                pattern=rule.pattern,
                fields=rule.fields,
                mode=rule.mode,
                description=rule.description,
                source=rule.source.slug if rule.source else None,
                is_active=active,
                rule_id=rule.pk,
            )
        word = "enabled" if active else "disabled"
        messages.success(
            request, f"{queryset.count()} rule(s) {word}. Re-evaluate a period to apply the change."
        )

    @admin.action(description="Enable selected rules", permissions=["change"])
    def enable_action(self, request: HttpRequest, queryset: QuerySet) -> None:
        self._set_active(request, queryset, True)

    @admin.action(description="Disable selected rules", permissions=["change"])
    def disable_action(self, request: HttpRequest, queryset: QuerySet) -> None:
        self._set_active(request, queryset, False)

    @admin.display(description="pattern")
    def pattern_col(self, obj: FlagRule) -> SafeString:
        return format_html('<code class="ocb-mono">{}</code>', obj.pattern)

    @admin.display(description="fields")
    def fields_col(self, obj: FlagRule) -> str:
        return ", ".join(obj.fields or [])

    @admin.display(description="flagging now")
    def flagged_now(self, obj: FlagRule) -> SafeString:
        count = obj.chargeflag_set.filter(charge__review_state=Charge.ReviewState.FLAGGED).count()
        if not count:
            return format_html("{}", 0)
        url = reverse("admin:billing_charge_changelist") + f"?state=flagged&reason=rule:{obj.pk}"
        return format_html('<a href="{}">{}</a>', url, count)


# --- periods ------------------------------------------------------------------------------


@admin.register(BillingPeriod)
class BillingPeriodAdmin(CurrencyAdminMixin, admin.ModelAdmin):
    list_display = (
        "period",
        "status_col",
        "charges_col",
        "list_col",
        "billed_col",
        "discount_col",
        "pis_col",
        "flagged_col",
    )
    list_filter = ("status",)
    ordering = ("-period",)
    change_form_template = "admin/billing/billingperiod/change_form.html"
    fields = ("created_at", "closed_at", "finalized_at")
    readonly_fields = ("created_at", "closed_at", "finalized_at")

    def get_queryset(self, request: HttpRequest) -> QuerySet:
        return selectors.periods_with_totals(super().get_queryset(request))

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def get_form(self, request: HttpRequest, obj: Any = None, change: bool = False, **kwargs: Any) -> Any:
        if obj is None:
            kwargs["form"] = PeriodOpenForm
        return super().get_form(request, obj, change, **kwargs)

    def get_fields(self, request: HttpRequest, obj: Any = None) -> Any:
        return ("period",) if obj is None else self.fields

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> Any:
        return () if obj is None else self.readonly_fields

    def save_model(self, request: HttpRequest, obj: BillingPeriod, form: Any, change: bool) -> None:
        opened = services.period_open(period=form.cleaned_data["period"], actor=request.user)
        obj.pk = opened.pk
        obj.refresh_from_db()

    def add_view(
        self, request: HttpRequest, form_url: str = "", extra_context: dict | None = None
    ) -> HttpResponse:
        try:
            return super().add_view(request, form_url, extra_context)
        except Refused as exc:
            messages.error(request, str(exc))
            return HttpResponseRedirect(request.get_full_path())

    def change_view(
        self, request: HttpRequest, object_id: str, form_url: str = "", extra_context: dict | None = None
    ) -> HttpResponse:
        period = BillingPeriod.objects.filter(pk=object_id).first()
        context = {
            "title": f"Period {period.period}" if period else "Period",
            "subtitle": None,
            "show_save": False,
            "show_save_and_continue": False,
            "show_save_and_add_another": False,
            "show_delete": False,
            **(views.period_page_context(request, period) if period else {}),
            **(extra_context or {}),
        }
        return super().change_view(request, object_id, form_url, context)

    def get_urls(self) -> list[URLPattern]:
        wrap = self.admin_site.admin_view

        def transition(name: str) -> Callable[..., HttpResponse]:
            def view(request: HttpRequest, object_id: str) -> HttpResponse:
                return views.period_transition(request, self, object_id, name)

            return wrap(view)

        return [
            path("<path:object_id>/close/", transition("close"), name="billing_billingperiod_close"),
            path("<path:object_id>/reopen/", transition("reopen"), name="billing_billingperiod_reopen"),
            path("<path:object_id>/finalize/", transition("finalize"), name="billing_billingperiod_finalize"),
            *super().get_urls(),
        ]

    @admin.display(description="status", ordering="status")
    def status_col(self, obj: BillingPeriod) -> SafeString:
        return _badge(obj.status, obj.get_status_display())

    @admin.display(description="charges")
    def charges_col(self, obj: Any) -> str:
        return f"{obj.charge_count or 0:,}"

    @admin.display(description="list")
    def list_col(self, obj: Any) -> SafeString:
        return money_cell(obj.list_sum or Decimal(0))

    @admin.display(description="billed")
    def billed_col(self, obj: Any) -> SafeString:
        return money_cell(obj.billed_sum or Decimal(0))

    @admin.display(description="discount")
    def discount_col(self, obj: Any) -> SafeString:
        return money_cell((obj.list_sum or Decimal(0)) - (obj.billed_sum or Decimal(0)))

    @admin.display(description="PIs")
    def pis_col(self, obj: Any) -> str:
        return f"{obj.pi_count or 0:,}"

    @admin.display(description="flagged")
    def flagged_col(self, obj: Any) -> SafeString:
        count = obj.flagged_count or 0
        if not count:
            return format_html('<span class="ocb-quiet">{}</span>', 0)
        url = reverse("admin:billing_charge_review") + f"?period={obj.period}"
        return format_html('<a class="ocb-flagged-link" href="{}">{}</a>', url, f"{count:,}")


# --- imports ------------------------------------------------------------------------------


@admin.register(Import)
class ImportAdmin(CurrencyAdminMixin, LargeTableAdminMixin, admin.ModelAdmin):
    list_display = (
        "import_col",
        "status_col",
        "rows_col",
        "charges_col",
        "flagged_col",
        "billed_col",
        "who_col",
        "download_col",
    )
    list_display_links = ("import_col",)
    list_filter = ("status", "source", ("period", admin.RelatedOnlyFieldListFilter))
    list_select_related = ("source", "period")
    search_fields = ("original_name", "sha256")
    ordering = ("-id",)
    change_form_template = "admin/billing/import/change_form.html"
    change_list_template = "admin/billing/import/change_list.html"
    fieldsets = (
        (
            None,
            {
                "fields": (
                    "file_col",
                    "source",
                    "period",
                    "status_col",
                    "replace",
                    "supersedes_col",
                    "parts_col",
                    "actor_name",
                )
            },
        ),
        (
            "Result",
            {
                "fields": (
                    "rows_read",
                    "charges_created",
                    "charges_flagged",
                    "decisions_carried",
                    "list_col",
                    "billed_col",
                    "warnings_col",
                    "error_message",
                )
            },
        ),
        ("File", {"fields": ("size_col", "sha256", "created_at", "started_at", "finished_at")}),
    )

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
        return _fieldset_names(self.fieldsets)

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def add_view(
        self, request: HttpRequest, form_url: str = "", extra_context: dict | None = None
    ) -> HttpResponse:
        return HttpResponseRedirect(reverse("admin:billing_import_upload"))

    def get_urls(self) -> list[URLPattern]:
        wrap = self.admin_site.admin_view
        return [
            path("upload/", wrap(self.upload_view), name="billing_import_upload"),
            path("guess/", wrap(self.guess_view), name="billing_import_guess"),
            path("<path:object_id>/status/", wrap(self.status_view), name="billing_import_status"),
            path("<path:object_id>/download/", wrap(self.download_view), name="billing_import_download"),
            *super().get_urls(),
        ]

    def upload_view(self, request: HttpRequest) -> HttpResponse:
        with currency_scope():
            return views.import_upload(request, self)

    def guess_view(self, request: HttpRequest) -> HttpResponse:
        return views.import_guess(request, self)

    def status_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        with currency_scope():
            return views.import_status(request, self, object_id)

    def download_view(self, request: HttpRequest, object_id: str) -> HttpResponseBase:
        return views.import_download(request, self, object_id)

    def changelist_view(self, request: HttpRequest, extra_context: dict | None = None) -> HttpResponse:
        from .collection.selectors import collection_problems

        context = {"collection_problems": collection_problems(), **(extra_context or {})}
        return super().changelist_view(request, context)

    def change_view(
        self, request: HttpRequest, object_id: str, form_url: str = "", extra_context: dict | None = None
    ) -> HttpResponse:
        record = Import.objects.filter(pk=object_id).first()
        context = {"import_errors": record.errors if record else [], **(extra_context or {})}
        return super().change_view(request, object_id, form_url, context)

    @admin.display(description="file", ordering="original_name")
    def file_col(self, obj: Import) -> SafeString | str:
        if not obj.file:
            return obj.original_name
        url = reverse("admin:billing_import_download", args=[obj.pk])
        return format_html('<a href="{}" title="download the stored file">{}</a>', url, obj.original_name)

    @admin.display(description="status", ordering="status")
    def status_col(self, obj: Import) -> SafeString:
        return _badge(obj.status, obj.get_status_display())

    @admin.display(description="import", ordering="id")
    def import_col(self, obj: Import) -> SafeString:
        period = obj.period.period if obj.period else "no period"
        return format_html(
            '{}<span class="ocb-sub">#{} · {} · {}</span>', obj.original_name, obj.pk, obj.source.slug, period
        )

    @admin.display(description="rows", ordering="rows_read")
    def rows_col(self, obj: Import) -> str:
        return f"{obj.rows_read:,}"

    @admin.display(description="charges", ordering="charges_created")
    def charges_col(self, obj: Import) -> str:
        return f"{obj.charges_created:,}"

    @admin.display(description="flagged", ordering="charges_flagged")
    def flagged_col(self, obj: Import) -> str:
        return f"{obj.charges_flagged:,}"

    @admin.display(description="by · when", ordering="created_at")
    def who_col(self, obj: Import) -> SafeString:
        return format_html(
            '{}<span class="ocb-sub">{}</span>',
            obj.actor_name or "—",
            timezone.localtime(obj.created_at).strftime("%Y-%m-%d %H:%M"),
        )

    @admin.display(description="file")
    def download_col(self, obj: Import) -> SafeString | str:
        if not obj.file:
            return "—"
        url = reverse("admin:billing_import_download", args=[obj.pk])
        return format_html('<a href="{}" title="the stored copy, as uploaded">download</a>', url)

    @admin.display(description="billed")
    def billed_col(self, obj: Import) -> SafeString:
        return money_cell(obj.billed_total)

    @admin.display(description="list")
    def list_col(self, obj: Import) -> SafeString:
        return money_cell(obj.list_total)

    @admin.display(description="size")
    def size_col(self, obj: Import) -> str:
        return f"{obj.size_bytes:,} bytes"

    @admin.display(description="supersedes")
    def supersedes_col(self, obj: Import) -> SafeString | str:
        if not obj.supersedes_id:
            return "—"
        url = reverse("admin:billing_import_change", args=[obj.supersedes_id])
        return format_html('<a href="{}">#{}</a>', url, obj.supersedes_id)

    @admin.display(description="same file, other periods")
    def parts_col(self, obj: Import) -> SafeString | str:
        """A file whose rows span several billing periods is one import per period."""
        links = [
            format_html(
                '<a href="{}">#{} ({})</a>',
                reverse("admin:billing_import_change", args=[o.pk]),
                o.pk,
                o.period,
            )
            for o in selectors.imports_of_same_file(obj)
            if o.pk != obj.pk
        ]
        return format_html_join(", ", "{}", ((link,) for link in links)) if links else "—"

    @admin.display(description="warnings")
    def warnings_col(self, obj: Import) -> str:
        return "; ".join(obj.warnings or []) or "—"


# --- settings, sources, PIs, projects, mappings ----------------------------------------------


@admin.register(BillingSettings)
class BillingSettingsAdmin(ConfigManagedMixin, admin.ModelAdmin):
    config_keys = ("currency", "email.from_name", "tag_mapping", "review")
    form = BillingSettingsForm
    fieldsets = (
        ("Organisation", {"fields": ("organization_name", "contact_email", "currency_code")}),
        (
            "Attribution tags",
            {
                "fields": (
                    "tag_pi_email",
                    "tag_project_id",
                    "tag_fund_org",
                    "tag_cost_center",
                    "tag_reference_1",
                    "tag_reference_2",
                    "reference_1_label",
                    "reference_2_label",
                    "tag_prefixes",
                ),
                "description": "Where imports find who pays for a cost: keys of the FOCUS Tags column.",
            },
        ),
        ("Validation", {"fields": ("fund_org_regex",)}),
    )

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def changelist_view(self, request: HttpRequest, extra_context: dict | None = None) -> HttpResponse:
        """There is one settings object: go straight to it."""
        obj = selectors.billing_settings_get()
        return HttpResponseRedirect(reverse("admin:billing_billingsettings_change", args=[obj.pk]))

    def save_model(self, request: HttpRequest, obj: BillingSettings, form: Any, change: bool) -> None:
        services.billing_settings_update(**{name: form.cleaned_data[name] for name in form.changed_data})
        obj.refresh_from_db()


@admin.register(Source)
class SourceAdmin(ConfigManagedMixin, admin.ModelAdmin):
    config_keys = ("imports.known_sources",)
    form = SourceForm
    list_display = ("slug", "display_name", "filename_pattern", "fund_org", "account", "is_active")
    search_fields = ("slug", "display_name")

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> tuple[str, ...]:
        return ("slug",) if obj else ()

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def save_model(self, request: HttpRequest, obj: Source, form: Any, change: bool) -> None:
        data = form.cleaned_data
        fields = {
            name: data.get(name, "") for name in ("display_name", "filename_pattern", "fund_org", "account")
        }
        if change:
            saved = services.source_update(slug=obj.slug, **fields)
        else:
            saved = services.source_create(slug=data["slug"], **fields)
        obj.pk = saved.pk
        obj.refresh_from_db()

    def changeform_view(
        self,
        request: HttpRequest,
        object_id: str | None = None,
        form_url: str = "",
        extra_context: dict | None = None,
    ) -> HttpResponse:
        try:
            return super().changeform_view(request, object_id, form_url, extra_context)
        except Refused as exc:
            messages.error(request, str(exc))
            return HttpResponseRedirect(request.get_full_path())


@admin.register(PI)
class PIAdmin(admin.ModelAdmin):
    list_display = ("email", "name", "department", "project_count")
    search_fields = ("email", "name", "department")
    fields = ("email", "name", "department", "user", "created_at")

    def get_queryset(self, request: HttpRequest) -> QuerySet:
        from django.db.models import Count

        return super().get_queryset(request).annotate(n_projects=Count("projects"))

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> tuple[str, ...]:
        return ("email", "user", "created_at")

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # PIs appear on first sight in an import, or through a mapping/correction

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    @admin.display(description="projects", ordering="n_projects")
    def project_count(self, obj: Any) -> int:
        return obj.n_projects

    def save_model(self, request: HttpRequest, obj: PI, form: Any, change: bool) -> None:
        services.pi_update(
            email=obj.email, name=form.cleaned_data["name"], department=form.cleaned_data["department"]
        )
        obj.refresh_from_db()


@admin.register(Project)
class ProjectAdmin(admin.ModelAdmin):
    list_display = ("project_id", "name", "pi", "fund_org", "cost_center", "reference_1", "is_active")
    list_filter = ("is_active",)
    list_select_related = ("pi",)
    search_fields = ("project_id", "name", "pi__email", "fund_org", "reference_1", "reference_2")
    fields = (
        "project_id",
        "pi",
        "name",
        "fund_org",
        "cost_center",
        "reference_1",
        "reference_2",
        "gl_account",
        "is_active",
        "created_at",
    )

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> tuple[str, ...]:
        return ("project_id", "pi", "created_at")

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # created by imports, mappings and corrections, under their PI

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def save_model(self, request: HttpRequest, obj: Project, form: Any, change: bool) -> None:
        services.project_update(
            project_id=obj.project_id, **{name: form.cleaned_data[name] for name in services.PROJECT_EDITABLE}
        )
        obj.refresh_from_db()


@admin.register(AccountMapping)
class AccountMappingAdmin(admin.ModelAdmin):
    form = AccountMappingForm
    list_display = ("sub_account_id", "source", "project", "pi_col", "fund_org", "note")
    list_select_related = ("source", "project__pi")
    search_fields = ("sub_account_id", "project__project_id", "project__pi__email", "note")

    @admin.display(description="PI")
    def pi_col(self, obj: AccountMapping) -> str:
        return obj.project.pi.email

    def save_model(self, request: HttpRequest, obj: AccountMapping, form: Any, change: bool) -> None:
        data = form.cleaned_data
        saved = services.account_mapping_set(
            sub_account_id=data["sub_account_id"],
            project_id=data["project_code"],
            pi_email=data["pi_email"],
            fund_org=data.get("fund_org", ""),
            source=data["source"].slug if data.get("source") else None,
            note=data.get("note", ""),
        )
        obj.pk = saved.pk
        obj.refresh_from_db()

    def delete_model(self, request: HttpRequest, obj: AccountMapping) -> None:
        services.account_mapping_delete(mapping_id=obj.pk)

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet) -> None:
        for pk in queryset.values_list("pk", flat=True):
            services.account_mapping_delete(mapping_id=pk)

    def changeform_view(
        self,
        request: HttpRequest,
        object_id: str | None = None,
        form_url: str = "",
        extra_context: dict | None = None,
    ) -> HttpResponse:
        try:
            return super().changeform_view(request, object_id, form_url, extra_context)
        except Refused as exc:
            messages.error(request, str(exc))
            return HttpResponseRedirect(request.get_full_path())


# Rates, subsidies, usage files and re-ratings (billing/rating) register their own screens.
from .collection import admin as collection_admin  # noqa: E402, F401
from .rating import admin as rating_admin  # noqa: E402, F401
