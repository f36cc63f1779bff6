"""openchargeback rates add SOURCE UNIT PRICE [--tier T] [--from YYYY-MM] [--free QTY] | list [SOURCE] [--at YYYY-MM]"""

from __future__ import annotations

from typing import Any

from django.core.management.base import CommandParser
from django.utils import timezone

from billing import selectors as billing_selectors
from billing.rating import selectors, services
from billing.rating.models import Rate
from billing.rating.units import UNITS, format_price, format_quantity
from chargeback.commands import ReportingCommand


def this_month() -> str:
    return timezone.localdate().strftime("%Y-%m")


class Command(ReportingCommand):
    help = (
        "Rates for rated usage (Slurm jobs, storage quotas): a price per unit per source, optionally per "
        "tier (partition or storage class), from a month on, with an optional free allowance per project "
        "per month."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        actions = self.add_subcommands(parser)
        add = actions.add_parser(
            "add", help="add a rate from a month on (a newer rate takes over from its month)"
        )
        add.add_argument("source", metavar="SOURCE", help="source slug, e.g. hpc (created when new)")
        add.add_argument("unit", metavar="UNIT", choices=list(UNITS), help=", ".join(UNITS))
        add.add_argument("price", metavar="PRICE", help="per unit, up to 4 decimal places, e.g. 0.0200")
        add.add_argument("--tier", default="", help="a Slurm partition or storage class (default: any tier)")
        add.add_argument(
            "--from",
            dest="effective_from",
            metavar="YYYY-MM",
            help="first month it applies to (default: this month)",
        )
        add.add_argument("--free", default="0", metavar="QTY", help="free units per project per month")
        add.add_argument("--note", default="")
        listing = actions.add_parser("list", help="rates, newest first; with --at only those in effect then")
        listing.add_argument("source", nargs="?", metavar="SOURCE")
        listing.add_argument("--at", metavar="YYYY-MM", help="only the rates in effect in this month")

    def handle(self, *args: Any, **options: Any) -> None:
        if options["action"] == "list":
            self._list(options["source"], options["at"])
            return
        rate, created = services.rate_add(
            source=options["source"],
            unit=options["unit"],
            price=options["price"],
            tier=options["tier"],
            effective_from=options["effective_from"] or this_month(),
            free_quantity=options["free"],
            note=options["note"],
        )
        if self.is_json:
            self.emit({"action": "add", "source_created": created, "rate": self._json(rate, None)})
            return
        if created:
            self.line(f"New source {rate.source.slug!r} ({rate.source.display_name})")
        self.line(f"Added rate: {self._describe(rate)}")

    def _describe(self, rate: Rate) -> str:
        tier = f" on {rate.tier}" if rate.tier else " (any tier)"
        free = (
            f", first {format_quantity(rate.free_quantity)} free per project per month"
            if rate.free_quantity
            else ""
        )
        return (
            f"{rate.source.slug} {rate.unit}{tier} at {format_price(rate.price, self.currency)} "
            f"from {rate.effective_from}{free}"
        )

    def _list(self, source_slug: str | None, at: str | None) -> None:
        source = billing_selectors.source_get(source_slug) if source_slug else None
        month = billing_selectors.validate_period(at) if at else this_month()
        in_effect = {r.pk for r in selectors.rates_in_effect(at=month, source=source)}
        rates = (
            [r for r in selectors.rates_all(source=source) if r.pk in in_effect]
            if at
            else list(selectors.rates_all(source=source))
        )
        if self.is_json:
            self.emit({"at": month, "rates": [self._json(r, r.pk in in_effect) for r in rates]})
            return
        if not rates:
            self.line(
                f"No rates{' in effect in ' + month if at else ' yet'}; add one with "
                "`openchargeback rates add SOURCE UNIT PRICE`."
            )
            return
        self.table(
            [
                "SOURCE",
                "UNIT",
                "TIER",
                "PRICE",
                "FREE / PROJECT / MONTH",
                "FROM",
                f"IN EFFECT {month}",
                "NOTE",
            ],
            [
                [
                    r.source.slug,
                    r.unit,
                    r.tier or "(any)",
                    format_price(r.price, self.currency),
                    format_quantity(r.free_quantity) if r.free_quantity else "-",
                    r.effective_from,
                    "yes" if r.pk in in_effect else ("later" if r.effective_from > month else "no"),
                    r.note,
                ]
                for r in rates
            ],
            right=[3, 4],
        )

    def _json(self, rate: Rate, in_effect: bool | None) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "id": rate.pk,
            "source": rate.source.slug,
            "unit": rate.unit,
            "tier": rate.tier,
            "price": format(rate.price, "f"),
            "currency": self.currency,
            "free_quantity": format(rate.free_quantity.normalize(), "f"),
            "effective_from": rate.effective_from,
            "note": rate.note,
        }
        if in_effect is not None:
            doc["in_effect"] = in_effect
        return doc
