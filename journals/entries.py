"""What a journal is made of: entries (debits and credits), statement lines, charges, and the
problems that refuse an export. Plain data, no database: `selectors.journal_build` fills it,
`formats` lays it out.

Amounts follow the cent rule: a line's amount is its statement line's rounded amount, a debit is
a sum of lines, the credit of a source is the sum of its debits. Amounts keep their sign: a
fund/org whose credits outweigh its usage for a source shows a negative debit (and its
source's credit shrinks by as much), so Σ debits = Σ credits = Σ statement totals always.
"""

from __future__ import annotations

import string
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from chargeback.errors import Refused
from chargeback.money import CURRENCY_MINOR_UNITS, ZERO, round_currency
from chargeback.regex import RegexError, compile_linear

DEBIT = "debit"
CREDIT = "credit"

# Named groups the fund/org split regex may use (any subset).
LEDGER_FIELDS = ("fund", "orgn", "account", "program", "activity", "location")
# Placeholders of the description and reference templates.
PLACEHOLDERS = ("source", "period", "fund_org", "pi_email", "project_id")
DEFAULT_DESCRIPTION = "{source} {period} Research Computing Charges"


# --- money as text ----------------------------------------------------------------------------


def money_text(value: Decimal, currency: str) -> str:
    """A rounded amount for a file: '1062.50', '-12.00', '0.00' (never '-0.00'); no symbol."""
    rounded = round_currency(value, currency)
    if rounded == 0:
        rounded = abs(rounded)
    return f"{rounded:f}"


def exact_text(value: Decimal | None, currency: str) -> str:
    """An exact amount, trailing zeros dropped down to the currency's minor unit: '0.12345', '85.00'."""
    if value is None:
        return ""
    places = CURRENCY_MINOR_UNITS.get(currency.upper(), 2)
    normal = value.normalize()
    exponent = normal.as_tuple().exponent
    if isinstance(exponent, int) and -exponent < places:
        normal = value.quantize(Decimal(1).scaleb(-places))
    if normal == 0:
        normal = abs(normal)
    return f"{normal:f}"


# --- templates of descriptions and references ----------------------------------------------


def text_template_errors(template: str) -> list[str]:
    """Why a description/reference template cannot be used (empty list: it can)."""
    errors = []
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as exc:
        return [f"{exc} (write a literal brace as {{{{ or }}}})"]
    for _literal, name, spec, conversion in parsed:
        if name is None:
            continue
        if name not in PLACEHOLDERS:
            allowed = ", ".join("{" + p + "}" for p in PLACEHOLDERS)
            errors.append(f"unknown placeholder {{{name}}}: use {allowed}")
        if conversion not in (None, "s"):
            errors.append(f"conversion !{conversion} is not supported")
        if spec and ("{" in spec or "}" in spec):
            errors.append("nested placeholders are not supported")
    if not errors:
        try:
            template.format_map(dict.fromkeys(PLACEHOLDERS, "x"))
        except (ValueError, KeyError, IndexError) as exc:
            errors.append(str(exc))
    return errors


def cut_at_word(text: str, limit: int) -> str:
    """`text` in at most `limit` characters, cut at a word boundary (a space), never inside a word:
    the words that do not fit are left out. Only a first word longer than the limit on its own
    is cut, since there is no boundary to cut at."""
    if len(text) <= limit:
        return text
    head = text[: limit + 1]  # a space right after the limit ends a whole word
    boundary = head.rfind(" ")
    if boundary <= 0:
        return text[:limit]
    return head[:boundary].rstrip()


def format_text(template: str, values: dict[str, str], limit: int | None = None) -> str:
    """Fill a checked template ({source} {period} {fund_org} {pi_email} {project_id}); cut to
    `limit` characters at a word boundary (`cut_at_word`)."""
    text = template.format_map({key: values.get(key, "") for key in PLACEHOLDERS})
    text = " ".join(text.split())  # one line: no tabs or newlines in a ledger description
    if limit:
        text = cut_at_word(text, limit)
    return text


def summarize(values: Iterable[str]) -> str:
    """One value for a description: the only one, or the first and '+N' for the others."""
    distinct = sorted({v for v in values if v})
    if not distinct:
        return ""
    return distinct[0] if len(distinct) == 1 else f"{distinct[0]} +{len(distinct) - 1}"


# --- fund/org splitting ----------------------------------------------------------------------


