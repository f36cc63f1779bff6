"""The review log (read-only)."""

from __future__ import annotations

from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest
from django.urls import reverse
from django.utils.html import format_html
from django.utils.safestring import SafeString

from chargeback.admin_hardening import typed_id
from chargeback.admin_helpers import LargeTableAdminMixin, ReadOnlyAdminMixin

from ..models import (
    ReviewLog,
)
from .base import CurrencyAdminMixin, _badge, money_cell
from .charge_filters import PeriodFilter


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
