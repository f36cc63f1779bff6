"""Flag rules: edit, test against a period, re-evaluate."""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django.urls import URLPattern, path, reverse
from django.utils.html import format_html
from django.utils.safestring import SafeString

from .. import services, views
from ..forms import FlagRuleForm
from ..models import Charge, FlagRule
from .base import ConfigManagedMixin, ServiceRefusalMixin


@admin.register(FlagRule)
class FlagRuleAdmin(ServiceRefusalMixin, ConfigManagedMixin, admin.ModelAdmin):
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
        self, request: HttpRequest, object_id: str | None = None, *args: Any, **kwargs: Any
    ) -> HttpResponse:
        # "Try it" posts the form for a preview (nothing saved); a save refused despite the form's
        # checks (a race with another editor) becomes a message (ServiceRefusalMixin).
        if request.method == "POST" and "_test" in request.POST:
            return views.flag_rule_test(request, self, object_id)
        return super().changeform_view(request, object_id, *args, **kwargs)

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
        services.flag_rules_set_active(rule_ids=queryset.values_list("pk", flat=True), active=active)
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
