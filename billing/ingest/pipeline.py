"""The import itself: read a FOCUS file, sum it into charges, attribute, flag and write.

Called by billing.services.import_execute inside one transaction; raises IngestError for
anything wrong with the file (the caller records it on the Import and nothing is written).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from itertools import repeat
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from django.conf import settings as django_settings
from django.db import connection

from billing.models import PI, AccountMapping, BillingSettings, Charge, ChargeFlag, Project, Source
from chargeback.money import MONEY_PLACES, SQLITE_MONEY_LIMIT

from . import reader, transform
from .errors import IngestError, RowError
from .flagging import Flag, FlagContext, summarize
from .memory import release_unused_memory
from .writer import write_charges

_EMAIL = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")

# Re-aggregate partial sums once this many accumulate, so memory follows charges, not rows.
COMBINE_EVERY_ROWS = 500_000
# Rows handed to the vectorised transform at once (the reader's blocks are smaller).
TRANSFORM_ROWS = 100_000
# Charges turned into Python row values at once while writing.
WRITE_SLICE_ROWS = 50_000
MONEY_NAMES = ("list_cost", "contracted_cost", "billed_cost", "effective_cost")
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
TEXT_COLUMNS = {
    "sub_account_id",
    "resource_id",
    "resource_name",
    "service_name",
    "charge_category",
    "service_category",
    "region",
    "sku_id",
    "unit",
    "period",
}


@dataclass
class ParsedFile:
    """A file read and summed into one row per charge key, not yet written."""

    charges: pa.Table  # text columns hold ids into `texts`, tags ids into the tag reader's dictionaries
    stats: transform.BatchStats
    tag_reader: transform.TagReader
    texts: transform.Encoder
    periods: list[str]
    # Attribution ids whose tags name no PI: resolved per sub-account (account mappings).
    needs_mapping: list[bool] = field(default_factory=list)


@dataclass(slots=True)
class Resolution:
    pi_id: int | None
    project_id: int | None
    pi_email: str
    project_code: str
    fund_org: str
    cost_center: str
    reference_1: str
    reference_2: str
    source: str  # tags, project, mapping, none
    flags: list[Flag] = field(default_factory=list)
    summary: str = ""


@dataclass
class WriteResult:
    charges: int = 0
    flagged: int = 0
    billed_total: Decimal = Decimal(0)
    list_total: Decimal = Decimal(0)
    # Flags of flagged charges, and decisions carried over, by charge identity.
    flags: dict[tuple, list[Flag]] = field(default_factory=dict)
    carried: dict[tuple, int] = field(default_factory=dict)


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def parse_file(path: Path, billing_settings: BillingSettings, name: str | None = None) -> ParsedFile:
    """Stream the file through validation and per-key summing; raises IngestError on bad input."""
    focus = reader.open_focus_file(path, name)
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
    stats = transform.BatchStats()
    texts = transform.Encoder()
    errors: list[RowError] = []
    partials: list[pa.Table] = []
    pending_rows = 0
    first_line = 2  # line 1 is the header
    for batch in _regrouped(reader.iter_batches(focus, django_settings.OPENCHARGEBACK_INGEST_BLOCK_BYTES)):
        partial = transform.transform_batch(batch, first_line, tag_reader, texts, errors, stats)
        first_line += batch.num_rows
        if len(errors) >= IngestError.MAX_ROW_ERRORS:
            break
        if partial is not None and not errors:
            partials.append(partial)
            pending_rows += partial.num_rows
            if pending_rows >= COMBINE_EVERY_ROWS and len(partials) > 1:
                partials = [transform.combine(partials)]
                pending_rows = partials[0].num_rows
                release_unused_memory()
    errors = focus.row_errors + errors
    if errors:
        errors.sort(key=lambda e: e.line or 0)
        raise IngestError(
            f"{label}: {len(errors)}{'+' if len(errors) >= IngestError.MAX_ROW_ERRORS else ''} "
            f"bad row{'s' if len(errors) != 1 else ''}; nothing was imported",
            errors,
        )
    if stats.rows == 0:
        raise IngestError(f"{label} has a header but no data rows")
    release_unused_memory()
    charges = transform.combine(partials) if len(partials) > 1 else partials[0]
    del partials
    release_unused_memory()
    return ParsedFile(
        charges=charges, stats=stats, tag_reader=tag_reader, texts=texts, periods=sorted(stats.periods)
    )


def _regrouped(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
    """Join the reader's small blocks (small blocks keep its memory low) into larger batches."""
    pending: list[pa.RecordBatch] = []
    rows = 0
    for batch in batches:
        if batch.num_rows == 0:
            continue
        pending.append(batch)
        rows += batch.num_rows
        if rows >= TRANSFORM_ROWS:
            yield _concat(pending)
            pending, rows = [], 0
    if pending:
        yield _concat(pending)


