"""Writes of the accounts app."""

from __future__ import annotations

from typing import Any

from django.db import transaction

from billing import selectors as billing_selectors

from . import roles
from .models import UserPreference


@transaction.atomic
def preference_period_set(*, user: Any, period: str) -> UserPreference:
    """Remember the period a user chose on the dashboard (it must exist)."""
    period_obj = billing_selectors.period_get(period)
    preference, _ = UserPreference.objects.update_or_create(user=user, defaults={"period": period_obj.period})
    return preference


@transaction.atomic
def roles_ensure() -> dict[str, Any]:
    """Create or update the role groups with their permissions; returns the groups by name."""
    from django.contrib.auth.models import Group, Permission

    groups = {}
    for name, codes in roles.ROLE_PERMISSIONS.items():
        group, _ = Group.objects.get_or_create(name=name)
        permissions = []
        for code in codes:
            app_label, codename = code.split(".", 1)
            permissions.append(Permission.objects.get(content_type__app_label=app_label, codename=codename))
        group.permissions.set(permissions)
        groups[name] = group
    return groups
