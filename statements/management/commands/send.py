"""openchargeback send -p YYYY-MM [--pi EMAIL] [--resend-failed] [--no-wait] [--timeout S]"""

from __future__ import annotations

from typing import Any

from django.core.management.base import CommandParser

from billing.selectors import validate_period
from chargeback.commands import ReportingCommand
from statements.services.runs import statements_send_prepare

from ._statements import add_wait_arguments, dispatch_and_report, queue_json, queue_text


class Command(ReportingCommand):
    help = (
        "Email each PI their current statements of a period (one message, every PDF attached). A PI "
        "already sent their current statements gets nothing; a retried or repeated send never emails "
        "twice. --resend-failed queues failed deliveries again."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("-p", "--period", required=True, help="billing period YYYY-MM")
        parser.add_argument("--pi", metavar="EMAIL", help="only this PI")
        parser.add_argument("--resend-failed", action="store_true", help="queue failed deliveries again")
        add_wait_arguments(parser)

    def handle(self, *args: Any, **options: Any) -> None:
        period = validate_period(options["period"])
        plan = statements_send_prepare(
            period=period, pi_email=options["pi"], resend_failed=options["resend_failed"]
        )
        queue, delivery_ids, unrendered = plan.queue, plan.delivery_ids, plan.unrendered
        if not self.is_json:
            queue_text(self, queue)
        nothing = f"Nothing to send for {period}: " + (
            f"{len(queue.already_sent)} PI(s) already have their current statements."
            if queue.already_sent
            else "no unsent statements."
        )
        dispatch_and_report(
            self,
            unrendered,
            delivery_ids,
            options=options,
            document=lambda: {"period": period, "pi": options["pi"], **queue_json(queue)},
            notes_before=[] if delivery_ids else [nothing],
        )
