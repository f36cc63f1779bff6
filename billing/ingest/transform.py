"""Vectorised per-batch work: validate, parse money exactly, read tags, sum rows into charges.

Money is cast from text to decimal128(38, 10) by pyarrow (exact; no float anywhere) and
summed per charge key with pyarrow's group_by. Tags are read once per distinct value
(tags.py), so an hourly export that repeats a resource's tags a million times reads them once.
"""

from __future__ import annotations

import datetime
from collections import Counter
from dataclasses import dataclass, field
from decimal import Decimal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from .errors import RowErrorLog
from .numbers import DATABASE_LIMIT, MONEY_TYPE, parse_amounts
from .tags import ATTRIBUTION_FIELDS, TagReader

__all__ = ["ATTRIBUTION_FIELDS", "Encoder", "TagReader", "transform_batch"]

MONEY_COLUMNS = ["BilledCost", "ListCost", "ContractedCost", "EffectiveCost"]
_DATE = r"(?P<d>[0-9]{4}-(?:0[1-9]|1[0-2])-(?:0[1-9]|[12][0-9]|3[01]))"
_TIME = r"(?:[T ](?P<t>[0-2][0-9]:[0-5][0-9](?::[0-5][0-9])?)(?:\.[0-9]+)?)?"
_ZONE = r"(?:Z|[+-][0-9]{2}:?[0-9]{2}| ?UTC)?"
TIMESTAMP_REGEX = f"^{_DATE}{_TIME}{_ZONE}$"

# Charge key columns, in order: the rows that share them become one charge.
KEY_COLUMNS = [
    "period",
    "attribution",
    "sub_account_id",
    "resource_id",
    "resource_name",
    "service_name",
    "charge_category",
]


class Encoder:
    """Gives each distinct string a small integer id, the same across batches, so that
    group_by works on integers and each distinct value is handled in Python only once."""

    def __init__(self) -> None:
        self.values: list[str] = []
        self._ids: dict[str, int] = {}

    def id_of(self, value: str) -> int:
        ident = self._ids.get(value)
        if ident is None:
            ident = self._ids[value] = len(self.values)
            self.values.append(value)
        return ident

    def encode(self, column: pa.Array) -> pa.Array:
        encoded = pc.dictionary_encode(column)
        ids = np.fromiter(
            (self.id_of(v) for v in encoded.dictionary.to_pylist()),
            dtype=np.int32,
            count=len(encoded.dictionary),
        )
        return pa.array(ids).take(encoded.indices)

    def encode_text(self, column: pa.Array, empty: str = "") -> pa.Array:
        """Like encode, for a text cell: trimmed, `empty` when null or blank. The distinct values are
        trimmed, not every row; ids are given in the order of first appearance, as encode does."""
        encoded = pc.dictionary_encode(column, null_encoding="encode")
        values = pc.fill_null(pc.utf8_trim_whitespace(encoded.dictionary), "")
        if empty:
            values = pc.if_else(pc.equal(values, ""), pa.scalar(empty), values)
        ids = np.fromiter((self.id_of(v) for v in values.to_pylist()), dtype=np.int32, count=len(values))
        return pa.array(ids).take(encoded.indices)


@dataclass
class BatchStats:
    rows: int = 0
    billed_total: Decimal = Decimal(0)
    list_total: Decimal = Decimal(0)
    rounded_values: int = 0
    periods: Counter = field(default_factory=Counter)
    first_line_of_period: dict[str, int] = field(default_factory=dict)
    # The largest amount the database stores (SQLite's is smaller: see chargeback.money).
    money_limit: Decimal = DATABASE_LIMIT


def _parse_money(
    column: pa.Array, name: str, first_line: int, errors: RowErrorLog | None, stats: BatchStats
) -> pa.Array:
    """Exact amounts (numbers.py); bad ones are reported and null."""

    def report(mask: np.ndarray, message: str) -> None:
        assert errors is not None
        errors.add_where(mask, column, name, first_line, message)

    values, rounded = parse_amounts(
        column, limit=stats.money_limit, report=report if errors is not None else None
    )
    stats.rounded_values += rounded
    return values


