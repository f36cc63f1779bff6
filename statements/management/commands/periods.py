"""openchargeback periods list | show P | open P | close P | reopen P --reason R | finalize P

`open`, `close` and `finalize` take `--notes/-n TEXT` (the original's spelling; `--note` too).
Opening an open period or closing a closed one succeeds and says so, for cron jobs run twice."""

from __future__ import annotations

from typing import Any

from django.core.management.base import CommandParser

from billing import selectors, services
from billing.models import BillingPeriod
from chargeback.commands import ReportingCommand
from statements import selectors as statement_selectors

from ._period_output import period_summary_json, period_summary_text


class Command(ReportingCommand):
    help = "Billing periods (YYYY-MM): list, show totals, and move them open → closed → finalized."

    def add_arguments(self, parser: CommandParser) -> None:
        actions = self.add_subcommands(parser)
        actions.add_parser("list", help="every period with status, charges, billed and flagged")
        show = actions.add_parser("show", help="totals, counts and billed per PI × project of a period")
        show.add_argument("period", metavar="PERIOD")
        opened = actions.add_parser("open", help="create an open period (an open one: nothing to do)")
        opened.add_argument("period", metavar="PERIOD")
        _note_option(opened)
        close = actions.add_parser(
            "close", help="close an open period: no more imports (a closed one: nothing to do)"
        )
        close.add_argument("period", metavar="PERIOD")
        _note_option(close)
        reopen = actions.add_parser("reopen", help="reopen a closed period (a reason is required)")
        reopen.add_argument("period", metavar="PERIOD")
        reopen.add_argument("--reason", required=True, help="why the period is reopened")
        finalize = actions.add_parser(
            "finalize", help="make a closed period immutable (no flagged charges may remain)"
        )
        finalize.add_argument("period", metavar="PERIOD")
        _note_option(finalize)

    def handle(self, *args: Any, **options: Any) -> None:
        action = options["action"]
        if action == "list":
            self._list()
        elif action == "show":
            self._show(options["period"])
        else:
            self._transition(action, options)

    def _list(self) -> None:
        rows = selectors.periods_overview()
        if self.is_json:
            self.emit(
                {
                    "periods": [
                        {
                            "period": row.period.period,
                            "status": row.period.status,
                            "charges": row.charges,
                            "flagged": row.flagged,
                            "flagged_billed": self.money(row.flagged_billed),
                            "list": self.money(row.list_total),
                            "billed": self.money(row.billed_total),
                            "discount": self.money(row.discount),
                        }
                        for row in rows
                    ]
                }
            )
            return
        if not rows:
            self.line("No periods yet; `openchargeback ingest` creates them, or `periods open YYYY-MM`.")
            return
        self.table(
            ["PERIOD", "STATUS", "CHARGES", "LIST", "BILLED", "FLAGGED"],
            [
                [
                    row.period.period,
                    row.period.status,
                    f"{row.charges:,}",
                    self.fmt(row.list_total),
                    self.fmt(row.billed_total),
                    f"{row.flagged:,}",
                ]
                for row in rows
            ],
            right=[2, 3, 4, 5],
        )

    def _show(self, period: str) -> None:
        summary = selectors.period_summary(selectors.period_get(period))
        # What PIs are billed, under the cent rule: it can differ by cents from the exact sums above.
        statements = statement_selectors.statement_totals(
            statement_selectors.current_statements(summary.period)
        )
        if self.is_json:
            self.emit(period_summary_json(self, summary, statements))
        else:
            period_summary_text(self, summary, statements)

    def _transition(self, action: str, options: dict[str, Any]) -> None:
        period = options["period"]
        before = selectors.period_status(period)
        obj: BillingPeriod
        if action == "open":
            obj = services.period_open(period=period, note=options["note"])
        elif action == "close":
            obj = services.period_close(period=period, note=options["note"])
        elif action == "reopen":
            obj = services.period_reopen(period=period, reason=options["reason"])
        else:
            obj = services.period_finalize(period=period, note=options["note"])
        unchanged = before == obj.status
        if self.is_json:
            self.emit(
                {"period": obj.period, "action": action, "status": obj.status, "changed": not unchanged}
            )
        else:
            self.line(f"Period {obj.period} is {'already ' if unchanged else ''}{obj.status}.")


def _note_option(parser: Any) -> None:
    parser.add_argument(
        "-n", "--notes", "--note", dest="note", default="", help="a note kept with the change"
    )
