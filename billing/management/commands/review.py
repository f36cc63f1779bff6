"""openchargeback review list [-p P] [--reason R] [--limit N]
| approve (--id N [N...] | -p P [--all]) [--note TEXT]
| reject (--id N [N...] | -p P [--all]) --note TEXT

`-p/--period P` without ids acts on every flagged charge of P, as the original's
`review approve --period P`; `--all` says the same explicitly. A reject without a note is refused
(exit 1): every rejection is explained in the review log."""

from __future__ import annotations

from typing import Any

from django.core.management.base import CommandParser

from billing import selectors, services
from billing.models import Charge, FlagReason
from chargeback.commands import ReportingCommand, UsageError
from chargeback.errors import Refused

from ._output import UNATTRIBUTED, plural

REASONS = [choice.value for choice in FlagReason]


def _decision_options(parser: CommandParser, *, note_required: bool) -> None:
    parser.add_argument("--id", dest="ids", type=int, nargs="+", metavar="N", help="charge ids")
    parser.add_argument(
        "-p", "--period", help="billing period YYYY-MM: without --id, every flagged charge of it"
    )
    parser.add_argument("--all", action="store_true", help="every flagged charge of the period given with -p")
    parser.add_argument(
        "-n",
        "--note",
        "--notes",
        dest="note",
        default="",
        help="why (required to reject)" if note_required else "why (optional)",
    )


class Command(ReportingCommand):
    help = "Review flagged charges: list them, approve them (they bill) or reject them (they never bill)."

    def add_arguments(self, parser: CommandParser) -> None:
        actions = self.add_subcommands(parser)
        listing = actions.add_parser("list", help="flagged charges")
        listing.add_argument("-p", "--period", help="only this period")
        listing.add_argument(
            "--reason", help=f"only charges flagged for this reason: {', '.join(REASONS)}, or rule:NAME"
        )
        listing.add_argument("--limit", type=int, default=100, help="show at most N (default 100; 0: all)")
        _decision_options(
            actions.add_parser("approve", help="approve charges: they bill"), note_required=False
        )
        _decision_options(
            actions.add_parser("reject", help="reject charges: they never bill (note required)"),
            note_required=True,
        )

    def handle(self, *args: Any, **options: Any) -> None:
        if options["action"] == "list":
            self._list(options)
        else:
            self._decide(options)

    # --- list ---------------------------------------------------------------------------------

    def _list(self, options: dict[str, Any]) -> None:
        reason = options["reason"]
        if reason and reason not in REASONS and not reason.startswith("rule:"):
            raise UsageError(f"unknown reason {reason!r}: use one of {', '.join(REASONS)}, or rule:NAME")
        if options["limit"] < 0:
            raise UsageError("--limit must be 0 (all) or more")
        period = selectors.period_get(options["period"]) if options["period"] else None
        charges = selectors.flagged_charges(period, reason)
        count = charges.count()
        billed = selectors.exact_sum(charges, "billed_cost")
        shown = list(charges[: options["limit"]] if options["limit"] else charges)
        if self.is_json:
            self.emit(
                {
                    "period": period.period if period else None,
                    "reason": reason,
                    "count": count,
                    "billed": self.money(billed),
                    "shown": len(shown),
                    "charges": [self._charge_json(c) for c in shown],
                }
            )
            return
        if not count:
            self.line("No flagged charges.")
            return
        self.table(
            ["ID", "PERIOD", "SOURCE", "PI", "PROJECT", "RESOURCE", "BILLED", "FLAGS"],
            [
                [
                    c.pk,
                    c.period.period,
                    c.source.slug,
                    c.pi_email or UNATTRIBUTED,
                    c.project_code or "-",
                    _short(c.resource_name or c.resource_id or c.service_name, 40),
                    self.fmt(c.billed_cost),
                    c.flag_summary,
                ]
                for c in shown
            ],
            right=[0, 6],
        )
        more = f" (showing {len(shown):,}; --limit 0 shows all)" if len(shown) < count else ""
        self.line(f"{plural(count, 'flagged charge')}, billed {self.fmt(billed)}{more}")

    def _charge_json(self, charge: Charge) -> dict[str, Any]:
        return {
            "id": charge.pk,
            "period": charge.period.period,
            "source": charge.source.slug,
            "pi_email": charge.pi_email,
            "project_id": charge.project_code,
            "fund_org": charge.fund_org,
            "resource_id": charge.resource_id,
            "resource_name": charge.resource_name,
            "service_name": charge.service_name,
            "charge_category": charge.charge_category,
            "sub_account_id": charge.sub_account_id,
            "list": self.money(charge.list_cost),
            "billed": self.money(charge.billed_cost),
            "review_state": charge.review_state,
            "flags": charge.flag_summary,
        }

    # --- approve / reject ---------------------------------------------------------------------

    def _decide(self, options: dict[str, Any]) -> None:
        action, ids, period = options["action"], options["ids"], options["period"]
        if ids and options["all"]:
            raise UsageError("give either --id N... or -p PERIOD --all, not both")
        if not ids and not period:
            raise UsageError(f"say which charges to {action}: --id N... or -p PERIOD")
        if action == "reject" and not options["note"].strip():
            raise Refused("a note is required: --note TEXT")
        decide = services.charges_approve if action == "approve" else services.charges_reject
        outcome = decide(charge_ids=ids or None, period=period, note=options["note"])
        if self.is_json:
            self.emit(
                {
                    "action": action,
                    "count": outcome.count,
                    "billed": self.money(outcome.billed_total),
                    "skipped": outcome.skipped,
                    "batch": outcome.batch,
                    "period": period,
                    "note": options["note"].strip(),
                }
            )
            return
        done = "Approved" if action == "approve" else "Rejected"
        text = f"{done} {plural(outcome.count, 'charge')}, billed {self.fmt(outcome.billed_total)}"
        if outcome.skipped:
            text += f"; {outcome.skipped:,} already {done.lower()} or outside the period, unchanged"
        self.line(text + ".")


def _short(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"
