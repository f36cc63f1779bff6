"""The import itself: read a FOCUS file, sum it into charges, attribute, flag and write.

Called by billing.services.import_execute inside one transaction; raises IngestError for
anything wrong with the file (the caller records it on the Import and nothing is written).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from django.conf import settings as django_settings
from django.db import connection

from billing.models import BillingSettings, Charge, ChargeFlag, Source
from chargeback.money import SQLITE_MONEY_LIMIT

from . import attribution, numbers, reader, transform
from .attribution import Resolutions
from .background import produced_in_background
from .charge_rows import (
    IDENTITY_FIELDS,
    MONEY_NAMES,
    CarriedDecision,
    ChargeTableBuilder,
    WriteResult,
    mismatch_flags_of,
)
from .errors import IngestError, rows_refused
from .flagging import Flag, FlagContext
from .memory import release_unused_memory
from .spill import SpilledCharges, distinct_keys, partitions_for, tags_as_text
from .writer import RowTables, write_charges

__all__ = ["IDENTITY_FIELDS", "CarriedDecision", "WriteResult"]

# Re-aggregate partial sums once this many accumulate, so memory follows charges, not rows.
COMBINE_EVERY_ROWS = 1_000_000
# Past this many charges the summing goes on on disk (spill.py): memory then stops growing with the
# file. OPENCHARGEBACK_INGEST_SPILL_CHARGES overrides it.
DEFAULT_SPILL_CHARGES = 600_000
# Partial sums written to the spill at once.
SPILL_SLICE_ROWS = 100_000
# Rows handed to the vectorised transform at once (the reader's blocks are smaller).
TRANSFORM_ROWS = 100_000
# The first batches are smaller (doubling up to TRANSFORM_ROWS): a file that is bad from its first
# rows is abandoned after a small batch, in little memory; a good file loses nothing measurable.
FIRST_TRANSFORM_ROWS = 10_000
# Batches read ahead of the checks (each up to TRANSFORM_ROWS rows, tens of MB).
READ_AHEAD_BATCHES = 1


class ParsedFile:
    """A file read and summed into one row per charge key, not yet written.

    The charges are one table in memory, or partitions on disk once there were more than
    OPENCHARGEBACK_INGEST_SPILL_CHARGES of them (spill.py). Text columns hold ids into `texts`;
    tags holds ids into the tag reader's dictionaries in memory, and the Tags text when spilled.
    """

    def __init__(
        self,
        charges: pa.Table | None,
        stats: transform.BatchStats,
        tag_reader: transform.TagReader,
        texts: transform.Encoder,
        periods: list[str],
        spilled: SpilledCharges | None = None,
        attribution_keys: pa.Table | None = None,
    ) -> None:
        self._charges = charges
        self.stats, self.tag_reader, self.texts, self.periods = stats, tag_reader, texts, periods
        self.spilled = spilled
        self._attribution_keys = attribution_keys
        # partition -> (rows, amounts) taken off billed and effective cost (subsidies), on reading.
        self._subtracted: dict[int, list[tuple[pa.Array, pa.Array]]] = {}
        self.charge_count = (
            charges.num_rows if charges is not None else spilled.charge_count if spilled else 0
        )

    @property
    def charges(self) -> pa.Table:
        """Every charge in one table (spilled partitions are read back into memory)."""
        if self._charges is None:
            assert self.spilled is not None
            self._charges = pa.concat_tables(list(self.charge_tables()))
            self._subtracted.clear()  # applied in the table now
            self.spilled.close()
            self.spilled = None
        return self._subtracted_from(0, self._charges)

    def charge_tables(self) -> Iterator[pa.Table]:
        """The charges, a partition at a time when spilled, else the one table; with what
        subtract_from_billed took off."""
        if self.spilled is not None and self._charges is None:
            for index, table in enumerate(self.spilled.tables()):
                yield self._subtracted_from(index, table)
        else:
            yield self.charges

    def subtract_from_billed(self, partition: int, rows: pa.Array, amounts: pa.Array) -> None:
        """Take `amounts` off the billed and effective cost of the charges at `rows` (positions,
        ascending) of the partition `partition` of charge_tables(), each time it is read."""
        self._subtracted.setdefault(partition, []).append((rows, amounts))

    def _subtracted_from(self, partition: int, table: pa.Table) -> pa.Table:
        for rows, amounts in self._subtracted.get(partition, ()):
            mask = np.zeros(table.num_rows, dtype=bool)
            mask[rows.to_numpy()] = True
            for name in ("billed_cost", "effective_cost"):
                column = table.column(name).combine_chunks()
                # Exact decimal arithmetic (in 256 bits: a 128-bit difference of two 38-digit
                # values has no type), back in the column's own type (raises on overflow).
                wide = pa.decimal256(column.type.precision, column.type.scale)
                reduced = pc.cast(pc.subtract(column.take(rows).cast(wide), amounts.cast(wide)), column.type)
                table = table.set_column(
                    table.schema.get_field_index(name), name, pc.replace_with_mask(column, mask, reduced)
                )
        return table

    def attribution_keys(self) -> pa.Table:
        """A table whose attribution and sub_account_id columns hold every pair the charges use."""
        if self._charges is not None or self._attribution_keys is None:
            return self.charges
        return self._attribution_keys


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


# Who wants to know how far the reading is: (bytes read, file size), e.g. the CLI's progress bar.
_progress: ContextVar[Callable[[int, int], None] | None] = ContextVar("ingest_progress", default=None)


@contextmanager
def progress_reported_to(callback: Callable[[int, int], None]) -> Iterator[None]:
    """Imports in this block report their reading progress to `callback(bytes_read, size)`."""
    token = _progress.set(callback)
    try:
        yield
    finally:
        _progress.reset(token)


def parse_file(path: Path, billing_settings: BillingSettings, name: str | None = None) -> ParsedFile:
    """Stream the file through validation and per-key summing; raises IngestError on bad input."""
    focus = reader.open_focus_file(path, name)
    report = _progress.get()
    size = path.stat().st_size
    label = focus.name
    tag_reader = transform.TagReader(
        keys={
            "pi_email": billing_settings.tag_pi_email.lower(),
            "project_code": billing_settings.tag_project_id.lower(),
            "fund_org": billing_settings.tag_fund_org.lower(),
            "cost_center": billing_settings.tag_cost_center.lower(),
            "reference_1": billing_settings.tag_reference_1.lower(),
            "reference_2": billing_settings.tag_reference_2.lower(),
        },
        prefixes=[p.lower() for p in billing_settings.tag_prefix_list],
    )
    stats = transform.BatchStats(money_limit=money_limit())
    texts = transform.Encoder()
    errors = focus.errors  # bounded: the first errors by line, and counts
    max_rows, max_bad_rows = (
        django_settings.OPENCHARGEBACK_INGEST_MAX_ROWS,
        django_settings.OPENCHARGEBACK_INGEST_MAX_BAD_ROWS,
    )
    partials: list[pa.Table] = []
    pending_rows = rows_read = 0
    spill_bound = getattr(django_settings, "OPENCHARGEBACK_INGEST_SPILL_CHARGES", DEFAULT_SPILL_CHARGES)
    spilled: SpilledCharges | None = None
    first_line = 2  # line 1 is the header
    batches = reader.iter_batches(
        focus,
        django_settings.OPENCHARGEBACK_INGEST_BLOCK_BYTES,
        max_bytes=django_settings.OPENCHARGEBACK_INGEST_MAX_BYTES,
        max_bad_rows=max_bad_rows,
    )
    for batch in _read_ahead(_regrouped(batches)):
        errors.begin_batch(batch.num_rows)
        partial = transform.transform_batch(
            batch, first_line, tag_reader, texts, errors, stats, check_nul=focus.nul_seen
        )
        errors.end_batch()
        if report is not None:
            report(focus.bytes_read(), size)
        first_line += batch.num_rows
        rows_read += batch.num_rows
        if rows_read > max_rows:
            raise IngestError(
                f"{label}: more than {max_rows:,} rows; one import takes at most that many "
                "(OPENCHARGEBACK_INGEST_MAX_ROWS)"
            )
        if errors.bad_rows >= max_bad_rows:
            raise rows_refused(label, errors, abandoned=True)
        if errors:
            partials.clear()  # nothing will be imported: only the errors are still of use
            if spilled is not None:
                spilled.close()
                spilled = None
        elif partial is not None and spilled is not None:
            # Spilling: each batch's partial sums go to disk with their Tags text.
            _spill(spilled, [partial], tag_reader)
            del partial
        elif partial is not None:
            partials.append(partial)
            pending_rows += partial.num_rows
            if pending_rows >= min(COMBINE_EVERY_ROWS, spill_bound):
                # A file whose charges will pass the bound goes to disk before they are summed in
                # memory: summing 600k charges took ~400 MB beyond them (the group_by's states).
                heading_past = _expected_charges(partials, focus.bytes_read(), size) > spill_bound
                if len(partials) > 1 and not heading_past:
                    partials = [_combined(partials, tag_reader)]
                    pending_rows = partials[0].num_rows
                if heading_past or pending_rows > spill_bound:
                    spilled = SpilledCharges(
                        partitions_for(rows_read, focus.bytes_read(), size),
                        getattr(django_settings, "OPENCHARGEBACK_INGEST_SPILL_DIR", None) or None,
                    )
                    _spill(spilled, partials, tag_reader)
                    partials.clear()
                    pending_rows = 0
                    release_unused_memory()
    # The batches' temporaries: each batch reuses the memory of the one before (giving it back to the
    # system after every batch only made the next one fault it in again: ~0.5 s of system time at 1M rows).
    release_unused_memory()
    if errors:
        raise rows_refused(label, errors)
    if stats.rows == 0:
        raise IngestError(f"{label} has a header but no data rows")
    tag_reader.freeze()
    if spilled is not None:
        return _finish_spilled(spilled, stats, tag_reader, texts, label)
    charges = _combined(partials, tag_reader)
    del partials
    _check_sums(charges, stats.money_limit, label)
    return ParsedFile(
        charges=charges, stats=stats, tag_reader=tag_reader, texts=texts, periods=sorted(stats.periods)
    )


def _expected_charges(partials: list[pa.Table], bytes_read: int, size: int) -> float:
    """The charges the file is heading for: those of the partial sums so far (counted, not summed),
    in proportion to the bytes still to read. Charges grow slower than rows, so this errs high:
    a file it sends to disk that would have stayed below the bound costs time, never memory."""
    return distinct_keys(partials) * max(size, 1) / max(bytes_read, 1)


def _spill(spilled: SpilledCharges, tables: list[pa.Table], tag_reader: transform.TagReader) -> None:
    """Append partial sums (in file order) to the spill with their Tags text, SPILL_SLICE_ROWS at
    a time: the first spill holds every partial sum so far, and its text and partition copies
    made whole were the peak of a large import (about 300 MB at 600k charges)."""
    for table in tables:
        for offset in range(0, table.num_rows, SPILL_SLICE_ROWS):
            piece = table.slice(offset, SPILL_SLICE_ROWS)
            spilled.add(tags_as_text(piece, tag_reader.raw_texts(piece.column("tags"))))
            del piece
            release_unused_memory()
    tag_reader.forget_texts()


def _finish_spilled(
    spilled: SpilledCharges,
    stats: transform.BatchStats,
    tag_reader: transform.TagReader,
    texts: transform.Encoder,
    label: str,
) -> ParsedFile:
    """Sum the spilled partitions into charges, checking each, and note the (attribution,
    sub-account) pairs they use, which attribution needs (and which are few)."""
    pairs = []
    try:
        for charges in spilled.finish():
            _check_sums(charges, stats.money_limit, label)
            pairs.append(
                charges.select(["attribution", "sub_account_id"])
                .group_by(["attribution", "sub_account_id"])
                .aggregate([])
            )
            del charges
            release_unused_memory()
    except BaseException:
        spilled.close()
        raise
    return ParsedFile(
        charges=None,
        stats=stats,
        tag_reader=tag_reader,
        texts=texts,
        periods=sorted(stats.periods),
        spilled=spilled,
        attribution_keys=pa.concat_tables(pairs).combine_chunks(),
    )


def money_limit() -> Decimal:
    """The largest amount this database stores: numeric(28, 10), or SQLite's 64-bit units."""
    return SQLITE_MONEY_LIMIT if connection.vendor == "sqlite" else numbers.DATABASE_LIMIT


