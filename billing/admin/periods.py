"""Billing periods: the period page and its transitions."""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from typing import Any

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.urls import URLPattern, path, reverse
from django.utils.html import format_html
from django.utils.safestring import SafeString

from accounts import roles
from chargeback.errors import Refused

from .. import branding, selectors, services, views
from ..forms import (
    PeriodOpenForm,
)
from ..models import (
    BillingPeriod,
)
from .base import CurrencyAdminMixin, _badge, money_cell


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
    fields = ("statement_note", "created_at", "closed_at", "finalized_at")
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
        if obj is None:
            return ()
        if self._note_editable(request, obj):
            return self.readonly_fields
        return ("statement_note", *self.readonly_fields)

    def _note_editable(self, request: HttpRequest, obj: BillingPeriod) -> bool:
        return roles.can_manage_periods(request.user) and not obj.is_finalized

    def save_model(self, request: HttpRequest, obj: BillingPeriod, form: Any, change: bool) -> None:
        if change:  # the only editable field of a period: its note on statements
            saved = branding.period_statement_note_set(
                period=obj.period, note=form.cleaned_data.get("statement_note", ""), actor=request.user
            )
            obj.refresh_from_db()
            issued = saved.statements.exclude(state="superseded").count()
            if issued and "statement_note" in form.changed_data:
                messages.info(
                    request,
                    f"The note appears on statements rendered from now on (new versions, previews); the "
                    f"{issued} statement(s) already issued keep their PDF.",
                )
            return
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
            "show_save": bool(period and self._note_editable(request, period)),
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
