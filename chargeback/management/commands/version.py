"""openchargeback version (and `openchargeback --version`): this package's version."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand

from chargeback import package_version


class Command(BaseCommand):
    help = "Print the version of OpenChargeback."
    requires_system_checks: list[str] = []

    def handle(self, *args: Any, **options: Any) -> None:
        self.stdout.write(f"openchargeback version {package_version()}")