def _concat(batches: list[pa.RecordBatch]) -> pa.RecordBatch:
    if len(batches) == 1:
        return batches[0]
    return pa.Table.from_batches(batches).combine_chunks().to_batches()[0]


def check_periods(parsed: ParsedFile, expected: str | None, name: str) -> str:
    """The one period of the file; refuses rows of other months, naming the months found."""
    found = parsed.periods
    if expected:
        others = [p for p in found if p != expected]
        if others:
            detail = ", ".join(
                f"{p} ({parsed.stats.periods[p]} rows, first at line {parsed.stats.first_line_of_period[p]})"
                for p in others
            )
            raise IngestError(f"{name}: rows belong to another month than {expected}: {detail}")
        return expected
    if len(found) > 1:
        detail = ", ".join(f"{p} ({parsed.stats.periods[p]} rows)" for p in found)
        raise IngestError(f"{name}: rows span several months ({detail}); split the file or pass -p/--period")
    return found[0]


def resolve_attributions(
    parsed: ParsedFile, source: Source, context: FlagContext
) -> dict[tuple[int, str], Resolution]:
    """Who pays for each attribution of the file (and, where tags name no PI, each sub-account).

    Tags first; when they name no PI, the tagged project's owner; then the sub-account's
    AccountMapping; else unattributed. PIs and projects are created on first sight.
    Keys are (attribution id, sub-account) for attributions resolved by mapping, else (id, "").
    """
    table = parsed.charges
    attributions = parsed.tag_reader.attributions
    used = set(pc.unique(table.column("attribution")).to_pylist())

    codes = {attributions[a][1] for a in used if attributions[a][1]}
    # A PI tag that is not an email address ("n/a", "TBD") names nobody: those rows are attributed as
    # if untagged (project owner, account mapping, else unattributed and flagged), never to a PI "n/a".
    emails = {attributions[a][0] for a in used if _EMAIL.fullmatch(attributions[a][0])}
    pis = dict(PI.objects.filter(email__in=emails).values_list("email", "pk"))
    missing_pis = sorted(emails - set(pis))
    if missing_pis:
        PI.objects.bulk_create([PI(email=email) for email in missing_pis], ignore_conflicts=True)
        pis.update(PI.objects.filter(email__in=missing_pis).values_list("email", "pk"))

    project_fields = (
        "project_id",
        "pk",
        "pi_id",
        "pi__email",
        "fund_org",
        "cost_center",
        "reference_1",
        "reference_2",
    )
    projects = {
        row[0]: row for row in Project.objects.filter(project_id__in=codes).values_list(*project_fields)
    }
    new_projects: dict[str, Project] = {}
    for a in sorted(used):
        email, code, fund_org, cost_center, ref1, ref2 = attributions[a]
        if email in pis and code and code not in projects and code not in new_projects:
            new_projects[code] = Project(
                project_id=code,
                pi_id=pis[email],
                fund_org=fund_org,
                cost_center=cost_center,
                reference_1=ref1,
                reference_2=ref2,
            )
    if new_projects:
        Project.objects.bulk_create(new_projects.values(), ignore_conflicts=True)
        projects.update(
            {
                row[0]: row
                for row in Project.objects.filter(project_id__in=list(new_projects)).values_list(
                    *project_fields
                )
            }
        )

    needs_mapping = [False] * len(attributions)
    for a in used:
        needs_mapping[a] = attributions[a][0] not in pis and attributions[a][1] not in projects
    parsed.needs_mapping = needs_mapping
    keys: set[tuple[int, str]] = {(a, "") for a in used if not needs_mapping[a]}
    mapped_ids = [a for a in used if needs_mapping[a]]
    if mapped_ids:
        subset = table.filter(pc.is_in(table.column("attribution"), pa.array(mapped_ids, type=pa.int32())))
        pairs = pa.table({"a": subset.column("attribution"), "s": subset.column("sub_account_id")})
        pairs = pairs.group_by(["a", "s"]).aggregate([])
        strings = parsed.texts.values
        keys |= {
            (a, strings[sid])
            for a, sid in zip(pairs.column("a").to_pylist(), pairs.column("s").to_pylist(), strict=True)
        }
    subs = {sub for _, sub in keys if sub}
    mappings: dict[str, AccountMapping] = {}
    for mapping in AccountMapping.objects.filter(sub_account_id__in=subs).select_related("project__pi"):
        # A mapping for this source wins over one for every source.
        if mapping.source_id in (None, source.pk) and (
            mapping.source_id == source.pk or mapping.sub_account_id not in mappings
        ):
            mappings[mapping.sub_account_id] = mapping

    resolved: dict[tuple[int, str], Resolution] = {}
    flag_cache: dict[tuple, tuple[list[Flag], str]] = {}
    for a, sub in keys:
        email, code, fund_org, cost_center, ref1, ref2 = attributions[a]
        project = projects.get(code) if code else None
        owner = project[3] if project else None
        if email in pis:
            res = Resolution(
                pis[email],
                project[1] if project else None,
                email,
                code,
                fund_org or (project[4] if project else ""),
                cost_center,
                ref1,
                ref2,
                "tags",
            )
        elif project:
            res = Resolution(
                project[2],
                project[1],
                project[3],
                code,
                fund_org or project[4],
                cost_center or project[5],
                ref1 or project[6],
                ref2 or project[7],
                "project",
            )
        elif sub in mappings:
            m = mappings[sub]
            res = Resolution(
                m.project.pi_id,
                m.project_id,
                m.project.pi.email,
                m.project.project_id,
                m.fund_org or m.project.fund_org,
                m.project.cost_center,
                m.project.reference_1,
                m.project.reference_2,
                "mapping",
            )
            owner = m.project.pi.email
        else:
            res = Resolution(None, None, email, code, fund_org, cost_center, ref1, ref2, "none")
        flag_key = (res.pi_id is not None, res.project_code, res.fund_org, owner, res.pi_email)
        if flag_key not in flag_cache:
            flags = context.attribution_flags(
                has_pi=res.pi_id is not None,
                project_code=res.project_code,
                fund_org=res.fund_org,
                project_owner_email=owner,
                pi_email=res.pi_email,
            )
            flag_cache[flag_key] = (flags, summarize(flags))
        res.flags, res.summary = flag_cache[flag_key]
        resolved[(a, sub)] = res
    release_unused_memory()
    return resolved


