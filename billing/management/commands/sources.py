"""openchargeback sources list | add NAME [-d NAME] [-t file] [...] | update NAME [...] | sync-status"""

from __future__ import annotations

from typing import Any

from django.core.management.base import CommandParser
from django.utils import timezone

from billing import selectors, services
from billing.models import Source
from chargeback.commands import ReportingCommand, UsageError
from chargeback.errors import Refused

FIELDS = {
    "display_name": "display_name",
    "pattern": "filename_pattern",
    "fund_org": "fund_org",
    "account": "account",
}


def _source_options(parser: CommandParser) -> None:
    parser.add_argument("-d", "--display-name", help="name shown to people (default: from NAME)")
    parser.add_argument("--pattern", help="file name glob for auto-detection, e.g. 'aws_*' (default: NAME_*)")
    parser.add_argument("--fund-org", help="fund/org credited in the journal for this source's costs")
    parser.add_argument("--account", help="GL account credited in the journal")


class Command(ReportingCommand):
    help = "Sources of costs (aws, azure, hpc, ...): list, add, update."

    def add_arguments(self, parser: CommandParser) -> None:
        actions = self.add_subcommands(parser)
        actions.add_parser("list", help="every source")
        add = actions.add_parser("add", help="add a source")
        add.add_argument("name", metavar="NAME", help="slug: letters, digits, '-', '_' (case-insensitive)")
        _source_options(add)
        add.add_argument(
            "-t",
            "--type",
            default="file",
            help="file (the default and only kind: costs arrive as FOCUS files)",
        )
        update = actions.add_parser("update", help="change a source's names, pattern or credit account")
        update.add_argument("name", metavar="NAME")
        _source_options(update)
        actions.add_parser("sync-status", help="each source's last import: when, period, rows, billed")

    def handle(self, *args: Any, **options: Any) -> None:
        action = options["action"]
        if action == "list":
            self._list()
            return
        if action == "sync-status":
            self._sync_status()
            return
        values = {field: options[opt] for opt, field in FIELDS.items()}
        if action == "add":
            if options["type"].strip().lower() != "file":
                raise Refused(
                    f"source type {options['type']!r} is not supported: costs arrive as FOCUS files "
                    "(ingest, the admin's upload), so every source is of type file"
                )
            source = services.source_create(slug=options["name"], **{k: v or "" for k, v in values.items()})
            verb = "Added"
        else:
            changes = {k: v for k, v in values.items() if v is not None}
            if not changes:
                raise UsageError("nothing to change: give --display-name, --pattern, --fund-org or --account")
            source = services.source_update(slug=options["name"], **changes)
            verb = "Updated"
        if self.is_json:
            self.emit({"action": action, "source": self._json(source)})
        else:
            self.line(f"{verb} source {source.slug}:")
            self._describe(source)

    def _list(self) -> None:
        sources = list(selectors.sources_all())
        if self.is_json:
            self.emit({"sources": [self._json(s) for s in sources]})
            return
        if not sources:
            self.line("No sources yet; add one with `openchargeback sources add NAME`.")
            return
        self.table(
            ["SOURCE", "DISPLAY NAME", "PATTERN", "CREDIT FUND/ORG", "ACCOUNT", "ACTIVE"],
            [
                [
                    s.slug,
                    s.display_name,
                    s.filename_pattern,
                    s.fund_org,
                    s.account,
                    "yes" if s.is_active else "no",
                ]
                for s in sources
            ],
        )

    def _sync_status(self) -> None:
        rows = selectors.sources_last_import()
        if self.is_json:
            self.emit(
                {
                    "sources": [
                        {
                            "source": row.source.slug,
                            "display_name": row.source.display_name,
                            "last_import": None
                            if row.last is None
                            else {
                                "import_id": row.last.pk,
                                "file": row.last.original_name,
                                "status": row.last.status,
                                "period": row.last.period.period if row.last.period else None,
                                "at": row.last.finished_at or row.last.created_at,
                                "rows": row.last.rows_read,
                                "billed": self.money(row.last.billed_total),
                                "error": row.last.error_message or None,
                            },
                        }
                        for row in rows
                    ]
                }
            )
            return
        if not rows:
            self.line("No sources yet; `openchargeback ingest FILE -s NAME` creates one.")
            return
        self.table(
            ["SOURCE", "LAST IMPORT", "AT", "STATUS", "PERIOD", "ROWS", "BILLED"],
            [
                [row.source.slug, "never", "", "", "", "", ""]
                if row.last is None
                else [
                    row.source.slug,
                    f"#{row.last.pk} {row.last.original_name}",
                    timezone.localtime(row.last.finished_at or row.last.created_at).strftime(
                        "%Y-%m-%d %H:%M"
                    ),
                    row.last.status,
                    row.last.period.period if row.last.period else "-",
                    f"{row.last.rows_read:,}",
                    self.fmt(row.last.billed_total),
                ]
                for row in rows
            ],
            right=[5, 6],
        )

    @staticmethod
    def _json(source: Source) -> dict[str, Any]:
        return {
            "slug": source.slug,
            "display_name": source.display_name,
            "filename_pattern": source.filename_pattern,
            "fund_org": source.fund_org,
            "account": source.account,
            "is_active": source.is_active,
        }

    def _describe(self, source: Source) -> None:
        self.line(f"  display name     {source.display_name}")
        self.line(f"  file pattern     {source.filename_pattern}")
        self.line(f"  credit fund/org  {source.fund_org or '-'}")
        self.line(f"  credit account   {source.account or '-'}")