# Charge.quantity is numeric(28, 6).
QUANTITY_LIMIT = Decimal(10) ** 22


def _check_sums(charges: pa.Table, limit: Decimal, label: str) -> None:
    """Every row fits (checked per row); a charge sums rows, and must fit too."""
    for name, most in (*((name, limit) for name in MONEY_NAMES), ("quantity", QUANTITY_LIMIT)):
        extremes = pc.min_max(charges.column(name)).as_py()
        if any(v is not None and abs(v) >= most for v in extremes.values()):
            raise IngestError(
                f"{label}: the rows of one charge add up to more than this database stores in {name} "
                f"(at most ±{most:,}); check the amounts"
            )


def _combined(partials: list[pa.Table], tag_reader: transform.TagReader) -> pa.Table:
    """The partial sums as one row per charge key, holding only the Tags values its charges use."""
    release_unused_memory()
    table = transform.combine(partials) if len(partials) > 1 else partials[0]
    partials.clear()
    table = table.set_column(
        table.schema.get_field_index("tags"), "tags", tag_reader.compact(table.column("tags"))
    )
    release_unused_memory()
    return table


def _regrouped(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
    """Join the reader's small blocks (small blocks keep its memory low) into larger batches."""
    pending: list[pa.RecordBatch] = []
    rows = 0
    target = min(FIRST_TRANSFORM_ROWS, TRANSFORM_ROWS)
    for batch in batches:
        if batch.num_rows == 0:
            continue
        pending.append(batch)
        rows += batch.num_rows
        if rows >= target:
            yield _concat(pending)
            pending, rows = [], 0
            target = min(target * 2, TRANSFORM_ROWS)
    if pending:
        yield _concat(pending)


def _read_ahead(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
    """The batches; past the first full-sized one, read a batch ahead in a thread of their own
    while this one checks and sums them (pyarrow's CSV parser, serial for its line numbers,
    releases the GIL): a 1M-row file took about 2 s less on two cores. The first, smaller batches
    are read one at a time: a file bad from its start is refused before more of it is read."""
    for batch in batches:
        yield batch
        if batch.num_rows >= TRANSFORM_ROWS:
            break
    yield from produced_in_background(batches, READ_AHEAD_BATCHES, name="focus-reader")


def _concat(batches: list[pa.RecordBatch]) -> pa.RecordBatch:
    if len(batches) == 1:
        return batches[0]
    return pa.Table.from_batches(batches).combine_chunks().to_batches()[0]


@dataclass(frozen=True)
class PeriodPart:
    """The charges of a file that go to one billing period: the rows of that month, or with an
    expected period every row (rows of other months then stay, flagged as mismatches)."""

    period: str
    rows: int
    row_periods: tuple[str, ...]  # the months the rows say; any other than `period` is a mismatch

    @property
    def mismatched(self) -> tuple[str, ...]:
        return tuple(p for p in self.row_periods if p != self.period)


def plan_periods(parsed: ParsedFile, expected: str | None) -> list[PeriodPart]:
    """Where the file's charges go. Without an expected period each month of the rows is its own
    part (a file spanning several months is split, all or nothing); with one, every row goes there,
    as the original does. The part with the most rows comes first."""
    counts = parsed.stats.periods
    if expected:
        return [PeriodPart(expected, sum(counts.values()), tuple(sorted(counts)))]
    parts = [PeriodPart(period, counts[period], (period,)) for period in sorted(counts)]
    return sorted(parts, key=lambda part: -part.rows)


def charges_of(parsed: ParsedFile, part: PeriodPart) -> Iterator[pa.Table]:
    """The summed charges of the part's rows (all of them when the part takes every month), a
    partition at a time when spilled."""
    everything = set(part.row_periods) == set(parsed.periods)
    ids = pa.array([parsed.texts.id_of(p) for p in part.row_periods], pa.int32())
    for table in parsed.charge_tables():
        yield table if everything else table.filter(pc.is_in(table.column("period"), value_set=ids))


def resolve_attributions(parsed: ParsedFile, source: Source, context: FlagContext) -> Resolutions:
    """Who pays for each charge of the file (see attribution.py); creates PIs and projects first seen."""
    resolutions = attribution.resolve_attributions(
        parsed.attribution_keys(), parsed.tag_reader, parsed.texts, source, context
    )
    release_unused_memory()
    return resolutions


def build_and_write(
    parsed: ParsedFile,
    part: PeriodPart,
    *,
    period_id: int,
    source: Source,
    import_id: int,
    resolved: Resolutions,
    context: FlagContext,
    carried: dict[tuple, list[CarriedDecision]],
) -> WriteResult:
    """Write the charges of one part of the parsed file into its period; returns totals and the
    flags of flagged charges. Rows of another month than the part's are flagged as mismatches."""
    result = WriteResult()
    builder = ChargeTableBuilder(
        texts=parsed.texts,
        tag_reader=parsed.tag_reader,
        resolved=resolved,
        context=context,
        source=source,
        period_id=period_id,
        import_id=import_id,
        carried=carried,
        mismatch_flags=mismatch_flags_of(parsed.texts, part.mismatched),
        result=result,
    )
    tables = builder.tables(charges_of(parsed, part))
    result.charges = write_charges(RowTables(tables), expected_rows=parsed.charge_count)
    return result


def charge_identities(import_id: int, **filters: object) -> Iterator[tuple[int, tuple]]:
    """(id, identity) of the import's charges, identity in IDENTITY_FIELDS order."""
    for row in Charge.objects.filter(import_run_id=import_id, **filters).values_list("id", *IDENTITY_FIELDS):
        yield row[0], tuple(row[1:])


def write_flags(import_id: int, flags: dict[tuple, list[Flag]]) -> None:
    """Record every flag reason of the import's flagged charges (matched by identity and summary)."""
    if not flags:
        return
    rows = [
        ChargeFlag(charge_id=charge_id, reason=flag.reason, rule_id=flag.rule_id, detail=flag.detail[:300])
        for charge_id, *key in Charge.objects.filter(
            import_run_id=import_id, flag_summary__gt=""
        ).values_list("id", *IDENTITY_FIELDS, "flag_summary")
        for flag in flags.get(tuple(key), ())
    ]
    ChargeFlag.objects.bulk_create(rows, batch_size=5000)
