"""Errors an import reports: a message for people, and the offending rows.

A file may hold millions of bad rows; the log of a file keeps only the first MAX_ROW_ERRORS by
line number and counts the rest, so refusing a file takes as little memory as reading it.
"""

from __future__ import annotations

import bisect
import heapq
import threading
from dataclasses import asdict, dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from chargeback.errors import Refused

MAX_ROW_ERRORS = 50


MAX_VALUE_CHARS = 200


def printable(text: str) -> str:
    """A value as a report and the database can hold it: a NUL shown as ␀ (PostgreSQL stores no
    NUL), and at most MAX_VALUE_CHARS characters (a hostile cell may be megabytes)."""
    text = text.replace("\x00", "\u2400")
    return text if len(text) <= MAX_VALUE_CHARS else text[: MAX_VALUE_CHARS - 1] + "\u2026"


@dataclass(frozen=True)
class RowError:
    line: int | None
    column: str
    value: str
    message: str

    def __post_init__(self) -> None:
        for name in ("column", "value", "message"):
            object.__setattr__(self, name, printable(getattr(self, name)))

    def as_dict(self) -> dict:
        return asdict(self)

    def __str__(self) -> str:
        where = f"line {self.line}" if self.line else "file"
        value = self.value if len(self.value) <= 80 else self.value[:77] + "..."
        col = f", column {self.column}" if self.column else ""
        val = f", value {value!r}" if self.value else ""
        return f"{where}{col}{val}: {self.message}"


class IngestError(Refused):
    """The file cannot be imported; nothing was written."""

    MAX_ROW_ERRORS = MAX_ROW_ERRORS

    def __init__(self, message: str, errors: list[RowError] | None = None, total_errors: int | None = None):
        self.errors = (errors or [])[: self.MAX_ROW_ERRORS]
        self.total_errors = total_errors if total_errors is not None else len(errors or [])
        super().__init__(message)

    @property
    def message(self) -> str:
        return str(self.args[0])

    def describe(self) -> str:
        lines = [self.message]
        lines += [f"  {err}" for err in self.errors]
        if self.total_errors > len(self.errors):
            lines.append(f"  ... and {self.total_errors - len(self.errors)} more")
        return "\n".join(lines)


class RowErrorLog:
    """The row errors of one file, in bounded memory: the `keep` errors of the lowest lines, the
    number of errors, and the number of bad rows (a row with two bad cells is one bad row).

    Line numbers: the checks count rows as if every line were a row (line = 2 + row number); rows
    the CSV reader skipped (wrong number of fields) are recorded here and shift the lines after them.
    The reader records those in its own thread, a batch ahead of the checks (pipeline.py): a lock
    keeps the two apart, and a row skipped ahead lies after every line of the batch being checked,
    so it shifts none of them.
    """

    def __init__(self, keep: int = MAX_ROW_ERRORS) -> None:
        self.keep = keep
        self.count = 0  # errors seen
        self.bad_rows = 0
        self._heap: list[tuple[int, int, RowError]] = []  # (-line, -sequence, error): the highest on top
        self._sequence = 0
        self._skipped: list[int] = []  # lines of skipped rows, ascending
        self._batch: np.ndarray | None = None
        self._lock = threading.RLock()

    def __bool__(self) -> bool:
        return self.count > 0

    def __len__(self) -> int:
        return self.count

    @property
    def errors(self) -> list[RowError]:
        """The errors kept, by line (then in the order they were found)."""
        with self._lock:
            return [error for _, _, error in sorted(self._heap, key=lambda item: (-item[0], -item[1]))]

    def line(self, nominal: int) -> int:
        """The file's line of the row counted as line `nominal` by the checks."""
        line = nominal
        with self._lock:
            for skipped in self._skipped:
                if skipped > line:
                    break
                line += 1
        return line

    def add(self, error: RowError) -> None:
        with self._lock:
            self.count += 1
            self._sequence += 1
            item = (-(error.line or 0), -self._sequence, error)
            if len(self._heap) < self.keep:
                heapq.heappush(self._heap, item)
            elif item > self._heap[0]:
                heapq.heapreplace(self._heap, item)

    def skipped_row(self, line: int, value: str, message: str) -> None:
        """A row the CSV reader could not split into the header's columns (never seen by the checks)."""
        with self._lock:
            bisect.insort(self._skipped, line)
            self.bad_rows += 1
            self.add(RowError(line=line, column="", value=value, message=message))

    def begin_batch(self, rows: int) -> None:
        self._batch = np.zeros(rows, dtype=bool)

    def end_batch(self) -> int:
        """Count the batch's bad rows; returns how many."""
        bad = int(self._batch.sum()) if self._batch is not None else 0
        with self._lock:
            self.bad_rows += bad
        self._batch = None
        return bad

    def add_where(
        self, mask: pa.Array | np.ndarray, column: pa.Array, name: str, first_line: int, message: str
    ) -> int:
        """Record an error for every row of a batch where `mask` is true; returns how many."""
        flags = (
            mask
            if isinstance(mask, np.ndarray)
            else np.asarray(pc.fill_null(mask, False).to_numpy(zero_copy_only=False), dtype=bool)
        )
        positions = np.nonzero(flags)[0]
        if not len(positions):
            return 0
        if self._batch is not None:
            self._batch |= flags
        # Only the lowest lines can be kept: a batch's first `keep` rows are enough.
        shown = positions[: self.keep]
        values = column.take(pa.array(shown, type=pa.int64())).to_pylist()
        for position, value in zip(shown.tolist(), values, strict=True):
            self.add(
                RowError(
                    line=self.line(first_line + position),
                    column=name,
                    value="" if value is None else str(value),
                    message=message,
                )
            )
        with self._lock:
            self.count += len(positions) - len(shown)
        return len(positions)


def rows_refused(label: str, log: RowErrorLog, *, abandoned: bool = False) -> IngestError:
    """The refusal of a file with bad rows, listing the first of them."""
    if abandoned:
        message = f"{label}: file abandoned after {log.bad_rows:,} malformed rows; nothing was imported"
    else:
        message = f"{label}: {log.bad_rows:,} bad row{'s' if log.bad_rows != 1 else ''}; nothing was imported"
    return IngestError(message, log.errors, log.count)
