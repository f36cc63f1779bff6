"""Vectorised per-batch work: validate, parse money exactly, read tags, sum rows into charges.

Money is cast from text to decimal128(38, 10) by pyarrow (exact; no float anywhere) and
summed per charge key with pyarrow's group_by. Tags JSON is parsed once per distinct
value, so an hourly export that repeats a resource's tags a million times parses them once.
"""

from __future__ import annotations

import datetime
import io
import json
import re
from collections import Counter
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pajson

from chargeback.money import MONEY_PLACES, quantize_money

from .errors import RowError

MONEY_TYPE = pa.decimal128(38, MONEY_PLACES)
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
ATTRIBUTION_FIELDS = ("pi_email", "project_code", "fund_org", "cost_center", "reference_1", "reference_2")
# An attribution is kept as its fields joined by this separator: one string per distinct attribution
# instead of a tuple of six (a million-row file can have hundreds of thousands). JSON text cannot
# hold it unescaped, and decoded values have it removed (_clean).
FIELD_SEPARATOR = "\x1f"
NO_ATTRIBUTION = FIELD_SEPARATOR * (len(ATTRIBUTION_FIELDS) - 1)


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


@dataclass
class TagReader:
    """Reads attribution out of Tags values (configured keys, provider prefixes tolerated)."""

    keys: dict[str, str]  # attribution field -> tag key (lower case)
    prefixes: list[str]
    # Distinct attributions (fields joined by FIELD_SEPARATOR); an attribution id indexes this list.
    attributions: list[str] = field(default_factory=lambda: [NO_ATTRIBUTION])
    # Per batch: its distinct Tags values and, per row, which one (None: one value per row).
    tag_batches: list[tuple[pa.Array, pa.Array | None]] = field(default_factory=list)
    _attribution_ids: dict[str, int] = field(default_factory=lambda: {NO_ATTRIBUTION: 0})
    _field_of_key: dict[str, int | None] = field(default_factory=dict)

    def parse(self, text: str) -> dict:
        text = text.strip()
        if not text:
            return {}
        try:
            value = json.loads(text)
        except ValueError:
            # Some Azure exports drop the outer braces: "k": "v", "k2": "v2"
            if text.startswith("{"):
                raise
            value = json.loads("{" + text + "}")
        if not isinstance(value, dict):
            raise ValueError("Tags is not a JSON object")
        return value

    def keep_texts(self, encoded: pa.DictionaryArray) -> pa.Array:
        """Ids of a batch's Tags values without a Python pass over them: the batch's distinct values
        and row indices are kept, and an id is (batch number << 32) + row number in the batch, so the
        highest id of a charge is its last row, however the file was split into batches."""
        batch = len(self.tag_batches)
        self.tag_batches.append((encoded.dictionary, encoded.indices))
        rows = np.arange(len(encoded), dtype=np.int64) + (batch << 32)
        return pa.array(rows)

    def _values(self, batch: int, rows: np.ndarray) -> pa.Array:
        values, indices = self.tag_batches[batch]
        positions = pa.array(rows) if indices is None else indices.take(pa.array(rows))
        return values.take(positions)

    def compact(self, tag_ids: pa.ChunkedArray | pa.Array) -> pa.Array:
        """Keep only the Tags values `tag_ids` still refer to (the ids of the charges summed so far),
        so that memory follows charges, not rows, when tags differ row by row (a timestamp tag).
        Returns the new ids, in the same order as the old ones, so the highest is still the latest."""
        unique, new_ids = np.unique(np.asarray(tag_ids.to_numpy()), return_inverse=True)
        batches, rows = unique >> 32, unique & 0xFFFFFFFF
        pieces = [
            # large_string: the values kept may together exceed a string array's 2 GB of offsets.
            pc.cast(self._values(int(b), rows[batches == b]), pa.large_string())
            for b in np.unique(batches)
        ]
        self.tag_batches = [(pa.concat_arrays(pieces) if pieces else pa.array([], pa.large_string()), None)]
        return pa.array(new_ids.astype(np.int64))

    def texts_of(self, tag_ids: pa.ChunkedArray | pa.Array) -> list[str]:
        """Tags values of many ids as stored JSON text ('{}' when empty, Azure's missing braces
        restored), one vectorised take per batch dictionary."""
        ids = np.asarray(tag_ids.to_numpy())
        batches, positions = ids >> 32, ids & 0xFFFFFFFF
        out: list[str] = [""] * len(ids)
        for batch in np.unique(batches):
            where = np.nonzero(batches == batch)[0]
            taken = pc.cast(self._values(int(batch), positions[where]), pa.string())
            text = pc.utf8_trim_whitespace(taken)
            text = pc.if_else(pc.equal(text, ""), "{}", text)
            bare = pc.invert(pc.starts_with(text, "{"))
            text = pc.if_else(bare, pc.binary_join_element_wise("{", text, "}", ""), text)
            for position, value in zip(where.tolist(), text.to_pylist(), strict=True):
                out[position] = value
        return out

    def _field_index(self, key: str) -> int | None:
        """Which attribution field a raw tag key feeds (cached: keys repeat on every row)."""
        if key in self._field_of_key:
            return self._field_of_key[key]
        normalised = key.strip().lower()
        for prefix in self.prefixes:
            if normalised.startswith(prefix):
                normalised = normalised[len(prefix) :]
                break
        index = None
        for i, name in enumerate(ATTRIBUTION_FIELDS):
            if self.keys[name] == normalised:
                index = i
                break
        self._field_of_key[key] = index
        return index

    def attribution_id(self, text: str) -> int:
        """Attribution id of one Tags value; raises ValueError for malformed JSON."""
        values = ["", "", "", "", "", ""]
        for key, raw in self.parse(text).items():
            index = self._field_index(str(key))
            if index is None or raw is None:
                continue
            values[index] = str(raw)
        return self._id_of(FIELD_SEPARATOR.join(_clean(v, i) for i, v in enumerate(values)))

    def attribution_columns(self) -> list[pa.Array]:
        """The attributions as one string column per ATTRIBUTION_FIELDS entry, indexed by id."""
        parts = pc.split_pattern(pa.array(self.attributions, pa.string()), FIELD_SEPARATOR)
        return [pc.list_element(parts, i) for i in range(len(ATTRIBUTION_FIELDS))]

    def _id_of(self, attribution: str) -> int:
        ident = self._attribution_ids.get(attribution)
        if ident is None:
            ident = len(self.attributions)
            self.attributions.append(attribution)
            self._attribution_ids[attribution] = ident
        return ident

    def _key_regex(self, name: str) -> str:
        prefixes = "|".join(re.escape(p) for p in self.prefixes)
        key = re.escape(self.keys[name])
        return rf'"(?i:(?:{prefixes})?{key})"\s*:\s*(?:"(?P<s>[^"]*)"|(?P<n>[^",}}\s]+))'

    def attribution_ids(
        self, texts: pa.Array, rows: pa.Array, column: pa.Array, first_line: int, errors: list[RowError]
    ) -> np.ndarray:
        """Attribution ids of distinct Tags values, vectorised.

        Plain JSON objects (no escapes) have their fields read by RE2 in C++ and are checked
        with json.loads; anything else (escapes, Azure's brace-less form) goes through JSON.
        """
        ids = np.zeros(len(texts), dtype=np.int32)
        plain = pc.fill_null(pc.match_substring_regex(texts, r"^\s*\{[^\\]*\}\s*$"), False)
        columns = []
        for index, name in enumerate(ATTRIBUTION_FIELDS):
            found = pc.extract_regex(texts, self._key_regex(name))
            value = pc.coalesce(pc.struct_field(found, "s"), pc.struct_field(found, "n"))
            value = pc.utf8_trim_whitespace(pc.fill_null(value, ""))
            value = pc.if_else(pc.match_substring_regex(value, "^(?i:null|none)$"), "", value)
            columns.append(pc.utf8_lower(value) if index == 0 else value)
        joined = pc.binary_join_element_wise(*columns, FIELD_SEPARATOR)
        encoded = pc.dictionary_encode(joined)
        id_of_joined = np.fromiter(
            (self._id_of(v) for v in encoded.dictionary.to_pylist()),
            dtype=np.int32,
            count=len(encoded.dictionary),
        )
        ids[:] = id_of_joined[encoded.indices.to_numpy(zero_copy_only=False)]
        plain_flags = plain.to_numpy(zero_copy_only=False)
        # The plain objects are checked as JSON all at once by pyarrow's C++ reader; only when that
        # fails (a bad value, or a key with values of mixed types) is each one checked on its own.
        checked = _valid_json_objects(texts.filter(plain))
        for position, text in enumerate(texts.to_pylist()):
            try:
                if plain_flags[position]:
                    if not checked and text.strip():
                        json.loads(text)
                else:
                    ids[position] = self.attribution_id(text)
            except (ValueError, TypeError) as exc:
                bad = pc.equal(rows, position)
                errors.extend(
                    _errors_where(bad, column, "Tags", first_line, f"Tags is not valid JSON ({exc})")[:5]
                )
        return ids


