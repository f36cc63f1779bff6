"""URLs of the admin's spending pages, included by chargeback/urls.py at /admin/spending/."""

from __future__ import annotations

from .spending_admin import spending_urls

urlpatterns = spending_urls()
