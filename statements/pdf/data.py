"""What a statement PDF shows (StatementData, LineData): plain values, no database."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from ..branding import Branding


@dataclass
class LineData:
    source_name: str
    service_name: str
    kind: str
    list_amount: Decimal
    discount_amount: Decimal
    amount: Decimal
    # Rated usage and the discount by name (see billing.rating.selectors.LineExplanation).
    rating: dict[str, Any] = field(default_factory=dict)


@dataclass
class StatementData:
    """Everything a PDF shows, independent of the database."""

    number: str
    version: int
    period: str
    period_start: dt.date
    period_end: dt.date
    issued_at: dt.datetime
    currency: str
    organization: str
    contact_email: str
    pi_name: str
    pi_email: str
    pi_department: str
    project_code: str
    project_name: str
    fund_org: str
    cost_center: str
    reference_1_label: str
    reference_1: str
    reference_2_label: str
    reference_2: str
    list_total: Decimal
    discount_total: Decimal
    billed_total: Decimal
    held_back_count: int
    held_back_amount: Decimal
    lines: list[LineData]
    details: list[list[Any]]
    replaces: str = ""
    source_names: dict[str, str] | None = None
    draft: bool = False  # a preview (generate --dry-run): DRAFT across every page, nothing issued
    branding: Branding = field(default_factory=Branding)  # logo, address, colours, notes

    @property
    def label(self) -> str:
        return f"{self.number} v{self.version}"
