"""Journal layouts: the built-in `gl`, `summary` and `detail`, and admin-edited templates.

Every layout yields records (lists of cells); one writer turns them into the file, so quoting
and formula neutralising are the same for all of them:

- CSV quoting (RFC 4180, CRLF line ends): a cell with the delimiter, a quote or a line break is
  quoted, quotes doubled.
- Formula injection: a cell beginning with = + - @ (or tab / CR) that is not a plain number gets
  a leading apostrophe, so a spreadsheet shows it as text instead of running it. Amounts such as
  -12.50 stay numbers.

Custom formats (JournalFormat) are Django templates. Values reach them CSV-ready (neutralised,
quoted where needed); what a template renders is parsed back as CSV and written again, so a
template can neither break the quoting nor smuggle in a formula, and a row whose cell count
differs from the header's refuses the export (or the save, when the sample shows it).
"""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import io
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, BinaryIO

from django.template import Context, Engine, TemplateSyntaxError
from django.template.base import Template, VariableNode

from chargeback.csv_safety import neutralize

from .entries import ChargeRow, Entry, Journal, Line, money_text
from .sample import row_variables

if TYPE_CHECKING:
    from .models import JournalFormat

LINE_END = "\r\n"


def csv_cell(value: str, delimiter: str = ",") -> str:
    """A value as it must appear in a CSV line: neutralised, quoted when needed."""
    value = neutralize(value)
    if (
        delimiter in value
        or '"' in value
        or "\r" in value
        or "\n" in value
        or (value and (value[0].isspace() or value[-1].isspace()))
    ):
        return '"' + value.replace('"', '""') + '"'
    return value


# --- format specs -----------------------------------------------------------------------------

# The columns of the built-in layouts: (header, the row value written under it).
Columns = tuple[tuple[str, str], ...]

GL_COLUMNS: Columns = (
    ("Fund", "fund"),
    ("Orgn", "orgn"),
    ("Account", "account"),
    ("Program", "program"),
    ("Activity", "activity"),
    ("Location", "location"),
    ("Debit", "debit"),
    ("Credit", "credit"),
    ("Description", "description"),
    ("Reference ID", "reference"),
)
SUMMARY_COLUMNS: Columns = (
    ("BillingPeriod", "period"),
    ("PIEmail", "pi_email"),
    ("ProjectID", "project_id"),
    ("FundOrg", "fund_org"),
    ("ServiceName", "service_name"),
    ("Amount", "amount"),
    ("ResourceCount", "charge_count"),
)
DETAIL_COLUMNS: Columns = (
    ("BillingPeriod", "period"),
    ("Statement", "statement"),
    ("PIEmail", "pi_email"),
    ("ProjectID", "project_id"),
    ("FundOrg", "fund_org"),
    ("Source", "source"),
    ("ServiceName", "service_name"),
    ("ServiceCategory", "service_category"),
    ("ChargeCategory", "charge_category"),
    ("ResourceId", "resource_id"),
    ("ResourceName", "resource_name"),
    ("SubAccountId", "sub_account_id"),
    ("Region", "region"),
    ("Quantity", "quantity"),
    ("Unit", "unit"),
    ("ListCost", "list_cost"),
    ("BilledCost", "billed_cost"),
)
GL_HEADER = [header for header, _value in GL_COLUMNS]
SUMMARY_HEADER = [header for header, _value in SUMMARY_COLUMNS]
DETAIL_HEADER = [header for header, _value in DETAIL_COLUMNS]

ROW_ALIASES = {"entries": "entry", "lines": "line", "charges": "charge"}


@dataclass(frozen=True)
class FormatSpec:
    name: str
    label: str
    rows: str  # entries | lines | charges
    builtin: bool = False
    delimiter: str = ","
    header_template: str = ""
    row_template: str = ""
    format_id: int | None = None
    columns: Columns = ()  # a built-in layout's columns

    @property
    def writes_account(self) -> bool:
        """Whether each row carries an account code (then each needs one): a built-in layout with
        an account column, or a custom format whose row template names the row's account
        anywhere (charges have no account)."""
        if self.builtin:
            return any(value == "account" for _header, value in self.columns)
        if self.rows not in ("entries", "lines"):
            return False
        pattern = rf"\b(?:row|{ROW_ALIASES[self.rows]})\.account\b"
        return re.search(pattern, self.row_template) is not None


BUILTIN_FORMATS: dict[str, FormatSpec] = {
    "gl": FormatSpec(
        "gl",
        "gl: general ledger (Fund, Orgn, Account, Program, Activity, Location, Debit, Credit, "
        "Description, Reference ID)",
        "entries",
        builtin=True,
        columns=GL_COLUMNS,
    ),
    "summary": FormatSpec(
        "summary",
        "summary: one row per PI × project × source × service (statement lines)",
        "lines",
        builtin=True,
        columns=SUMMARY_COLUMNS,
    ),
    "detail": FormatSpec(
        "detail", "detail: one row per billed charge", "charges", builtin=True, columns=DETAIL_COLUMNS
    ),
}