def _valid_json_objects(texts: pa.Array) -> bool:
    """True when every text (one JSON object each, no newlines inside) parses as JSON."""
    lines = [t for t in texts.to_pylist() if t.strip()]
    if not lines:
        return True
    try:
        pajson.read_json(
            io.BytesIO("\n".join(lines).encode()),
            read_options=pajson.ReadOptions(block_size=max(1 << 20, 2 * max(map(len, lines)))),
        )
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError):
        return False
    return True


def _clean(value: str, index: int) -> str:
    value = value.replace(FIELD_SEPARATOR, "").strip()
    if value.upper() in ("NULL", "NONE"):
        return ""
    return value.lower() if index == 0 else value


@dataclass
class BatchStats:
    rows: int = 0
    billed_total: Decimal = Decimal(0)
    list_total: Decimal = Decimal(0)
    rounded_values: int = 0
    periods: Counter = field(default_factory=Counter)
    first_line_of_period: dict[str, int] = field(default_factory=dict)


def _errors_where(
    mask: pa.Array, column: pa.Array, name: str, first_line: int, message: str
) -> list[RowError]:
    indices = pc.indices_nonzero(mask).to_pylist()[:50]
    values = column.take(pa.array(indices, type=pa.int64())).to_pylist() if indices else []
    return [
        RowError(line=first_line + i, column=name, value="" if v is None else str(v), message=message)
        for i, v in zip(indices, values, strict=True)
    ]