IDENTITY_FIELDS = (
    "pi_email",
    "project_code",
    "fund_org",
    "cost_center",
    "reference_1",
    "reference_2",
    "sub_account_id",
    "resource_id",
    "resource_name",
    "service_name",
    "charge_category",
)


@dataclass(frozen=True)
class CarriedDecision:
    """A review decision of a superseded charge, carried to an unchanged charge of the new file."""

    state: str
    billed: Decimal
    listed: Decimal
    charge_id: int


def decimal_units(column: pa.ChunkedArray) -> np.ndarray:
    """The unscaled integers of a decimal128(38, 10) column, i.e. amounts in 10^-10 units.

    decimal128 stores each value as a 128-bit little-endian integer; when the high word is
    only the sign extension of the low word, the low word is the exact int64 value.
    """
    parts = []
    for chunk in column.chunks:
        words = np.frombuffer(chunk.buffers()[1], dtype=np.int64)[
            chunk.offset * 2 : (chunk.offset + len(chunk)) * 2
        ]
        low, high = words[0::2], words[1::2]
        if not np.array_equal(high, low >> 63):
            raise IngestError(
                f"an amount exceeds what SQLite stores exactly (±{SQLITE_MONEY_LIMIT:,.2f}); use PostgreSQL"
            )
        parts.append(low)
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)


