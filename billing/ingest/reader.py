"""Reading FOCUS files: CSV, CSV.gz or Parquet, streamed in record batches of strings.

Headers are matched case-insensitively (and a few FOCUS 1.0-preview names are
accepted), every column is read as text so that ids such as 12-digit AWS accounts stay
strings and money is parsed exactly later, and `NULL` literals and empty cells are null.
pandas' own read_csv cannot stream with the pyarrow engine, so this uses pyarrow.csv directly.
"""

from __future__ import annotations

import codecs
import csv
import gzip
import io
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pacsv

from .errors import IngestError, RowError, RowErrorLog, rows_refused

# Canonical FOCUS names of every column the ingest uses.
COLUMNS = [
    "BillingPeriodStart",
    "BillingPeriodEnd",
    "ChargePeriodStart",
    "ChargePeriodEnd",
    "ChargeCategory",
    "ListCost",
    "ContractedCost",
    "BilledCost",
    "EffectiveCost",
    "ConsumedQuantity",
    "ConsumedUnit",
    "PricingQuantity",
    "PricingUnit",
    "ResourceId",
    "ResourceName",
    "ServiceName",
    "ServiceCategory",
    "SubAccountId",
    "RegionId",
    "SkuId",
    "Tags",
    "BillingCurrency",
]
REQUIRED = ["BillingPeriodStart", "BilledCost"]
IDENTIFIERS = ["ResourceId", "ResourceName", "ServiceName"]
# Names used by FOCUS 1.0-preview and some exporters, mapped to the 1.x names.
ALIASES = {
    "region": "RegionId",
    "usagequantity": "ConsumedQuantity",
    "usageunit": "ConsumedUnit",
    "chargetype": "ChargeCategory",
    "amortizedcost": "EffectiveCost",
}
NULL_VALUES = ["", "NULL", "null", "Null", "None", "NaN", "nan", "N/A"]
_CANONICAL = {name.lower(): name for name in COLUMNS}
# A FOCUS header is a few kilobytes; these bound what is read before the file is judged.
MAX_HEADER_BYTES = 1024 * 1024
MAX_HEADER_NAME = 128 * 1024  # also the csv module's own field limit


@dataclass
class FocusFile:
    path: Path
    header: list[str]
    columns: dict[str, str]  # canonical name -> name in the file
    name: str = ""  # the name people know the file by (the upload's, not the stored copy's)
    stream: io.BufferedIOBase | None = None  # while iter_batches reads it

    def bytes_read(self) -> int:
        """How far into the file on disk the reading is (for a progress bar; 0 when unknown)."""
        raw = getattr(self.stream, "fileobj", self.stream)  # gzip: the compressed file underneath
        if raw is None:
            return 0
        if raw.closed:  # read to its end
            return self.path.stat().st_size
        try:
            return int(raw.tell())
        except (OSError, ValueError):
            return 0

    errors: RowErrorLog = field(default_factory=RowErrorLog)
    # Whether the bytes read so far may hold a NUL (no cell holds one unless they do): the cells
    # are then checked one by one. Parquet is always checked.
    nul_seen: bool = False

    @property
    def is_parquet(self) -> bool:
        return _magic(self.path) == "parquet"


def _magic(path: Path) -> str:
    """The file's kind from its first bytes (stored copies may have lost their suffix)."""
    with open(path, "rb") as fh:
        head = fh.read(4)
    if head[:2] == b"\x1f\x8b":
        return "gzip"
    if head == b"PAR1":
        return "parquet"
    return "text"


def _open_binary(path: Path) -> io.BufferedIOBase:
    if _magic(path) == "gzip":
        return gzip.open(path, "rb")  # type: ignore[return-value]
    return open(path, "rb")


def _read_header_line(path: Path, label: str) -> str:
    try:
        with _open_binary(path) as fh:
            raw = fh.readline(MAX_HEADER_BYTES + 1)
    except (OSError, EOFError, zlib.error) as exc:
        raise IngestError(f"cannot read {label}: {exc}") from exc
    if not raw.strip():
        raise IngestError(f"{label} is empty: no header line, no data")
    if len(raw) > MAX_HEADER_BYTES:
        start = raw[:60].decode("utf-8", "replace")
        raise IngestError(
            f"{label}: line 1 (the header) is longer than {MAX_HEADER_BYTES // 1024} KiB; a FOCUS header "
            "names a few dozen columns: is this a CSV export?",
            [RowError(line=1, column="", value=start, message="header line too long")],
        )
    if raw.startswith(codecs.BOM_UTF8):
        raw = raw[len(codecs.BOM_UTF8) :]
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise IngestError(
            f"{label} is not UTF-8 text (line 1, byte {exc.start}); export it as UTF-8"
        ) from exc


