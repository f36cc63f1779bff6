from django.conf import settings
from django.contrib import admin
from django.urls import include, path
from django.views.generic import RedirectView

from chargeback.health import healthz

admin.site.site_header = "OpenChargeback"
admin.site.site_title = "OpenChargeback"
admin.site.index_title = "Billing administration"

urlpatterns = [
    # Spending pages of PIs and projects: admin pages of their own, before the admin's catch-all.
    path("admin/spending/", include("statements.spending_urls")),
    path("admin/", include("chargeback.help.urls")),  # help and system pages, before the admin's own
    path("admin/", admin.site.urls),
    path("healthz", healthz, name="healthz"),  # normally answered by HealthCheckMiddleware
    path("portal/", include("accounts.portal.urls")),  # the PI portal (namespace "portal")
    path("", RedirectView.as_view(pattern_name="portal:home", permanent=False)),
]
if settings.OIDC_ENABLED:  # single sign-on (mozilla-django-oidc): /oidc/authenticate/, /oidc/callback/
    urlpatterns.append(path("oidc/", include("mozilla_django_oidc.urls")))
