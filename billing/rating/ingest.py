"""Where rating meets the ingest (billing.services._run_import), inside the import's transaction.

- A rated file (`RatedImport`) says which imports it replaces and, once its charges are written,
  records how each was priced (ChargeRating, ChargeSubsidy) and which usage file it came from.
- Any other import of a source without rates (cloud) gets the subsidies in effect applied to its
  charges before they are written (`subsidies_apply_to_parsed`): BilledCost and EffectiveCost drop
  by what each subsidy pays, ListCost stays, and the subsidy is recorded on the charge.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from django.core.files import File
from django.db import connection
from django.db.models import QuerySet
from django.utils import timezone

from billing.ingest.charge_rows import decimal_units, money_for_database
from billing.ingest.errors import IngestError
from billing.ingest.memory import release_unused_memory
from billing.ingest.transform import KEY_COLUMNS
from billing.ingest.writer import RowTables, write_rows
from billing.models import BillingPeriod, Charge, Import, Source
from chargeback.money import ZERO, format_money

from . import selectors
from .models import ChargeRating, ChargeSubsidy, Subsidy, UsageFile
from .pricing import RatedRow
from .subsidies import Applied, SubsidyLedger

# Candidates turned into Python values at once while the ledger runs through them.
SUBSIDY_SLICE_ROWS = 50_000
# Subsidy records formatted for the database at once.
SUBSIDY_WRITE_ROWS = 50_000
# The import's charges read at once while their ids are matched to the subsidised positions.
SUBSIDY_READ_ROWS = 50_000
# The columns of a subsidy record, as written (billing.ingest.writer.write_rows).
SUBSIDY_COLUMNS = ["charge_id", "subsidy_id", "name", "percent", "amount"]

if TYPE_CHECKING:
    from billing.ingest.attribution import Resolutions
    from billing.ingest.pipeline import ParsedFile


def charge_details_delete(charges: QuerySet[Charge]) -> None:
    """Remove the rating records of charges about to be deleted (superseded imports)."""
    ChargeSubsidy.objects.filter(charge__in=charges).delete()
    ChargeRating.objects.filter(charge__in=charges).delete()


def charge_subsidies(charge_id: int, applied: list[Applied]) -> list[ChargeSubsidy]:
    """The records of what each subsidy paid of a charge (its name and percent as they were)."""
    return [
        ChargeSubsidy(
            charge_id=charge_id,
            subsidy=a.subsidy,
            name=a.subsidy.name,
            percent=a.subsidy.percent,
            amount=a.amount,
        )
        for a in applied
    ]


@dataclass
class RatedImport:
    """A rated usage file on its way through the ingest."""

    kind: str
    rows: list[RatedRow]
    replaces: list[int]
    usage_path: Path
    usage_name: str
    sha256: str
    summary: dict[str, Any]
    actor_fields: dict[str, Any]
    usage_file: UsageFile | None = None  # re-rating: the stored file; else created after the write
    dry_run: bool = False

    def after_write(self, *, record: Import, period: BillingPeriod) -> None:
        """Record how each charge of the import was priced, and the usage file it came from."""
        by_resource = {(r.usage.resource_id, r.resource_name): r for r in self.rows}
        ratings, paid = [], []
        for charge_id, resource_id, resource_name in Charge.objects.filter(import_run=record).values_list(
            "id", "resource_id", "resource_name"
        ):
            row = by_resource[(resource_id, resource_name)]
            ratings.append(
                ChargeRating(
                    charge_id=charge_id,
                    rate=row.rate,
                    unit=row.unit,
                    tier=row.usage.tier,
                    quantity=row.quantity,
                    unit_price=row.price,
                    free_quantity=row.free_quantity,
                    free_amount=row.free_amount,
                )
            )
            paid += charge_subsidies(charge_id, row.subsidies)
        ChargeRating.objects.bulk_create(ratings, batch_size=2000)
        ChargeSubsidy.objects.bulk_create(paid, batch_size=2000)
        if self.dry_run:
            return
        now = timezone.now()
        if self.usage_file is not None:
            UsageFile.objects.filter(pk=self.usage_file.pk).update(
                import_run=record, summary=self.summary, rated_at=now
            )
            self.usage_file.refresh_from_db()
            return
        usage = UsageFile(
            source=record.source,
            period=period,
            kind=self.kind,
            original_name=self.usage_name,
            sha256=self.sha256,
            size_bytes=self.usage_path.stat().st_size,
            import_run=record,
            summary=self.summary,
            rated_at=now,
            **self.actor_fields,
        )
        with open(self.usage_path, "rb") as fh:
            usage.file.save(f"{record.pk}-{Path(self.usage_name).name}", File(fh), save=False)
        usage.save()
        self.usage_file = usage


@dataclass
class ImportSubsidies:
    """Subsidies applied to an imported file's charges before they are written, kept as columns
    (not a Python object per charge: a million subsidised charges would take gigabytes).

    A charge is known by its place in the order the import writes its part's charges (`position`):
    the writer inserts them in that order, so the import's charges by ascending id are the same
    sequence; `write` checks each subsidised charge's billed amount on the way."""

    subsidies: list[Subsidy] = field(default_factory=list)
    totals: dict[str, Decimal] = field(default_factory=lambda: defaultdict(lambda: ZERO))
    charges: int = 0
    # One row per subsidy paid on a charge: position, subsidy (index into `subsidies`), amount.
    paid: pa.Table | None = None
    # One row per subsidised charge: position, its billed cost once the subsidies are off.
    billed: pa.Table | None = None

    @property
    def total(self) -> Decimal:
        return sum(self.totals.values(), ZERO)

    def warnings(self, currency: str) -> list[str]:
        return [
            f"subsidy {name}: {format_money(amount, currency)} off "
            f"{self.charges} charge{'s' if self.charges != 1 else ''}"
            for name, amount in sorted(self.totals.items())
        ]

    def write(self, import_id: int) -> None:
        """Record each subsidy on the charges written: the import's charges by ascending id are its
        positions; each subsidised charge's billed amount must be the one worked out here. The
        records go in as the charges do (COPY, or multi-row INSERT statements): through the ORM,
        1.9M of them took most of a 5M-row import's write."""
        if self.paid is None or self.billed is None:
            return
        paid = self.paid.take(pc.sort_indices(self.paid, sort_keys=[("position", "ascending")]))
        billed = self.billed.take(pc.sort_indices(self.billed, sort_keys=[("position", "ascending")]))
        # Written once: the unsorted columns go now, not after the write (about 100 MB at 2M charges).
        self.paid = self.billed = None
        wanted = billed.column("position").to_numpy()
        charge_ids = _checked_charge_ids(import_id, wanted, billed.column("billed_cost").combine_chunks())
        paid_ids = charge_ids[np.searchsorted(wanted, paid.column("position").to_numpy())]
        subsidy_ids = pa.array([subsidy.pk for subsidy in self.subsidies], pa.int64())
        names = pa.array([subsidy.name for subsidy in self.subsidies], pa.string())
        percents = pa.array([format(subsidy.percent, "f") for subsidy in self.subsidies], pa.string())

        def tables() -> Iterator[pa.Table]:
            for start in range(0, paid.num_rows, SUBSIDY_WRITE_ROWS):
                piece = paid.slice(start, SUBSIDY_WRITE_ROWS)
                index = piece.column("subsidy").combine_chunks()
                columns = {
                    "charge_id": pa.array(paid_ids[start : start + SUBSIDY_WRITE_ROWS]),
                    "subsidy_id": subsidy_ids.take(index),
                    "name": names.take(index),
                    "percent": percents.take(index),
                    "amount": money_for_database(piece.column("amount")),
                }
                yield pa.table([columns[name] for name in SUBSIDY_COLUMNS], names=SUBSIDY_COLUMNS)

        write_rows(ChargeSubsidy._meta.db_table, SUBSIDY_COLUMNS, RowTables(tables()), paid.num_rows)


