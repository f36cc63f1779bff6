"""openchargeback restore PATH: an archive of `backup` onto an empty installation."""

from __future__ import annotations

from typing import Any

from django.core.management.base import CommandParser

from chargeback.commands import ReportingCommand
from chargeback.operations import backup, restore

from .backup import manifest_summary, manifest_text


class Command(ReportingCommand):
    help = (
        "Restore a backup made by `openchargeback backup` onto an installation without data. The "
        "signature and every checksum are verified before anything changes; then pending migrations "
        "are applied."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("path", metavar="PATH", help="the .tar.gz written by `openchargeback backup`")
        parser.add_argument(
            "--check",
            action="store_true",
            help="only verify the archive (checksums, figures); change nothing",
        )
        parser.add_argument(
            "--force", action="store_true", help="replace an installation that already holds data"
        )
        parser.add_argument(
            "--unsigned",
            action="store_true",
            help="do not check the archive's signature (an unsigned backup, or a lost key): only for "
            "archives you trust",
        )
        parser.add_argument(
            "--no-migrate",
            action="store_true",
            help="do not apply this version's pending migrations afterwards",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        if options["check"]:
            manifest = backup.backup_verify(path=options["path"], unsigned=options["unsigned"])
            if self.is_json:
                self.emit(
                    {
                        "path": options["path"],
                        "verified": True,
                        "signature": manifest["signature"],
                        **manifest_summary(self, manifest),
                    }
                )
            else:
                self.line(
                    f"{options['path']}: complete, every checksum matches, signature {manifest['signature']}"
                )
                manifest_text(self, manifest)
            return
        outcome = restore.backup_restore(
            path=options["path"],
            force=options["force"],
            migrate=not options["no_migrate"],
            unsigned=options["unsigned"],
        )
        if self.is_json:
            self.emit(
                {
                    "path": str(outcome.path),
                    "restored": True,
                    "signature": outcome.manifest["signature"],
                    "migrated": outcome.migrated,
                    "previous_media": str(outcome.previous_media) if outcome.previous_media else None,
                    **manifest_summary(self, outcome.manifest),
                }
            )
            return
        self.line(
            f"Restored {outcome.path} (signature {outcome.manifest['signature']}); "
            "database figures match the backup's manifest"
        )
        manifest_text(self, outcome.manifest)
        if outcome.previous_media:
            self.line(f"  media that were here before: moved to {outcome.previous_media}")
        if outcome.migrated:
            self.line(
                f"  applied {len(outcome.migrated)} migration(s) of this version: {', '.join(outcome.migrated)}"
            )
