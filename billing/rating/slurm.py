"""Slurm jobs from `sacct` output, summed into core- and GPU-seconds per (account, partition).

The file is the output of

    sacct --allocations --parsable2 --noheader \\
        --format=JobID,User,Account,Partition,QOS,AllocCPUS,AllocTRES,ElapsedRaw,Start,End,State \\
        -S 2025-03-01 -E 2025-04-01

(pipe-separated; a header line in that field order is allowed). It is read by pyarrow's
multi-threaded CSV reader, and every rule is applied to whole columns of each block, the blocks
worked out on a thread pool:

- job steps (a `.` in JobID) are skipped; a finished job with ElapsedRaw 0 charges nothing;
- states in OPENCHARGEBACK_SLURM_NOT_BILLED_STATES (default NODE_FAIL) are skipped and counted;
- a job's billable seconds are its ElapsedRaw; a job whose [Start, End) crosses a month boundary
  has ElapsedRaw split in proportion to its overlap with each month and only the period's share
  counts; a job still running (End `Unknown`) counts from Start to the end of the period or now,
  whichever is first. Timestamps are in the cluster's time zone (OPENCHARGEBACK_SLURM_TIME_ZONE);
- core-seconds = AllocCPUS × seconds; GPU-seconds = the `gres/gpu=N` count of AllocTRES (or the
  sum of `gres/gpu:TYPE=N` when no untyped count is given) × seconds.

Seconds are kept exactly: integers, or fractions for the rare job whose ElapsedRaw differs from
End − Start and that crosses a month boundary. A malformed line refuses the whole file with its
line number.
"""

from __future__ import annotations

import codecs
import datetime as dt
import os
import re
import zoneinfo
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from billing.ingest.errors import IngestError, RowError
from billing.ingest.memory import release_unused_memory
from billing.ingest.transform import Encoder

FIELDS = (
    "JobID",
    "User",
    "Account",
    "Partition",
    "QOS",
    "AllocCPUS",
    "AllocTRES",
    "ElapsedRaw",
    "Start",
    "End",
    "State",
)
USED = ("JobID", "Account", "Partition", "AllocCPUS", "AllocTRES", "ElapsedRaw", "Start", "End", "State")
SACCT_COMMAND = (
    f"sacct --allocations --parsable2 --noheader --format={','.join(FIELDS)} -S YYYY-MM-01 -E YYYY-MM-01"
)
UNKNOWN_TIMES = ("Unknown", "None", "")
TIMESTAMP_FORMAT = "%Y-%m-%dT%H:%M:%S"
_UNTYPED_GPUS = r"(?:^|,)gres/gpu=(?P<n>[0-9]+)"
_TYPED_GPUS = re.compile(r"(?:^|,)gres/gpu:[^=,]+=(?P<n>[0-9]+)")
# A job of more CPUs or a longer ElapsedRaw is not a real job (and could overflow the sums).
MAX_CPUS = 10_000_000
MAX_SECONDS = 10 * 366 * 86400
BLOCK_BYTES = 8 << 20


@dataclass
class SlurmUsage:
    """The period's share of a sacct file, per (account, partition), and what was skipped."""

    # (account, partition) -> [core-seconds, GPU-seconds, jobs]; seconds are int or Fraction.
    groups: dict[tuple[str, str], list] = field(default_factory=dict)
    lines: int = 0
    jobs: int = 0
    steps: int = 0
    billed_jobs: int = 0
    zero_length: int = 0
    outside_period: int = 0
    running: int = 0
    split: int = 0
    not_billed: Counter = field(default_factory=Counter)

    def add(self, block: _Block) -> None:
        for name, count in block.counts.items():
            setattr(self, name, getattr(self, name) + count)
        self.not_billed.update(block.not_billed)

    def summary(self) -> dict[str, object]:
        return {
            "lines": self.lines,
            "jobs": self.jobs,
            "billed_jobs": self.billed_jobs,
            "steps_skipped": self.steps,
            "zero_length": self.zero_length,
            "not_billed": dict(sorted(self.not_billed.items())),
            "outside_period": self.outside_period,
            "running": self.running,
            "split_at_month_boundary": self.split,
        }