def regex_errors(pattern: str, *, named_groups: bool = False) -> list[str]:
    """Why a journal regex cannot be used (RE2: chargeback.regex), or []."""
    if not pattern:
        return []
    try:
        compiled = compile_linear(pattern)
    except RegexError as exc:
        return [str(exc)]
    if named_groups:
        if compiled.has_unnamed_groups:
            return [
                "unnamed groups (…) cannot be read: name them, e.g. (?P<fund>…), or make them "
                "non-capturing, (?:…)"
            ]
        unknown = sorted(set(compiled.group_names) - set(LEDGER_FIELDS))
        if unknown:
            return [
                f"unknown named group(s) {', '.join(unknown)}: use any of {', '.join(LEDGER_FIELDS)}, "
                "e.g. ^(?P<fund>\\d{6})-(?P<orgn>\\d{4})$"
            ]
    return []


class FundOrgSplitter:
    """Splits fund/org strings into ledger fields by a regex with named groups (whole-string match).

    Fields the regex does not capture are empty, except `fund`, which is the whole fund/org when
    the regex has no `fund` group or no regex is set (the original product's behaviour)."""

    def __init__(self, pattern: str) -> None:
        self.pattern = pattern
        self.regex = compile_linear(pattern) if pattern else None
        self._cache: dict[str, dict[str, str] | None] = {}

    def split(self, fund_org: str) -> dict[str, str] | None:
        """The ledger fields, or None when the regex does not match."""
        if fund_org in self._cache:
            return self._cache[fund_org]
        fields = dict.fromkeys(LEDGER_FIELDS, "")
        result: dict[str, str] | None = fields
        if self.regex is None:
            fields["fund"] = fund_org
        else:
            groups = self.regex.fullmatch_groups(fund_org)
            if groups is None:
                result = None
            else:
                fields.update(groups)
                if "fund" not in self.regex.group_names:
                    fields["fund"] = fund_org
        self._cache[fund_org] = result
        return result


# --- the journal -----------------------------------------------------------------------------


@dataclass
class Problem:
    """One reason the journal cannot be exported."""

    code: str  # period | statements | fund_org | unbalanced | account | template | format
    message: str

    def as_dict(self) -> dict[str, str]:
        return {"code": self.code, "message": self.message}

    def __str__(self) -> str:
        return self.message


class JournalRefused(Refused):
    """The journal of a period cannot be exported; `.errors` are the `Problem`s, all of them."""

    def __init__(self, period: str, problems: list[Problem]) -> None:
        self.period = period
        self.errors = list(problems)
        super().__init__(
            f"the journal of {period} cannot be exported: " + "; ".join(p.message for p in problems)
        )

    def describe(self) -> str:
        lines = [f"the journal of {self.period} cannot be exported:"]
        lines += [f"  - {p.message}" for p in self.errors]
        return "\n".join(lines)


@dataclass
class StatementRef:
    number: str
    version: int
    pi_email: str
    project_id: str
    fund_org: str
    billed_total: Decimal

    @property
    def label(self) -> str:
        return f"{self.number} v{self.version}"


@dataclass
class Entry:
    """One journal entry: a debit to a PI fund/org for one source (and account), or the credit of
    a source to its own fund/org."""

    side: str
    period: str
    source_slug: str
    source_name: str
    fund_org: str
    ledger: dict[str, str]
    account: str
    amount: Decimal
    description: str = ""
    reference: str = ""
    pi_emails: list[str] = field(default_factory=list)
    project_ids: list[str] = field(default_factory=list)
    statements: list[str] = field(default_factory=list)
    line_count: int = 0

    @property
    def is_debit(self) -> bool:
        return self.side == DEBIT

    @property
    def debit(self) -> Decimal | None:
        return self.amount if self.is_debit else None

    @property
    def credit(self) -> Decimal | None:
        return None if self.is_debit else self.amount

    def values(self, currency: str) -> dict[str, Any]:
        amount = money_text(self.amount, currency)
        # D/C after moving a negative amount to the other side (for layouts that want it).
        flipped = self.amount < 0
        dc = ("C" if flipped else "D") if self.is_debit else ("D" if flipped else "C")
        return {
            "side": self.side,
            "is_debit": self.is_debit,
            "is_credit": not self.is_debit,
            "period": self.period,
            "source": self.source_slug,
            "source_name": self.source_name,
            "fund_org": self.fund_org,
            **{name: self.ledger.get(name, "") for name in LEDGER_FIELDS},
            "account": self.account,
            "amount": amount,
            "debit": amount if self.is_debit else "",
            "credit": "" if self.is_debit else amount,
            "amount_abs": money_text(abs(self.amount), currency),
            "dc": dc,
            "description": self.description,
            "reference": self.reference,
            "pi_email": summarize(self.pi_emails),
            "project_id": summarize(self.project_ids),
            "statements": " ".join(self.statements),
            "line_count": self.line_count,
        }


