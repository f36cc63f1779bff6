"""openchargeback usage slurm FILE -p P [-s hpc] | storage FILE -p P [-s storage] [--dry-run] [--focus-out PATH]
| rerate -p P --reason R | list [-p P]"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from django.core.management.base import CommandParser

from billing import selectors as billing_selectors
from billing.rating import selectors, services
from billing.rating.pricing import RatedRow
from billing.rating.services import RerateOutcome, UsageOutcome
from billing.rating.slurm import SACCT_COMMAND
from billing.rating.units import format_price, format_quantity, unit_label
from chargeback.commands import ReportingCommand

from ._output import FileResult, file_result_json, file_result_text, plural

TEXT_ROWS = 40


class Command(ReportingCommand):
    help = (
        "Rate on-premises usage into charges: Slurm jobs (sacct output) and storage quotas, priced by the "
        "rates in effect, less free allowances and subsidies, imported like any FOCUS file. "
        f"The sacct command: {SACCT_COMMAND}"
    )

    def add_arguments(self, parser: CommandParser) -> None:
        actions = self.add_subcommands(parser)
        for kind, default_source, what in (
            ("slurm", "hpc", f"sacct output ({SACCT_COMMAND})"),
            ("storage", "storage", "a quota CSV: project, used_bytes|used_gb|used_tb[, class][, date]"),
        ):
            sub = actions.add_parser(kind, help=f"rate {what}")
            sub.add_argument("file", metavar="FILE")
            sub.add_argument("-p", "--period", required=True, metavar="YYYY-MM")
            sub.add_argument(
                "-s", "--source", default=default_source, help=f"source (default: {default_source})"
            )
            sub.add_argument("--dry-run", action="store_true", help="rate and check, write nothing")
            sub.add_argument(
                "--focus-out",
                metavar="PATH",
                help="write the rated FOCUS 1.2 CSV to PATH instead of importing",
            )
            sub.add_argument("--force", action="store_true", help="rate bytes that were rated before")
        rerate = actions.add_parser(
            "rerate", help="rate an open period's usage files again with today's rates and subsidies"
        )
        rerate.add_argument("-p", "--period", required=True, metavar="YYYY-MM")
        rerate.add_argument("--reason", required=True, help="why (kept in the log with who did it)")
        listing = actions.add_parser("list", help="usage files in force, and re-ratings")
        listing.add_argument("-p", "--period", metavar="YYYY-MM")

    def handle(self, *args: Any, **options: Any) -> None:
        action = options["action"]
        if action == "rerate":
            self._rerate(services.usage_rerate(period=options["period"], reason=options["reason"]))
        elif action == "list":
            self._list(options["period"])
        else:
            outcome = services.usage_rate(
                kind=action,
                path=Path(options["file"]),
                period=options["period"],
                source=options["source"],
                dry_run=options["dry_run"],
                focus_out=options["focus_out"],
                force=options["force"],
            )
            self._rated(outcome)

    # --- rating ---------------------------------------------------------------------------------

    def _row_json(self, row: RatedRow) -> dict[str, Any]:
        return {
            "sub_account": row.usage.sub_account,
            "tier": row.usage.tier,
            "resource_id": row.usage.resource_id,
            "service_name": row.usage.service_name,
            "unit": row.unit,
            "quantity": format(row.quantity, "f"),
            "unit_price": format(row.price, "f"),
            "project_id": row.project_code or None,
            "pi_email": row.pi_email or None,
            "list": self.money(row.list_cost),
            "free_quantity": format(row.free_quantity, "f"),
            "free": self.money(row.free_amount),
            "subsidies": [{"name": a.subsidy.name, "amount": self.money(a.amount)} for a in row.subsidies],
            "billed": self.money(row.billed),
        }

    def _rated(self, outcome: UsageOutcome) -> None:
        file_result = (
            FileResult(path=Path(outcome.file_name), outcome=outcome.imported) if outcome.imported else None
        )
        if self.is_json:
            self.emit(
                {
                    "kind": outcome.kind,
                    "file": outcome.file_name,
                    "source": outcome.source,
                    "period": outcome.period,
                    "dry_run": outcome.dry_run,
                    "focus_out": outcome.focus_out or None,
                    "usage_file_id": outcome.usage_file_id,
                    "replaces_usage_file": outcome.replaces_usage_file,
                    "read": outcome.summary,
                    "totals": {
                        "list": self.money(outcome.list_total),
                        "free": self.money(outcome.free_total),
                        "subsidies": {n: self.money(a) for n, a in sorted(outcome.subsidy_totals.items())},
                        "billed": self.money(outcome.billed_total),
                    },
                    "rows": [self._row_json(r) for r in outcome.rows],
                    "import": file_result_json(self, file_result) if file_result else None,
                }
            )
            return
        where = f"{outcome.source} {outcome.period}"
        if outcome.focus_out:
            self.line(
                f"{outcome.file_name} → {outcome.focus_out} (FOCUS 1.2, {plural(len(outcome.rows), 'row')}; nothing imported)"
            )
        self.line(f"{outcome.file_name}: read " + self._summary_text(outcome.summary))
        self._rows_table(outcome.rows)
        parts = [f"list {self.fmt(outcome.list_total)}"]
        if outcome.free_total:
            parts.append(f"free allowances −{self.fmt(outcome.free_total)}")
        parts += [f"{name} −{self.fmt(amount)}" for name, amount in sorted(outcome.subsidy_totals.items())]
        parts.append(f"billed {self.fmt(outcome.billed_total)}")
        self.line("  " + " · ".join(parts) + f" ({where})")
        if file_result is not None:
            file_result_text(self, file_result)
            if outcome.replaces_usage_file and not outcome.dry_run:
                self.line(f"  replaces usage file #{outcome.replaces_usage_file} (same name)")

    @staticmethod
    def _summary_text(summary: dict[str, Any]) -> str:
        parts = []
        for key, value in summary.items():
            if isinstance(value, dict):
                if value:
                    parts.append(
                        key.replace("_", " ") + " " + ", ".join(f"{k} {v:,}" for k, v in value.items())
                    )
            elif value:
                parts.append(f"{key.replace('_', ' ')} {value:,}")
        return " · ".join(parts) or "nothing"

    def _rows_table(self, rows: list[RatedRow]) -> None:
        shown = rows[:TEXT_ROWS]
        self.table(
            ["RESOURCE", "QUANTITY", "UNIT", "PRICE", "LIST", "FREE", "SUBSIDIES", "BILLED", "PROJECT"],
            [
                [
                    r.usage.resource_id,
                    format_quantity(r.quantity),
                    unit_label(r.unit, r.quantity),
                    format_price(r.price, self.currency),
                    self.fmt(r.list_cost),
                    f"−{self.fmt(r.free_amount)}" if r.free_amount else "-",
                    "; ".join(f"{a.subsidy.name} −{self.fmt(a.amount)}" for a in r.subsidies) or "-",
                    self.fmt(r.billed),
                    r.project_code or "(unattributed)",
                ]
                for r in shown
            ],
            right=[1, 3, 4, 5, 7],
        )
        if len(rows) > len(shown):
            self.line(f"  … and {len(rows) - len(shown):,} more rows (--format json lists them all)")

    # --- re-rating and listing ------------------------------------------------------------------

    def _rerate(self, outcome: RerateOutcome) -> None:
        if self.is_json:
            self.emit(
                {
                    "period": outcome.period,
                    "rerate_id": outcome.rerate_id,
                    "reason": outcome.reason,
                    "billed_before": self.money(outcome.billed_before),
                    "billed_after": self.money(outcome.billed_after),
                    "files": outcome.files,
                }
            )
            return
        self.line(
            f"Re-rated {outcome.period} (#{outcome.rerate_id}): {plural(len(outcome.files), 'usage file')}, "
            f"billed {self.fmt(outcome.billed_before)} → {self.fmt(outcome.billed_after)}"
        )
        for item in outcome.files:
            self.line(
                f"  {item['name']} ({item['source']}): import #{item['replaced_import']} → #{item['import']}"
                + (
                    f", {plural(item['decisions_carried'], 'review decision')} carried over"
                    if item["decisions_carried"]
                    else ""
                )
            )

    def _list(self, period: str | None) -> None:
        period_obj = billing_selectors.period_get(period) if period else None
        files = list(selectors.usage_files_current(period_obj))
        rerates = list(selectors.rerates_of(period_obj))
        if self.is_json:
            self.emit(
                {
                    "usage_files": [
                        {
                            "id": f.pk,
                            "kind": f.kind,
                            "name": f.original_name,
                            "source": f.source.slug,
                            "period": f.period.period,
                            "import_id": f.import_run_id,
                            "billed": self.money(f.import_run.billed_total),
                            "rated_at": f.rated_at,
                        }
                        for f in files
                    ],
                    "rerates": [
                        {
                            "id": r.pk,
                            "period": r.period.period,
                            "reason": r.reason,
                            "actor": r.actor_name,
                            "at": r.created_at,
                            "billed_before": self.money(r.billed_before),
                            "billed_after": self.money(r.billed_after),
                        }
                        for r in rerates
                    ],
                }
            )
            return
        if not files:
            self.line("No rated usage yet; rate some with `openchargeback usage slurm FILE -p YYYY-MM`.")
            return
        self.table(
            ["#", "PERIOD", "SOURCE", "KIND", "FILE", "IMPORT", "BILLED", "RATED"],
            [
                [
                    f.pk,
                    f.period.period,
                    f.source.slug,
                    f.kind,
                    f.original_name,
                    f"#{f.import_run_id}",
                    self.fmt(f.import_run.billed_total),
                    f.rated_at.strftime("%Y-%m-%d %H:%M") if f.rated_at else "",
                ]
                for f in files
            ],
            right=[6],
        )
        for r in rerates:
            self.line(
                f"re-rated {r.period.period} on {r.created_at:%Y-%m-%d %H:%M} by {r.actor_name}: {r.reason} "
                f"({self.fmt(r.billed_before)} → {self.fmt(r.billed_after)})"
            )
