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

from chargeback.admin_hardening import hardened


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
        super().register(model_or_iterable, hardened(admin_class or admin.ModelAdmin), **options)

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
