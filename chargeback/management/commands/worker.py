"""openchargeback worker: a Celery worker for this installation (needs CELERY_BROKER_URL)."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import connections

from chargeback.secret_key import refuse_without_secret_key


def beat_schedule_file() -> str:
    return str(settings.DATA_DIR / "celerybeat-schedule")


def worker_argv(*, concurrency: int, queues: str, loglevel: str, beat: bool, hostname: str) -> list[str]:
    argv = ["worker", f"--concurrency={concurrency}", f"--loglevel={loglevel}", "--without-gossip"]
    if queues:
        argv.append(f"--queues={queues}")
    if hostname:
        argv.append(f"--hostname={hostname}")
    if beat:
        argv += ["--beat", f"--schedule={beat_schedule_file()}"]
    return argv


def require_broker() -> None:
    """A worker (or the scheduler) needs a broker, and a real SECRET_KEY: it sends the emails
    whose links are signed with it."""
    if not settings.CELERY_BROKER_URL:
        raise CommandError(
            "CELERY_BROKER_URL is not set: tasks run in-process and no worker is needed. "
            "Set it (e.g. redis://127.0.0.1:6379/0) to run tasks on workers."
        )
    refuse_without_secret_key()


def run_celery(argv: list[str]) -> None:  # pragma: no cover - runs the worker
    from chargeback.celery import app

    connections.close_all()
    app.start(argv=argv)


class Command(BaseCommand):
    help = "Run a Celery worker (PDF rendering, emails, queued imports). --beat also runs the periodic tasks."
    requires_system_checks: list[str] = []

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--concurrency", type=int, default=2, help="worker processes (default 2)")
        parser.add_argument("--queues", default="", help="comma-separated queues (default: all)")
        parser.add_argument("--loglevel", default="INFO", help="Celery log level (default INFO)")
        parser.add_argument("--hostname", default="", help="node name, e.g. worker1@%%h")
        parser.add_argument(
            "--beat", action="store_true", help="also run the scheduler (only one per site; or run `beat`)"
        )

    def handle(self, *args: Any, **options: Any) -> None:
        require_broker()
        run_celery(
            worker_argv(
                concurrency=options["concurrency"],
                queues=options["queues"],
                loglevel=options["loglevel"],
                beat=options["beat"],
                hostname=options["hostname"],
            )
        )
