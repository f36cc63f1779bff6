"""openchargeback subsidies add NAME --percent P [--source S] [--tier T] [--project ID ...] [--pi EMAIL ...]
[--cap AMOUNT] [--from YYYY-MM] [--until YYYY-MM] | list [--at YYYY-MM]"""

from __future__ import annotations

from typing import Any

from django.core.management.base import CommandParser

from billing import selectors as billing_selectors
from billing.rating import selectors, services
from billing.rating.models import Subsidy
from chargeback.commands import ReportingCommand

from .rates import this_month


class Command(ReportingCommand):
    help = (
        "Named subsidies: a percent off the billed amount of matching charges (source, tier, projects, PIs), "
        "applied in order after free allowances, with an optional cap per project per fiscal year."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        actions = self.add_subcommands(parser)
        add = actions.add_parser("add", help="add a named subsidy")
        add.add_argument("name", metavar="NAME", help='e.g. "New Faculty Startup"')
        add.add_argument("--percent", required=True, help="percent off what is billed (0 < P ≤ 100)")
        add.add_argument("--source", help="only this source's charges (default: every source)")
        add.add_argument("--tier", default="", help="only this partition or storage class")
        add.add_argument(
            "--project",
            dest="projects",
            action="extend",
            nargs="+",
            default=[],
            metavar="ID",
            help="project ids",
        )
        add.add_argument(
            "--pi", dest="pis", action="extend", nargs="+", default=[], metavar="EMAIL", help="PI emails"
        )
        add.add_argument("--cap", help="most it pays per project per fiscal year (default: no cap)")
        add.add_argument(
            "--from", dest="effective_from", metavar="YYYY-MM", help="first month (default: this month)"
        )
        add.add_argument(
            "--until", dest="effective_until", metavar="YYYY-MM", help="last month (default: open)"
        )
        add.add_argument(
            "--position", type=int, default=100, help="order among subsidies (lower applies first)"
        )
        add.add_argument("--note", default="")
        listing = actions.add_parser("list", help="every subsidy, in the order they apply")
        listing.add_argument("--at", metavar="YYYY-MM", help="only those in effect in this month")

    def handle(self, *args: Any, **options: Any) -> None:
        if options["action"] == "list":
            self._list(options["at"])
            return
        subsidy = services.subsidy_add(
            name=options["name"],
            percent=options["percent"],
            source=options["source"],
            tier=options["tier"],
            projects=options["projects"],
            pis=options["pis"],
            cap=options["cap"],
            effective_from=options["effective_from"] or this_month(),
            effective_until=options["effective_until"],
            position=options["position"],
            note=options["note"],
        )
        if self.is_json:
            self.emit({"action": "add", "subsidy": self._json(subsidy)})
            return
        self.line(f"Added subsidy {subsidy.name!r}: {self._describe(subsidy)}")

    def _scope(self, subsidy: Subsidy) -> str:
        parts = [f"source {subsidy.source.slug}" if subsidy.source else "every source"]
        if subsidy.tier:
            parts.append(f"tier {subsidy.tier}")
        if subsidy.projects:
            parts.append("projects " + ", ".join(subsidy.projects))
        if subsidy.pis:
            parts.append("PIs " + ", ".join(subsidy.pis))
        return "; ".join(parts)

    def _months(self, subsidy: Subsidy) -> str:
        return f"{subsidy.effective_from} – {subsidy.effective_until or 'open'}"

    def _describe(self, subsidy: Subsidy) -> str:
        cap = (
            f", capped at {self.fmt(subsidy.cap)} per project per fiscal year"
            if subsidy.cap is not None
            else ""
        )
        return f"{subsidy.percent.normalize():f} % off ({self._scope(subsidy)}), {self._months(subsidy)}{cap}"

    def _list(self, at: str | None) -> None:
        if at:
            subsidies = selectors.subsidies_in_effect(period=billing_selectors.validate_period(at))
        else:
            subsidies = list(selectors.subsidies_all())
        if self.is_json:
            self.emit({"at": at, "subsidies": [self._json(s) for s in subsidies]})
            return
        if not subsidies:
            self.line("No subsidies" + (f" in effect in {at}" if at else " yet") + ".")
            return
        self.table(
            ["#", "NAME", "PERCENT", "APPLIES TO", "MONTHS", "CAP / PROJECT / FY"],
            [
                [
                    s.position,
                    s.name,
                    f"{s.percent.normalize():f} %",
                    self._scope(s),
                    self._months(s),
                    self.fmt(s.cap) if s.cap is not None else "-",
                ]
                for s in subsidies
            ],
            right=[2, 5],
        )

    def _json(self, subsidy: Subsidy) -> dict[str, Any]:
        return {
            "id": subsidy.pk,
            "name": subsidy.name,
            "percent": format(subsidy.percent, "f"),
            "source": subsidy.source.slug if subsidy.source else None,
            "tier": subsidy.tier,
            "projects": subsidy.projects,
            "pis": subsidy.pis,
            "cap": self.money(subsidy.cap),
            "effective_from": subsidy.effective_from,
            "effective_until": subsidy.effective_until or None,
            "position": subsidy.position,
            "note": subsidy.note,
        }
