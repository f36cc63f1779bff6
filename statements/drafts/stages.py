"""The stages that turn a period's charges into statement drafts. Pure: they read the records of
`drafts.records` (gathered from the database by `drafts.inputs`) and touch nothing else.

For each PI × project, in order:

1. `charges_triage`: which charges are billed, held back (flagged), rejected, or billable by
   nobody (no PI);
2. `accounting_pick`: the fund/org and references the statement carries;
3. `lines_gather`: the exact sums of each line (source × service; credits and adjustments on
   lines of their own) and how its charges were rated;
4. `lines_round`: each line rounded once, half-up, to the currency's minor unit, in order;
5. `details_gather`: the detail by resource;
6. `draft_assemble`: the draft, its totals the sums of its rounded lines, and its `content_hash`.

Then `drafts_collect` puts a period's drafts and held-back charges in PI × project order.
`drafts_compute` runs the whole pipeline; `comparison.drafts_compare` then sets the drafts
against the versions in force.
"""

from __future__ import annotations

import hashlib
import json
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from itertools import groupby
from operator import attrgetter
from typing import Any

from chargeback.money import ZERO, round_currency

from .records import (
    ChargeGroup,
    ChargeRow,
    DraftInputs,
    DraftLine,
    HeldBack,
    LineRating,
    PeriodDrafts,
    PIRef,
    ProjectRef,
    ReviewStates,
    SourceRef,
    StatementDraft,
)

# Charge categories that stay on their own (negative) lines instead of joining the usage line.
SEPARATE_KINDS = {"credit": "Credit", "adjustment": "Adjustment"}
_KIND_ORDER = {"": 0, "Credit": 1, "Adjustment": 2}
_REFERENCES = ("cost_center", "reference_1", "reference_2")

LineKey = tuple[int, str, str]  # source id, service, kind


def line_kind(charge_category: str) -> str:
    """The line a charge joins by its category: '' (usage), 'Credit' or 'Adjustment'."""
    return SEPARATE_KINDS.get((charge_category or "").strip().lower(), "")


def charge_groups(rows: Iterable[ChargeRow]) -> Iterator[ChargeGroup]:
    """Charges in PI × project order as one group per PI × project (consecutive rows with the
    same PI and project; the gatherer asks the database for that order)."""
    for (pi_id, code), chunk in groupby(rows, key=attrgetter("pi_id", "project_code")):
        yield ChargeGroup(pi_id, code, tuple(chunk))


# --- 1. triage ---------------------------------------------------------------------------------


@dataclass
class Triage:
    """A PI × project's charges by what the statement does with them."""

    billable: list[ChargeRow] = field(default_factory=list)
    held_count: int = 0
    held_exact: Decimal = ZERO
    rejected_count: int = 0
    rejected_exact: Decimal = ZERO
    unbillable_count: int = 0  # billable, but no PI to bill
    unbillable_exact: Decimal = ZERO


def charges_triage(group: ChargeGroup, states: ReviewStates) -> Triage:
    """Split a group's charges: rejected ones are excluded, flagged ones held back (recorded,
    not billed), ok and approved ones billed, unless nobody is attributed (no PI); charges in
    any other state are left out."""
    triage = Triage()
    for row in group.charges:
        state = row.review_state
        if state == states.rejected:
            triage.rejected_count += 1
            triage.rejected_exact += row.billed_cost
        elif state == states.held_back:
            triage.held_count += 1
            triage.held_exact += row.billed_cost
        elif state not in states.billable:
            continue
        elif group.pi_id is None:
            triage.unbillable_count += 1
            triage.unbillable_exact += row.billed_cost
        else:
            triage.billable.append(row)
    return triage


# --- 2. accounting -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Accounting:
    fund_org: str = ""
    cost_center: str = ""
    reference_1: str = ""
    reference_2: str = ""


def most_common(counts: Mapping[str, int]) -> str:
    """The non-empty value seen most often; on a tie the smallest; '' when there is none."""
    values = [(n, v) for v, n in counts.items() if v]
    if not values:
        return ""
    return min(values, key=lambda item: (-item[0], item[1]))[1]


def accounting_pick(charges: Iterable[ChargeRow], project: ProjectRef | None) -> Accounting:
    """The fund/org, cost center and references a statement carries: for each, the value most
    of its charges carry, else the project's."""
    counts: dict[str, dict[str, int]] = {name: defaultdict(int) for name in ("fund_org", *_REFERENCES)}
    for row in charges:
        counts["fund_org"][row.fund_org] += 1
        counts["cost_center"][row.cost_center] += 1
        counts["reference_1"][row.reference_1] += 1
        counts["reference_2"][row.reference_2] += 1
    return Accounting(
        **{
            name: most_common(seen) or (getattr(project, name) if project else "")
            for name, seen in counts.items()
        }
    )


