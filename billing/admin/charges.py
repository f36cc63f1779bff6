"""Charges: the list, the review queue, bulk decisions, the charge page."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import urlencode

from django.contrib import admin
from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.urls import URLPattern, path, reverse
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString

from accounts import roles
from chargeback.admin_helpers import LargeTableAdminMixin, cell_html

from .. import charge_search, selectors, spending, views
from ..models import PI, Charge, Project
from ..templatetags.openchargeback import flag_labels
from .base import CurrencyAdminMixin, _badge, _fieldset_names, currency_scope, money, money_cell
from .charge_filters import (
    FlagReasonFilter,
    PeriodFilter,
    PIFilter,
    ProjectFilter,
    ReviewStateFilter,
    ServiceFilter,
    SourceFilter,
    _chosen_period,
)


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
        return cell_html(
            '#{} {}<span class="ocb-sub">{} · {}</span>{}',
            obj.pk,
            self.state_col(obj),
            obj.period.period,
            obj.source.slug,
            cell_html('<span class="ocb-flags">{}</span>', self.flags_col(obj)) if obj.flag_summary else "",
        )

    @admin.display(description="PI · project · fund/org")
    def attribution_col(self, obj: Charge) -> SafeString:
        return cell_html(
            '{}<span class="ocb-sub">{} · {}</span>',
            self.pi_col(obj),
            cell_html(
                '<a href="{}">{}</a>', spending.project_spending_url(obj.project_code), obj.project_code
            )
            if obj.project_id
            else (obj.project_code or "no project"),
            obj.fund_org or "no fund/org",
        )

    @admin.display(description="service · resource")
    def charged_col(self, obj: Charge) -> SafeString:
        return cell_html("{}{}", self.service_col(obj), self.resource_col(obj))

    @admin.display(description="PI")
    def pi_col(self, obj: Charge) -> str | SafeString:
        if obj.pi_email and obj.pi_id:
            return cell_html('<a href="{}">{}</a>', spending.pi_spending_url(obj.pi_email), obj.pi_email)
        return obj.pi_email or cell_html('<span class="ocb-quiet">{}</span>', "unattributed")

    @admin.display(description="service")
    def service_col(self, obj: Charge) -> str:
        if obj.charge_category and obj.charge_category != "Usage":
            return f"{obj.service_name} ({obj.charge_category})"
        return obj.service_name

    @admin.display(description="resource")
    def resource_col(self, obj: Charge) -> SafeString:
        text = obj.resource_name or obj.resource_id
        short = text if len(text) <= 30 else text[:12] + "…" + text[-16:]
        return cell_html(
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
        return SafeString(
            " ".join(cell_html('<span class="ocb-flag">{}</span>', f) for f in flag_labels(obj.flag_summary))
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
        return _with_spending_link(
            "billing_pi_change", obj.pi_id, obj.pi, spending.pi_spending_url(obj.pi_email)
        )

    @admin.display(description="project")
    def project_link(self, obj: Charge) -> SafeString | str:
        if obj.project_id is None:
            return "—"
        return _with_spending_link(
            "billing_project_change",
            obj.project_id,
            obj.project,
            spending.project_spending_url(obj.project_code),
        )

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


def _with_spending_link(
    change_url_name: str, object_id: int, payer: PI | Project | None, spending_url: str
) -> SafeString:
    """A link to the PI's or project's admin page, then one to its spending."""
    url = reverse(f"admin:{change_url_name}", args=[object_id])
    return format_html('<a href="{}">{}</a> · <a href="{}">spending</a>', url, payer, spending_url)
