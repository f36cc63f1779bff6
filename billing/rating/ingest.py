"""Where rating meets the ingest (billing.services._run_import), inside the import's transaction.

- A rated file (`RatedImport`) says which imports it replaces and, once its charges are written,
  records how each was priced (ChargeRating, ChargeSubsidy) and which usage file it came from.
- Any other import of a source without rates (cloud) gets the subsidies in effect applied to its
  charges before they are written (`subsidies_apply_to_parsed`): BilledCost and EffectiveCost drop
  by what each subsidy pays, ListCost stays, and the subsidy is recorded on the charge.
"""

from __future__ import annotations

from collections import defaultdict, deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.compute as pc
from django.core.files import File
from django.db.models import QuerySet
from django.utils import timezone

from billing.models import BillingPeriod, Charge, Import, Source
from chargeback.money import ZERO, format_money

from . import selectors
from .models import ChargeRating, ChargeSubsidy, UsageFile
from .pricing import RatedRow
from .subsidies import Applied, SubsidyLedger

# Candidates turned into Python values at once while the ledger runs through them.
SUBSIDY_SLICE_ROWS = 50_000

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
    """Subsidies applied to an imported file's charges before they are written."""

    # charge identity (billing.ingest.pipeline.IDENTITY_FIELDS) -> subsidies of each charge with it
    by_identity: dict[tuple, deque[list[Applied]]] = field(default_factory=lambda: defaultdict(deque))
    totals: dict[str, Decimal] = field(default_factory=lambda: defaultdict(lambda: ZERO))
    charges: int = 0

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
        """Record each subsidy on the charges written (matched by identity, in write order)."""
        from billing.ingest import pipeline

        codes = {ident[1] for ident in self.by_identity}
        rows = []
        for charge_id, ident in pipeline.charge_identities(import_id, project_code__in=sorted(codes)):
            queue = self.by_identity.get(ident)
            if not queue:
                continue
            rows += charge_subsidies(charge_id, queue.popleft())
        ChargeSubsidy.objects.bulk_create(rows, batch_size=5000)


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
    from billing.ingest.pipeline import IDENTITY_FIELDS
    from billing.ingest.transform import KEY_COLUMNS

    ledger = SubsidyLedger(subsidies, {})
    scope = ledger.projects_in_scope()
    months = None if row_periods is None else [parsed.texts.id_of(month) for month in row_periods]
    # The candidates of every partition, a few columns each: the whole file is never in memory.
    candidates = pa.concat_tables(
        _subsidy_candidates(index, table, resolved, scope, months, IDENTITY_FIELDS)
        for index, table in enumerate(parsed.charge_tables())
    )
    if not candidates.num_rows:
        return None
    ledger.paid = selectors.subsidy_paid(
        subsidies=subsidies, projects=pc.unique(candidates.column("project_code")).to_pylist(), period=period
    )
    strings = parsed.texts.values
    # The ledger's order (a cap is used up in it): project, resource id, then the rest of the
    # charge's key — which charge it is, not where the summing put it, so a file summed in memory
    # or on disk gets the same subsidies.
    candidates = candidates.append_column(
        "resource", pa.array(strings, pa.string()).take(candidates.column("resource_id"))
    )
    order = ["project_code", "resource", *(name for name in KEY_COLUMNS if name != "resource_id")]
    candidates = candidates.take(
        pc.sort_indices(candidates, sort_keys=[(name, "ascending") for name in order])
    )
    result = ImportSubsidies()
    paid_rows: dict[int, list[tuple[int, Decimal]]] = defaultdict(list)
    for start in range(0, candidates.num_rows, SUBSIDY_SLICE_ROWS):
        piece = candidates.slice(start, SUBSIDY_SLICE_ROWS).to_pydict()
        for i, billed in enumerate(piece["billed_cost"]):
            applied = ledger.apply(
                billed=billed, project_code=piece["project_code"][i], pi_email=piece["pi_email"][i]
            )
            if not applied:
                continue
            paid = sum((a.amount for a in applied), ZERO)
            paid_rows[piece["partition"][i]].append((piece["row"][i], paid))
            result.charges += 1
            for a in applied:
                result.totals[a.subsidy.name] += a.amount
            ident = (
                *(piece[name][i] for name in IDENTITY_FIELDS[:6]),
                *(strings[piece[name][i]] for name in IDENTITY_FIELDS[6:]),
            )
            result.by_identity[ident].append(applied)
    if not result.charges:
        return None
    money_type = candidates.schema.field("billed_cost").type
    for partition, taken in paid_rows.items():
        taken.sort()
        parsed.subtract_from_billed(
            partition,
            pa.array([row for row, _ in taken], pa.int64()),
            pa.array([amount for _, amount in taken], money_type),
        )
    parsed.stats.billed_total -= result.total
    return result


def _subsidy_candidates(
    partition: int,
    table: pa.Table,
    resolved: Resolutions,
    scope: set[str] | None,
    months: list[int] | None,
    identity_fields: tuple[str, ...],
) -> pa.Table:
    """The charges of one partition a subsidy may apply to (a project in scope, a month of the
    part), with what the ledger and the identity of the charge need."""
    payer = resolved.payers(resolved.rows_of(table.column("attribution"), table.column("sub_account_id")))
    codes = payer.column("project_code")
    wanted = pc.not_equal(codes, "") if scope is None else pc.is_in(codes, value_set=pa.array(sorted(scope)))
    if months is not None:
        month_ids = pa.array(months, table.column("period").type)
        wanted = pc.and_(wanted, pc.is_in(table.column("period"), value_set=month_ids))
    rows = pc.indices_nonzero(pc.fill_null(wanted, False))
    attribution = identity_fields[:6]
    columns = {
        "partition": pa.array([partition] * len(rows), pa.int32()),
        "row": pc.cast(rows, pa.int64()),
        "project_code": payer.column("project_code").take(rows),
        "pi_email": payer.column("pi_email").take(rows),
        "billed_cost": table.column("billed_cost").take(rows),
        **{
            name: payer.column(name).take(rows)
            for name in attribution
            if name not in ("project_code", "pi_email")
        },
        **{name: table.column(name).take(rows) for name in identity_fields[6:]},
        # The rest of the charge's key (transform.KEY_COLUMNS), for the ledger's order.
        "period": table.column("period").take(rows),
        "attribution": table.column("attribution").take(rows),
    }
    return pa.table(columns)
