"""The import itself: read a FOCUS file, sum it into charges, attribute, flag and write.

Called by billing.services.import_execute inside one transaction; raises IngestError for
anything wrong with the file (the caller records it on the Import and nothing is written).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
from django.conf import settings as django_settings

from billing.models import PI, AccountMapping, BillingSettings, Charge, ChargeFlag, Project, Source

from . import reader, transform
from .errors import IngestError, RowError
from .flagging import Flag, FlagContext, summarize
from .writer import CHARGE_COLUMNS, write_charges

# Re-aggregate partial sums once this many accumulate, so memory follows charges, not rows.
COMBINE_EVERY_ROWS = 500_000


@dataclass
class ParsedFile:
    """A file read and summed into one row per charge key, not yet written."""

    charges: pa.Table
    stats: transform.BatchStats
    tag_reader: transform.TagReader
    periods: list[str]


@dataclass
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


@dataclass
class WriteResult:
    charges: int = 0
    flagged: int = 0
    billed_total: Decimal = Decimal(0)
    list_total: Decimal = Decimal(0)
    fingerprints: dict[str, list[Flag]] = field(default_factory=dict)


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def parse_file(path: Path, billing_settings: BillingSettings) -> ParsedFile:
    """Stream the file through validation and per-key summing; raises IngestError on bad input."""
    focus = reader.open_focus_file(path)
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
    errors: list[RowError] = []
    partials: list[pa.Table] = []
    pending_rows = 0
    first_line = 2  # line 1 is the header
    for batch in reader.iter_batches(focus, django_settings.OPENCHARGEBACK_INGEST_BLOCK_BYTES):
        if batch.num_rows == 0:
            continue
        partial = transform.transform_batch(batch, first_line, tag_reader, errors, stats)
        first_line += batch.num_rows
        if len(errors) >= IngestError.MAX_ROW_ERRORS:
            break
        if partial is not None and not errors:
            partials.append(partial)
            pending_rows += partial.num_rows
            if pending_rows >= COMBINE_EVERY_ROWS and len(partials) > 1:
                partials = [transform.combine(partials)]
                pending_rows = partials[0].num_rows
    errors = focus.row_errors + errors
    if errors:
        errors.sort(key=lambda e: e.line or 0)
        raise IngestError(
            f"{path.name}: {len(errors)}{'+' if len(errors) >= IngestError.MAX_ROW_ERRORS else ''} "
            f"bad row{'s' if len(errors) != 1 else ''}; nothing was imported",
            errors,
        )
    if stats.rows == 0:
        raise IngestError(f"{path.name} has a header but no data rows")
    charges = transform.combine(partials) if len(partials) > 1 else partials[0]
    return ParsedFile(charges=charges, stats=stats, tag_reader=tag_reader, periods=sorted(stats.periods))


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


def resolve_attributions(parsed: ParsedFile, source: Source, context: FlagContext) -> dict[tuple[int, str], Resolution]:
    """Who pays for each (attribution, sub-account) in the file; creates PIs and projects on first sight."""
    table = parsed.charges
    attributions = parsed.tag_reader.attributions
    pairs = pa.table({"a": table.column("attribution"), "s": table.column("sub_account_id")}).group_by(["a", "s"]).aggregate([])
    used: set[tuple[int, str]] = set(zip(pairs.column("a").to_pylist(), pairs.column("s").to_pylist(), strict=True))

    # Tags first; when they name no PI, the project's owner, then the sub-account's mapping.
    codes = {attributions[a][1] for a, _ in used if attributions[a][1]}
    projects = {p.project_id: p for p in Project.objects.filter(project_id__in=codes).select_related("pi")}
    need_mapping = {s for a, s in used if not attributions[a][0] and not (attributions[a][1] in projects) and s}
    mappings: dict[str, AccountMapping] = {}
    for mapping in AccountMapping.objects.filter(sub_account_id__in=need_mapping).select_related("project__pi"):
        if mapping.source_id == source.pk or mapping.sub_account_id not in mappings:
            mappings[mapping.sub_account_id] = mapping

    emails = {attributions[a][0] for a, _ in used if attributions[a][0]}
    pis = {pi.email: pi for pi in PI.objects.filter(email__in=emails)}
    new_pis = [PI(email=email) for email in sorted(emails - set(pis))]
    if new_pis:
        PI.objects.bulk_create(new_pis)
        pis.update({pi.email: pi for pi in PI.objects.filter(email__in=[p.email for p in new_pis])})

    new_projects: dict[str, Project] = {}
    for a, _ in sorted(used):
        email, code, fund_org, cost_center, ref1, ref2 = attributions[a]
        if email and code and code not in projects and code not in new_projects:
            new_projects[code] = Project(
                project_id=code, pi=pis[email], fund_org=fund_org, cost_center=cost_center,
                reference_1=ref1, reference_2=ref2,
            )
    if new_projects:
        Project.objects.bulk_create(new_projects.values())
        projects.update(
            {p.project_id: p for p in Project.objects.filter(project_id__in=list(new_projects)).select_related("pi")}
        )

    resolved: dict[tuple[int, str], Resolution] = {}
    for a, sub in used:
        email, code, fund_org, cost_center, ref1, ref2 = attributions[a]
        project = projects.get(code) if code else None
        if email:
            res = Resolution(pis[email].pk, project.pk if project else None, email, code,
                             fund_org or (project.fund_org if project else ""), cost_center, ref1, ref2, "tags")
        elif project:
            res = Resolution(project.pi_id, project.pk, project.pi.email, code, fund_org or project.fund_org,
                             cost_center or project.cost_center, ref1 or project.reference_1,
                             ref2 or project.reference_2, "project")
        elif sub in mappings:
            m = mappings[sub]
            res = Resolution(m.project.pi_id, m.project_id, m.project.pi.email, m.project.project_id,
                             m.fund_org or m.project.fund_org, m.project.cost_center, m.project.reference_1,
                             m.project.reference_2, "mapping")
        else:
            res = Resolution(None, None, email, code, fund_org, cost_center, ref1, ref2, "none")
        owner = project.pi.email if project else None
        res.flags = context.attribution_flags(
            has_pi=res.pi_id is not None, project_code=res.project_code, fund_org=res.fund_org,
            project_owner_email=owner, pi_email=res.pi_email,
        )
        resolved[(a, sub)] = res
    return resolved


def fingerprint(period: str, source_slug: str, res: Resolution, row: dict) -> str:
    """Identity and amounts of a charge: equal fingerprints mean 'unchanged' on re-import."""
    parts = [
        period, source_slug, res.pi_email, res.project_code, res.fund_org, res.cost_center,
        res.reference_1, res.reference_2, row["sub_account_id"], row["resource_id"], row["resource_name"],
        row["service_name"], row["charge_category"], str(row["billed_cost"]), str(row["list_cost"]),
    ]
    return hashlib.sha1("\x1f".join(parts).encode(), usedforsecurity=False).hexdigest()


def _tags(text: str, cache: dict[str, dict]) -> dict:
    if not text:
        return {}
    if text not in cache:
        try:
            value = json.loads(text)
        except ValueError:
            value = json.loads("{" + text + "}")
        cache[text] = value if isinstance(value, dict) else {}
    return cache[text]


def build_and_write(
    parsed: ParsedFile,
    *,
    period_id: int,
    period: str,
    source: Source,
    import_id: int,
    resolved: dict[tuple[int, str], Resolution],
    context: FlagContext,
    carried_states: dict[str, str],
) -> WriteResult:
    """Write every charge of the parsed file; returns totals and the flags of flagged charges."""
    result = WriteResult()
    tags_cache: dict[str, dict] = {}

    def rows() -> Iterator[tuple]:
        table = parsed.charges
        for offset in range(0, table.num_rows, 50_000):
            for row in table.slice(offset, 50_000).to_pylist():
                res = resolved[(row["attribution"], row["sub_account_id"])]
                flags = list(res.flags)
                if context.rules:
                    values = {
                        "pi_email": res.pi_email, "project_code": res.project_code, "fund_org": res.fund_org,
                        "cost_center": res.cost_center, "reference_1": res.reference_1,
                        "reference_2": res.reference_2, **{k: row[k] for k in (
                            "resource_id", "resource_name", "service_name", "service_category",
                            "charge_category", "sub_account_id", "region", "sku_id")},
                    }
                    flags += context.rule_flags(values, source.pk)
                billed, listed = row["billed_cost"], row["list_cost"]
                fp = fingerprint(period, source.slug, res, row)
                state = carried_states.get(fp) or (Charge.ReviewState.FLAGGED if flags else Charge.ReviewState.OK)
                if flags:
                    result.fingerprints[fp] = flags
                if state == Charge.ReviewState.FLAGGED:
                    result.flagged += 1
                result.charges += 1
                result.billed_total += billed
                result.list_total += listed
                quantity = row["quantity"]
                yield (
                    period_id, source.pk, import_id, res.pi_id, res.project_id, res.pi_email, res.project_code,
                    res.fund_org, res.cost_center, res.reference_1, res.reference_2, res.source,
                    row["resource_id"], row["resource_name"], row["service_name"], row["service_category"],
                    row["charge_category"], row["sub_account_id"], row["region"], row["sku_id"],
                    None if quantity is None else quantity.quantize(Decimal("0.000001")), row["unit"],
                    listed, row["contracted_cost"], billed, row["effective_cost"], row["lines"],
                    row["charge_start"], row["charge_end"], _tags(row["tags"], tags_cache), state,
                    summarize(flags), fp,
                )

    assert len(CHARGE_COLUMNS) == 33
    write_charges(rows())
    return result


def write_flags(import_id: int, fingerprints: dict[str, list[Flag]]) -> None:
    if not fingerprints:
        return
    ids = dict(
        Charge.objects.filter(import_run_id=import_id).exclude(flag_summary="").values_list("fingerprint", "id")
    )
    flags = [
        ChargeFlag(charge_id=ids[fp], reason=flag.reason, rule_id=flag.rule_id, detail=flag.detail[:300])
        for fp, charge_flags in fingerprints.items()
        for flag in charge_flags
    ]
    ChargeFlag.objects.bulk_create(flags, batch_size=5000)
