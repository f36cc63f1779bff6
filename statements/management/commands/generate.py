"""openchargeback generate -p YYYY-MM [--dry-run] [--send] [--pi EMAIL] [--no-wait] [--timeout S]"""

from __future__ import annotations

from typing import Any

from django.core.management.base import CommandParser

from billing.selectors import validate_period
from chargeback.commands import AlreadyReported, ReportingCommand
from statements import services

from ._statements import (
    add_wait_arguments,
    failure_message,
    generate_json,
    generate_text,
    queue_json,
    queue_text,
    report_json,
    report_text,
    run_and_wait,
)


class Command(ReportingCommand):
    help = (
        "Issue the statements of a period (one per PI × project) from its ok and approved charges, and "
        "render their PDFs; --send also emails each PI their statements. Idempotent: unchanged statements "
        "keep their version, changed ones get a new version. An open period is closed first; a finalized "
        "one cannot be regenerated."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("-p", "--period", required=True, help="billing period YYYY-MM")
        parser.add_argument("--pi", metavar="EMAIL", help="only this PI's statements")
        parser.add_argument(
            "--dry-run", action="store_true", help="write nothing; print what would be issued"
        )
        parser.add_argument("--send", action="store_true", help="email each PI with unsent statements")
        add_wait_arguments(parser)

    def handle(self, *args: Any, **options: Any) -> None:
        period = validate_period(options["period"])
        outcome = services.statements_generate(
            period=period, pi_email=options["pi"], dry_run=options["dry_run"]
        )
        if outcome.dry_run:
            if self.is_json:
                self.emit(generate_json(self, outcome))
            else:
                generate_text(self, outcome)
            return

        if not self.is_json:
            generate_text(self, outcome)
        queue = None
        if options["send"]:
            queue = services.deliveries_queue(period=period, pi_email=options["pi"])
            if not self.is_json:
                queue_text(self, queue)
        delivery_ids = [d.pk for d in queue.to_send] if queue else []
        report = run_and_wait(
            self, outcome.to_render, delivery_ids, wait=not options["no_wait"], timeout=options["timeout"]
        )
        problems = failure_message(report)
        if self.is_json:
            document = generate_json(self, outcome)
            document["run"] = report_json(report)
            if queue is not None:
                document["queue"] = queue_json(queue)
            if problems:
                document["error"] = problems
            self.emit(document)
        else:
            report_text(self, report, pdfs=len(outcome.to_render), emails=len(delivery_ids))
            if queue is not None and not delivery_ids:
                self.line("Nothing to send: every PI has been sent their current statements.")
        if problems:
            if not self.is_json:
                self.stderr.write(f"error: {problems}")
            raise AlreadyReported(problems)