# --- 3. and 4. lines ---------------------------------------------------------------------------


@dataclass
class LineTally:
    """A line's exact sums before rounding, and its rating accumulator (if any charge was rated)."""

    charge_count: int = 0
    list_exact: Decimal = ZERO
    billed_exact: Decimal = ZERO
    rating: LineRating | None = None


def lines_gather(
    charges: Iterable[ChargeRow],
    *,
    explanations: Mapping[int, Any] | None = None,
    line_rating: Callable[[], LineRating] | None = None,
) -> dict[LineKey, LineTally]:
    """The exact sums of each line: one per source × service × kind (usage, credit, adjustment).
    A charge the rating explains adds its explanation to the line's `line_rating()`."""
    explanations = explanations or {}
    lines: dict[LineKey, LineTally] = {}
    for row in charges:
        key = (row.source_id, row.service_name, line_kind(row.charge_category))
        tally = lines.get(key)
        if tally is None:
            tally = lines[key] = LineTally()
        tally.charge_count += 1
        tally.list_exact += row.list_cost
        tally.billed_exact += row.billed_cost
        explanation = explanations.get(row.id)
        if explanation is not None and line_rating is not None:
            if tally.rating is None:
                tally.rating = line_rating()
            tally.rating.add(explanation)
    return lines


def lines_round(
    tallies: Mapping[LineKey, LineTally], sources: Mapping[int, SourceRef], currency: str
) -> list[DraftLine]:
    """Each line's amounts rounded once, half-up, to the currency's minor unit (the cent rule),
    its rating worked out against the rounded discount; ordered by source, service, then usage
    before credits before adjustments."""
    lines = []
    for (source_id, service, kind), tally in tallies.items():
        source = sources[source_id]
        line = DraftLine(
            source_id=source_id,
            source_slug=source.slug,
            source_name=source.label,
            service_name=service,
            kind=kind,
            charge_count=tally.charge_count,
            list_exact=tally.list_exact,
            billed_exact=tally.billed_exact,
            list_amount=round_currency(tally.list_exact, currency),
            amount=round_currency(tally.billed_exact, currency),
        )
        if tally.rating is not None:
            line.rating = tally.rating.as_json(
                list_exact=line.list_exact,
                billed_exact=line.billed_exact,
                discount=line.discount_amount,
                currency=currency,
            )
        lines.append(line)
    # The last three keys only break ties (names that differ in case, sources of one name), so
    # the order never depends on the order the charges were read in.
    return sorted(
        lines,
        key=lambda ln: (
            ln.source_name.lower(),
            ln.service_name.lower(),
            _KIND_ORDER[ln.kind],
            ln.source_name,
            ln.service_name,
            ln.source_id,
        ),
    )


# --- 5. details --------------------------------------------------------------------------------


def _dec(value: Decimal | None) -> str:
    return format(value if value is not None else ZERO, "f")


def details_gather(charges: Iterable[ChargeRow], sources: Mapping[int, SourceRef]) -> list[list[Any]]:
    """The detail by resource: [source, service, kind, resource id, resource name, quantity,
    unit, list, billed, charges], exact amounts as strings. The quantity (and unit) is left
    out once the resource's charges disagree on the unit or one has no quantity."""
    # [quantity, unit, list, billed, charges]; quantity None once units disagree.
    details: dict[tuple[int, str, str, str, str], list[Any]] = {}
    for row in charges:
        key = (
            row.source_id,
            row.service_name,
            line_kind(row.charge_category),
            row.resource_id,
            row.resource_name,
        )
        detail = details.get(key)
        if detail is None:
            detail = details[key] = [row.quantity, row.unit, ZERO, ZERO, 0]
        elif detail[0] is not None and row.quantity is not None and detail[1] == row.unit:
            detail[0] += row.quantity
        else:
            detail[0] = None
        detail[2] += row.list_cost
        detail[3] += row.billed_cost
        detail[4] += 1
    ordered = sorted(
        details.items(),
        key=lambda item: (
            sources[item[0][0]].display_name.lower(),
            item[0][1].lower(),
            _KIND_ORDER[item[0][2]],
            item[0][3],
            item[0][4],
            item[0][1],  # ties, as for the lines
            item[0][0],
        ),
    )
    return [
        [
            sources[key[0]].label,
            key[1],
            key[2],
            key[3],
            key[4],
            None if value[0] is None else _dec(value[0].normalize()),
            value[1] if value[0] is not None else "",
            _dec(value[2]),
            _dec(value[3]),
            value[4],
        ]
        for key, value in ordered
    ]


