"""Reads of the accounts app."""

from __future__ import annotations

from typing import Any

from .models import UserPreference


def preference_period_get(user: Any) -> str:
    """The period the user last chose on the dashboard, or ""."""
    if not getattr(user, "is_authenticated", False):
        return ""
    return UserPreference.objects.filter(user=user).values_list("period", flat=True).first() or ""