def _parse_money(
    column: pa.Array, name: str, first_line: int, errors: list[RowError], stats: BatchStats
) -> pa.Array:
    try:
        return pc.cast(column, MONEY_TYPE)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        pass
    # Slow path, only for a batch with a bad value or more than 10 decimal places.
    values: list[Decimal | None] = []
    for offset, text in enumerate(column.to_pylist()):
        if text is None:
            values.append(None)
            continue
        try:
            value = Decimal(text.strip())
            if not value.is_finite():
                raise InvalidOperation
        except InvalidOperation:
            errors.append(RowError(first_line + offset, name, text, "not a number"))
            values.append(None)
            continue
        rounded = quantize_money(value)
        if rounded != value:
            stats.rounded_values += 1
        if abs(rounded) >= Decimal(10) ** (38 - MONEY_PLACES):
            errors.append(RowError(first_line + offset, name, text, "amount out of range"))
            values.append(None)
            continue
        values.append(rounded)
    return pa.array(values, type=MONEY_TYPE)


def _parse_timestamps(
    column: pa.Array, name: str, first_line: int, errors: list[RowError], required: bool
) -> pa.Array:
    """Canonical 'YYYY-MM-DDTHH:MM:SS' strings (zone dropped: local time as written), null when absent."""
    matched = pc.match_substring_regex(column, TIMESTAMP_REGEX)
    bad = pc.and_(pc.is_valid(column), pc.invert(pc.fill_null(matched, False)))
    if required:
        bad = pc.or_(bad, pc.is_null(column))
    if pc.any(bad).as_py():
        errors.extend(
            _errors_where(bad, column, name, first_line, "not a date or timestamp (YYYY-MM-DD[THH:MM:SS][Z])")
        )
        column = pc.if_else(bad, pa.scalar(None, pa.string()), column)
    parts = pc.extract_regex(pc.fill_null(column, "0000-01-01"), TIMESTAMP_REGEX)
    dates = pc.struct_field(parts, "d")
    times = pc.struct_field(parts, "t")
    times = pc.if_else(
        pc.equal(pc.utf8_length(times), 5), pc.binary_join_element_wise(times, ":00", ""), times
    )
    times = pc.if_else(pc.equal(pc.utf8_length(times), 0), pa.scalar("00:00:00"), times)
    canonical = pc.binary_join_element_wise(dates, pc.fill_null(times, "00:00:00"), "T")
    canonical = pc.if_else(pc.is_null(column), pa.scalar(None, pa.string()), canonical)
    try:
        pc.cast(canonical, pa.timestamp("s"))
    except pa.ArrowInvalid:
        # The pattern matched a date or time that does not exist (2025-02-30, 25:00): report the rows
        # instead of failing later with an internal error.
        bad_values = [v for v in pc.unique(canonical).to_pylist() if v and not _is_real_timestamp(v)]
        bad = pc.fill_null(pc.is_in(canonical, pa.array(bad_values, pa.string())), False)
        errors.extend(_errors_where(bad, column, name, first_line, "no such date or time"))
        canonical = pc.if_else(bad, pa.scalar(None, pa.string()), canonical)
    return canonical


