"""Summing charges on disk once a file has more of them than memory should hold.

An hourly export of 5M rows sums to millions of charges (a resource's rows differ by a grant
number tag, say); holding them all, and every Tags value they keep, would make memory grow
with the file. Past a bound (OPENCHARGEBACK_INGEST_SPILL_CHARGES) the partial sums of each
batch are split by a hash of their charge key into partitions, appended to Arrow IPC files in
a temporary directory. A key's rows all land in one partition, so each partition is then
summed on its own, one at a time, into charges that are written one partition at a time.

A spilled partial carries its Tags as text (the in-memory path keeps ids into the batches'
dictionaries, which spilling lets go): the text of a charge is that of its last row in the file,
as in memory, because partials are appended in file order and summed keeping the last value.
"""

from __future__ import annotations

import math
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.ipc as ipc

from .transform import KEY_COLUMNS, aggregate

# Partial rows per partition aimed at (a partition is read and summed whole).
PARTITION_ROWS = 400_000
MAX_PARTITIONS = 256
TAGS_TEXT_TYPE = pa.large_string()  # the Tags values of a partition may exceed 2 GB of offsets


def partitions_for(rows_so_far: int, bytes_read: int, size: int) -> int:
    """How many partitions a file needs, from the rows read so far and how far into the file
    they are (so that a partition holds about PARTITION_ROWS partial rows)."""
    expected_rows = rows_so_far * max(size, 1) / max(bytes_read, 1)
    return max(2, min(MAX_PARTITIONS, math.ceil(expected_rows / PARTITION_ROWS)))


def key_hashes(table: pa.Table) -> np.ndarray:
    """A 64-bit hash of each row's charge key (a multiplicative hash of the key's ids)."""
    mixed = np.zeros(table.num_rows, dtype=np.uint64)
    for name in KEY_COLUMNS:
        ids = np.asarray(table.column(name).to_numpy(), dtype=np.int64).astype(np.uint64)
        mixed = (mixed ^ ids) * np.uint64(0x9E3779B97F4A7C15)
        mixed ^= mixed >> np.uint64(29)
    return mixed


def distinct_keys(tables: list[pa.Table]) -> int:
    """About how many charges these partial sums make (distinct key hashes; a collision of two
    keys' hashes, which only lowers the count by one, is vanishingly rare)."""
    if not tables:
        return 0
    return len(np.unique(np.concatenate([key_hashes(table) for table in tables])))


def _partition_of(table: pa.Table, partitions: int) -> np.ndarray:
    """The partition of each row, from its charge key."""
    return (key_hashes(table) % np.uint64(partitions)).astype(np.int64)


class SpilledCharges:
    """Partial sums, partitioned by charge key on disk; summed per partition by `finish`."""

    def __init__(self, partitions: int, directory: str | None = None) -> None:
        self._dir = tempfile.TemporaryDirectory(prefix="openchargeback-ingest-", dir=directory)
        self.partitions = partitions
        self._writers: list[ipc.RecordBatchFileWriter | None] = [None] * partitions
        self._schema: pa.Schema | None = None
        self.rows_spilled = 0
        self.charge_count = 0  # once finished
        self.finished = False

    def _path(self, partition: int, stage: str = "partials") -> Path:
        return Path(self._dir.name) / f"{stage}-{partition:04d}.arrow"

    def add(self, table: pa.Table) -> None:
        """Append partial sums (their `tags` column holding Tags text) to their partitions."""
        assert not self.finished
        if table.num_rows == 0:
            return
        table = table.combine_chunks()
        if self._schema is None:
            self._schema = table.schema
        else:
            table = table.cast(self._schema)
        partition = _partition_of(table, self.partitions)
        order = np.argsort(partition, kind="stable")  # stable: rows of a key keep their file order
        bounds = np.searchsorted(partition[order], np.arange(self.partitions + 1))
        ordered = table.take(pa.array(order))
        for index in range(self.partitions):
            start, end = int(bounds[index]), int(bounds[index + 1])
            if start == end:
                continue
            writer = self._writers[index]
            if writer is None:
                writer = self._writers[index] = ipc.new_file(str(self._path(index)), self._schema)
            writer.write_table(ordered.slice(start, end - start))
        self.rows_spilled += table.num_rows

    def finish(self) -> Iterator[pa.Table]:
        """Sum each partition into its charges (replacing its file with them); yields each
        partition's charges once, for the checks made while parsing."""
        for writer in self._writers:
            if writer is not None:
                writer.close()
        self._writers = [None] * self.partitions
        self.finished = True
        for index in range(self.partitions):
            path = self._path(index)
            if not path.exists():
                continue
            partials = _read(path)
            path.unlink()
            charges = aggregate(partials, ordered=True)
            del partials
            self.charge_count += charges.num_rows
            with ipc.new_file(str(self._path(index, "charges")), charges.schema) as writer:
                writer.write_table(charges)
            yield charges

    def tables(self) -> Iterator[pa.Table]:
        """The charges, one partition at a time (after `finish`)."""
        assert self.finished
        for index in range(self.partitions):
            path = self._path(index, "charges")
            if path.exists():
                yield _read(path)

    def close(self) -> None:
        for writer in self._writers:
            if writer is not None:
                writer.close()
        self._dir.cleanup()


def _read(path: Path) -> pa.Table:
    with pa.OSFile(str(path)) as source:
        return ipc.open_file(source).read_all()


def is_text(column: pa.ChunkedArray | pa.Array) -> bool:
    """Whether a charges table's `tags` column holds Tags text (spilled) rather than ids."""
    return pa.types.is_large_string(column.type) or pa.types.is_string(column.type)


def tags_as_text(table: pa.Table, texts: pa.Array) -> pa.Table:
    """The table with its `tags` ids replaced by their Tags text."""
    index = table.schema.get_field_index("tags")
    return table.set_column(index, pa.field("tags", TAGS_TEXT_TYPE), pc.cast(texts, TAGS_TEXT_TYPE))
