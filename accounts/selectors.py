"""Reads of the accounts app: users and roles, preferences, links into the portal.

The portal's own queries (and its object-level authorisation) are in accounts.portal.selectors.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urljoin

from django.conf import settings
from django.contrib.auth import get_user_model
from django.urls import reverse
from django.utils.encoding import force_bytes
from django.utils.http import urlsafe_base64_encode

from .models import UserPreference
from .tokens import account_link_tokens


def preference_period_get(user: Any) -> str:
    """The period the user last chose on the dashboard, or ""."""
    if not getattr(user, "is_authenticated", False):
        return ""
    return UserPreference.objects.filter(user=user).values_list("period", flat=True).first() or ""


# --- users ----------------------------------------------------------------------------------


def user_for_email(email: str) -> Any | None:
    """The user named by this email address (user name first, then a unique email match)."""
    email = (email or "").strip()
    if not email:
        return None
    User = get_user_model()
    user = User.objects.filter(username__iexact=email).first()
    if user is not None:
        return user
    matches = list(User.objects.filter(email__iexact=email)[:2])
    return matches[0] if len(matches) == 1 else None


# --- links ----------------------------------------------------------------------------------


def absolute_url(path: str) -> str:
    """The address people use for `path` (OPENCHARGEBACK_BASE_URL + path), for emails and the CLI."""
    return urljoin(settings.OPENCHARGEBACK_BASE_URL.rstrip("/") + "/", path.lstrip("/"))


def set_password_url(user: Any) -> str:
    """The set-your-password link of an invitation (accounts.tokens: void once used, expired or
    the account disabled)."""
    uid = urlsafe_base64_encode(force_bytes(user.pk))
    token = account_link_tokens.make_token(user)
    return absolute_url(reverse("portal:set_password", kwargs={"uidb64": uid, "token": token}))


def portal_link(*, period: str | None = None) -> str:
    """The portal's address for statement emails: the period's page, or the portal's home."""
    if period:
        return absolute_url(reverse("portal:period", kwargs={"period": period}))
    return absolute_url(reverse("portal:home"))
