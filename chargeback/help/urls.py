"""Mounted under /admin/ ahead of the admin site's own URLs; every view requires a staff sign-in."""

from __future__ import annotations

from django.contrib import admin
from django.urls import path

from . import views

urlpatterns = [
    path("help/", admin.site.admin_view(views.help_index), name="ocb_help"),
    path("help/<slug:slug>/", admin.site.admin_view(views.help_topic), name="ocb_help_topic"),
    path("system/", admin.site.admin_view(views.system_page), name="ocb_system"),
]
