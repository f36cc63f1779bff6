from __future__ import annotations

from typing import Any

from django.apps import AppConfig
from django.db.models.signals import post_migrate


class AccountsConfig(AppConfig):
    name = "accounts"

    def ready(self) -> None:
        from auditlog.registry import auditlog

        from . import models, signals

        auditlog.register(models.Delegation)
        auditlog.register(models.Invitation)
        signals.connect()
        # After every migrate (and the flush of transactional tests) the role groups match
        # accounts.roles again; runs once, after the last app has its permissions.
        post_migrate.connect(_roles_after_migrate, sender=self, dispatch_uid="accounts.roles_after_migrate")


def _roles_after_migrate(sender: Any, using: str = "default", **kwargs: Any) -> None:
    from .services import roles_ensure

    roles_ensure(using=using, strict=False, create_permissions=True)
