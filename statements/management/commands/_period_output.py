"""A period's totals with its statements, for `periods show` and `demo` (not a command itself)."""

from __future__ import annotations

from typing import Any

from billing.management.commands._output import plural, project_table, project_totals_json
from billing.selectors import PeriodSummary
from chargeback.commands import ReportingCommand
from statements.selectors import StatementTotals


def period_summary_json(
    cmd: ReportingCommand, summary: PeriodSummary, statements: StatementTotals
) -> dict[str, Any]:
    period = summary.period
    return {
        "period": period.period,
        "status": period.status,
        "charges": summary.charges,
        "pis": summary.pis,
        "projects": summary.projects,
        "flagged": summary.flagged,
        "flagged_billed": cmd.money(summary.flagged_billed),
        "rejected": summary.rejected,
        "list": cmd.money(summary.list_total),
        "billed": cmd.money(summary.billed_total),
        "discount": cmd.money(summary.discount),
        "billable": cmd.money(summary.billable_total),
        "by_source": {slug: cmd.money(billed) for slug, billed in summary.by_source.items()},
        "by_pi_project": [project_totals_json(cmd, row) for row in summary.by_project],
        "statements": {
            "count": statements.statements,
            "pis": statements.pis,
            "list": cmd.money(statements.list_total),
            "discount": cmd.money(statements.discount_total),
            "due": cmd.money(statements.billed_total),
            "unsent": statements.unsent,
        },
    }


def period_summary_text(cmd: ReportingCommand, summary: PeriodSummary, statements: StatementTotals) -> None:
    period = summary.period
    cmd.line(f"Period {period.period} ({period.status})")
    cmd.line(
        f"  {plural(summary.charges, 'charge')} · {plural(summary.pis, 'PI')} · "
        f"{plural(summary.projects, 'project')} · {summary.flagged:,} flagged "
        f"({cmd.fmt(summary.flagged_billed)}) · {summary.rejected:,} rejected"
    )
    cmd.line(
        f"  list {cmd.fmt(summary.list_total)} · discount {cmd.fmt(summary.discount)} · "
        f"billed {cmd.fmt(summary.billed_total)} · billable (ok + approved) {cmd.fmt(summary.billable_total)}"
    )
    if statements.statements:
        cmd.line(
            f"  statements: {statements.statements:,} current · due {cmd.fmt(statements.billed_total)} "
            f"(each line rounded to the cent) · {statements.unsent:,} unsent"
        )
    else:
        cmd.line(f"  statements: none yet (openchargeback generate -p {period.period})")
    if summary.by_source:
        cmd.line()
        cmd.table(
            ["SOURCE", "BILLED"],
            [[slug, cmd.fmt(billed)] for slug, billed in summary.by_source.items()],
            right=[1],
        )
    if summary.by_project:
        cmd.line()
        project_table(cmd, summary.by_project, with_pi=True)
