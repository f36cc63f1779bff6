"""Rating usage files into imports, and re-rating a period with the rules of the day.

A usage file is read (slurm.py, storage.py), priced (pricing.py), written as a FOCUS CSV (focus.py)
and imported by the normal ingest (billing.services.import_file) in one transaction, which also
stores the usage file and how every charge was priced. A file with the same name for the same
source and period replaces the charges of the earlier one (decisions carried over as for any
supersede); a file with another name adds to the period. The same bytes again are refused.
"""

from __future__ import annotations

import datetime as dt
import tempfile
from dataclasses import dataclass, field
from decimal import Decimal
from fractions import Fraction
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from billing import selectors as billing_selectors
from billing.ingest.pipeline import sha256_of
from billing.models import BillingPeriod, Import, Source
from billing.services import ImportOutcome, import_file
from chargeback import storage as media
from chargeback.actors import actor_fields
from chargeback.errors import Refused
from chargeback.money import ZERO

from .. import selectors
from ..focus import write_focus
from ..ingest import RatedImport
from ..models import Rerate, UsageFile
from ..pricing import RatedRow, UsageRow, price_usage
from ..slurm import SlurmUsage, read_sacct
from ..storage import read_quota

KINDS = (UsageFile.Kind.SLURM, UsageFile.Kind.STORAGE)


@dataclass
class UsageOutcome:
    """What rating a usage file did (or, with dry_run / focus_out, would do)."""

    kind: str
    file_name: str
    source: str
    period: str
    rows: list[RatedRow]
    summary: dict[str, Any]
    dry_run: bool = False
    focus_out: str = ""
    imported: ImportOutcome | None = None
    usage_file_id: int | None = None
    replaces_usage_file: int | None = None

    @property
    def list_total(self) -> Decimal:
        return sum((r.list_cost for r in self.rows), ZERO)

    @property
    def free_total(self) -> Decimal:
        return sum((r.free_amount for r in self.rows), ZERO)

    @property
    def billed_total(self) -> Decimal:
        return sum((r.billed for r in self.rows), ZERO)

    @property
    def subsidy_totals(self) -> dict[str, Decimal]:
        totals: dict[str, Decimal] = {}
        for row in self.rows:
            for applied in row.subsidies:
                totals[applied.subsidy.name] = totals.get(applied.subsidy.name, ZERO) + applied.amount
        return totals


def slurm_usage_rows(usage: SlurmUsage) -> list[UsageRow]:
    """One row per (Slurm account, partition, unit)."""
    rows = []
    for (account, partition), (cpu, gpu, jobs) in sorted(usage.groups.items()):
        for unit, seconds in (("core-hour", cpu), ("gpu-hour", gpu)):
            if seconds:
                rows.append(
                    UsageRow(
                        sub_account=account,
                        tier=partition,
                        resource_id=f"{account}/{partition}",
                        service_name=f"HPC {partition}",
                        service_category="Compute",
                        measure=Fraction(seconds),
                        unit=unit,
                        detail={"slurm_jobs": str(jobs)},
                    )
                )
    return rows


def read_usage(
    kind: str, path: Path, *, period: str, name: str, now: dt.datetime | None = None
) -> tuple[list[UsageRow], dict[str, Any]]:
    """The usage rows of a file and what reading it counted."""
    if kind == UsageFile.Kind.SLURM:
        usage = read_sacct(
            path,
            period=period,
            time_zone=settings.OPENCHARGEBACK_SLURM_TIME_ZONE,
            not_billed_states=list(settings.OPENCHARGEBACK_SLURM_NOT_BILLED_STATES),
            now=now or timezone.now(),
            name=name,
        )
        return slurm_usage_rows(usage), usage.summary()
    if kind == UsageFile.Kind.STORAGE:
        quota = read_quota(path, period=period, name=name)
        return quota.rows, quota.summary()
    raise Refused(f"unknown kind of usage {kind!r}: {', '.join(KINDS)}")


def _nothing_to_bill(name: str, period: str, summary: dict[str, Any]) -> Refused:
    counts = ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in summary.items() if v)
    return Refused(f"{name}: nothing to bill in {period} ({counts}); nothing was imported")


def _import_rated(
    rated: RatedImport, *, source: Source, period: str, dry_run: bool, actor: Any, actor_name: str
) -> ImportOutcome:
    """The rated rows as a FOCUS file through the normal ingest."""
    with tempfile.TemporaryDirectory(prefix="openchargeback-usage-") as folder:
        focus_path = Path(folder) / f"{Path(rated.usage_name).name}.focus.csv"
        write_focus(
            focus_path,
            rated.rows,
            source=source,
            period=period,
            settings=billing_selectors.billing_settings_get(),
        )
        return import_file(
            path=focus_path,
            source=source,
            period=period,
            force=True,  # the same FOCUS bytes again are a re-rating with unchanged rules, not a duplicate
            dry_run=dry_run,
            actor=actor,
            actor_name=actor_name,
            rated=rated,
        )


