"""openchargeback export-journal -p YYYY-MM [-f gl|summary|detail|default|standard|NAME] [-o PATH]
[--include-flagged] [--format text|json|NAME]

Without -o the file is written to the journal folder (output.journal_dir of config.yaml,
OPENCHARGEBACK_JOURNAL_DIR) as journal_{period}_{YYYYmmdd_HHMMSS}.csv, as the original does, and
its absolute path is printed. `--format NAME` names the layout too (the original's spelling);
`--format json` still asks for a JSON document.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from django.core.management.base import CommandParser

from billing.selectors import period_get, period_summary, validate_period
from chargeback.commands import FORMATS, ReportingCommand, UsageError
from journals import selectors, services


class Command(ReportingCommand):
    help = (
        "Export the general-ledger journal of a period, built from its current statements: one debit per "
        "PI fund/org and source, one credit per source. Refused, with every reason, when it would be "
        "wrong (statements missing or stale, debits ≠ credits, a fund/org the split regex cannot split, "
        "an invalid account code, or none where the layout writes one, as gl does). The file is kept "
        "(see the admin's journal exports) and written to the journal folder, or to -o PATH."
    )
    format_also_names = "journal layout"

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("-p", "--period", required=True, help="billing period YYYY-MM")
        parser.add_argument(
            "-f",
            "--journal-format",
            dest="journal_format",
            default=None,
            metavar="gl|summary|detail|NAME",
            help="layout: gl (default), summary, detail or the name of a custom journal format; the "
            "original's default and standard are summary (one row per PI × project × service)",
        )
        parser.add_argument(
            "-o",
            "--output",
            metavar="PATH",
            help="write the file here (a directory, a file, or - for stdout) instead of the journal folder",
        )
        parser.add_argument(
            "--include-flagged",
            action="store_true",
            help="accepted for the original's scripts; flagged charges are never journaled (they are held "
            "back from statements): says how much is held back",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        period = validate_period(options["period"])
        layout = options["journal_format"]
        if options["format"] not in FORMATS:
            if layout and layout != options["format"]:
                raise UsageError(f"two layouts given: -f {layout} and --format {options['format']}")
            layout = options["format"]
        output = options.get("output")
        if output == "-" and self.is_json:
            raise UsageError("-o - prints the journal on stdout, which --format json needs for its document")
        export = services.journal_export(period=period, format=layout or "gl")
        written = self._copy(export, output) if output else str(services.journal_export_save(export=export))
        held_back = self._held_back(period) if options["include_flagged"] else None
        if self.is_json:
            document = selectors.export_summary(export)
            document["output"] = written
            if held_back is not None:
                document["held_back"] = held_back
            self.emit({"export": document})
            return
        if output == "-":
            return
        self.line(
            f"Exported the {export.format_name} journal of {export.period.period} as export #{export.pk}: "
            f"{export.row_count:,} row{'' if export.row_count == 1 else 's'}, debits {self.fmt(export.debit_total)}, "
            f"credits {self.fmt(export.credit_total)}, from {export.statement_count:,} statement"
            f"{'' if export.statement_count == 1 else 's'}"
        )
        self.line(f"  kept as   {export.file.name} (the admin's journal exports)")
        self.line(f"Journal exported to: {written}")

    def _held_back(self, period: str) -> dict[str, Any]:
        """--include-flagged: the original journaled flagged charges; here they wait for review."""
        summary = period_summary(period_get(period))
        if summary.flagged:
            self.stderr.write(
                f"warning: --include-flagged: {summary.flagged:,} flagged charge"
                f"{'' if summary.flagged == 1 else 's'} ({self.fmt(summary.flagged_billed)}) are on no statement, "
                f"so not in the journal; approve them (review approve --period {period}) and generate again"
            )
        return {"charges": summary.flagged, "billed": self.money(summary.flagged_billed)}

    def _copy(self, export: Any, output: str) -> str:
        with export.file.open("rb") as source:
            if output == "-":
                self.stdout.write(source.read().decode("utf-8"), ending="")
                return "-"
            target = Path(output).expanduser()
            if target.is_dir():
                target = target / export.filename
            target.parent.mkdir(parents=True, exist_ok=True)
            with open(target, "wb") as out:
                shutil.copyfileobj(source, out)
        return str(target.resolve())
