"""openchargeback accounts map SUB_ACCOUNT_ID --project ID --pi EMAIL [--fund-org F] [--source S] | list"""

from __future__ import annotations

from typing import Any

from django.core.management.base import CommandParser

from billing import selectors, services
from billing.models import AccountMapping
from chargeback.commands import ReportingCommand


class Command(ReportingCommand):
    help = (
        "Map provider sub-accounts (AWS account, Azure subscription, GCP project, Slurm account) to "
        "projects, for costs that carry no tags."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        actions = self.add_subcommands(parser)
        actions.add_parser("list", help="every mapping")
        mapping = actions.add_parser("map", help="map a sub-account to a project (created when new)")
        mapping.add_argument("sub_account_id", metavar="SUB_ACCOUNT_ID")
        mapping.add_argument("--project", required=True, metavar="ID", help="project id")
        mapping.add_argument("--pi", required=True, metavar="EMAIL", help="the project's PI")
        mapping.add_argument("--fund-org", default="", help="fund/org (overrides the project's)")
        mapping.add_argument("--source", default=None, help="only for this source (default: every source)")
        mapping.add_argument("--note", default="")

    def handle(self, *args: Any, **options: Any) -> None:
        if options["action"] == "list":
            self._list()
            return
        mapping = services.account_mapping_set(
            sub_account_id=options["sub_account_id"],
            project_id=options["project"],
            pi_email=options["pi"],
            fund_org=options["fund_org"],
            source=options["source"],
            note=options["note"],
        )
        if self.is_json:
            self.emit({"action": "map", "mapping": self._json(mapping)})
        else:
            self.line(
                f"Mapped {mapping.sub_account_id} ({mapping.source.slug if mapping.source else 'any source'}) "
                f"→ project {mapping.project.project_id} of {mapping.project.pi.email}"
                + (f", fund/org {mapping.fund_org}" if mapping.fund_org else "")
            )

    def _list(self) -> None:
        mappings = list(selectors.account_mappings_all())
        if self.is_json:
            self.emit({"mappings": [self._json(m) for m in mappings]})
            return
        if not mappings:
            self.line("No account mappings yet; add one with `openchargeback accounts map`.")
            return
        self.table(
            ["SUB-ACCOUNT", "SOURCE", "PROJECT", "PI", "FUND/ORG"],
            [
                [
                    m.sub_account_id,
                    m.source.slug if m.source else "(any)",
                    m.project.project_id,
                    m.project.pi.email,
                    m.fund_org or m.project.fund_org or "-",
                ]
                for m in mappings
            ],
        )

    @staticmethod
    def _json(mapping: AccountMapping) -> dict[str, Any]:
        return {
            "sub_account_id": mapping.sub_account_id,
            "source": mapping.source.slug if mapping.source else None,
            "project_id": mapping.project.project_id,
            "pi_email": mapping.project.pi.email,
            "fund_org": mapping.fund_org,
            "project_fund_org": mapping.project.fund_org,
            "note": mapping.note,
        }