def build_and_write(
    parsed: ParsedFile,
    *,
    period_id: int,
    period: str,
    source: Source,
    import_id: int,
    resolved: dict[tuple[int, str], Resolution],
    context: FlagContext,
    carried: dict[tuple, list[CarriedDecision]],
) -> WriteResult:
    """Write every charge of the parsed file; returns totals and the flags of flagged charges."""
    result = WriteResult()

    sqlite = connection.vendor == "sqlite"
    time_format = "%Y-%m-%d %H:%M:%S" if sqlite else "%Y-%m-%d %H:%M:%S+00"

    def db_money(column: pa.ChunkedArray) -> list:
        # SQLite stores 10^-10 units as integers (see MoneyField); COPY takes decimal text.
        if sqlite:
            return decimal_units(column).tolist()
        return pc.cast(column, pa.string()).to_pylist()

    def as_decimal(value: int | str) -> Decimal:
        return Decimal(value).scaleb(-MONEY_PLACES) if sqlite else Decimal(value)

    def rows() -> Iterator[tuple]:
        table = parsed.charges
        strings = parsed.texts.values
        needs_mapping = parsed.needs_mapping
        tag_reader = parsed.tag_reader
        flagged, ok = Charge.ReviewState.FLAGGED.value, Charge.ReviewState.OK.value
        for offset in range(0, table.num_rows, WRITE_SLICE_ROWS):
            release_unused_memory()  # the previous slice's Python values
            part = table.slice(offset, WRITE_SLICE_ROWS)
            n = part.num_rows
            col = {name: part.column(name).to_pylist() for name in ("attribution", "lines")}
            for name in TEXT_COLUMNS - {"period"}:
                col[name] = [strings[i] for i in part.column(name).to_pylist()]
            for name in ("charge_start", "charge_end"):
                col[name] = pc.strftime(part.column(name), time_format).to_pylist()
            for name in MONEY_NAMES:
                col[name] = db_money(part.column(name))
            col["quantity"] = pc.cast(pc.round(part.column("quantity"), 6), pa.string()).to_pylist()
            res = [
                resolved[(a, sub if needs_mapping[a] else "")]
                for a, sub in zip(col["attribution"], col["sub_account_id"], strict=True)
            ]
            states = [flagged if r.flags else ok for r in res]
            summaries = [r.summary for r in res]
            # Per-charge work only where rules, flags or carried decisions need it.
            for i in range(n) if (context.rules or carried or any(r.flags for r in res)) else ():
                r = res[i]
                flags = r.flags
                if context.rules:
                    values = {name: col[name][i] for name in RULE_FIELDS}
                    values.update(
                        pi_email=r.pi_email,
                        project_code=r.project_code,
                        fund_org=r.fund_org,
                        cost_center=r.cost_center,
                        reference_1=r.reference_1,
                        reference_2=r.reference_2,
                    )
                    rule_flags = context.rule_flags(values, source.pk)
                    if rule_flags:
                        flags = flags + rule_flags
                        states[i], summaries[i] = flagged, summarize(flags)
                if not flags and not carried:
                    continue
                ident = (
                    r.pi_email,
                    r.project_code,
                    r.fund_org,
                    r.cost_center,
                    r.reference_1,
                    r.reference_2,
                    col["sub_account_id"][i],
                    col["resource_id"][i],
                    col["resource_name"][i],
                    col["service_name"][i],
                    col["charge_category"][i],
                )
                if flags:
                    result.flags[ident] = flags
                for decision in carried.get(ident, ()):
                    if (decision.billed, decision.listed) == (
                        as_decimal(col["billed_cost"][i]),
                        as_decimal(col["list_cost"][i]),
                    ):
                        states[i] = decision.state
                        result.carried[ident] = decision.charge_id
                        break
            result.flagged += states.count(flagged)
            tags = tag_reader.texts_of(part.column("tags"))
            columns = [
                repeat(period_id, n),
                repeat(source.pk, n),
                repeat(import_id, n),
                [r.pi_id for r in res],
                [r.project_id for r in res],
                [r.pi_email for r in res],
                [r.project_code for r in res],
                [r.fund_org for r in res],
                [r.cost_center for r in res],
                [r.reference_1 for r in res],
                [r.reference_2 for r in res],
                [r.source for r in res],
                col["resource_id"],
                col["resource_name"],
                col["service_name"],
                col["service_category"],
                col["charge_category"],
                col["sub_account_id"],
                col["region"],
                col["sku_id"],
                col["quantity"],
                col["unit"],
                col["list_cost"],
                col["contracted_cost"],
                col["billed_cost"],
                col["effective_cost"],
                col["lines"],
                col["charge_start"],
                col["charge_end"],
                tags,
                states,
                summaries,
            ]
            yield from zip(*columns, strict=True)

    result.charges = write_charges(rows())
    result.billed_total = pc.sum(parsed.charges.column("billed_cost")).as_py() or Decimal(0)
    result.list_total = pc.sum(parsed.charges.column("list_cost")).as_py() or Decimal(0)
    return result


def charge_identities(import_id: int, **filters: object) -> Iterator[tuple[int, tuple]]:
    """(id, identity) of the import's charges, identity in IDENTITY_FIELDS order."""
    for row in Charge.objects.filter(import_run_id=import_id, **filters).values_list("id", *IDENTITY_FIELDS):
        yield row[0], tuple(row[1:])


def write_flags(import_id: int, flags: dict[tuple, list[Flag]]) -> None:
    """Record every flag reason of the import's flagged charges (charges are matched by identity)."""
    if not flags:
        return
    rows = [
        ChargeFlag(charge_id=charge_id, reason=flag.reason, rule_id=flag.rule_id, detail=flag.detail[:300])
        for charge_id, ident in charge_identities(import_id, flag_summary__gt="")
        for flag in flags.get(ident, ())
    ]
    ChargeFlag.objects.bulk_create(rows, batch_size=5000)