def _checked_charge_ids(import_id: int, wanted: np.ndarray, expected_billed: pa.Array) -> np.ndarray:
    """The ids of the import's charges at `wanted` (ascending, distinct) of their positions by
    ascending id, each checked to bill `expected_billed`; raises IngestError when the charges
    written are not those the subsidies were worked out on. One read of the import's charges, a
    chunk at a time (a server-side cursor on PostgreSQL): only the ids wanted are kept."""
    sqlite = connection.vendor == "sqlite"
    expected_units = decimal_units(expected_billed) if sqlite else None
    ids = np.empty(len(wanted), dtype=np.int64)
    found = read = 0
    with connection.chunked_cursor() as cursor:
        cursor.execute(
            f"SELECT id, billed_cost FROM {Charge._meta.db_table} WHERE import_run_id = %s ORDER BY id",  # noqa: S608 - fixed name
            [import_id],
        )
        while found < len(wanted) and (rows := cursor.fetchmany(SUBSIDY_READ_ROWS)):
            upto = int(np.searchsorted(wanted, read + len(rows)))  # wanted[found:upto] are in this chunk
            at = (wanted[found:upto] - read).tolist()
            ids[found:upto] = [rows[i][0] for i in at]
            stored = [rows[i][1] for i in at]
            if sqlite:
                assert expected_units is not None
                matches = np.array_equal(np.array(stored, dtype=np.int64), expected_units[found:upto])
            else:
                matches = stored == expected_billed.slice(found, upto - found).to_pylist()
            if not matches:
                break
            found, read = upto, read + len(rows)
    if found < len(wanted):
        raise IngestError("the subsidies could not be matched to the charges written; nothing was imported")
    return ids


