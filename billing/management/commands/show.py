"""openchargeback show PI_EMAIL -p PERIOD"""

from __future__ import annotations

from typing import Any

from django.core.management.base import CommandParser

from billing import selectors
from chargeback.commands import ReportingCommand

from ._output import project_table, project_totals_json, totals_of


class Command(ReportingCommand):
    help = "What one PI was charged in a period, per project: charges, list, billed, flagged."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("pi_email", metavar="PI_EMAIL")
        parser.add_argument("-p", "--period", required=True, help="billing period YYYY-MM")

    def handle(self, *args: Any, **options: Any) -> None:
        period = selectors.period_get(options["period"])
        rows = selectors.pi_period_projects(options["pi_email"], period)
        email = options["pi_email"].strip().lower()
        total = totals_of(rows)
        if self.is_json:
            totals = project_totals_json(self, total)
            for key in ("pi_email", "project_id", "fund_org"):
                totals.pop(key)
            self.emit(
                {
                    "pi_email": email,
                    "period": period.period,
                    "status": period.status,
                    "projects": [project_totals_json(self, row) for row in rows],
                    "totals": totals,
                }
            )
            return
        self.line(f"{email} · period {period.period} ({period.status})")
        if not rows:
            self.line("No charges in this period.")
            return
        self.line()
        project_table(self, rows, with_pi=False)
        self.line()
        self.line(
            f"Total: {total.charges:,} charges · list {self.fmt(total.list_total)} · "
            f"discount {self.fmt(total.discount)} · billed {self.fmt(total.billed_total)} · "
            f"{total.flagged_count:,} flagged ({self.fmt(total.flagged_billed)})"
        )