def usage_rate(
    *,
    kind: str,
    path: Path | str,
    period: str,
    source: str,
    dry_run: bool = False,
    focus_out: Path | str | None = None,
    force: bool = False,
    actor: Any = None,
    actor_name: str = "",
    original_name: str | None = None,
    now: dt.datetime | None = None,
) -> UsageOutcome:
    """Rate a usage file (kind `slurm` or `storage`) for a period and import the charges, all or
    nothing. With `focus_out` the FOCUS CSV is written there instead and nothing is stored; with
    `dry_run` nothing is written at all."""
    path = Path(path)
    period = billing_selectors.validate_period(period)
    source_obj = billing_selectors.source_get(source)
    if not path.is_file():
        raise Refused(f"file not found: {path}")
    name = original_name or path.name
    sha = sha256_of(path)
    if not (force or focus_out):
        earlier = selectors.usage_file_with_sha256(sha, source=source_obj, period=period)
        if earlier is not None:
            raise Refused(
                f"{name} was already rated as usage file #{earlier.pk} ({earlier.source.slug} {earlier.period}, "
                f"import #{earlier.import_run_id}); to apply changed rates run "
                f"`openchargeback usage rerate -p {earlier.period} --reason ...`, or give --force"
            )
    period_obj = BillingPeriod.objects.filter(period=period).first()
    previous = (
        selectors.usage_file_same_name(source=source_obj, period=period_obj, name=name)
        if period_obj
        else None
    )
    replaces = [previous.import_run_id] if previous is not None else []
    rows, summary = read_usage(kind, path, period=period, name=name, now=now)
    rated_rows = price_usage(rows, source=source_obj, period=period, replaces=replaces)
    outcome = UsageOutcome(
        kind=kind,
        file_name=name,
        source=source_obj.slug,
        period=period,
        rows=rated_rows,
        summary=summary,
        dry_run=dry_run,
        replaces_usage_file=previous.pk if previous else None,
    )
    if not rated_rows:
        raise _nothing_to_bill(name, period, summary)
    if focus_out:
        write_focus(
            Path(focus_out),
            rated_rows,
            source=source_obj,
            period=period,
            settings=billing_selectors.billing_settings_get(),
        )
        outcome.focus_out = str(focus_out)
        return outcome
    rated = RatedImport(
        kind=kind,
        rows=rated_rows,
        replaces=replaces,
        usage_path=path,
        usage_name=name,
        sha256=sha,
        summary=summary,
        actor_fields=actor_fields(actor, actor_name),
        dry_run=dry_run,
    )
    outcome.imported = _import_rated(
        rated, source=source_obj, period=period, dry_run=dry_run, actor=actor, actor_name=actor_name
    )
    outcome.usage_file_id = rated.usage_file.pk if rated.usage_file is not None else None
    return outcome


@dataclass
class RerateOutcome:
    period: str
    reason: str
    rerate_id: int
    files: list[dict[str, Any]] = field(default_factory=list)
    billed_before: Decimal = ZERO
    billed_after: Decimal = ZERO


def usage_rerate(
    *, period: str, reason: str, actor: Any = None, actor_name: str = "", now: dt.datetime | None = None
) -> RerateOutcome:
    """Rate every current usage file of an open period again with today's rates and subsidies; each
    new import supersedes the one it replaces (review decisions carried over as for any supersede).
    All or nothing, and logged (Rerate) with the actor and the reason."""
    reason = (reason or "").strip()
    if not reason:
        raise Refused("a reason is required to re-rate a period")
    period_obj = billing_selectors.period_get(period)
    if period_obj.status != BillingPeriod.Status.OPEN:
        hint = (
            f"; reopen it first (openchargeback periods reopen {period_obj.period} --reason ...)"
            if period_obj.status == BillingPeriod.Status.CLOSED
            else ""
        )
        raise Refused(
            f"period {period_obj.period} is {period_obj.status}: only an open period can be re-rated{hint}"
        )
    files = list(selectors.usage_files_current(period_obj))
    if not files:
        raise Refused(f"period {period_obj.period} has no rated usage to re-rate")
    fields = actor_fields(actor, actor_name)
    outcome = RerateOutcome(period=period_obj.period, reason=reason, rerate_id=0)
    with transaction.atomic():
        BillingPeriod.objects.select_for_update().get(pk=period_obj.pk)
        for usage_file in files:
            old: Import = usage_file.import_run
            with media.local_copy(usage_file.file) as usage_path:
                rows, summary = read_usage(
                    usage_file.kind,
                    usage_path,
                    period=period_obj.period,
                    name=usage_file.original_name,
                    now=now,
                )
            rated_rows = price_usage(
                rows, source=usage_file.source, period=period_obj.period, replaces=[old.pk]
            )
            if not rated_rows:
                raise _nothing_to_bill(usage_file.original_name, period_obj.period, summary)
            rated = RatedImport(
                kind=usage_file.kind,
                rows=rated_rows,
                replaces=[old.pk],
                usage_path=Path(usage_file.file.name or ""),  # stored already: not read again
                usage_name=usage_file.original_name,
                sha256=usage_file.sha256,
                summary=summary,
                actor_fields=fields,
                usage_file=usage_file,
            )
            imported = _import_rated(
                rated,
                source=usage_file.source,
                period=period_obj.period,
                dry_run=False,
                actor=actor,
                actor_name=fields["actor_name"],
            )
            outcome.billed_before += old.billed_total
            outcome.billed_after += imported.billed_total
            outcome.files.append(
                {
                    "usage_file": usage_file.pk,
                    "name": usage_file.original_name,
                    "source": usage_file.source.slug,
                    "replaced_import": old.pk,
                    "import": imported.import_id,
                    "billed_before": str(old.billed_total),
                    "billed_after": str(imported.billed_total),
                    "decisions_carried": imported.decisions_carried,
                }
            )
        record = Rerate.objects.create(
            period=period_obj,
            reason=reason,
            billed_before=outcome.billed_before,
            billed_after=outcome.billed_after,
            details=outcome.files,
            **fields,
        )
    outcome.rerate_id = record.pk
    return outcome
