"""Flag rules: what a rule would flag, before it is saved."""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from chargeback.errors import Refused
from chargeback.money import ZERO

from ..models import BillingPeriod, Charge


@dataclass
class RulePreview:
    """What a flag rule would flag among a period's charges, before it is saved."""

    period: BillingPeriod
    checked: int = 0
    matched: int = 0
    matched_billed: Decimal = ZERO
    newly_flagged: int = 0  # ok charges that re-evaluation would flag
    newly_flagged_billed: Decimal = ZERO
    decided: int = 0  # approved/rejected matches: re-evaluation leaves them alone
    samples: list[dict] = field(default_factory=list)


def flag_rule_preview(
    *,
    period: BillingPeriod,
    pattern: str,
    fields: list[str],
    mode: str,
    source_id: int | None = None,
    samples: int = 25,
) -> RulePreview:
    """Run a rule that is not saved yet over the period's charges (the same matching code the
    import and re-evaluation use). Refuses an invalid regular expression with the reason."""
    from chargeback.regex import RegexError, compile_linear

    from ..ingest.flagging import CompiledRule
    from ..models import FlagRule

    try:
        regex = compile_linear(pattern)
    except RegexError as exc:
        raise Refused(f"pattern {pattern!r}: {exc}") from None
    known = {name for name, _ in FlagRule.FIELD_CHOICES}
    fields = [f for f in fields if f in known]
    if not fields:
        raise Refused("choose at least one field for the rule")
    rule = CompiledRule(
        id=0,
        name="preview",
        regex=regex,
        fields=tuple(fields),
        must_match=mode == FlagRule.Mode.FLAG_UNLESS_MATCH,
        source_id=source_id,
    )
    charges = Charge.objects.filter(period=period)
    if source_id:
        charges = charges.filter(source_id=source_id)
    preview = RulePreview(period=period)
    decided = {Charge.ReviewState.APPROVED, Charge.ReviewState.REJECTED}
    rows = charges.values_list("id", "review_state", "billed_cost", "source_id", *fields).order_by("id")
    chunk: list[tuple] = []
    for row in rows.iterator(chunk_size=5000):
        chunk.append(row)
        if len(chunk) == 5000:
            _preview_chunk(rule, fields, chunk, preview, decided, samples)
            chunk = []
    _preview_chunk(rule, fields, chunk, preview, decided, samples)
    return preview


def _preview_chunk(
    rule: Any, fields: list[str], rows: list[tuple], preview: RulePreview, decided: set, samples: int
) -> None:
    """One chunk of charges through the rule (RE2, column-wise)."""
    if not rows:
        return
    columns = {name: [row[4 + i] for row in rows] for i, name in enumerate(fields)}
    for row, flag in zip(rows, rule.applies_many(columns, [row[3] for row in rows]), strict=True):
        preview.checked += 1
        if flag is None:
            continue
        preview.matched += 1
        preview.matched_billed += row[2]
        if row[1] in decided:
            preview.decided += 1
        elif row[1] == Charge.ReviewState.OK:
            preview.newly_flagged += 1
            preview.newly_flagged_billed += row[2]
        if len(preview.samples) < samples:
            preview.samples.append(
                {"id": row[0], "state": row[1], "billed": row[2], "detail": flag.detail.split(": ", 1)[-1]}
            )