def _is_real_timestamp(text: str) -> bool:
    try:
        datetime.datetime.fromisoformat(text)
    except ValueError:
        return False
    return True


def _text(batch: pa.RecordBatch, name: str) -> pa.Array:
    if name in batch.schema.names:
        return pc.fill_null(pc.utf8_trim_whitespace(batch.column(name)), "")
    return pc.fill_null(pa.nulls(batch.num_rows, pa.string()), "")


def _timestamps(canonical: pa.Array) -> pa.Array:
    return pc.cast(canonical, pa.timestamp("s"))


def transform_batch(
    batch: pa.RecordBatch,
    first_line: int,
    tag_reader: TagReader,
    texts: Encoder,
    errors: list[RowError],
    stats: BatchStats,
) -> pa.Table | None:
    """Validate one batch and sum its rows per charge key; None when the batch had errors.

    Text columns come back as ids into `texts`, Tags as (attribution id, tags text id).
    """
    n = batch.num_rows
    names = batch.schema.names
    errors_before = len(errors)

    billed_raw = batch.column("BilledCost")
    missing_billed = pc.is_null(billed_raw)
    if pc.any(missing_billed).as_py():
        errors.extend(
            _errors_where(missing_billed, billed_raw, "BilledCost", first_line, "BilledCost is empty")
        )
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
        attribution_ids = tag_reader.attribution_ids(
            encoded.dictionary, encoded.indices, tags_text, first_line, errors
        )
        attribution = pa.array(attribution_ids).take(encoded.indices)
        tags = tag_reader.keep_texts(encoded)
    else:
        attribution = pa.array(np.zeros(n, dtype=np.int32))
        tags = tag_reader.keep_texts(pc.dictionary_encode(pa.array([""] * n, pa.string())))

    if len(errors) > errors_before:
        return None

    quantity_name = "ConsumedQuantity" if "ConsumedQuantity" in names else "PricingQuantity"
    if quantity_name in names:
        quantity = _parse_money(batch.column(quantity_name), quantity_name, first_line, [], BatchStats())
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

    category = _text(batch, "ChargeCategory")
    category = pc.if_else(pc.equal(category, ""), pa.scalar("Usage"), category)
    table = pa.table(
        {
            "period": texts.encode(periods),
            "attribution": attribution,
            "sub_account_id": texts.encode(_text(batch, "SubAccountId")),
            "resource_id": texts.encode(_text(batch, "ResourceId")),
            "resource_name": texts.encode(_text(batch, "ResourceName")),
            "service_name": texts.encode(_text(batch, "ServiceName")),
            "charge_category": texts.encode(category),
            "list_cost": money["ListCost"],
            "contracted_cost": money["ContractedCost"],
            "billed_cost": billed,
            "effective_cost": money["EffectiveCost"],
            "quantity": quantity,
            "lines": pa.array(np.ones(n, dtype=np.int64)),
            "charge_start": _timestamps(charge_start),
            "charge_end": _timestamps(charge_end),
            "service_category": texts.encode(_text(batch, "ServiceCategory")),
            "region": texts.encode(_text(batch, "RegionId")),
            "sku_id": texts.encode(_text(batch, "SkuId")),
            "unit": texts.encode(_text(batch, unit_name)),
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


def aggregate(table: pa.Table) -> pa.Table:
    """Sum rows (or earlier partial sums, which have the same columns) that share a charge key."""
    grouped = table.group_by(KEY_COLUMNS, use_threads=True).aggregate(_AGGREGATIONS)
    suffixes = {f"{column}_{function}": column for column, function in _AGGREGATIONS}
    return grouped.rename_columns([suffixes.get(name, name) for name in grouped.schema.names])


def combine(partials: list[pa.Table]) -> pa.Table:
    """Re-aggregate per-batch partial sums into one row per charge key."""
    return aggregate(pa.concat_tables(partials))
