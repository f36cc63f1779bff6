"""openchargeback ingest FILE... [-s SOURCE] [-p YYYY-MM] [--dry-run] [--replace] [--force]"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from django.core.management.base import CommandParser

from billing import selectors, services
from billing.ingest import pipeline
from billing.models import Source
from chargeback.commands import AlreadyReported, ProgressBar, ReportingCommand, refusal_errors
from chargeback.errors import Refused

from ._output import FileResult, file_message, file_result_json, file_result_text, import_totals, plural

PROGRESS_BAR_BYTES = 4 * 1024 * 1024


class Command(ReportingCommand):
    help = (
        "Import FOCUS billing files (.csv, .csv.gz). Each file is one all-or-nothing transaction; "
        "the source is detected from the file name unless -s is given, the period comes from the data "
        "unless -p is given. Exit code 1 if any file was refused."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("files", nargs="+", metavar="FILE", help="FOCUS files to import")
        parser.add_argument(
            "-s",
            "--source",
            help="source of every file, created if new (default: detected from each file name)",
        )
        parser.add_argument(
            "-p",
            "--period",
            help="billing period YYYY-MM for every row; rows of another month are kept and flagged "
            "(default: each row's own month; a file spanning several is split)",
        )
        parser.add_argument("--dry-run", action="store_true", help="check and count, write nothing")
        parser.add_argument(
            "--replace",
            action="store_true",
            help="supersede every earlier import of the source and period(s); by default a file adds to "
            "them, and only the same file name again supersedes its earlier import",
        )
        parser.add_argument("--force", action="store_true", help="import bytes that were imported before")

    def handle(self, *args: Any, **options: Any) -> None:
        period = selectors.validate_period(options["period"]) if options["period"] else None
        # -s NAME: a source seen for the first time is created (the original's behaviour).
        source = selectors.source_slug(options["source"]) if options["source"] else None
        results: list[FileResult] = []
        for name in options["files"]:
            result = self._import_one(Path(name), source, period, options)
            results.append(result)
            if result.error is not None or not self.is_json:
                file_result_text(self, result)

        failed = [r for r in results if not r.ok]
        totals = import_totals(results)
        if self.is_json:
            document: dict[str, Any] = {
                "dry_run": bool(options["dry_run"]),
                "files": [file_result_json(self, r) for r in results],
                "imported": len(results) - len(failed),
                "failed": len(failed),
                "totals": {
                    **totals,
                    "list": self.money(totals["list"]),
                    "billed": self.money(totals["billed"]),
                },
            }
            if failed:
                document["error"] = self._failure_message(failed, results)
                document["errors"] = [
                    {"file": str(r.path), **row}
                    for r in failed
                    if r.error is not None
                    for row in (
                        refusal_errors(r.error)
                        or [{"line": None, "column": "", "value": "", "message": str(r.error)}]
                    )
                ]
            self.emit(document)
        elif len(results) > 1:
            verb = "Checked" if options["dry_run"] else "Imported"
            self.line(
                f"{verb} {plural(len(results) - len(failed), 'file')}: {totals['rows']:,} rows, "
                f"{totals['charges']:,} charges, {totals['flagged']:,} flagged, "
                f"list {self.fmt(totals['list'])}, billed {self.fmt(totals['billed'])}"
            )
        if failed:
            message = self._failure_message(failed, results)
            if len(results) > 1:
                self.stderr.write(f"error: {message}")
            raise AlreadyReported(message)

    @staticmethod
    def _failure_message(failed: list[FileResult], results: list[FileResult]) -> str:
        if len(results) == 1 and failed[0].error is not None:
            return file_message(failed[0].path.name, str(failed[0].error))
        return f"{len(failed)} of {plural(len(results), 'file')} refused: " + ", ".join(
            r.path.name for r in failed
        )

    def _import_one(
        self, path: Path, source: str | None, period: str | None, options: dict[str, Any]
    ) -> FileResult:
        try:
            if not path.is_file():
                raise Refused(f"file not found: {path}")
            # A bar while a large file is read, on a terminal only (never in a cron job's mail).
            size = path.stat().st_size
            bar = ProgressBar(
                sys.stderr, size, enabled=size >= PROGRESS_BAR_BYTES and not self.is_json, megabytes=True
            )
            try:
                with pipeline.progress_reported_to(
                    lambda done, _size: bar.update(done, f"reading {path.name}")
                ):
                    outcome = services.import_file(
                        path=path,
                        source=source or self._detect_source(path),
                        period=period,
                        replace=options["replace"],
                        force=options["force"],
                        dry_run=options["dry_run"],
                        create_source=True,
                    )
            finally:
                bar.finish()
        except services.AlreadyImported as exc:
            # Nothing to do, not a failure: a cron job that runs twice must succeed.
            return FileResult(path=path, skipped=str(exc), skipped_import=exc.import_id)
        except Refused as exc:
            return FileResult(path=path, error=exc)
        return FileResult(path=path, outcome=outcome)

    @staticmethod
    def _detect_source(path: Path) -> Source:
        detected = selectors.source_for_filename(path.name)
        if detected is None:
            known = ", ".join(
                f"{s.slug} ({s.filename_pattern or s.slug + '_*'})" for s in selectors.sources_all()
            )
            suggested = selectors.source_name_from_filename(path.name)
            raise Refused(
                "cannot tell the source from the file name: no source's file name pattern matches "
                f"(known: {known or 'none yet'}); give -s SOURCE"
                + (f" (e.g. -s {suggested}: a new source is created)" if suggested else "")
            )
        return detected