def _parse_timestamps(
    column: pa.Array, name: str, first_line: int, errors: RowErrorLog, required: bool
) -> pa.Array:
    """Canonical 'YYYY-MM-DDTHH:MM:SS' strings (zone dropped: local time as written), null when absent.

    A batch holds few distinct timestamps (a day's or an hour's rows share theirs): each is parsed
    once, and rows take the result of their value."""
    encoded = pc.dictionary_encode(column)  # nulls stay null in the indices
    indices = encoded.indices

    def rows(mask: pa.Array) -> pa.Array:
        return pc.fill_null(mask.take(indices), False)

    values = encoded.dictionary
    matched = pc.match_substring_regex(values, TIMESTAMP_REGEX)
    bad = rows(pc.invert(matched))
    if required:
        bad = pc.or_(bad, pc.is_null(column))
    if pc.any(bad).as_py():
        errors.add_where(bad, column, name, first_line, "not a date or timestamp (YYYY-MM-DD[THH:MM:SS][Z])")
        values = pc.if_else(matched, values, pa.scalar(None, pa.string()))
    parts = pc.extract_regex(pc.fill_null(values, "0000-01-01"), TIMESTAMP_REGEX)
    dates = pc.struct_field(parts, "d")
    times = pc.struct_field(parts, "t")
    times = pc.if_else(
        pc.equal(pc.utf8_length(times), 5), pc.binary_join_element_wise(times, ":00", ""), times
    )
    times = pc.if_else(pc.equal(pc.utf8_length(times), 0), pa.scalar("00:00:00"), times)
    canonical = pc.binary_join_element_wise(dates, pc.fill_null(times, "00:00:00"), "T")
    canonical = pc.if_else(pc.is_null(values), pa.scalar(None, pa.string()), canonical)
    # Year 0 parses in Arrow but exists neither in Python nor in PostgreSQL.
    year_zero = pc.fill_null(pc.starts_with(canonical, "0000-"), False)
    if pc.any(year_zero).as_py():
        errors.add_where(rows(year_zero), column, name, first_line, "no such date or time")
        canonical = pc.if_else(year_zero, pa.scalar(None, pa.string()), canonical)
    try:
        pc.cast(canonical, pa.timestamp("s"))
    except pa.ArrowInvalid:
        # The pattern matched a date or time that does not exist (2025-02-30, 25:00): report the rows
        # instead of failing later with an internal error.
        unreal = pa.array([bool(v) and not _is_real_timestamp(v) for v in canonical.to_pylist()], pa.bool_())
        errors.add_where(rows(unreal), column, name, first_line, "no such date or time")
        canonical = pc.if_else(unreal, pa.scalar(None, pa.string()), canonical)
    return canonical.take(indices)


def _is_real_timestamp(text: str) -> bool:
    try:
        datetime.datetime.fromisoformat(text)
    except ValueError:
        return False
    return True


def _text(batch: pa.RecordBatch, name: str) -> pa.Array:
    """The column (all null when the file has none) for Encoder.encode_text."""
    if name in batch.schema.names:
        return batch.column(name)
    return pa.nulls(batch.num_rows, pa.string())


def _timestamps(canonical: pa.Array) -> pa.Array:
    return pc.cast(canonical, pa.timestamp("s"))


