"""openchargeback backup PATH: the database and the media in one verified archive."""

from __future__ import annotations

from typing import Any

from django.core.management.base import CommandParser

from chargeback.commands import ReportingCommand
from chargeback.money import format_money, money_json
from chargeback.operations import backup


def manifest_summary(cmd: ReportingCommand, manifest: dict[str, Any]) -> dict[str, Any]:
    """The figures of a manifest for JSON output: counts as integers, money as amount + cents."""
    currency = manifest.get("currency") or "USD"
    stats = manifest.get("stats", {})
    periods = {}
    for period, p in stats.get("periods", {}).items():
        periods[period] = {
            "status": p["status"],
            "charges": p["charges"],
            "list": money_json(_dec(p["list_total"]), currency),
            "billed": money_json(_dec(p["billed_total"]), currency),
            "billed_by_state": {k: money_json(_dec(v), currency) for k, v in p["billed_by_state"].items()},
            "billed_by_source": {k: money_json(_dec(v), currency) for k, v in p["billed_by_source"].items()},
        }
    return {
        "created_at": manifest.get("created_at"),
        "app_version": manifest.get("app_version"),
        "database": manifest.get("database", {}).get("vendor"),
        "currency": currency,
        "tables": stats.get("tables", {}),
        "periods": periods,
        "media_files": manifest.get("media", {}).get("files", 0),
        "media_bytes": manifest.get("media", {}).get("bytes", 0),
    }


def manifest_text(cmd: ReportingCommand, manifest: dict[str, Any]) -> None:
    currency = manifest.get("currency") or "USD"
    stats = manifest.get("stats", {})
    rows = sum(stats.get("tables", {}).values())
    cmd.line(
        f"  version {manifest.get('app_version')}, {manifest.get('database', {}).get('vendor')} database, "
        f"made {manifest.get('created_at')}"
    )
    cmd.line(
        f"  {rows:,} rows in {len(stats.get('tables', {}))} tables, {manifest.get('media', {}).get('files', 0):,} media files"
    )
    periods = stats.get("periods", {})
    if periods:
        cmd.table(
            ["PERIOD", "STATUS", "CHARGES", "LIST", "BILLED"],
            [
                [
                    period,
                    p["status"],
                    f"{p['charges']:,}",
                    format_money(_dec(p["list_total"]), currency),
                    format_money(_dec(p["billed_total"]), currency),
                ]
                for period, p in sorted(periods.items())
            ],
            right=(2, 3, 4),
        )


def _dec(text: str) -> Any:
    from decimal import Decimal

    return Decimal(text)


class Command(ReportingCommand):
    help = (
        "Back up the database (a consistent snapshot) and the media folder into one .tar.gz with a "
        "manifest of checksums and totals. PATH is a file, or a directory for a dated file name."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("path", metavar="PATH", help="archive to write, or an existing directory")
        parser.add_argument("--overwrite", action="store_true", help="replace PATH if it exists")

    def handle(self, *args: Any, **options: Any) -> None:
        outcome = backup.backup_create(path=options["path"], overwrite=options["overwrite"])
        key = outcome.key
        if key is not None and key.created:
            # Printed once, on stderr (stdout may be a JSON document or a log): restoring this
            # archive anywhere else needs this key.
            self.stderr.write(
                f"A new backup signing key was written to {key.origin}. Keep a copy of it away from "
                f"this machine: restoring on another installation needs it (OPENCHARGEBACK_BACKUP_KEY).\n"
                f"  key: {key.created}"
            )
        if self.is_json:
            self.emit(
                {
                    "path": str(outcome.path),
                    "size_bytes": outcome.size_bytes,
                    "signed_with": key.key_id if key else None,
                    "new_key_file": key.origin if key and key.created else None,
                    **manifest_summary(self, outcome.manifest),
                }
            )
            return
        self.line(f"Backup written to {outcome.path} ({outcome.size_bytes:,} bytes)")
        if key is not None:
            self.line(f"  signed with backup key {key.key_id} ({key.origin})")
        manifest_text(self, outcome.manifest)