# The built-in gl layout written as templates: the starting point of a new custom format.
GL_HEADER_TEMPLATE = ",".join(GL_HEADER) + "\n"
GL_ROW_TEMPLATE = ",".join("{{ entry." + value + " }}" for _header, value in GL_COLUMNS) + "\n"


def spec_of(fmt: JournalFormat) -> FormatSpec:
    return FormatSpec(
        name=fmt.name,
        label=f"{fmt.name}: {fmt.description}" if fmt.description else fmt.name,
        rows=fmt.rows,
        builtin=False,
        delimiter=fmt.delimiter or ",",
        header_template=fmt.header_template or "",
        row_template=fmt.row_template or "",
        format_id=fmt.pk,
    )


class LayoutError(Exception):
    """A layout cannot produce a correct file; `field` names the template at fault, if known."""

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


# --- layouts ----------------------------------------------------------------------------------


class Layout:
    def __init__(self, spec: FormatSpec) -> None:
        self.spec = spec

    def header(self, journal: Journal, exported_at: dt.datetime) -> list[list[str]]:
        raise NotImplementedError

    def rows(self, journal: Journal) -> Iterator[list[str]]:
        raise NotImplementedError

    def items(self, journal: Journal) -> Iterator[Entry | Line | ChargeRow]:
        """What the layout writes a row for: entries, statement lines or charges."""
        if self.spec.rows == "entries":
            yield from journal.entries
        elif self.spec.rows == "lines":
            yield from journal.lines
        else:
            yield from journal.charges()


class ColumnsLayout(Layout):
    """A built-in layout: one header line, then a row per item with the values of its columns."""

    def header(self, journal: Journal, exported_at: dt.datetime) -> list[list[str]]:
        return [[header for header, _value in self.spec.columns]]

    def rows(self, journal: Journal) -> Iterator[list[str]]:
        currency = journal.currency
        names = [value for _header, value in self.spec.columns]
        for item in self.items(journal):
            v = item.values(currency)
            yield [str(v[name]) for name in names]


_INVALID = "\x00"
_ENGINE = Engine(
    loaders=[],  # no {% include %} / {% extends %} of project templates
    autoescape=False,
    string_if_invalid=_INVALID + "%s" + _INVALID,
)
_INVALID_NAMES = re.compile(_INVALID + "(.*?)" + _INVALID)


def _exported_at_text(exported_at: dt.datetime) -> str:
    return exported_at.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class TemplateLayout(Layout):
    """An admin-edited format: header and row templates in the Django template language."""

    def __init__(self, spec: FormatSpec) -> None:
        super().__init__(spec)
        self.alias = ROW_ALIASES[spec.rows]
        self.header_template = self._compile(spec.header_template, "header_template")
        self.row_template = self._compile(spec.row_template, "row_template")
        self._check_row_variables()

    @staticmethod
    def _compile(source: str, field: str) -> Template:
        try:
            return Template(source, engine=_ENGINE)
        except TemplateSyntaxError as exc:
            raise LayoutError(f"template error: {exc}", field) from None

    def _check_row_variables(self) -> None:
        """`{{ entry.fnud }}` anywhere in the row template (inside {% if %} too) is an error."""
        known = set(row_variables(self.spec.rows))
        unknown = []
        for node in self.row_template.nodelist.get_nodes_by_type(VariableNode):
            var = getattr(getattr(node, "filter_expression", None), "var", None)
            lookups = getattr(var, "lookups", None)
            if lookups and lookups[0] in ("row", self.alias) and len(lookups) > 1 and lookups[1] not in known:
                unknown.append(".".join(lookups))
        if unknown:
            raise LayoutError(
                f"unknown variable(s) {', '.join(sorted(set(unknown)))}; {self.alias} variables are "
                + ", ".join(sorted(known)),
                "row_template",
            )

    def _render(self, template: Template, context: dict[str, Any], field: str, where: str) -> str:
        try:
            text = template.render(Context(context, autoescape=False, use_l10n=False))
        except Exception as exc:
            raise LayoutError(f"{where}: {type(exc).__name__}: {exc}", field) from None
        if _INVALID in text:
            names = sorted(set(_INVALID_NAMES.findall(text)))
            raise LayoutError(f"{where}: unknown variable(s) {', '.join(names)}", field)
        return text

    def _parse(self, text: str, field: str, where: str) -> list[list[str]]:
        try:
            records = list(
                csv.reader(
                    io.StringIO(text), delimiter=self.spec.delimiter, strict=True, skipinitialspace=True
                )
            )
        except csv.Error as exc:
            raise LayoutError(f"{where}: not valid CSV ({exc}): {text.strip()[:200]!r}", field) from None
        return [r for r in records if r and not (len(r) == 1 and not r[0].strip())]

    def _quoted(self, values: dict[str, Any]) -> dict[str, Any]:
        d = self.spec.delimiter
        return {k: csv_cell(v, d) if isinstance(v, str) else v for k, v in values.items()}

    def header(self, journal: Journal, exported_at: dt.datetime) -> list[list[str]]:
        currency = journal.currency
        context = self._quoted(
            {
                "period": journal.period,
                "format": self.spec.name,
                "currency": currency,
                "exported_at": _exported_at_text(exported_at),
                "statement_count": len(journal.statements),
                "entry_count": len(journal.entries),
                "line_count": len(journal.lines),
                "debit_total": money_text(journal.debit_total, currency),
                "credit_total": money_text(journal.credit_total, currency),
                "statement_total": money_text(journal.statement_total, currency),
            }
        )
        text = self._render(self.header_template, context, "header_template", "header")
        return self._parse(text, "header_template", "header")

    def rows(self, journal: Journal) -> Iterator[list[str]]:
        currency = journal.currency
        period = csv_cell(journal.period, self.spec.delimiter)
        for number, item in enumerate(self.items(journal), start=1):
            values = self._quoted(item.values(currency))
            context = {
                "row": values,
                self.alias: values,
                "period": period,
                "currency": currency,
                "number": number,
            }
            where = f"{self.alias} {number}"
            text = self._render(self.row_template, context, "row_template", where)
            yield from self._parse(text, "row_template", where)