def transform_batch(
    batch: pa.RecordBatch,
    first_line: int,
    tag_reader: TagReader,
    texts: Encoder,
    errors: RowErrorLog,
    stats: BatchStats,
    *,
    check_nul: bool = True,
) -> pa.Table | None:
    """Validate one batch and sum its rows per charge key; None when the batch had errors.

    Text columns come back as ids into `texts`, Tags as (attribution id, tags text id).
    `check_nul=False` when the bytes read hold no NUL (the reader knows): no cell is then searched.
    """
    n = batch.num_rows
    names = batch.schema.names
    errors_before = len(errors)

    # PostgreSQL cannot store a NUL character in text; no export means one.
    for name in names if check_nul else ():
        column = batch.column(name)
        nul = pc.match_substring(column, "\x00")
        if pc.any(nul).as_py():
            errors.add_where(
                nul, column, name, first_line, "contains a NUL byte (\\x00), which cannot be stored"
            )

    billed_raw = batch.column("BilledCost")
    missing_billed = pc.is_null(billed_raw)
    if pc.any(missing_billed).as_py():
        errors.add_where(missing_billed, billed_raw, "BilledCost", first_line, "BilledCost is empty")
    money = {}
    for name in MONEY_COLUMNS:
        if name in names:
            money[name] = _parse_money(batch.column(name), name, first_line, errors, stats)
    billed = money["BilledCost"]
    # A missing list/contracted/effective cost counts as equal to the billed cost.
    for name in ("ListCost", "ContractedCost", "EffectiveCost"):
        money[name] = pc.coalesce(money[name], billed) if name in money else billed

    period_start = _parse_timestamps(
        batch.column("BillingPeriodStart"), "BillingPeriodStart", first_line, errors, True
    )
    periods = pc.utf8_slice_codeunits(pc.fill_null(period_start, ""), 0, 7)
    charge_start = (
        _parse_timestamps(batch.column("ChargePeriodStart"), "ChargePeriodStart", first_line, errors, False)
        if "ChargePeriodStart" in names
        else period_start
    )
    charge_end = (
        _parse_timestamps(batch.column("ChargePeriodEnd"), "ChargePeriodEnd", first_line, errors, False)
        if "ChargePeriodEnd" in names
        else charge_start
    )

    if "Tags" in names:
        tags_text = pc.fill_null(batch.column("Tags"), "")
        encoded = pc.dictionary_encode(tags_text)
        attribution_ids, problems = tag_reader.attribution_ids(encoded.dictionary)
        for position, message in problems:
            errors.add_where(pc.equal(encoded.indices, position), tags_text, "Tags", first_line, message)
        attribution = pa.array(attribution_ids).take(encoded.indices)
        tags = tag_reader.keep_texts(encoded)
    else:
        attribution = pa.array(np.zeros(n, dtype=np.int32))
        tags = tag_reader.keep_texts(pc.dictionary_encode(pa.array([""] * n, pa.string())))

    if len(errors) > errors_before:
        return None

    quantity_name = "ConsumedQuantity" if "ConsumedQuantity" in names else "PricingQuantity"
    if quantity_name in names:
        quantity = _parse_money(batch.column(quantity_name), quantity_name, first_line, None, BatchStats())
    else:
        quantity = pa.nulls(n, MONEY_TYPE)
    unit_name = "ConsumedUnit" if "ConsumedUnit" in names else "PricingUnit"

    stats.rows += n
    stats.billed_total += pc.sum(billed).as_py() or Decimal(0)
    stats.list_total += pc.sum(money["ListCost"]).as_py() or Decimal(0)
    for item in pc.value_counts(periods).to_pylist():
        period = item["values"]
        if period not in stats.first_line_of_period:
            stats.first_line_of_period[period] = first_line + pc.index(periods, period).as_py()
        stats.periods[period] += item["counts"]

    table = pa.table(
        {
            "period": texts.encode(periods),
            "attribution": attribution,
            "sub_account_id": texts.encode_text(_text(batch, "SubAccountId")),
            "resource_id": texts.encode_text(_text(batch, "ResourceId")),
            "resource_name": texts.encode_text(_text(batch, "ResourceName")),
            "service_name": texts.encode_text(_text(batch, "ServiceName")),
            "charge_category": texts.encode_text(_text(batch, "ChargeCategory"), empty="Usage"),
            "list_cost": money["ListCost"],
            "contracted_cost": money["ContractedCost"],
            "billed_cost": billed,
            "effective_cost": money["EffectiveCost"],
            "quantity": quantity,
            "lines": pa.array(np.ones(n, dtype=np.int64)),
            "charge_start": _timestamps(charge_start),
            "charge_end": _timestamps(charge_end),
            "service_category": texts.encode_text(_text(batch, "ServiceCategory")),
            "region": texts.encode_text(_text(batch, "RegionId")),
            "sku_id": texts.encode_text(_text(batch, "SkuId")),
            "unit": texts.encode_text(_text(batch, unit_name)),
            "tags": tags,
        }
    )
    return aggregate(table)


_AGGREGATIONS = [
    ("list_cost", "sum"),
    ("contracted_cost", "sum"),
    ("billed_cost", "sum"),
    ("effective_cost", "sum"),
    ("quantity", "sum"),
    ("lines", "sum"),
    ("charge_start", "min"),
    ("charge_end", "max"),
    # One representative value per charge for the descriptive columns.
    ("service_category", "max"),
    ("region", "max"),
    ("sku_id", "max"),
    ("unit", "max"),
    ("tags", "max"),
]


def aggregate(table: pa.Table, *, ordered: bool = False) -> pa.Table:
    """Sum rows (or earlier partial sums, which have the same columns) that share a charge key.

    `ordered`: the rows are in file order and `tags` holds text (spilled partials, spill.py): a
    charge keeps the text of its last row, as the highest tags id does in memory.
    """
    aggregations = [(c, "last" if ordered and c == "tags" else f) for c, f in _AGGREGATIONS]
    # Keeping the last value needs the rows seen in order: one thread.
    grouped = table.group_by(KEY_COLUMNS, use_threads=not ordered).aggregate(aggregations)
    suffixes = {f"{column}_{function}": column for column, function in aggregations}
    return grouped.rename_columns([suffixes.get(name, name) for name in grouped.schema.names])


def combine(partials: list[pa.Table]) -> pa.Table:
    """Re-aggregate per-batch partial sums into one row per charge key."""
    return aggregate(pa.concat_tables(partials))
