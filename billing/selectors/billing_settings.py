"""The installation's billing settings (a singleton) and what config.yaml manages."""

from __future__ import annotations

from collections.abc import Iterable

from ..models import BillingSettings


def billing_settings_get() -> BillingSettings:
    """The singleton; created with defaults on first use."""
    settings, _ = BillingSettings.objects.get_or_create(pk=1)
    return settings


def currency_code() -> str:
    """The installation's currency (ISO 4217), for formatting money on pages and in messages."""
    return billing_settings_get().currency_code


def config_managed_notice(keys: Iterable[str]) -> str:
    """What to tell people on an admin page whose settings a config.yaml manages (read with -c):
    which of `keys` it sets, and that an edit lasts until the file changes. Empty when none."""
    settings = billing_settings_get()
    managed = [key for key in keys if key in (settings.config_managed or [])]
    if not settings.config_path or not managed:
        return ""
    when = settings.config_applied_at.strftime("%Y-%m-%d %H:%M") if settings.config_applied_at else ""
    return (
        f"Managed by {settings.config_path} (applied {when} UTC): {', '.join(managed)}. An edit here lasts "
        "until the file changes; then the file's values are applied again. Change them in the file."
    )