@dataclass(frozen=True)
class PeriodWindow:
    """The period as epoch seconds (UTC), and now."""

    start: int
    end: int
    now: int
    time_zone: zoneinfo.ZoneInfo

    @classmethod
    def of(cls, period: str, time_zone: str, now: dt.datetime) -> PeriodWindow:
        try:
            zone = zoneinfo.ZoneInfo(time_zone)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            raise IngestError(f"unknown time zone {time_zone!r} (OPENCHARGEBACK_SLURM_TIME_ZONE)") from None
        year, month = (int(p) for p in period.split("-"))
        first = dt.datetime(year, month, 1, tzinfo=zone)
        last = dt.datetime(year + month // 12, month % 12 + 1, 1, tzinfo=zone)
        return cls(int(first.timestamp()), int(last.timestamp()), int(now.timestamp()), zone)


def _header_kind(path: Path, label: str) -> int:
    """1 when the first line is a header in FIELDS order, 0 when it is data; refuses anything else
    that looks like a header, an empty file and text that is not UTF-8."""
    with open(path, "rb") as fh:
        first = fh.readline(1 << 16)
    if not first.strip():
        with open(path, "rb") as fh:
            if not any(line.strip() for line in fh):
                raise IngestError(f"{label} is empty: no sacct lines")
        return 0
    if first.startswith(codecs.BOM_UTF8):
        raise IngestError(f"{label}: starts with a byte order mark; sacct writes plain UTF-8 text")
    try:
        text = first.decode("utf-8").rstrip("\r\n")
    except UnicodeDecodeError:
        raise IngestError(f"{label} is not UTF-8 text (line 1)") from None
    names = [n.strip().lower() for n in text.split("|")]
    if names and names[0] == "jobid":
        if names != [f.lower() for f in FIELDS]:
            raise IngestError(
                f"{label}: line 1 is a header with fields {text!r}; expected exactly {'|'.join(FIELDS)} "
                f"(run {SACCT_COMMAND})"
            )
        return 1
    if "|" not in text:
        raise IngestError(
            f"{label}: line 1 is not pipe-separated sacct output (run {SACCT_COMMAND})",
            [RowError(1, "", text[:200], f"expected {len(FIELDS)} fields separated by '|'")],
        )
    return 0


_TEXT = pa.dictionary(pa.int32(), pa.string())
# The fast read: numbers and timestamps converted by the CSV reader itself, names dictionary-encoded.
TYPED_COLUMNS = {
    "JobID": pa.string(),
    "Account": _TEXT,
    "Partition": _TEXT,
    "AllocCPUS": pa.int64(),
    "AllocTRES": pa.string(),
    "ElapsedRaw": pa.int64(),
    "Start": pa.timestamp("s"),
    "End": pa.timestamp("s"),
    "State": _TEXT,
}


def _options(skip_rows: int, invalid: list[int], *, threads: bool, typed: bool) -> dict[str, Any]:
    def on_invalid(row: pacsv.InvalidRow) -> str:
        invalid.append(row.number if row.number is not None else -1)
        return "skip"

    return {
        "read_options": pacsv.ReadOptions(
            column_names=list(FIELDS), skip_rows=skip_rows, block_size=BLOCK_BYTES, use_threads=threads
        ),
        "parse_options": pacsv.ParseOptions(
            delimiter="|", quote_char=False, ignore_empty_lines=False, invalid_row_handler=on_invalid
        ),
        "convert_options": pacsv.ConvertOptions(
            column_types=TYPED_COLUMNS if typed else {name: pa.string() for name in USED},
            include_columns=list(USED),
            null_values=list(UNKNOWN_TIMES) if typed else [],
            strings_can_be_null=False,
            timestamp_parsers=[pacsv.ISO8601],
        ),
    }


def _read_table(path: Path, skip_rows: int, invalid: list[int]) -> pa.Table:
    """The whole file at once, with every core (several times faster than streaming it): typed by
    the reader when every value converts, else as text, which the checks then report line by line."""
    try:
        return pacsv.read_csv(path, **_options(skip_rows, invalid, threads=True, typed=True))
    except pa.ArrowInvalid as exc:
        if "conversion error" not in str(exc).lower():
            raise
    invalid.clear()
    return pacsv.read_csv(path, **_options(skip_rows, invalid, threads=True, typed=False))


def _codes(column: pa.Array) -> tuple[list[str], np.ndarray]:
    """(distinct values, index of each row's value) of a text column, dictionary-encoded or not."""
    encoded = column if pa.types.is_dictionary(column.type) else pc.dictionary_encode(column)
    return encoded.dictionary.to_pylist(), encoded.indices.to_numpy(zero_copy_only=False)


class _Errors:
    """Row errors by row index (turned into line numbers at the end), at most MAX_ROW_ERRORS kept."""

    def __init__(self) -> None:
        self.items: list[tuple[int, str, str, str]] = []
        self.total = 0

    def add(self, rows: np.ndarray, column: pa.Array, name: str, message: str) -> None:
        if not len(rows):
            return
        self.total += len(rows)
        room = IngestError.MAX_ROW_ERRORS - len(self.items)
        if room <= 0:
            return
        values = column.take(pa.array(rows[:room])).to_pylist()
        self.items += [(int(r), name, v or "", message) for r, v in zip(rows[:room], values, strict=True)]

    def merge(self, other: _Errors, offset: int) -> None:
        """Another block's errors (numbered from 0 in that block), numbered from `offset`."""
        self.total += other.total
        room = IngestError.MAX_ROW_ERRORS - len(self.items)
        self.items += [(offset + r, name, value, message) for r, name, value, message in other.items[:room]]


def _ints(column: pa.Array, jobs: np.ndarray, name: str, limit: int, errors: _Errors) -> np.ndarray:
    """Non-negative integers of a column (0 where not a job line); bad values are reported."""
    if pa.types.is_integer(column.type):
        missing = pc.is_null(column).to_numpy(zero_copy_only=False)
        errors.add(np.nonzero(jobs & missing)[0], column, name, "not a whole number")
        values = pc.fill_null(column, 0).to_numpy(zero_copy_only=False)
    else:
        good = pc.match_substring_regex(column, r"^-?[0-9]{1,18}$").to_numpy(zero_copy_only=False)
        errors.add(np.nonzero(jobs & ~good)[0], column, name, "not a whole number")
        values = pc.cast(pc.if_else(pa.array(good), column, "0"), pa.int64()).to_numpy(zero_copy_only=False)
    values = np.where(jobs, values, 0)
    bad = (values < 0) | (values > limit)
    errors.add(np.nonzero(bad)[0], column, name, f"out of range (0 to {limit:,})")
    return np.where(bad, 0, values)


def _times(column: pa.Array, jobs: np.ndarray, name: str, errors: _Errors) -> tuple[np.ndarray, np.ndarray]:
    """(naive local epoch seconds, known mask); 'Unknown', 'None' and '' are unknown."""
    parsed = column if pa.types.is_timestamp(column.type) else _parse_times(column, jobs, name, errors)
    known = pc.is_valid(parsed).to_numpy(zero_copy_only=False)
    seconds = pc.fill_null(pc.cast(parsed, pa.int64()), 0).to_numpy(zero_copy_only=False)
    return seconds, known


def _parse_times(column: pa.Array, jobs: np.ndarray, name: str, errors: _Errors) -> pa.Array:
    """Text timestamps parsed as the CSV reader does (ISO 8601), bad ones reported (the slow path,
    taken only for a file the typed read refused)."""
    unknown = pc.is_in(column, value_set=pa.array(UNKNOWN_TIMES))
    text = pc.if_else(unknown, pa.scalar(None, pa.string()), column)
    try:
        return pc.cast(text, pa.timestamp("s"))
    except pa.ArrowInvalid:
        pass
    parsed = pc.strptime(text, format=TIMESTAMP_FORMAT, unit="s", error_is_null=True).to_pylist()
    values = text.to_pylist()
    bad = []
    for row, (value, stamp) in enumerate(zip(values, parsed, strict=True)):
        if value is None or stamp is not None:
            continue
        try:  # other ISO 8601 forms ("2025-03-01 10:00:00", "...Z") the reader accepts too
            parsed[row] = pc.cast(pa.array([value]), pa.timestamp("s"))[0].as_py()
        except pa.ArrowInvalid:
            bad.append(row)
    rows = np.array(bad, dtype=np.int64)
    errors.add(rows[jobs[rows]] if len(rows) else rows, column, name, "not a timestamp (YYYY-MM-DDTHH:MM:SS)")
    return pa.array(parsed, pa.timestamp("s"))


def _to_utc(naive: np.ndarray, zone: zoneinfo.ZoneInfo) -> np.ndarray:
    """Naive local epoch seconds -> real epoch seconds. In a repeated hour (clocks going back) the
    first occurrence is taken; a skipped hour moves forward."""
    if zone.key == "UTC":
        return naive
    local = pd.DatetimeIndex(naive.astype("datetime64[s]"))
    aware = local.tz_localize(
        zone.key, ambiguous=np.ones(len(naive), dtype=bool), nonexistent="shift_forward"
    )
    return np.asarray(aware.as_unit("s").asi8, dtype=np.int64)


def _gpus(tres: pa.Array, jobs: np.ndarray) -> np.ndarray:
    """GPUs of each job: gres/gpu=N, else the sum of gres/gpu:TYPE=N."""
    gpus = np.zeros(len(tres), dtype=np.int64)
    has = pc.match_substring(tres, "gres/gpu").to_numpy(zero_copy_only=False) & jobs
    if not has.any():
        return gpus
    rows = np.nonzero(has)[0]
    subset = tres.take(pa.array(rows))
    untyped = pc.struct_field(pc.extract_regex(subset, _UNTYPED_GPUS), "n")
    counts = np.array(pc.cast(pc.fill_null(untyped, "-1"), pa.int64()).to_numpy(zero_copy_only=False))
    typed_only = np.nonzero(counts < 0)[0]
    if len(typed_only):  # no untyped total: the typed counts add up
        texts = subset.take(pa.array(typed_only))
        first = pc.struct_field(pc.extract_regex(texts, _TYPED_GPUS.pattern), "n")
        counts[typed_only] = pc.cast(pc.fill_null(first, "0"), pa.int64()).to_numpy(zero_copy_only=False)
        several = np.nonzero(
            pc.greater(pc.count_substring(texts, "gres/gpu:"), 1).to_numpy(zero_copy_only=False)
        )[0]
        for row, text in zip(several.tolist(), texts.take(pa.array(several)).to_pylist(), strict=True):
            counts[typed_only[row]] = sum(int(n) for n in _TYPED_GPUS.findall(text))
    gpus[rows] = counts
    return gpus


@dataclass
class _Block:
    """What one block of lines adds up to (worked out in a worker thread; merged in order)."""

    rows: int
    counts: Counter = field(default_factory=Counter)
    not_billed: Counter = field(default_factory=Counter)
    errors: _Errors = field(default_factory=_Errors)
    accounts: list[str] = field(default_factory=list)  # the block's distinct accounts and partitions
    partitions: list[str] = field(default_factory=list)
    sums: pd.DataFrame | None = None  # per (account index, partition index): cpu, gpu, jobs
    fractions: list[tuple[int, int, Fraction, Fraction]] = field(default_factory=list)


class _Accumulator:
    """Per (account id, partition id): exact core- and GPU-seconds and jobs, over all blocks."""

    def __init__(self) -> None:
        self.frames: list[pd.DataFrame] = []
        self.fractions: dict[tuple[int, int], list] = {}

    def add(self, block: _Block, texts: Encoder) -> None:
        accounts = np.array([texts.id_of(v) for v in block.accounts], dtype=np.int64)
        partitions = np.array([texts.id_of(v) for v in block.partitions], dtype=np.int64)
        if block.sums is not None and len(block.sums):
            a = accounts[block.sums.index.get_level_values(0).to_numpy()]
            p = partitions[block.sums.index.get_level_values(1).to_numpy()]
            self.frames.append(block.sums.set_axis(pd.MultiIndex.from_arrays([a, p]), axis=0))
        for a_local, p_local, cpu, gpu in block.fractions:
            entry = self.fractions.setdefault(
                (int(accounts[a_local]), int(partitions[p_local])), [Fraction(0), Fraction(0), 0]
            )
            entry[0] += cpu
            entry[1] += gpu
            entry[2] += 1

    def totals(self, names: list[str]) -> dict[tuple[str, str], list]:
        result: dict[tuple[str, str], list] = {}
        if self.frames:
            combined = pd.concat(self.frames)
            if any(combined[c].dtype == object for c in ("cpu", "gpu")):
                combined = combined.astype({"cpu": object, "gpu": object})
            summed = combined.groupby(level=[0, 1], sort=False).sum()
            for (a, p), cpu, gpu, jobs in zip(
                summed.index,
                summed["cpu"].tolist(),
                summed["gpu"].tolist(),
                summed["jobs"].tolist(),
                strict=True,
            ):
                result[(names[a], names[p])] = [int(cpu), int(gpu), int(jobs)]
        for (a, p), (cpu, gpu, jobs) in self.fractions.items():
            entry = result.setdefault((names[a], names[p]), [0, 0, 0])
            entry[0] += cpu
            entry[1] += gpu
            entry[2] += jobs
        return result


def _group_sums(account: np.ndarray, partition: np.ndarray, cpu: np.ndarray, gpu: np.ndarray) -> pd.DataFrame:
    frame = pd.DataFrame({"a": account, "p": partition, "cpu": cpu, "gpu": gpu, "jobs": 1})
    if len(cpu) and (
        int(cpu.max()) >= 2**62 // max(len(cpu), 1) or int(gpu.max()) >= 2**62 // max(len(gpu), 1)
    ):
        frame = frame.astype({"cpu": object, "gpu": object})  # Python ints: exact whatever the size
    return frame.groupby(["a", "p"], sort=False).sum()


def read_sacct(
    path: Path,
    *,
    period: str,
    time_zone: str,
    not_billed_states: list[str],
    now: dt.datetime,
    name: str | None = None,
) -> SlurmUsage:
    """Read a sacct file and sum the period's share of every job; raises IngestError (with line
    numbers) for anything malformed."""
    label = name or path.name
    if not path.is_file():
        raise IngestError(f"file not found: {path}")
    window = PeriodWindow.of(period, time_zone, now)
    skip = _header_kind(path, label)
    not_billed = {s.strip().upper() for s in not_billed_states if s.strip()}
    usage = SlurmUsage()
    texts = Encoder()
    totals = _Accumulator()
    errors = _Errors()
    invalid: list[int] = []
    offset = 0
    try:
        table = _read_table(path, skip, invalid)
        # Blocks are worked out on every core (pyarrow and numpy release the GIL) and merged in order.
        with ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1)) as pool:
            for block in pool.map(lambda b: _rate_batch(b, window, not_billed), table.to_batches()):
                usage.add(block)
                errors.merge(block.errors, offset)
                if not errors.total:
                    totals.add(block, texts)
                offset += block.rows
        del table
        release_unused_memory()
    except pa.ArrowInvalid as exc:
        if "utf8" in str(exc).lower():
            line = _first_non_utf8_line(path)
            raise IngestError(
                f"{label} is not UTF-8 text (line {line})",
                [RowError(line, "", "", "invalid UTF-8")] if line else [],
            ) from exc
        raise IngestError(f"{label}: cannot read as sacct output: {str(exc).splitlines()[0]}") from exc
    if invalid or errors.total:
        raise _refusal(path, label, skip, invalid, errors)
    if usage.lines == 0:
        raise IngestError(f"{label} has no sacct lines")
    usage.groups = totals.totals(texts.values)
    return usage