def layout_for(spec: FormatSpec) -> Layout:
    return ColumnsLayout(spec) if spec.builtin else TemplateLayout(spec)


HEADER_VARIABLES = [
    "period",
    "format",
    "currency",
    "exported_at",
    "statement_count",
    "entry_count",
    "line_count",
    "debit_total",
    "credit_total",
    "statement_total",
]


# --- writing ----------------------------------------------------------------------------------


def _records(
    layout: Layout, journal: Journal, exported_at: dt.datetime
) -> tuple[list[list[str]], Iterator[list[str]]]:
    """Header records and data records, neutralised, with every data row as wide as the header."""
    header = [[neutralize(c) for c in record] for record in layout.header(journal, exported_at)]

    def rows() -> Iterator[list[str]]:
        width = len(header[-1]) if header else None
        for n, record in enumerate(layout.rows(journal), start=1):
            if width is None:
                width = len(record)
            elif len(record) != width:
                raise LayoutError(
                    f"row {n} has {len(record)} cells where the {'header has' if header else 'first row has'} "
                    f"{width}: {record!r} (a value containing the delimiter or a quote that the template "
                    "changed after quoting, or columns that differ)",
                    "row_template",
                )
            yield [neutralize(c) for c in record]

    return header, rows()


@dataclass
class Written:
    rows: int
    size_bytes: int
    sha256: str
    rows_sha256: str


def write_journal(journal: Journal, spec: FormatSpec, out: BinaryIO, *, exported_at: dt.datetime) -> Written:
    """Write the file (UTF-8, CRLF) into a binary stream positioned at its start."""
    layout = layout_for(spec)
    start = out.tell()
    text = io.TextIOWrapper(out, encoding="utf-8", newline="", write_through=True)
    writer = csv.writer(text, delimiter=spec.delimiter, lineterminator=LINE_END)
    header, rows = _records(layout, journal, exported_at)
    writer.writerows(header)
    text.flush()
    header_end = out.tell()
    count = 0
    for record in rows:
        writer.writerow(record)
        count += 1
    text.flush()
    text.detach()
    end = out.tell()
    full, body = hashlib.sha256(), hashlib.sha256()
    out.seek(start)
    position = start
    while position < end:
        chunk = out.read(min(1 << 20, end - position))
        if not chunk:
            break
        full.update(chunk)
        if position + len(chunk) > header_end:
            body.update(chunk[max(0, header_end - position) :])
        position += len(chunk)
    out.seek(end)
    return Written(rows=count, size_bytes=end - start, sha256=full.hexdigest(), rows_sha256=body.hexdigest())


@dataclass
class Preview:
    header: list[list[str]]
    rows: list[list[str]]
    more: bool


def preview_journal(journal: Journal, spec: FormatSpec, *, exported_at: dt.datetime, limit: int) -> Preview:
    header, rows = _records(layout_for(spec), journal, exported_at)
    taken: list[list[str]] = []
    more = False
    for record in rows:
        if len(taken) >= limit:
            more = True
            break
        taken.append(record)
    return Preview(header=header, rows=taken, more=more)
