"""The installation's billing settings (a singleton)."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.urls import reverse

from .. import selectors, services
from ..forms import (
    BillingSettingsForm,
)
from ..models import (
    BillingSettings,
)
from .base import ConfigManagedMixin


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
        (
            "Statement branding",
            {
                "fields": (
                    "logo",
                    "organization_address",
                    "contact_line",
                    "accent_color",
                    "payment_instructions",
                    "statement_footer",
                ),
                "description": "Shown on statement PDFs rendered from now on (new versions and previews); "
                "issued PDFs keep their look. A period's own note is edited on the period page.",
            },
        ),
        (
            "Statement email",
            {
                "fields": ("email_subject_template", "email_text_template", "email_html_template"),
                "classes": ("collapse",),
                "description": "Django templates; empty uses the site's files in DATA_DIR/templates/ or "
                "the built-in ones. Each is tried on a sample email before it is saved. The variables "
                "are listed in the README (Statement emails) and in Help.",
            },
        ),
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