def _refusal(path: Path, label: str, skip: int, invalid: list[int], errors: _Errors) -> IngestError:
    """The file's errors with line numbers. Lines pyarrow skipped (a wrong number of fields) are
    found again by a serial read, which knows their numbers; data rows are numbered around them."""
    wrong_fields: list[int] = []
    if invalid:
        pacsv.read_csv(path, **_options(skip, wrong_fields, threads=False, typed=False))
    wrong = np.array(sorted(n for n in wrong_fields if n > 0), dtype=np.int64)
    first_line = 1 + skip

    def line_of(row: int) -> int:
        # Row k is the k-th line (from first_line) that is not one of the skipped ones.
        line = first_line + row
        while True:
            shift = int(np.searchsorted(wrong, line, side="right")) if len(wrong) else 0
            candidate = first_line + row + shift
            if candidate == line:
                return line
            line = candidate

    rows = [RowError(line_of(r), col, value, message) for r, col, value, message in errors.items]
    room = IngestError.MAX_ROW_ERRORS - len(rows)
    rows += [
        RowError(int(n), "", _line_text(path, int(n)), f"expected {len(FIELDS)} fields separated by '|'")
        for n in wrong[: max(room, 0)]
    ]
    rows.sort(key=lambda e: e.line or 0)
    total = errors.total + len(wrong)
    return IngestError(
        f"{label}: {total} malformed line{'s' if total != 1 else ''}; nothing was rated",
        rows,
        total_errors=total,
    )


