"""Storage quotas from a CSV report, averaged over the period per (project, storage class).

The file has a header with `project` (a mapped sub-account or a project id), one of `used_bytes`,
`used_gb` or `used_tb` (SI: 10⁹ and 10¹² bytes), and optionally `class` (the tier) and `date`
(YYYY-MM-DD); any column order, names matched case-insensitively. The period's quantity of a
(project, class) is the mean of its samples dated inside the period; a sample without a date is
the month's value. Samples of other months are skipped and counted. Bytes are kept exactly
(fractions); the rate's unit decides the quantity (billing/rating/pricing.py).
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import re
from collections import defaultdict
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from fractions import Fraction
from pathlib import Path

from billing.ingest.errors import IngestError, RowError

from .pricing import UsageRow

AMOUNT_COLUMNS = {"used_bytes": 1, "used_gb": 10**9, "used_tb": 10**12}
_NUMBER = re.compile(r"^\+?[0-9]+(\.[0-9]+)?$")


def _is_date(text: str) -> bool:
    if not re.fullmatch(r"[0-9]{4}-[0-9]{2}-[0-9]{2}", text):
        return False
    try:
        dt.date.fromisoformat(text)
    except ValueError:
        return False
    return True


@dataclass
class StorageUsage:
    rows: list[UsageRow] = field(default_factory=list)
    lines: int = 0
    samples: int = 0
    other_months: int = 0

    def summary(self) -> dict[str, object]:
        return {
            "lines": self.lines,
            "samples_in_period": self.samples,
            "samples_other_months": self.other_months,
            "resources": len(self.rows),
        }


def _columns(header: list[str], label: str) -> dict[str, int]:
    found = {name.strip().lower(): i for i, name in reversed(list(enumerate(header)))}
    if "project" not in found:
        raise IngestError(f"{label}: missing column project (columns found: {', '.join(header)})")
    amounts = [name for name in AMOUNT_COLUMNS if name in found]
    if len(amounts) != 1:
        raise IngestError(
            f"{label}: needs exactly one of the columns {', '.join(AMOUNT_COLUMNS)} "
            f"({'found ' + ', '.join(amounts) if amounts else 'none found'})"
        )
    return found


def read_quota(path: Path, *, period: str, name: str | None = None) -> StorageUsage:
    """Read a quota report; raises IngestError naming each bad line."""
    label = name or path.name
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = path.read_bytes()[: exc.start].count(b"\n") + 1
        raise IngestError(f"{label} is not UTF-8 text (line {line})") from None
    reader = csv.reader(io.StringIO(text))
    header = next(reader, None)
    if not header or not any(h.strip() for h in header):
        raise IngestError(f"{label} is empty: no header line, no data")
    columns = _columns(header, label)
    amount_name = next(n for n in AMOUNT_COLUMNS if n in columns)
    scale = AMOUNT_COLUMNS[amount_name]
    usage = StorageUsage()
    errors: list[RowError] = []
    sums: dict[tuple[str, str], list] = defaultdict(lambda: [Fraction(0), 0])

    def cell(values: list[str], column: str) -> str:
        index = columns.get(column)
        return values[index].strip() if index is not None and index < len(values) else ""

    for number, values in enumerate(reader, start=2):
        if not any(v.strip() for v in values):
            continue
        usage.lines += 1
        if len(values) != len(header):
            errors.append(
                RowError(
                    number, "", ",".join(values)[:200], f"expected {len(header)} fields, found {len(values)}"
                )
            )
            continue
        project, amount, tier, date = (cell(values, c) for c in ("project", amount_name, "class", "date"))
        if not project:
            errors.append(RowError(number, "project", "", "no project"))
            continue
        if not _NUMBER.match(amount):
            errors.append(RowError(number, amount_name, amount, "not a non-negative number"))
            continue
        try:
            used = Fraction(Decimal(amount)) * scale
        except (InvalidOperation, ValueError):
            errors.append(RowError(number, amount_name, amount, "not a number"))
            continue
        if date:
            if not _is_date(date):
                errors.append(RowError(number, "date", date, "not a date (YYYY-MM-DD)"))
                continue
            if date[:7] != period:
                usage.other_months += 1
                continue
        sums[(project, tier)][0] += used
        sums[(project, tier)][1] += 1
        usage.samples += 1
    if errors:
        raise IngestError(
            f"{label}: {len(errors)} bad line{'s' if len(errors) != 1 else ''}; nothing was rated",
            errors,
            total_errors=len(errors),
        )
    if usage.lines == 0:
        raise IngestError(f"{label} has a header but no data lines")
    for (project, tier), (total, count) in sorted(sums.items()):
        usage.rows.append(
            UsageRow(
                sub_account=project,
                tier=tier,
                resource_id=f"{project}/{tier}" if tier else project,
                service_name=f"Storage {tier}" if tier else "Storage",
                service_category="Storage",
                measure=total / count,
                may_be_project=True,
                detail={"samples": str(count)},
            )
        )
    return usage
