"""openchargeback serve: the web application under gunicorn (or Django's runserver with --dev)."""

from __future__ import annotations

import os
from typing import Any

from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import connections

from chargeback.secret_key import refuse_without_secret_key


def default_workers() -> int:
    """WEB_CONCURRENCY if set (gunicorn's convention), else 2 per core, at most 8."""
    value = os.environ.get("WEB_CONCURRENCY", "")
    if value.isdigit() and int(value) > 0:
        return int(value)
    return max(2, min(8, 2 * (os.cpu_count() or 1)))


def gunicorn_options(*, bind: list[str], workers: int, threads: int, timeout: int) -> dict[str, Any]:
    """Settings of the embedded gunicorn; its logs go through LOGGING (LOG_FORMAT)."""
    return {
        "bind": bind,
        "workers": workers,
        "threads": threads,
        "timeout": timeout,
        "graceful_timeout": 30,
        # Large FOCUS uploads: let a worker take its time reading the request.
        "limit_request_line": 8190,
        "accesslog": "-",
        "errorlog": "-",
        "access_log_format": '%(h)s "%(r)s" %(s)s %(b)s %(M)sms "%(a)s"',
        "logconfig_dict": settings.LOGGING,
        "forwarded_allow_ips": os.environ.get("FORWARDED_ALLOW_IPS", "127.0.0.1,::1"),
        "proc_name": "openchargeback",
        "control_socket_disable": True,  # gunicorn >= 25.1: no socket under $HOME
        "worker_tmp_dir": "/dev/shm" if os.path.isdir("/dev/shm") else None,  # noqa: S108
    }


def run_gunicorn(options: dict[str, Any]) -> None:  # pragma: no cover - runs the server
    from gunicorn.app.base import BaseApplication

    from chargeback.wsgi import application

    class Application(BaseApplication):
        def load_config(self) -> None:
            for key, value in options.items():
                if value is not None and key in self.cfg.settings:  # older gunicorns lack some settings
                    self.cfg.set(key, value)

        def load(self) -> Any:
            return application

    Application().run()


class Command(BaseCommand):
    help = (
        "Serve the web application with gunicorn (production). --dev runs Django's development "
        "server instead (auto-reload, static files from the apps). --host/-h and --port/-p are the "
        "original's options; their defaults come from web.host and web.port of config.yaml."
    )
    requires_system_checks: list[str] = []

    def create_parser(self, prog_name: str, subcommand: str, **kwargs: Any) -> CommandParser:
        # -h is --host here, as in the original: help is --help only.
        parser = super().create_parser(prog_name, subcommand, add_help=False, **kwargs)
        parser.add_argument("--help", action="help", help="show this help message and exit")
        return parser

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "-h", "--host", help=f"address to listen on (default {settings.OPENCHARGEBACK_WEB_HOST})"
        )
        parser.add_argument(
            "-p", "--port", type=int, help=f"port to listen on (default {settings.OPENCHARGEBACK_WEB_PORT})"
        )
        parser.add_argument(
            "--reload", action="store_true", help="restart when the code changes (development)"
        )
        parser.add_argument(
            "--bind",
            action="append",
            help="address:port or unix:PATH to listen on (repeatable; instead of --host/--port)",
        )
        parser.add_argument(
            "--workers",
            type=int,
            default=None,
            help="worker processes (default: WEB_CONCURRENCY or 2 per core)",
        )
        parser.add_argument("--threads", type=int, default=2, help="threads per worker (default 2)")
        parser.add_argument(
            "--timeout", type=int, default=120, help="seconds before a silent worker is restarted"
        )
        parser.add_argument("--migrate", action="store_true", help="apply pending migrations before serving")
        parser.add_argument(
            "--collectstatic", action="store_true", help="collect static files before serving"
        )
        parser.add_argument(
            "--dev", action="store_true", help="Django's development server (never in production)"
        )

    def handle(self, *args: Any, **options: Any) -> None:
        if not settings.OPENCHARGEBACK_WEB_ENABLED:
            raise CommandError("the web interface is switched off (web.enabled: false in config.yaml)")
        host = options["host"] or settings.OPENCHARGEBACK_WEB_HOST
        port = options["port"] or settings.OPENCHARGEBACK_WEB_PORT
        binds = options["bind"] or [f"{host}:{port}"]
        if not options["dev"]:
            refuse_without_secret_key()
        if options["migrate"]:
            call_command("migrate", interactive=False, verbosity=1)
        if options["collectstatic"]:
            call_command("collectstatic", interactive=False, verbosity=0)
        if options["dev"]:
            call_command("runserver", binds[0])
            return
        call_command("check", deploy=False)
        connections.close_all()  # no connection may cross the fork into the workers
        if not options["bind"]:
            self.stdout.write(f"OpenChargeback at http://{host}:{port}/admin/ (the PI portal at /portal/)")
        config = gunicorn_options(
            bind=binds,
            workers=options["workers"] or default_workers(),
            threads=options["threads"],
            timeout=options["timeout"],
        )
        if options["reload"]:
            config["reload"] = True
        run_gunicorn(config)