def _first_non_utf8_line(path: Path) -> int | None:
    with open(path, "rb") as fh:
        for number, raw in enumerate(fh, start=1):
            try:
                raw.decode("utf-8")
            except UnicodeDecodeError:
                return number
    return None


def _line_text(path: Path, number: int) -> str:
    with open(path, "rb") as fh:
        for n, raw in enumerate(fh, start=1):
            if n == number:
                return raw.decode("utf-8", "replace").rstrip("\r\n")[:200]
    return ""


def _rate_batch(batch: pa.RecordBatch, window: PeriodWindow, not_billed: set[str]) -> _Block:
    """One block of lines: validate, work out each job's seconds in the period, and sum them per
    (account, partition). Pure: runs in a worker thread; rows are numbered from 0 in the block."""
    block = _Block(rows=batch.num_rows)
    counts, errors = block.counts, block.errors
    job_ids = batch.column("JobID")
    blank = pc.equal(job_ids, "").to_numpy(zero_copy_only=False)
    if blank.any():  # an empty line (kept by the reader so that row numbers stay line numbers)
        rows = np.nonzero(blank)[0]
        values = zip(*(batch.column(n).take(pa.array(rows)).to_pylist() for n in USED), strict=True)
        blank[rows] = [not any(v) for v in values]
    steps = pc.match_substring(job_ids, ".").to_numpy(zero_copy_only=False)
    lines = ~blank
    counts["lines"] += int(lines.sum())
    counts["steps"] += int((steps & lines).sum())
    jobs = lines & ~steps
    no_id = jobs & pc.equal(job_ids, "").to_numpy(zero_copy_only=False)
    errors.add(np.nonzero(no_id)[0], job_ids, "JobID", "no JobID")
    account_column = batch.column("Account")
    no_account = jobs & pc.equal(account_column, "").to_numpy(zero_copy_only=False)
    errors.add(np.nonzero(no_account)[0], account_column, "Account", "no Slurm account")
    jobs &= ~no_id
    counts["jobs"] += int(jobs.sum())

    cpus = _ints(batch.column("AllocCPUS"), jobs, "AllocCPUS", MAX_CPUS, errors)
    elapsed = _ints(batch.column("ElapsedRaw"), jobs, "ElapsedRaw", MAX_SECONDS, errors)
    start, start_known = _times(batch.column("Start"), jobs, "Start", errors)
    end, end_known = _times(batch.column("End"), jobs, "End", errors)
    if errors.total:
        return block  # the file is refused; the other blocks are still checked, to report their lines

    # "CANCELLED by 1234" is in state CANCELLED.
    state_values, state_index = _codes(batch.column("State"))
    state_words = [(value.split(" ", 1)[0].upper() if value else "") for value in state_values]
    skipped_state = np.array([word in not_billed for word in state_words], dtype=bool)
    excluded = jobs & skipped_state[state_index] if len(skipped_state) else np.zeros(len(jobs), dtype=bool)
    for index, count in Counter(state_index[excluded].tolist()).items():
        block.not_billed[state_words[index]] += count
    jobs &= ~excluded

    start = _to_utc(start, window.time_zone)
    end = _to_utc(end, window.time_zone)
    running = jobs & start_known & ~end_known
    finished = jobs & start_known & end_known
    counts["zero_length"] += int((finished & (elapsed == 0)).sum())
    # A job that never started (no Start) ran for no time: with ElapsedRaw > 0 the line contradicts itself.
    errors.add(
        np.nonzero(jobs & ~start_known & (elapsed > 0))[0],
        batch.column("Start"),
        "Start",
        "no Start time but ElapsedRaw is not 0",
    )
    if errors.total:
        return block
    finished &= elapsed > 0

    p0, p1 = window.start, window.end
    seconds = np.zeros(len(jobs), dtype=np.int64)
    # Running: from Start to the end of the period or now, whichever is first.
    until = min(p1, window.now)
    running_seconds = np.clip(until - np.maximum(start, p0), 0, None)
    seconds = np.where(running, running_seconds, seconds)
    counts["running"] += int((running & (running_seconds > 0)).sum())
    counts["outside_period"] += int((running & (running_seconds == 0)).sum())
    # Finished inside the period: ElapsedRaw.
    inside = finished & (start >= p0) & (end <= p1)
    seconds = np.where(inside, elapsed, seconds)
    # Crossing a boundary: ElapsedRaw × overlap / (End − Start).
    span = end - start
    overlap = np.clip(np.minimum(end, p1) - np.maximum(start, p0), 0, None)
    crossing = finished & ~inside & (overlap > 0)
    exact = crossing & (span == elapsed)
    seconds = np.where(exact, overlap, seconds)
    instant = (
        finished & ~inside & (span <= 0) & (start >= p0) & (start < p1)
    )  # End ≤ Start: the month of Start
    seconds = np.where(instant, elapsed, seconds)
    proportional = crossing & ~exact & (span > 0)
    counts["split"] += int(crossing.sum())
    counts["outside_period"] += int((finished & ~inside & ~crossing & ~instant).sum())

    gpus = _gpus(batch.column("AllocTRES"), jobs)
    block.accounts, account = _codes(account_column)
    block.partitions, partition = _codes(batch.column("Partition"))
    billed = (seconds > 0) & ~proportional
    counts["billed_jobs"] += int(billed.sum()) + int(proportional.sum())
    block.sums = _group_sums(
        account[billed], partition[billed], cpus[billed] * seconds[billed], gpus[billed] * seconds[billed]
    )
    for row in np.nonzero(proportional)[0].tolist():
        share = Fraction(int(elapsed[row]) * int(overlap[row]), int(span[row]))
        block.fractions.append(
            (int(account[row]), int(partition[row]), share * int(cpus[row]), share * int(gpus[row]))
        )
    return block
