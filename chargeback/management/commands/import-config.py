"""openchargeback import-config config.yaml: settings of the original OpenChargeback, moved over."""

from __future__ import annotations

from typing import Any

from django.core.management.base import CommandParser

from chargeback.commands import ReportingCommand
from chargeback.operations.legacy_config import config_import
from chargeback.operations.legacy_values import env_line

LABELS = {
    "applied": "Applied",
    "unchanged": "Already so",
    "environment": "Environment settings (put these in the env file)",
    "from_file": "Read from the file itself: give it with -c config.yaml",
    "not_supported": "Not supported (nothing stored)",
    "not_needed": "Not needed here",
    "unknown": "Unknown keys (ignored)",
}


class Command(ReportingCommand):
    help = (
        "Read the config.yaml of the original OpenChargeback: tag mapping, flag and fund/org patterns, "
        "known sources (fund/org, account), currency; print the environment settings it implies. "
        "One transaction: a value that cannot be used refuses the whole file."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("path", metavar="CONFIG_YAML", help="the original's config.yaml")
        parser.add_argument("--dry-run", action="store_true", help="report what would change; write nothing")
        parser.add_argument(
            "--currency", help="ISO 4217 code to use instead of the file's symbol (e.g. CAD for '$')"
        )
        parser.add_argument(
            "--strict", action="store_true", help="refuse the file (exit 1) if it has unknown keys"
        )

    def handle(self, *args: Any, **options: Any) -> None:
        from chargeback.errors import Refused

        if options["strict"]:
            preview = config_import(path=options["path"], dry_run=True, currency=options["currency"])
            if preview.unknown_keys:
                raise Refused(f"unknown keys in {options['path']}: {', '.join(preview.unknown_keys)}")
        outcome = config_import(
            path=options["path"], dry_run=options["dry_run"], currency=options["currency"]
        )
        if self.is_json:
            self.emit(
                {
                    "path": str(outcome.path),
                    "dry_run": outcome.dry_run,
                    "items": [{"key": i.key, "status": i.status, "detail": i.detail} for i in outcome.items],
                    "environment": [
                        {
                            "name": e.name,
                            "value": e.value,
                            "secret": e.value is None,
                            "from": e.source,
                            "note": e.note,
                        }
                        for e in outcome.environment
                    ],
                    "unknown_keys": outcome.unknown_keys,
                }
            )
            return
        self.line(f"{'Dry run: nothing written. ' if outcome.dry_run else ''}{outcome.path}:")
        for status, label in LABELS.items():
            items = outcome.by_status(status)
            if not items:
                continue
            self.line(f"\n{label}:")
            if status == "environment":
                for env in outcome.environment:
                    self.line(
                        f"  {env_line(env.name, env.value)}" + (f"    # {env.note}" if env.note else "")
                    )
                continue
            for item in items:
                self.line(f"  {item.key}: {item.detail}" if item.detail else f"  {item.key}")
        if outcome.by_status("applied") and not outcome.dry_run:
            self.line(
                "\nFlag rules and the fund/org regex apply to new imports; re-evaluate open periods in the "
                "admin to apply them to charges already imported."
            )
