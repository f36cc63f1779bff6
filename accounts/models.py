"""Models of the accounts app."""

from __future__ import annotations

from django.conf import settings
from django.db import models


class UserPreference(models.Model):
    """Per-user choices of the admin, such as the period its dashboard shows."""

    user = models.OneToOneField(
        settings.AUTH_USER_MODEL, primary_key=True, on_delete=models.CASCADE, related_name="preference"
    )
    period = models.CharField(
        max_length=7, blank=True, default="", help_text="YYYY-MM chosen on the dashboard."
    )
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return f"preferences of {self.user}"
