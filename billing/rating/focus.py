"""Rated usage as a FOCUS 1.2 CSV: what `usage ... --focus-out` writes, and what the ingest reads.

One row per rated resource and unit. ListCost is the full price (PricingQuantity × ListUnitPrice);
BilledCost and EffectiveCost are what the PI pays after the free allowance and subsidies;
ContractedCost equals ListCost (no negotiated price on premises). Tags name the rate, the free
allowance used and every subsidy with the amount it paid, so the file explains itself.
"""

from __future__ import annotations

import csv
import json
from decimal import Decimal
from pathlib import Path

from billing.models import BillingSettings, Source

from .pricing import RatedRow
from .units import month_index, month_of, unit_label

COLUMNS = [
    "BillingAccountId",
    "BillingAccountName",
    "BillingCurrency",
    "BillingPeriodStart",
    "BillingPeriodEnd",
    "ChargePeriodStart",
    "ChargePeriodEnd",
    "ChargeCategory",
    "ChargeDescription",
    "ProviderName",
    "PublisherName",
    "InvoiceIssuerName",
    "ServiceCategory",
    "ServiceName",
    "ResourceId",
    "ResourceName",
    "SubAccountId",
    "SkuId",
    "ConsumedQuantity",
    "ConsumedUnit",
    "PricingQuantity",
    "PricingUnit",
    "ListUnitPrice",
    "ContractedUnitPrice",
    "ListCost",
    "ContractedCost",
    "BilledCost",
    "EffectiveCost",
    "Tags",
]


def _text(value: Decimal) -> str:
    return format(value, "f")


def row_tags(row: RatedRow, settings: BillingSettings) -> dict[str, str]:
    tags: dict[str, str] = {}
    if row.by_project_tag:
        tags[settings.tag_project_id] = row.project_code
    tags["rate"] = f"{_text(row.price)} per {row.unit}" + (f" on {row.rate.tier}" if row.rate.tier else "")
    tags["rate_from"] = row.rate.effective_from
    if row.free_quantity:
        tags["free_allowance"] = f"{_text(row.free_quantity.normalize())} {unit_label(row.unit)}"
    if row.subsidies:
        tags["subsidies"] = "; ".join(a.subsidy.name for a in row.subsidies)
        for applied in row.subsidies:
            tags[f"subsidy:{applied.subsidy.name}"] = _text(applied.amount)
    tags.update(row.usage.detail)
    return tags


def focus_rows(
    rows: list[RatedRow], *, source: Source, period: str, settings: BillingSettings
) -> list[list[str]]:
    start = f"{period}-01T00:00:00Z"
    end = f"{month_of(month_index(period) + 1)}-01T00:00:00Z"
    organisation = settings.organization_name
    out = []
    for row in rows:
        usage = row.usage
        quantity = _text(row.quantity)
        unit = unit_label(row.unit)
        billed = _text(row.billed)
        out.append(
            [
                source.slug,
                source.display_name,
                settings.currency_code,
                start,
                end,
                start,
                end,
                "Usage",
                f"{row.quantity.normalize():f} {unit} at {_text(row.price)} per {row.unit}",
                organisation,
                organisation,
                organisation,
                usage.service_category,
                usage.service_name,
                usage.resource_id,
                row.resource_name,
                usage.sub_account,
                f"{source.slug}:{row.unit}:{row.rate.tier or '*'}",
                quantity,
                unit,
                quantity,
                unit,
                _text(row.price),
                _text(row.price),
                _text(row.list_cost),
                _text(row.list_cost),
                billed,
                billed,
                json.dumps(row_tags(row, settings), ensure_ascii=False, sort_keys=True),
            ]
        )
    return out


def write_focus(
    path: Path, rows: list[RatedRow], *, source: Source, period: str, settings: BillingSettings
) -> None:
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(COLUMNS)
        writer.writerows(focus_rows(rows, source=source, period=period, settings=settings))
