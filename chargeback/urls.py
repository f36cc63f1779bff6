from django.contrib import admin
from django.urls import path

from chargeback.health import healthz

admin.site.site_header = "OpenChargeback"
admin.site.site_title = "OpenChargeback"
admin.site.index_title = "Billing administration"

urlpatterns = [
    path("admin/", admin.site.urls),
    path("healthz", healthz, name="healthz"),  # normally answered by HealthCheckMiddleware
]