def subsidies_apply_to_parsed(
    parsed: ParsedFile,
    resolved: Resolutions,
    *,
    source: Source,
    period: str,
    row_periods: Iterable[str] | None = None,
) -> ImportSubsidies | None:
    """Apply the subsidies in effect in `period` to an imported (not rated) file's charges whose rows
    say one of `row_periods` (all of them when None: the file's part for one billing period); None
    when none apply.

    Sources with rates are left alone: their subsidies are worked out when their usage is rated.
    """
    subsidies = selectors.subsidies_in_effect(period=period, source=source)
    if not subsidies or selectors.source_is_rated(source):
        return None
    ledger = SubsidyLedger(subsidies, {})
    scope = ledger.projects_in_scope()
    months = None if row_periods is None else [parsed.texts.id_of(month) for month in row_periods]
    # Who pays, per row of the resolutions (an attribution, or an attribution and sub-account):
    # the candidates hold that row, not the payer's texts (fewer bytes a charge at millions), and
    # the resolutions' columns stay dictionary-encoded (their rows can be as many as the charges).
    codes, code_at = _distinct_and_index(resolved.table.column("project_code"))
    emails, email_at = _distinct_and_index(resolved.table.column("pi_email"))
    in_scope = (
        pc.not_equal(codes, "") if scope is None else pc.is_in(codes, value_set=pa.array(sorted(scope)))
    )
    payer_in_scope = np.asarray(pc.fill_null(in_scope, False).to_numpy(zero_copy_only=False), dtype=bool)[
        code_at
    ]
    # The candidates of every partition, a few columns each: the whole file is never in memory.
    pieces, written_before = [], 0
    for index, table in enumerate(parsed.charge_tables()):
        piece, written = _subsidy_candidates(index, table, written_before, resolved, payer_in_scope, months)
        pieces.append(piece)
        written_before += written
    candidates = pa.concat_tables(pieces)
    del pieces
    if not candidates.num_rows:
        return None
    code_names, email_names = codes.to_pylist(), emails.to_pylist()
    payer_rows = candidates.column("payer").combine_chunks()
    ledger.paid = selectors.subsidy_paid(
        subsidies=subsidies,
        projects=sorted({code_names[code_at[row]] for row in pc.unique(payer_rows).to_pylist()}),
        period=period,
    )
    # The ledger's order (a cap is used up in it): project, resource id, then the rest of the
    # charge's key — which charge it is, not where the summing put it, so a file summed in memory
    # or on disk gets the same subsidies. Texts sort by their ranks (equal texts, equal ranks).
    project_rank = pc.rank(codes, sort_keys="ascending", tiebreaker="dense").take(
        pa.array(code_at).take(payer_rows)
    )
    resource_ids = candidates.column("resource_id").combine_chunks()
    distinct_resources = pc.unique(resource_ids)
    resource_rank = pc.rank(
        pa.array(parsed.texts.values, pa.string()).take(distinct_resources),
        sort_keys="ascending",
        tiebreaker="dense",
    ).take(pc.index_in(resource_ids, value_set=distinct_resources))
    del resource_ids, distinct_resources
    order = pc.sort_indices(
        pa.table(
            {
                "project": project_rank,
                "resource": resource_rank,
                **{k: candidates.column(k) for k in KEY_COLUMNS if k != "resource_id"},
            }
        ),
        sort_keys=[
            (name, "ascending")
            for name in ("project", "resource", *(k for k in KEY_COLUMNS if k != "resource_id"))
        ],
    )
    del project_rank, resource_rank
    # Only what the ledger reads stays; its slices are taken in that order (no sorted copy).
    candidates = candidates.select(["partition", "row", "position", "billed_cost", "payer"])
    result = ImportSubsidies(subsidies=list(subsidies))
    index_of = {subsidy.pk: i for i, subsidy in enumerate(result.subsidies)}
    paid_chunks: list[pa.Table] = []
    charge_chunks: list[pa.Table] = []
    money_type = candidates.schema.field("billed_cost").type
    for start in range(0, candidates.num_rows, SUBSIDY_SLICE_ROWS):
        piece = candidates.take(order.slice(start, SUBSIDY_SLICE_ROWS)).to_pydict()
        paid_rows: dict[str, list] = {"position": [], "subsidy": [], "amount": []}
        charge_rows: dict[str, list] = {
            "partition": [],
            "row": [],
            "position": [],
            "paid": [],
            "billed_cost": [],
        }
        for i, billed in enumerate(piece["billed_cost"]):
            payer = piece["payer"][i]
            applied = ledger.apply(
                billed=billed, project_code=code_names[code_at[payer]], pi_email=email_names[email_at[payer]]
            )
            if not applied:
                continue
            total = sum((a.amount for a in applied), ZERO)
            for name, value in (
                ("partition", piece["partition"][i]),
                ("row", piece["row"][i]),
                ("position", piece["position"][i]),
                ("paid", total),
                ("billed_cost", billed - total),
            ):
                charge_rows[name].append(value)
            for a in applied:
                result.totals[a.subsidy.name] += a.amount
                paid_rows["position"].append(piece["position"][i])
                paid_rows["subsidy"].append(index_of[a.subsidy.pk])
                paid_rows["amount"].append(a.amount)
        types = {"position": pa.int64(), "subsidy": pa.int32(), "amount": money_type}
        paid_chunks.append(pa.table({name: pa.array(paid_rows[name], types[name]) for name in paid_rows}))
        types = {"partition": pa.int32(), "row": pa.int64(), "position": pa.int64()}
        charge_chunks.append(
            pa.table(
                {name: pa.array(values, types.get(name, money_type)) for name, values in charge_rows.items()}
            )
        )
    del candidates, order
    charges = pa.concat_tables(charge_chunks)
    del charge_chunks
    if not charges.num_rows:
        return None
    result.charges = charges.num_rows
    result.paid = pa.concat_tables(paid_chunks)
    result.billed = charges.select(["position", "billed_cost"])
    for partition in pc.unique(charges.column("partition")).to_pylist():
        mine = charges.filter(pc.equal(charges.column("partition"), partition))
        mine = mine.take(pc.sort_indices(mine, sort_keys=[("row", "ascending")]))
        parsed.subtract_from_billed(
            partition, mine.column("row").combine_chunks(), mine.column("paid").combine_chunks()
        )
        del mine
    parsed.stats.billed_total -= result.total
    # What the ledger freed (its candidates, the Python values of its slices) goes back to the
    # system before the charges are written: kept, it was the 5M-row import's peak (+500 MB).
    del charges, paid_chunks
    release_unused_memory()
    return result


