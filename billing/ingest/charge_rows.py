"""The charges of one part of a parsed file as database-ready Arrow tables, a slice at a time.

Each table holds the writer's CHARGE_COLUMNS, in that order, as the database takes them
(writer.py): money as 10^-10 integer units on SQLite and decimal text on PostgreSQL, timestamps
as UTC text, tags as JSON text. Everything is done a column at a time with pyarrow and numpy:
Python sees only the charges that need a decision of their own, i.e. those of a flagged payer,
rows of another month than the part's, charges a flag rule matches, and those a review decision
carried over from a superseded import may apply to. A million-charge import thus costs no
per-charge Python, and the PostgreSQL writer formats the tables for COPY in C++ (pyarrow's CSV).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from decimal import Decimal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from django.db import connection

from billing.models import Charge, FlagReason, Source
from chargeback.money import SQLITE_LIMIT_MESSAGE, decode_money

from .attribution import Resolutions
from .errors import IngestError
from .flagging import Flag, FlagContext, summarize
from .memory import release_unused_memory
from .spill import is_text
from .tags import TagReader, stored_json
from .transform import ATTRIBUTION_FIELDS, Encoder
from .writer import CHARGE_COLUMNS

# Charges turned into one table at once while writing.
WRITE_SLICE_ROWS = 50_000
MONEY_NAMES = ("list_cost", "contracted_cost", "billed_cost", "effective_cost")
# Fields of the charge a flag rule can test, besides those of its payer (ATTRIBUTION_FIELDS).
RULE_FIELDS = (
    "resource_id",
    "resource_name",
    "service_name",
    "service_category",
    "charge_category",
    "sub_account_id",
    "region",
    "sku_id",
)
# Columns of the parsed charges holding ids into the file's texts (transform.Encoder).
TEXT_COLUMNS = (
    "sub_account_id",
    "resource_id",
    "resource_name",
    "service_name",
    "charge_category",
    "service_category",
    "region",
    "sku_id",
    "unit",
)
# What identifies a charge from one import to the next (review decisions carried, flags matched).
IDENTITY_FIELDS = (
    *ATTRIBUTION_FIELDS,
    "sub_account_id",
    "resource_id",
    "resource_name",
    "service_name",
    "charge_category",
)
_RESOURCE_IN_IDENTITY = IDENTITY_FIELDS.index("resource_id")


@dataclass
class WriteResult:
    charges: int = 0
    flagged: int = 0
    billed_total: Decimal = Decimal(0)
    list_total: Decimal = Decimal(0)
    # Flags of flagged charges, and decisions carried over, by charge identity.
    flags: dict[tuple, list[Flag]] = field(default_factory=dict)
    carried: dict[tuple, int] = field(default_factory=dict)


@dataclass(frozen=True)
class CarriedDecision:
    """A review decision of a superseded charge, carried to an unchanged charge of the new file."""

    state: str
    billed: Decimal
    listed: Decimal
    charge_id: int


def decimal_units(column: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """The unscaled integers of a decimal128(38, 10) column, i.e. amounts in 10^-10 units.

    The vectorised form of `chargeback.money.money_to_units` (MoneyField's SQLite encoding; a
    test keeps the two equal): decimal128 stores each value as a 128-bit little-endian integer;
    when the high word is only the sign extension of the low word, the low word is the exact
    int64 value.
    """
    parts = []
    for chunk in column.chunks if isinstance(column, pa.ChunkedArray) else [column]:
        words = np.frombuffer(chunk.buffers()[1], dtype=np.int64)[
            chunk.offset * 2 : (chunk.offset + len(chunk)) * 2
        ]
        low, high = words[0::2], words[1::2]
        if not np.array_equal(high, low >> 63):
            raise IngestError(f"an amount {SQLITE_LIMIT_MESSAGE}")
        parts.append(low)
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)


def money_for_database(column: pa.ChunkedArray | pa.Array) -> pa.Array:
    """A decimal128(38, 10) column as the database stores it: SQLite 10^-10 units as integers (see
    MoneyField), PostgreSQL decimal text."""
    if connection.vendor == "sqlite":
        return pa.array(decimal_units(column))
    cast = pc.cast(column, pa.string())
    return cast.combine_chunks() if isinstance(cast, pa.ChunkedArray) else cast


@dataclass
class ChargeTableBuilder:
    """Builds the database-ready tables of one part's charges, adding up `result` as it goes."""

    texts: Encoder
    tag_reader: TagReader
    resolved: Resolutions
    context: FlagContext
    source: Source
    period_id: int
    import_id: int
    carried: dict[tuple, list[CarriedDecision]]
    # Flags of rows whose month is not the part's, by the month's text id.
    mismatch_flags: dict[int, Flag]
    result: WriteResult

    def __post_init__(self) -> None:
        self.sqlite = connection.vendor == "sqlite"
        self.time_format = "%Y-%m-%d %H:%M:%S" if self.sqlite else "%Y-%m-%d %H:%M:%S+00"
        self.strings = pa.array(self.texts.values, pa.string())
        self.flagged, ok = Charge.ReviewState.FLAGGED.value, Charge.ReviewState.OK.value
        self.group_flags = [flags for flags, _ in self.resolved.flag_groups]
        self.group_flagged = np.array([bool(flags) for flags in self.group_flags], dtype=bool)
        self.group_state = pa.array(
            [self.flagged if flags else ok for flags in self.group_flags], pa.string()
        )
        self.group_summary = pa.array([summary for _, summary in self.resolved.flag_groups], pa.string())
        self.mismatch_ids = pa.array(list(self.mismatch_flags), pa.int32())
        # A carried decision can only apply to a charge of one of its resources.
        self.carried_resources = pa.array(
            sorted({ident[_RESOURCE_IN_IDENTITY] for ident in self.carried}), pa.string()
        )

    def tables(self, charges: Iterable[pa.Table]) -> Iterator[pa.Table]:
        for table in charges:
            self.result.billed_total += pc.sum(table.column("billed_cost")).as_py() or Decimal(0)
            self.result.list_total += pc.sum(table.column("list_cost")).as_py() or Decimal(0)
            for offset in range(0, table.num_rows, WRITE_SLICE_ROWS):
                release_unused_memory()  # the previous slice's
                yield self._table(table.slice(offset, WRITE_SLICE_ROWS).combine_chunks())

    def _money(self, column: pa.ChunkedArray) -> pa.Array:
        return money_for_database(column)

    def _timestamps(self, column: pa.ChunkedArray) -> pa.Array:
        # Formatted once per distinct value: a file's charges share few periods (a month of hours at
        # most), and strftime per charge cost about a second of 490k charges.
        encoded = pc.dictionary_encode(column.combine_chunks())
        return pc.strftime(encoded.dictionary, self.time_format).take(encoded.indices)

    def _table(self, chunk: pa.Table) -> pa.Table:
        n = chunk.num_rows
        text = {name: self.strings.take(chunk.column(name).combine_chunks()) for name in TEXT_COLUMNS}
        payer = self.resolved.payers(
            self.resolved.rows_of(chunk.column("attribution"), chunk.column("sub_account_id"))
        )
        groups = payer.column("flag_group").combine_chunks()
        money = {name: self._money(chunk.column(name)) for name in MONEY_NAMES}
        states = self.group_state.take(groups)
        summaries = self.group_summary.take(groups)
        states, summaries = self._decide(chunk, text, payer, groups, money, states, summaries)
        self.result.flagged += pc.sum(pc.equal(states, self.flagged)).as_py() or 0
        tag_column = chunk.column("tags")
        tags = (
            stored_json(pc.cast(tag_column, pa.string()).combine_chunks())
            if is_text(tag_column)
            else self.tag_reader.stored_texts_of(tag_column)
        )

        def constant(value: int) -> pa.Array:
            return pa.array(np.full(n, value, dtype=np.int64))

        columns = {
            "period_id": constant(self.period_id),
            "source_id": constant(self.source.pk),
            "import_run_id": constant(self.import_id),
            **{name: payer.column(name) for name in ("pi_id", "project_id", *ATTRIBUTION_FIELDS)},
            "attribution_source": payer.column("source"),
            **{name: text[name] for name in RULE_FIELDS},
            "quantity": pc.cast(pc.round(chunk.column("quantity"), 6), pa.string()),
            "unit": text["unit"],
            **money,
            "line_count": chunk.column("lines"),
            "charge_period_start": self._timestamps(chunk.column("charge_start")),
            "charge_period_end": self._timestamps(chunk.column("charge_end")),
            "tags": tags,
            "review_state": states,
            "flag_summary": summaries,
        }
        return pa.table([columns[name] for name in CHARGE_COLUMNS], names=CHARGE_COLUMNS)

    def _decide(
        self,
        chunk: pa.Table,
        text: dict[str, pa.Array],
        payer: pa.Table,
        groups: pa.Array,
        money: dict[str, pa.Array],
        states: pa.Array,
        summaries: pa.Array,
    ) -> tuple[pa.Array, pa.Array]:
        """The review state and flag summary of each charge, with the flags of flagged charges and
        the decisions carried noted in `result`: per charge only where flags or decisions may be."""
        n = chunk.num_rows
        need = self.group_flagged[groups.to_numpy(zero_copy_only=False)]
        period = chunk.column("period").combine_chunks()
        if self.mismatch_flags:
            need |= _mask(pc.is_in(period, value_set=self.mismatch_ids))
        rule_flags: list[list[Flag]] = []
        if self.context.rules:
            # Flag rules run column-wise on RE2: one call per rule and field for the whole slice.
            rule_flags = self.context.rule_flags_many(
                {
                    **{name: text[name].to_pylist() for name in RULE_FIELDS},
                    **{name: payer.column(name).to_pylist() for name in ATTRIBUTION_FIELDS},
                },
                [self.source.pk] * n,
            )
            need |= np.array([bool(flags) for flags in rule_flags], dtype=bool)
        if self.carried:
            need |= _mask(pc.is_in(text["resource_id"], value_set=self.carried_resources))
        rows = np.nonzero(need)[0]
        if not len(rows):
            return states, summaries

        at = pa.array(rows)
        identity = [
            *(payer.column(name).take(at).to_pylist() for name in ATTRIBUTION_FIELDS),
            *(text[name].take(at).to_pylist() for name in IDENTITY_FIELDS[len(ATTRIBUTION_FIELDS) :]),
        ]
        group_of = groups.take(at).to_pylist()
        row_periods = period.take(at).to_pylist()
        billed = money["billed_cost"].take(at).to_pylist() if self.carried else []
        listed = money["list_cost"].take(at).to_pylist() if self.carried else []
        new_states, new_summaries = states.take(at).to_pylist(), summaries.take(at).to_pylist()
        for j, i in enumerate(rows.tolist()):
            flags = self.group_flags[group_of[j]]
            mismatch = self.mismatch_flags.get(row_periods[j])
            extra = [mismatch] if mismatch else []
            if rule_flags and rule_flags[i]:
                extra += rule_flags[i]
            if extra:
                flags = flags + extra
                new_states[j], new_summaries[j] = self.flagged, summarize(flags)
            if not flags and not self.carried:
                continue
            ident = tuple(values[j] for values in identity)
            if flags:
                # Keyed with the summary too: with -p, a resource can have a charge of the period
                # and a flagged one of a straggler month, with the same identity.
                self.result.flags[(*ident, new_summaries[j])] = flags
            for decision in self.carried.get(ident, ()):
                if (decision.billed, decision.listed) == (
                    decode_money(billed[j], sqlite=self.sqlite),  # the value written, read back
                    decode_money(listed[j], sqlite=self.sqlite),
                ):
                    new_states[j] = decision.state
                    self.result.carried[ident] = decision.charge_id
                    break
        mask = np.zeros(n, dtype=bool)
        mask[rows] = True
        return (
            pc.replace_with_mask(states, pa.array(mask), pa.array(new_states, pa.string())),
            pc.replace_with_mask(summaries, pa.array(mask), pa.array(new_summaries, pa.string())),
        )


def _mask(values: pa.Array | pa.ChunkedArray) -> np.ndarray:
    return np.asarray(pc.fill_null(values, False).to_numpy(zero_copy_only=False), dtype=bool)


def mismatch_flags_of(texts: Encoder, months: Iterable[str]) -> dict[int, Flag]:
    """The flag of rows of each month not the part's, by the month's text id."""
    return {
        texts.id_of(month): Flag(FlagReason.PERIOD_MISMATCH, f"billing period mismatch (row says {month})")
        for month in months
    }