def _parse_header(line: str, label: str) -> list[str]:
    text = line.rstrip("\r\n")
    try:
        return next(csv.reader([text]))
    except csv.Error as exc:
        long_names = [i for i, part in enumerate(text.split(","), start=1) if len(part) > MAX_HEADER_NAME]
        where = f", column {long_names[0]}" if long_names else ""
        part = text.split(",")[long_names[0] - 1] if long_names else text
        raise IngestError(
            f"{label}: line 1{where}: the header cannot be read ({exc}); is this a CSV export?",
            [RowError(line=1, column="", value=part[:60], message=str(exc))],
        ) from None


def open_focus_file(path: Path, name: str | None = None) -> FocusFile:
    """Check the file's header and map its columns; raises IngestError naming what is wrong.

    `name` is the file name used in messages (defaults to the path's).
    """
    label = name or path.name
    if not path.is_file():
        raise IngestError(f"file not found: {path}")
    if path.stat().st_size == 0:
        raise IngestError(f"{label} is empty: no header line, no data")
    kind = _magic(path)
    if label.lower().endswith((".xlsx", ".xls", ".zip", ".json", ".pdf")):
        raise IngestError(f"{label}: unsupported file type; expected .csv, .csv.gz or .parquet")
    if kind == "parquet":
        try:
            import pyarrow.parquet as pq

            header = list(pq.ParquetFile(path).schema_arrow.names)
        except Exception as exc:  # pyarrow raises several types for a damaged file
            raise IngestError(f"cannot read {label} as Parquet: {exc}") from exc
    else:
        header = _parse_header(_read_header_line(path, label), label)

    columns: dict[str, str] = {}
    seen: dict[str, int] = {}
    for position, raw_name in enumerate(header, start=1):
        key = raw_name.strip().lower()
        canonical = _CANONICAL.get(key) or ALIASES.get(key)
        if canonical and key in seen:
            raise IngestError(
                f"{label}: column {raw_name.strip()} appears twice in the header (columns {seen[key]} and "
                f"{position}); which one holds the {canonical}?",
                [RowError(line=1, column=raw_name.strip(), value="", message="duplicate column")],
            )
        seen.setdefault(key, position)
        # A FOCUS 1.x name wins over a 1.0-preview alias of it (a file may carry both).
        if canonical and (canonical not in columns or key == canonical.lower()):
            columns[canonical] = raw_name

    if len(header) == 1 and not columns.get("BilledCost"):
        for delimiter, separator in ((";", "semicolons"), ("\t", "tabs"), ("|", "pipes")):
            if delimiter in header[0]:
                raise IngestError(
                    f"{label}: the header is one column separated by {separator}; "
                    "FOCUS CSV files must be comma-separated"
                )
    missing = [col for col in REQUIRED if col not in columns]
    if missing:
        raise IngestError(
            f"{label}: missing required column{'s' if len(missing) > 1 else ''} {', '.join(missing)} "
            f"(columns found: {', '.join(h.strip() for h in header[:12])}{' ...' if len(header) > 12 else ''})"
        )
    if not any(col in columns for col in IDENTIFIERS):
        raise IngestError(f"{label}: no column identifies the resource; need one of {', '.join(IDENTIFIERS)}")
    return FocusFile(path=path, header=header, columns=columns, name=label)


class _CappedReader(io.RawIOBase):
    """Counts the (decompressed) bytes read, and stops past `limit`: a small gzip may inflate to
    far more text than any billing export holds. Notes whether any NUL byte went by."""

    def __init__(self, raw: io.BufferedIOBase, limit: int, focus: FocusFile) -> None:
        self.raw, self.limit, self.total, self.exceeded, self.focus = raw, limit, 0, False, focus

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        data = self.raw.read(size)
        self.total += len(data)
        if not self.focus.nul_seen and b"\x00" in data:
            self.focus.nul_seen = True
        if self.total > self.limit:
            self.exceeded = True
            raise OSError("decompressed size limit exceeded")
        return data

    def close(self) -> None:
        self.raw.close()
        super().close()


