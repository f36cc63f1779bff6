"""The OpenChargeback admin site: Django's admin with the reviewer's dashboard on its index page.

Installed through `OpenChargebackAdminConfig` (in INSTALLED_APPS instead of
"django.contrib.admin"), so `admin.site` and `@admin.register` everywhere use this site. Every
ModelAdmin registered here, third-party ones too, is hardened against hostile query strings
(chargeback/admin_hardening.py).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.contrib import admin
from django.contrib.admin.apps import AdminConfig
from django.http import HttpRequest
from django.template.response import TemplateResponse
from django.urls import reverse

from chargeback.admin_hardening import hardened
from chargeback.admin_labels import ordered_app_list, with_human_title


class OpenChargebackAdminSite(admin.AdminSite):
    site_header = "OpenChargeback"
    site_title = "OpenChargeback"
    index_title = "Dashboard"
    index_template = "admin/index.html"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Cards that higher layers add to the dashboard: callables(request) -> context, registered
        # by those layers (statements' charge queries), so billing never imports them.
        self.dashboard_extras: list[Callable[[HttpRequest], dict[str, Any]]] = []

    def register(self, model_or_iterable: Any, admin_class: Any = None, **options: Any) -> None:
        admin_class = with_human_title(hardened(admin_class or admin.ModelAdmin))
        super().register(model_or_iterable, admin_class, **options)

    def get_app_list(self, request: HttpRequest, app_label: str | None = None) -> list[dict[str, Any]]:
        """The home page's apps in the order of a finance user's month (chargeback/admin_labels.py)."""
        app_list = super().get_app_list(request, app_label)
        if app_label is not None:
            return app_list
        system_url = (
            reverse("ocb_system") if request.user.has_perm("billing.change_billingsettings") else None
        )
        return ordered_app_list(app_list, system_url)

    def index(self, request: HttpRequest, extra_context: dict[str, Any] | None = None) -> TemplateResponse:
        """The admin index with the dashboard of the chosen period (remembered per user)."""
        from billing import views

        context = views.dashboard_context(request)
        if context.get("ocb_dashboard"):
            for extra in self.dashboard_extras:
                context.update(extra(request))
        context.update(extra_context or {})
        return super().index(request, extra_context=context)


class OpenChargebackAdminConfig(AdminConfig):
    default_site = "billing.admin_site.OpenChargebackAdminSite"
