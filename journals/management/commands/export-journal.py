"""openchargeback export-journal -p YYYY-MM [-f gl|summary|detail|NAME] [-o PATH] [--format json]"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from django.core.management.base import CommandParser

from billing.selectors import validate_period
from chargeback.commands import ReportingCommand, UsageError
from journals import selectors, services


class Command(ReportingCommand):
    help = (
        "Export the general-ledger journal of a period, built from its current statements: one debit per "
        "PI fund/org and source, one credit per source. Refused, with every reason, when it would be "
        "wrong (statements missing or stale, debits ≠ credits, a fund/org the split regex cannot split, "
        "an invalid account code). The file is kept (see the admin's journal exports); -o also writes "
        "a copy."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("-p", "--period", required=True, help="billing period YYYY-MM")
        parser.add_argument(
            "-f",
            "--journal-format",
            dest="journal_format",
            default="gl",
            metavar="gl|summary|detail|NAME",
            help="layout: gl (default), summary, detail or the name of a custom journal format",
        )
        parser.add_argument(
            "-o",
            "--output",
            metavar="PATH",
            help="also write the file here (a directory, a file, or - for stdout)",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        period = validate_period(options["period"])
        output = options.get("output")
        if output == "-" and self.is_json:
            raise UsageError("-o - prints the journal on stdout, which --format json needs for its document")
        export = services.journal_export(period=period, format=options["journal_format"])
        written = ""
        if output:
            written = self._copy(export, output)
        if self.is_json:
            document = selectors.export_summary(export)
            document["output"] = written or None
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
        self.line(f"  kept as   {export.file.name}")
        if written:
            self.line(f"  written   {written}")

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
        return str(target)