def _distinct_and_index(column: pa.ChunkedArray | pa.Array) -> tuple[pa.Array, np.ndarray]:
    """A column's distinct values (a null last when it has nulls) and each row's index into them."""
    if isinstance(column, pa.ChunkedArray):
        column = column.unify_dictionaries() if pa.types.is_dictionary(column.type) else column
        column = column.combine_chunks()
    if not pa.types.is_dictionary(column.type):
        column = pc.dictionary_encode(column)
    values, indices = column.dictionary, column.indices
    if indices.null_count:
        indices = pc.fill_null(indices, len(values))
        values = pa.concat_arrays([values, pa.nulls(1, values.type)])
    return values, np.asarray(indices.to_numpy(zero_copy_only=False), dtype=np.int32)


def _subsidy_candidates(
    partition: int,
    table: pa.Table,
    written_before: int,
    resolved: Resolutions,
    payer_in_scope: np.ndarray,
    months: list[int] | None,
) -> tuple[pa.Table, int]:
    """The charges of one partition a subsidy may apply to (a project in scope, a month of the
    part), with what the ledger needs — each one's payer (its row of the resolutions) and its
    position in the part's write order (the partitions in turn, the rows of the part's months in
    turn: pipeline.charges_of); and how many of the partition's charges the part writes."""
    payer = resolved.rows_of(table.column("attribution"), table.column("sub_account_id"))
    in_part = (
        np.ones(table.num_rows, dtype=bool)
        if months is None
        else pc.is_in(table.column("period"), value_set=pa.array(months, table.column("period").type))
        .to_numpy(zero_copy_only=False)
        .astype(bool)
    )
    rows = np.nonzero(payer_in_scope[payer] & in_part)[0]
    rank = np.cumsum(in_part) - 1  # each row's place among the part's rows of the partition
    at = pa.array(rows)
    columns = {
        "partition": pa.array(np.full(len(rows), partition, dtype=np.int32)),
        "row": at,
        "position": pa.array(written_before + rank[rows]),
        "billed_cost": table.column("billed_cost").take(at),
        "payer": pa.array(payer[rows].astype(np.int32)),
        # The charge's key (transform.KEY_COLUMNS), for the ledger's order.
        **{name: table.column(name).take(at) for name in KEY_COLUMNS},
    }
    return pa.table(columns), int(in_part.sum())