@dataclass
class Line:
    """One statement line (PI × project × source × service, credits apart): the summary level."""

    period: str
    statement: str
    version: int
    pi_email: str
    pi_name: str
    project_id: str
    project_name: str
    fund_org: str
    cost_center: str
    reference_1: str
    reference_2: str
    source_slug: str
    source_name: str
    service_name: str
    kind: str
    charge_count: int
    list_amount: Decimal
    discount_amount: Decimal
    amount: Decimal
    account: str = ""
    ledger: dict[str, str] = field(default_factory=dict)

    @property
    def service_label(self) -> str:
        """The service, with the kind for credit and adjustment lines: 'Amazon EC2 (Credit)'."""
        return f"{self.service_name} ({self.kind})" if self.kind else self.service_name

    def values(self, currency: str) -> dict[str, Any]:
        return {
            "period": self.period,
            "statement": self.statement,
            "version": self.version,
            "pi_email": self.pi_email,
            "pi_name": self.pi_name,
            "project_id": self.project_id,
            "project_name": self.project_name,
            "fund_org": self.fund_org,
            **{name: self.ledger.get(name, "") for name in LEDGER_FIELDS},
            "account": self.account,
            "cost_center": self.cost_center,
            "reference_1": self.reference_1,
            "reference_2": self.reference_2,
            "source": self.source_slug,
            "source_name": self.source_name,
            "service_name": self.service_label,
            "kind": self.kind,
            "charge_count": self.charge_count,
            "list_amount": money_text(self.list_amount, currency),
            "discount_amount": money_text(self.discount_amount, currency),
            "amount": money_text(self.amount, currency),
        }


@dataclass(slots=True)
class ChargeRow:
    """One billed charge of a statement (the detail level); amounts exact."""

    period: str
    statement: str
    pi_email: str
    project_id: str
    fund_org: str
    source_slug: str
    source_name: str
    service_name: str
    service_category: str
    charge_category: str
    resource_id: str
    resource_name: str
    sub_account_id: str
    region: str
    sku_id: str
    quantity: Decimal | None
    unit: str
    list_cost: Decimal
    billed_cost: Decimal
    line_count: int

    def values(self, currency: str) -> dict[str, Any]:
        return {
            "period": self.period,
            "statement": self.statement,
            "pi_email": self.pi_email,
            "project_id": self.project_id,
            "fund_org": self.fund_org,
            "source": self.source_slug,
            "source_name": self.source_name,
            "service_name": self.service_name,
            "service_category": self.service_category,
            "charge_category": self.charge_category,
            "resource_id": self.resource_id,
            "resource_name": self.resource_name,
            "sub_account_id": self.sub_account_id,
            "region": self.region,
            "sku_id": self.sku_id,
            "quantity": "" if self.quantity is None else f"{self.quantity.normalize():f}",
            "unit": self.unit,
            "list_cost": exact_text(self.list_cost, currency),
            "billed_cost": exact_text(self.billed_cost, currency),
            "line_count": self.line_count,
        }


def _no_charges() -> Iterator[ChargeRow]:
    return iter(())


@dataclass
class Journal:
    """The journal of a period: what every layout is made from, and why it may not be exported."""

    period: str
    currency: str
    status: str = ""
    statements: list[StatementRef] = field(default_factory=list)
    lines: list[Line] = field(default_factory=list)
    entries: list[Entry] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    charges: Callable[[], Iterator[ChargeRow]] = _no_charges

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def statement_total(self) -> Decimal:
        return sum((s.billed_total for s in self.statements), ZERO)

    @property
    def debits(self) -> list[Entry]:
        return [e for e in self.entries if e.is_debit]

    @property
    def credits(self) -> list[Entry]:
        return [e for e in self.entries if not e.is_debit]

    @property
    def debit_total(self) -> Decimal:
        return sum((e.amount for e in self.entries if e.is_debit), ZERO)

    @property
    def credit_total(self) -> Decimal:
        return sum((e.amount for e in self.entries if not e.is_debit), ZERO)

    def refuse_if_problems(self) -> None:
        if self.problems:
            raise JournalRefused(self.period, self.problems)
