"""The plain records the draft stages read and write: what the database says about a period
(frozen inputs, gathered by `drafts.inputs.draft_inputs`) and what its statements should say
(the drafts). Nothing here touches the database, so the stages can be tested from hand-built
records."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, NamedTuple, Protocol

from chargeback.money import ZERO, round_currency

# --- inputs -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class PIRef:
    """A PI as a statement names them."""

    pk: int
    email: str
    name: str = ""
    department: str = ""


@dataclass(frozen=True)
class ProjectRef:
    """A project's name and its accounting defaults (used where the charges name none)."""

    pk: int
    code: str
    name: str = ""
    fund_org: str = ""
    cost_center: str = ""
    reference_1: str = ""
    reference_2: str = ""


@dataclass(frozen=True)
class SourceRef:
    pk: int
    slug: str
    display_name: str = ""

    @property
    def label(self) -> str:
        """The name a statement shows: the display name, else the slug."""
        return self.display_name or self.slug


class ChargeRow(NamedTuple):
    """One charge as the stages need it. A NamedTuple rather than a frozen dataclass: a period
    holds up to a million charges, and a tuple is built about eight times faster. The field
    names are the Charge model's, so the gatherer reads exactly these columns."""

    pi_id: int | None
    project_code: str
    review_state: str
    source_id: int
    service_name: str
    charge_category: str
    resource_id: str
    resource_name: str
    quantity: Decimal | None
    unit: str
    list_cost: Decimal
    billed_cost: Decimal
    fund_org: str
    cost_center: str
    reference_1: str
    reference_2: str
    id: int


@dataclass(frozen=True)
class ChargeGroup:
    """The charges of one PI × project (pi_id None: charges nobody is attributed to)."""

    pi_id: int | None
    project_code: str
    charges: tuple[ChargeRow, ...]


@dataclass(frozen=True)
class ReviewStates:
    """The review states by what they mean for a statement (billing's Charge.ReviewState)."""

    billable: frozenset[str]
    held_back: str
    rejected: str


class LineRating(Protocol):
    """How one line was rated, accumulated charge by charge (billing.rating's LineExplanation):
    the stages add each charge's explanation and ask for the line's JSON once it is rounded."""

    def add(self, item: Any) -> None: ...

    def as_json(
        self, *, list_exact: Decimal, billed_exact: Decimal, discount: Decimal, currency: str
    ) -> dict[str, Any]: ...


@dataclass(frozen=True)
class DraftInputs:
    """Everything the stages need to work out a period's drafts. `groups` is read once, in
    order: the gatherer streams it from the database so that only one PI × project's charges
    are in memory at a time."""

    currency: str
    states: ReviewStates
    pis: Mapping[int, PIRef]
    projects: Mapping[str, ProjectRef]
    sources: Mapping[int, SourceRef]
    groups: Iterable[ChargeGroup]
    # Per charge id: what the rating says about it (billing.rating's ChargeExplanation), and the
    # accumulator that turns a line's explanations into its `rating` JSON.
    explanations: Mapping[int, Any] = field(default_factory=dict)
    line_rating: Callable[[], LineRating] | None = None


# --- drafts: what a statement should say -------------------------------------------------------


@dataclass
class DraftLine:
    source_id: int
    source_slug: str
    source_name: str
    service_name: str
    kind: str
    charge_count: int = 0
    list_exact: Decimal = ZERO
    billed_exact: Decimal = ZERO
    list_amount: Decimal = ZERO
    amount: Decimal = ZERO
    # Rated usage (quantity @ unit price) and the discount by name: billing.rating.selectors.LineExplanation.
    rating: dict[str, Any] = field(default_factory=dict)

    @property
    def discount_amount(self) -> Decimal:
        return self.list_amount - self.amount


@dataclass
class StatementDraft:
    """One PI × project of a period as the charges say it should be billed."""

    pi_id: int
    pi_email: str
    project_code: str
    currency: str
    pi_name: str = ""
    pi_department: str = ""
    project_id: int | None = None
    project_name: str = ""
    fund_org: str = ""
    cost_center: str = ""
    reference_1: str = ""
    reference_2: str = ""
    lines: list[DraftLine] = field(default_factory=list)
    details: list[list[Any]] = field(default_factory=list)
    charge_count: int = 0
    held_back_count: int = 0
    held_back_exact: Decimal = ZERO
    rejected_count: int = 0
    list_total: Decimal = ZERO
    billed_total: Decimal = ZERO
    content_hash: str = ""

    @property
    def key(self) -> tuple[int, str]:
        return (self.pi_id, self.project_code)

    @property
    def discount_total(self) -> Decimal:
        return self.list_total - self.billed_total

    @property
    def held_back_amount(self) -> Decimal:
        return round_currency(self.held_back_exact, self.currency)


@dataclass
class HeldBack:
    """Flagged charges of a PI × project that has nothing billable (no statement to note them on)."""

    pi_email: str
    project_code: str
    count: int
    billed: Decimal


@dataclass
class PeriodDrafts:
    # The BillingPeriod the drafts are of (statement_drafts sets it; the stages never read it).
    period: Any
    currency: str
    drafts: dict[tuple[int, str], StatementDraft] = field(default_factory=dict)
    held_back_count: int = 0
    held_back_billed: Decimal = ZERO
    held_back_elsewhere: list[HeldBack] = field(default_factory=list)
    rejected_count: int = 0
    rejected_billed: Decimal = ZERO
    unbillable_count: int = 0  # ok/approved charges without a PI: nobody to bill
    unbillable_billed: Decimal = ZERO
