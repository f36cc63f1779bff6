"""openchargeback beat: Celery's scheduler of periodic tasks (one per site)."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from .worker import beat_schedule_file, require_broker, run_celery


def beat_argv(*, loglevel: str) -> list[str]:
    return ["beat", f"--loglevel={loglevel}", f"--schedule={beat_schedule_file()}"]


class Command(BaseCommand):
    help = "Run the scheduler of periodic tasks (e.g. the monthly reminder of open periods)."
    requires_system_checks: list[str] = []

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--loglevel", default="INFO", help="Celery log level (default INFO)")

    def handle(self, *args: Any, **options: Any) -> None:
        require_broker()
        run_celery(beat_argv(loglevel=options["loglevel"]))
