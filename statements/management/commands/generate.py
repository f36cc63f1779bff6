"""openchargeback generate -p YYYY-MM [--dry-run] [--send] [--pi EMAIL] [--no-wait] [--timeout S]

`--dry-run` issues nothing: it prints what would be issued and renders preview PDFs, marked DRAFT
on every page, into a preview folder it names (preview/YYYY-MM in the PDF folder)."""

from __future__ import annotations

from typing import Any

from django.core.management.base import CommandParser

from billing.selectors import validate_period
from chargeback.commands import ReportingCommand
from statements import services
from statements.previews import statements_preview

from ._statements import (
    add_wait_arguments,
    dispatch_and_report,
    generate_json,
    generate_text,
    queue_json,
    queue_text,
)


class Command(ReportingCommand):
    help = (
        "Issue the statements of a period (one per PI × project) from its ok and approved charges, and "
        "render their PDFs; --send also emails each PI their statements. Idempotent: unchanged statements "
        "keep their version, changed ones get a new version. The period's state is left alone; a "
        "finalized one cannot be regenerated. --dry-run renders DRAFT previews and issues nothing."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("-p", "--period", required=True, help="billing period YYYY-MM")
        parser.add_argument("--pi", metavar="EMAIL", help="only this PI's statements")
        parser.add_argument(
            "--dry-run",
            action="store_true",
            help="issue nothing: print what would be issued, render DRAFT previews into a preview folder",
        )
        parser.add_argument("--send", action="store_true", help="email each PI with unsent statements")
        add_wait_arguments(parser)

    def handle(self, *args: Any, **options: Any) -> None:
        period = validate_period(options["period"])
        outcome = services.statements_generate(
            period=period, pi_email=options["pi"], dry_run=options["dry_run"]
        )
        if outcome.dry_run:
            preview = statements_preview(outcome=outcome)
            if self.is_json:
                document = generate_json(self, outcome)
                document["preview"] = {
                    "folder": str(preview.folder),
                    "files": [p.name for p in preview.files],
                }
                self.emit(document)
            else:
                generate_text(self, outcome)
                self.line(
                    f"Preview PDFs, marked DRAFT (nothing issued): {len(preview.files):,} in {preview.folder}"
                )
            return

        if not self.is_json:
            generate_text(self, outcome)
        queue = None
        if options["send"]:
            queue = services.deliveries_queue(period=period, pi_email=options["pi"])
            if not self.is_json:
                queue_text(self, queue)
        delivery_ids = [d.pk for d in queue.to_send] if queue else []

        def json_document() -> dict[str, Any]:
            found = generate_json(self, outcome)
            if queue is not None:
                found["queue"] = queue_json(queue)
            return found

        dispatch_and_report(
            self,
            outcome.to_render,
            delivery_ids,
            options=options,
            document=json_document,
            notes_after=["Nothing to send: every PI has been sent their current statements."]
            if queue is not None and not delivery_ids
            else [],
        )