def iter_batches(
    focus: FocusFile, block_bytes: int, *, max_bytes: int | None = None, max_bad_rows: int | None = None
) -> Iterator[pa.RecordBatch]:
    """Yield record batches whose columns are the canonical names present, all strings (or null).

    Rows with the wrong number of fields are recorded in `focus.errors` and skipped; after
    `max_bad_rows` bad rows the file is abandoned, and past `max_bytes` of text it is refused.
    """
    canonical_by_name = {v: k for k, v in focus.columns.items()}
    if focus.is_parquet:
        focus.nul_seen = True
        yield from _iter_parquet(focus, canonical_by_name, block_bytes)
        return
    label = focus.name or focus.path.name
    abandoned = False

    def on_invalid_row(row: pacsv.InvalidRow) -> str:
        nonlocal abandoned
        focus.errors.skipped_row(
            row.number or 0,
            row.text or "",
            f"expected {row.expected_columns} fields, found {row.actual_columns}",
        )
        if max_bad_rows is not None and focus.errors.bad_rows >= max_bad_rows:
            abandoned = True
            return "error"  # stops the reader: nothing after this row is read
        return "skip"

    # use_threads=False: pyarrow only knows an invalid row's line number (InvalidRow.number) when it
    # parses serially; the streaming reader is no slower for it.
    read_options = pacsv.ReadOptions(block_size=block_bytes, use_threads=False)
    parse_options = pacsv.ParseOptions(invalid_row_handler=on_invalid_row, newlines_in_values=False)
    convert_options = pacsv.ConvertOptions(
        include_columns=list(canonical_by_name),
        column_types={name: pa.string() for name in canonical_by_name},
        null_values=NULL_VALUES,
        strings_can_be_null=True,
        quoted_strings_can_be_null=True,
    )
    raw = focus.stream = _open_binary(focus.path)
    stream = _CappedReader(raw, max_bytes if max_bytes is not None else 1 << 62, focus)
    reader = None
    failure: IngestError | None = None
    try:
        reader = pacsv.open_csv(
            stream, read_options=read_options, parse_options=parse_options, convert_options=convert_options
        )
        for batch in reader:
            yield batch.rename_columns([canonical_by_name[n] for n in batch.schema.names])
    except pa.ArrowInvalid as exc:
        failure = (
            rows_refused(label, focus.errors, abandoned=True)
            if abandoned
            else _explain_arrow_error(focus, exc)
        )
    except (OSError, EOFError, zlib.error) as exc:
        if stream.exceeded:
            failure = IngestError(
                f"{label}: more than {stream.limit:,} bytes of text once decompressed; one import "
                "takes at most that much (OPENCHARGEBACK_INGEST_MAX_BYTES)"
            )
        else:
            failure = IngestError(f"{label}: the file could not be read to its end ({exc})")
    finally:
        # The reader holds the invalid-row handler: release it here, not when an exception that
        # still refers to this frame is finally collected (pyarrow may abort if that happens at exit).
        if reader is not None:
            reader.close()
        del reader
        stream.close()
    if failure is not None:
        raise failure


def _iter_parquet(
    focus: FocusFile, canonical_by_name: dict[str, str], block_bytes: int
) -> Iterator[pa.RecordBatch]:
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    pf = pq.ParquetFile(focus.path)
    for batch in pf.iter_batches(batch_size=max(10_000, block_bytes // 400), columns=list(canonical_by_name)):
        arrays, names = [], []
        for name in batch.schema.names:
            arr = batch.column(name)
            if not pa.types.is_string(arr.type):
                arr = pc.cast(arr, pa.string())
            arrays.append(arr)
            names.append(canonical_by_name[name])
        yield pa.RecordBatch.from_arrays(arrays, names=names)


def _explain_arrow_error(focus: FocusFile, exc: Exception) -> IngestError:
    text = str(exc)
    if "UTF8" in text or "utf8" in text.lower():
        line, offset = _first_non_utf8_line(focus.path)
        if line:
            return IngestError(
                f"{focus.name or focus.path.name} is not UTF-8 text: line {line}, byte {offset} cannot be decoded; "
                "export it as UTF-8",
                [RowError(line=line, column="", value="", message="invalid UTF-8")],
            )
    return IngestError(f"{focus.name or focus.path.name}: cannot parse as CSV: {text.splitlines()[0]}")


def _first_non_utf8_line(path: Path) -> tuple[int | None, int]:
    """The line and byte (within the line) of the first bytes that are not UTF-8, reading a block
    at a time (a file may hold one enormous line)."""
    line, column, pending = 1, 0, b""
    with _open_binary(path) as fh:
        while True:
            chunk = fh.read(1 << 20)
            data = pending + chunk
            if not data:
                return None, 0
            try:
                data.decode("utf-8")
                good, pending = data, b""
            except UnicodeDecodeError as err:
                # A character cut by the block's end is completed by the next block.
                if chunk and err.end == len(data) and len(data) - err.start < 4:
                    good, pending = data[: err.start], data[err.start :]
                else:
                    before = data[: err.start]
                    if b"\n" in before:
                        return line + before.count(b"\n"), len(before) - before.rfind(b"\n") - 1
                    return line, column + len(before)
            if not chunk:
                return None, 0
            newlines = good.count(b"\n")
            line += newlines
            column = len(good) - good.rfind(b"\n") - 1 if newlines else column + len(good)
