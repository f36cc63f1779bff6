"""Reads of the journals app: settings, formats, and the journal of a period built from its
current (issued or sent, not superseded) statements, with every reason it cannot be exported.

How a journal is built (the design's cent rule):

- one line per statement line (PI × project × source × service, credits apart), amount rounded
  once by the statement;
- one debit per (PI fund/org, source, account code): the sum of its lines;
- one credit per source, to the source's credit fund/org: the sum of its debits;
- entries of 0.00 are left out unless the settings include them.

Account code of a debit: the project's GL account (admin field), else the account tag on the
project's charges, else the `account` group of the PI's fund/org, else the source's account, else
the default. Of a credit: the source's account, else the `account` group of its fund/org, else
the default. A layout that writes an account column (gl, a custom format using the account) is
refused while an entry or line it writes has no account code (`journal_build_for`).

The rules are pure functions of plain data in `journals.build`; `selectors.inputs` reads that data.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

from django.db.models import Count, QuerySet

from billing.models import BillingPeriod
from chargeback.errors import Refused

from ..build import AccountColumn, journal_from_inputs
from ..entries import (
    FundOrgSplitter,
    Journal,
    regex_errors,
)
from ..formats import BUILTIN_FORMATS, FormatSpec, LayoutError, Preview, preview_journal, spec_of
from ..models import JournalExport, JournalFormat, JournalSettings
from .inputs import journal_inputs


def journal_settings_get() -> JournalSettings:
    """The singleton; created with defaults on first use."""
    obj, _ = JournalSettings.objects.get_or_create(pk=1)
    return obj


# --- formats ----------------------------------------------------------------------------------


def journal_formats_available() -> list[FormatSpec]:
    """The built-in formats, then the active custom ones by name."""
    return list(BUILTIN_FORMATS.values()) + [
        spec_of(f) for f in JournalFormat.objects.filter(is_active=True).order_by("name")
    ]


# The original OpenChargeback's format names: its default ("standard detail") is a row per PI ×
# project × service, which is the summary layout here.
FORMAT_ALIASES = {"default": "summary", "standard": "summary"}


def journal_format_get(name: str) -> FormatSpec:
    name = (name or "").strip()
    name = FORMAT_ALIASES.get(name, name)
    if name in BUILTIN_FORMATS:
        return BUILTIN_FORMATS[name]
    fmt = JournalFormat.objects.filter(name=name).first()
    if fmt is None or not fmt.is_active:
        available = ", ".join(spec.name for spec in journal_formats_available())
        state = "inactive" if fmt is not None else "unknown"
        raise Refused(f"{state} journal format {name!r}: use one of {available}")
    return spec_of(fmt)


def journal_build(period: BillingPeriod) -> Journal:
    """The journal of a period from its current statements, and every reason it cannot be exported
    (`journal.problems`; empty when it can). Never raises for a business problem."""
    return journal_from_inputs(journal_inputs(period, journal_settings_get()))


def journal_build_for(period: BillingPeriod, spec: FormatSpec) -> Journal:
    """`journal_build`, refused also for what the chosen layout needs: a layout that writes an
    account code (gl, a custom format using it) needs one on every entry or line it writes, as
    a ledger cannot post a line without an account."""
    column = AccountColumn(spec.name, spec.rows) if spec.writes_account else None
    return journal_from_inputs(journal_inputs(period, journal_settings_get()), account_column=column)


# --- preview and exports ----------------------------------------------------------------------


@dataclass
class JournalPreview:
    journal: Journal
    spec: FormatSpec
    header: list[list[str]] = field(default_factory=list)
    rows: list[list[str]] = field(default_factory=list)
    more: bool = False
    error: str = ""


def journal_preview(period: BillingPeriod, format_name: str, *, limit: int = 20) -> JournalPreview:
    """The journal with its problems and the first rows of the chosen layout (nothing written)."""
    from django.utils import timezone

    spec = journal_format_get(format_name)
    journal = journal_build_for(period, spec)
    result = JournalPreview(journal=journal, spec=spec)
    try:
        shown: Preview = preview_journal(journal, spec, exported_at=timezone.now(), limit=limit)
    except LayoutError as exc:
        result.error = f"format {spec.name}: {exc}"
        return result
    result.header, result.rows, result.more = shown.header, shown.rows, shown.more
    return result


def journal_exports(period: BillingPeriod | None = None) -> QuerySet[JournalExport]:
    qs = JournalExport.objects.select_related("period")
    if period is not None:
        qs = qs.filter(period=period)
    return qs.order_by("-created_at", "-id")


def export_filename(period: str, format_name: str, exported_at: dt.datetime, delimiter: str = ",") -> str:
    stamp = exported_at.astimezone(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    return f"journal-{period}-{format_name}-{stamp}.{'tsv' if delimiter == chr(9) else 'csv'}"


def export_summary(export: JournalExport) -> dict[str, Any]:
    """An export for JSON output (money as exact amount + cents)."""
    from chargeback.money import money_json

    data = export.as_dict()
    data["debit"] = money_json(export.debit_total, export.currency)
    data["credit"] = money_json(export.credit_total, export.currency)
    return data


# Distinct fund/orgs checked per approval: a selection is a review page's worth, rarely more.
APPROVAL_CHECK_LIMIT = 2000


def charges_journal_objections(charges: Any) -> list[tuple[str, int]]:
    """Why the journal will refuse these charges even once approved (billing's approval page asks,
    through billing.extensions): a fund/org the fund/org split regex does not match."""
    settings = journal_settings_get()
    if not settings.fund_org_regex or regex_errors(settings.fund_org_regex, named_groups=True):
        return []
    splitter = FundOrgSplitter(settings.fund_org_regex)
    counts = dict(
        charges.exclude(fund_org="")
        .order_by()
        .values_list("fund_org")
        .annotate(n=Count("id"))
        .values_list("fund_org", "n")[:APPROVAL_CHECK_LIMIT]
    )
    bad = {fund_org: n for fund_org, n in counts.items() if splitter.split(fund_org) is None}
    if not bad:
        return []
    names = ", ".join(sorted(bad)[:5]) + (" …" if len(bad) > 5 else "")
    return [(f"fund/org {names} does not match the journal's fund/org split regex", sum(bad.values()))]
