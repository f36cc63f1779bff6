from django.contrib import admin
from django.urls import path

admin.site.site_header = "OpenChargeback"
admin.site.site_title = "OpenChargeback"
admin.site.index_title = "Billing administration"

urlpatterns = [
    path("admin/", admin.site.urls),
]
