from __future__ import annotations

from django.apps import AppConfig


class ChargebackConfig(AppConfig):
    """The project's own app: operational commands (serve, worker, backup, ...) and deploy checks."""

    name = "chargeback"
    verbose_name = "OpenChargeback"

    def ready(self) -> None:
        from django.core.checks import Tags, register

        from .secret_key import check_secret_key

        register(check_secret_key, Tags.security, deploy=True)
