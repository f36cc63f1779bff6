"""openchargeback collect [POINT...] [--dry-run]: import new exports from the collection points."""

from __future__ import annotations

from typing import Any

from django.core.management.base import CommandParser

from billing.collection import services
from billing.collection.services import Action, CollectedFile, CollectionReport
from chargeback.commands import AlreadyReported, ReportingCommand

QUIET = {Action.UNCHANGED, Action.FAILED_BEFORE}


class Command(ReportingCommand):
    help = (
        "Collect new files from the collection points (edited in the admin): a new file is imported "
        "and added to its period, a file delivered again with new contents supersedes its earlier "
        "import, an unchanged one is skipped. Exit code 1 if a file failed or a point could not be read."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "points",
            nargs="*",
            metavar="POINT",
            help="collection points by name (default: every enabled one)",
        )
        parser.add_argument(
            "--dry-run", action="store_true", help="list what would be collected; write nothing"
        )

    def handle(self, *args: Any, **options: Any) -> None:
        report = services.collection_run(points=options["points"] or None, dry_run=options["dry_run"])
        if self.is_json:
            self.emit(self._document(report))
        else:
            self._text(report)
        if not report.ok:
            problems = len(report.failures) + sum(1 for p in report.points if p.error)
            raise AlreadyReported(f"{problems} problem(s) while collecting")

    # --- output -------------------------------------------------------------------------------

    def _file_json(self, line: CollectedFile) -> dict[str, Any]:
        return {
            "key": line.key,
            "action": line.action,
            "version": line.version,
            "period": line.period or None,
            "size_bytes": line.size_bytes,
            "import_id": line.import_id,
            "supersedes": line.supersedes,
            "charges": line.charges,
            "billed": self.money(line.billed_total) if line.billed_total is not None else None,
            "error": line.error or None,
        }

    def _document(self, report: CollectionReport) -> dict[str, Any]:
        return {
            "dry_run": report.dry_run,
            "ok": report.ok,
            "counts": report.counts,
            "seconds": round(report.seconds, 3),
            "points": [
                {
                    "point": p.point,
                    "kind": p.kind,
                    "location": p.location,
                    "source": p.source,
                    "error": p.error or None,
                    "busy": p.busy,
                    "files": [self._file_json(f) for f in p.files],
                }
                for p in report.points
            ],
        }

    def _text(self, report: CollectionReport) -> None:
        if not report.points:
            self.line(
                "No collection points are enabled (add them in the admin: Billing › Collection points)."
            )
            return
        for point in report.points:
            self.line(f"{point.point}: {point.location} → {point.source}")
            if point.busy:
                self.line("  skipped: another run is collecting this point")
            if point.error:
                self.stderr.write(f"error: {point.point}: {point.error}")
            for line in point.files:
                if line.action in QUIET:
                    continue
                detail = self._detail(line)
                self.line(f"  {line.action:<15} {line.key}{detail}")
                if line.action == Action.FAILED:
                    self.stderr.write(f"error: {point.point}: {line.key}: {line.error}")
            unchanged, waiting = point.count(Action.UNCHANGED), point.count(Action.FAILED_BEFORE)
            if unchanged or waiting:
                parts = [f"{unchanged} unchanged"] if unchanged else []
                if waiting:
                    parts.append(f"{waiting} failed before (tried again when delivered anew)")
                self.line(f"  {', '.join(parts)}")
            if not point.files and not point.error and not point.busy:
                self.line("  no files match")
        verb = "would be collected" if report.dry_run else "collected"
        counts = ", ".join(f"{n} {action}" for action, n in sorted(report.counts.items()))
        self.line(f"{'Dry run: nothing written. ' if report.dry_run else ''}Files {verb}: {counts or 'none'}")

    def _detail(self, line: CollectedFile) -> str:
        parts = []
        if line.period:
            parts.append(line.period)
        if line.import_id:
            parts.append(f"import #{line.import_id}")
        if line.supersedes:
            parts.append("replaces " + ", ".join(f"#{n}" for n in line.supersedes))
        if line.billed_total is not None and line.action in (Action.ADDED, Action.SUPERSEDED):
            parts.append(f"{line.charges:,} charges, {self.fmt(line.billed_total)}")
        return f"  ({'; '.join(parts)})" if parts else ""