# --- 6. the draft ------------------------------------------------------------------------------


def draft_assemble(
    *,
    pi: PIRef,
    project_code: str,
    project: ProjectRef | None,
    currency: str,
    triage: Triage,
    accounting: Accounting,
    lines: list[DraftLine],
    details: list[list[Any]],
) -> StatementDraft:
    """The draft of one PI × project: its totals are the sums of its rounded lines (never the
    rounded sum of its charges), and its content hash says everything it says."""
    draft = StatementDraft(
        pi_id=pi.pk,
        pi_email=pi.email,
        project_code=project_code,
        currency=currency,
        pi_name=pi.name,
        pi_department=pi.department,
        project_id=project.pk if project else None,
        project_name=project.name if project else "",
        fund_org=accounting.fund_org,
        cost_center=accounting.cost_center,
        reference_1=accounting.reference_1,
        reference_2=accounting.reference_2,
        lines=lines,
        details=details,
        charge_count=len(triage.billable),
        held_back_count=triage.held_count,
        held_back_exact=triage.held_exact,
        rejected_count=triage.rejected_count,
        list_total=sum((ln.list_amount for ln in lines), ZERO),
        billed_total=sum((ln.amount for ln in lines), ZERO),
    )
    draft.content_hash = content_hash(draft)
    return draft


def content_hash(draft: StatementDraft) -> str:
    """Everything the statement says; equal hashes mean regeneration keeps the version."""
    document = {
        "pi": [draft.pi_email, draft.pi_name, draft.pi_department],
        "project": [draft.project_code, draft.project_name],
        "accounting": [draft.fund_org, draft.cost_center, draft.reference_1, draft.reference_2],
        "currency": draft.currency,
        "lines": [
            [
                ln.source_slug,
                ln.source_name,
                ln.service_name,
                ln.kind,
                ln.charge_count,
                _dec(ln.list_exact),
                _dec(ln.billed_exact),
                # Only lines that have one: statements issued before rating existed keep their hash.
                *([ln.rating] if ln.rating else []),
            ]
            for ln in draft.lines
        ],
        "details": draft.details,
        "held_back": [draft.held_back_count, _dec(draft.held_back_exact)],
    }
    return hashlib.sha256(json.dumps(document, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def group_draft(group: ChargeGroup, inputs: DraftInputs) -> tuple[Triage, StatementDraft | HeldBack | None]:
    """Stages 1 to 6 for one PI × project: its triage, and its draft (something billable), what
    it holds back (flagged charges only) or nothing."""
    triage = charges_triage(group, inputs.states)
    pi = inputs.pis.get(group.pi_id) if group.pi_id is not None else None
    if not triage.billable:
        if triage.held_count:
            held = HeldBack(pi.email if pi else "", group.project_code, triage.held_count, triage.held_exact)
            return triage, held
        return triage, None
    assert pi is not None  # billable charges always have their PI (charges_triage)
    project = inputs.projects.get(group.project_code) if group.project_code else None
    tallies = lines_gather(triage.billable, explanations=inputs.explanations, line_rating=inputs.line_rating)
    draft = draft_assemble(
        pi=pi,
        project_code=group.project_code,
        project=project,
        currency=inputs.currency,
        triage=triage,
        accounting=accounting_pick(triage.billable, project),
        lines=lines_round(tallies, inputs.sources, inputs.currency),
        details=details_gather(triage.billable, inputs.sources),
    )
    return triage, draft


# --- the period --------------------------------------------------------------------------------


def drafts_collect(result: PeriodDrafts, found: Iterable[StatementDraft | HeldBack]) -> PeriodDrafts:
    """The drafts (and what PI × projects with nothing billable hold back) in order of PI email
    and project."""
    for item in sorted(found, key=lambda item: (item.pi_email, item.project_code)):
        if isinstance(item, HeldBack):
            result.held_back_elsewhere.append(item)
        else:
            result.drafts[item.key] = item
    return result


def drafts_compute(inputs: DraftInputs, *, period: Any = None) -> PeriodDrafts:
    """Every statement the charges call for, one PI × project at a time, with the period's
    tallies of what is held back, rejected, or billable by nobody."""
    result = PeriodDrafts(period=period, currency=inputs.currency)
    found: list[StatementDraft | HeldBack] = []
    for group in inputs.groups:
        triage, item = group_draft(group, inputs)
        result.held_back_count += triage.held_count
        result.held_back_billed += triage.held_exact
        result.rejected_count += triage.rejected_count
        result.rejected_billed += triage.rejected_exact
        result.unbillable_count += triage.unbillable_count
        result.unbillable_billed += triage.unbillable_exact
        if item is not None:
            found.append(item)
    return drafts_collect(result, found)
