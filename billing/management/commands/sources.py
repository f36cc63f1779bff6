"""openchargeback sources list | add NAME [...] | update NAME [...]"""

from __future__ import annotations

from typing import Any

from django.core.management.base import CommandParser

from billing import selectors, services
from billing.models import Source
from chargeback.commands import ReportingCommand, UsageError

FIELDS = {
    "display_name": "display_name",
    "pattern": "filename_pattern",
    "fund_org": "fund_org",
    "account": "account",
}


def _source_options(parser: CommandParser) -> None:
    parser.add_argument("--display-name", help="name shown to people (default: from NAME)")
    parser.add_argument("--pattern", help="file name glob for auto-detection, e.g. 'aws_*' (default: NAME_*)")
    parser.add_argument("--fund-org", help="fund/org credited in the journal for this source's costs")
    parser.add_argument("--account", help="GL account credited in the journal")


class Command(ReportingCommand):
    help = "Sources of costs (aws, azure, hpc, ...): list, add, update."

    def add_arguments(self, parser: CommandParser) -> None:
        actions = self.add_subcommands(parser)
        actions.add_parser("list", help="every source")
        add = actions.add_parser("add", help="add a source")
        add.add_argument("name", metavar="NAME", help="slug: lower-case letters, digits, '-', '_'")
        _source_options(add)
        update = actions.add_parser("update", help="change a source's names, pattern or credit account")
        update.add_argument("name", metavar="NAME")
        _source_options(update)

    def handle(self, *args: Any, **options: Any) -> None:
        action = options["action"]
        if action == "list":
            self._list()
            return
        values = {field: options[opt] for opt, field in FIELDS.items()}
        if action == "add":
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
