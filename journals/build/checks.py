"""Every reason a journal cannot be exported, each check a function of plain data: settings that
cannot be used, statements missing or stale, a fund/org to debit or credit that is empty or the
split regex cannot split, an account code that is missing or fails the account code regex, and
debits that do not balance. `journals.build.pipeline` runs them in this order."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal

from chargeback.money import ZERO, format_money
from chargeback.regex import compile_linear
from journals.entries import (
    Entry,
    FundOrgSplitter,
    Line,
    Problem,
    regex_errors,
    text_template_errors,
)

from .inputs import LineInput, SettingsInput, StatementChangesInput, StatementInput

FIX_ACCOUNT = (
    "set the default account in the journal settings, the source's account "
    "(openchargeback sources update SLUG --account ...) or the project's GL account"
)


def listing(items: Iterable[str], limit: int = 5) -> str:
    """Distinct items in their order, the first `limit` named: 'a, b and 3 more'."""
    items = list(dict.fromkeys(items))
    if len(items) <= limit:
        return ", ".join(items)
    return f"{', '.join(items[:limit])} and {len(items) - limit} more"


def plural(n: int, one: str, many: str) -> str:
    return f"{n} {one if n == 1 else many}"


# --- the settings -----------------------------------------------------------------------------


@dataclass(frozen=True)
class CheckedSettings:
    """The settings' problems and what can be used of them: the fund/org splitter (none when its
    regex is unusable), the account code regex ("" when unset or unusable), whether the
    description and reference templates can be filled."""

    problems: list[Problem]
    splitter: FundOrgSplitter
    account_regex: str
    templates_ok: bool


def check_settings(settings: SettingsInput) -> CheckedSettings:
    """Settings saved before validation existed (or written around it) are checked again here."""
    problems = []
    fund_org_errors = regex_errors(settings.fund_org_regex, named_groups=True)
    if fund_org_errors:
        problems.append(Problem("fund_org", f"the fund/org split regex is unusable: {fund_org_errors[0]}"))
    splitter = FundOrgSplitter("" if fund_org_errors else settings.fund_org_regex)
    account_regex = settings.account_regex
    account_errors = regex_errors(account_regex)
    if account_errors:
        problems.append(Problem("account", f"the account code regex is unusable: {account_errors[0]}"))
        account_regex = ""
    templates_ok = True
    for name in ("debit_description", "credit_description", "reference_template"):
        errors = text_template_errors(getattr(settings, name))
        if errors:
            templates_ok = False
            problems.append(Problem("template", f"the {name.replace('_', ' ')} is unusable: {errors[0]}"))
    return CheckedSettings(problems, splitter, account_regex, templates_ok)


# --- the statements ---------------------------------------------------------------------------


def statement_change_problems(changes: StatementChangesInput, currency: str) -> list[Problem]:
    """Statements missing or stale, and billable charges nobody can be billed for. The period may
    be open: the journal is that of its current statements, as the original's monthly script
    exports it right after generating."""
    problems = []
    if changes.new:
        n = len(changes.new)
        who = listing(f"{email} / {code or '(no project)'}" for email, code in changes.new)
        problems.append(
            Problem(
                "statements",
                f"{plural(n, 'PI × project has', 'PI × projects have')} billable charges but no statement "
                f"({who}); run generate",
            )
        )
    if changes.stale:
        problems.append(
            Problem(
                "statements",
                f"{plural(len(changes.stale), 'statement is', 'statements are')} out of date (charges "
                f"changed since generating: {listing(changes.stale)}); run generate",
            )
        )
    if changes.unbillable_count:
        n = changes.unbillable_count
        problems.append(
            Problem(
                "statements",
                f"{plural(n, 'billable charge', 'billable charges')} "
                f"({format_money(changes.unbillable_billed, currency)}) {'has' if n == 1 else 'have'} no PI "
                "to bill, so no statement carries them; correct the attribution or reject them",
            )
        )
    return problems


def statement_set_problems(
    statements: Sequence[StatementInput], currency: str, period: str, *, other_statement_problems: bool
) -> list[Problem]:
    """Statements issued in another currency than the installation's, or none at all (said only
    when no other statement problem explains it)."""
    problems = []
    other_currency = [s.label for s in statements if s.currency != currency]
    if other_currency:
        problems.append(
            Problem(
                "statements",
                f"{listing(other_currency)} {'was' if len(other_currency) == 1 else 'were'} issued in "
                f"another currency than {currency}; run generate",
            )
        )
    if not statements and not problems and not other_statement_problems:
        problems.append(
            Problem("statements", f"{period} has no issued statements (nothing billable): nothing to export")
        )
    return problems


def statement_total_problems(
    statements: Iterable[StatementInput], lines: Iterable[LineInput], currency: str
) -> list[Problem]:
    """A statement whose total is not the sum of its lines (changed behind the statements' back)."""
    line_totals: Mapping[int, Decimal] = _line_totals(lines)
    problems = []
    for st in statements:
        total = line_totals.get(st.id, ZERO)
        if total != st.billed_total:
            problems.append(
                Problem(
                    "statements",
                    f"statement {st.label}: total {format_money(st.billed_total, currency)} is not the sum "
                    f"of its lines ({format_money(total, currency)}); run generate",
                )
            )
    return problems


def _line_totals(lines: Iterable[LineInput]) -> dict[int, Decimal]:
    totals: dict[int, Decimal] = defaultdict(lambda: ZERO)
    for line in lines:
        totals[line.statement_id] += line.amount
    return totals


# --- fund/orgs --------------------------------------------------------------------------------


def fund_org_problems(
    debits: Iterable[Entry], credits: Iterable[Entry], splitter: FundOrgSplitter, currency: str
) -> list[Problem]:
    """Debits need a fund/org to debit, and every fund/org (debited or credited) must match the
    fund/org split regex."""
    problems = []
    no_fund_org: list[Entry] = []
    unsplittable: dict[str, list[str]] = defaultdict(list)
    for entry in debits:
        if not entry.fund_org:
            no_fund_org.append(entry)
        elif splitter.split(entry.fund_org) is None:
            unsplittable[entry.fund_org] += entry.statements
    if no_fund_org:
        labels = [n for e in no_fund_org for n in e.statements]
        total = sum((e.amount for e in no_fund_org), ZERO)
        problems.append(
            Problem(
                "fund_org",
                f"{plural(len(set(labels)), 'statement has', 'statements have')} no fund/org to debit "
                f"({listing(labels)}; {format_money(total, currency)}): set the fund/org of the project "
                "(or correct the charges) and run generate",
            )
        )
    for fund_org, labels in sorted(unsplittable.items()):
        problems.append(
            Problem(
                "fund_org",
                f"fund/org {fund_org!r} ({'statement' if len(set(labels)) == 1 else 'statements'} "
                f"{listing(labels)}) does not match the fund/org split regex {splitter.pattern}",
            )
        )
    for entry in credits:
        if splitter.split(entry.fund_org) is None:
            problems.append(
                Problem(
                    "fund_org",
                    f"credit fund/org {entry.fund_org!r} of source {entry.source_slug} does not match the "
                    f"fund/org split regex {splitter.pattern}",
                )
            )
    return problems


# --- account codes ----------------------------------------------------------------------------


@dataclass(frozen=True)
class AccountColumn:
    """The chosen layout writes an account code on each of its `rows` (entries or lines): then
    every one of them needs one."""

    layout: str
    rows: str  # entries | lines


def _place(entry: Entry) -> str:
    if entry.is_debit:
        return f"debit of {entry.fund_org or '(no fund/org)'} for {entry.source_slug}"
    return f"credit of {entry.source_slug}"


def account_problems(
    entries: Sequence[Entry],
    lines: Sequence[Line],
    account_regex: str,
    column: AccountColumn | None = None,
) -> list[Problem]:
    """Account codes the account code regex refuses (an empty one too), one problem per code;
    and, when the layout writes an account column, every entry or line without an account code.
    With a usable regex the empty codes of the entries are refused by it already; the layout's
    check then adds nothing, so a missing code is said once."""
    problems = []
    if account_regex:
        compiled = compile_linear(account_regex)
        accounts = sorted({entry.account for entry in entries})
        valid = dict(zip(accounts, compiled.fullmatch_many(accounts).tolist(), strict=True))
        bad: dict[str, list[str]] = defaultdict(list)
        for entry in entries:
            if not valid[entry.account]:
                bad[entry.account].append(_place(entry))
        for account, places in sorted(bad.items()):
            if account:
                message = (
                    f"account code {account!r} ({listing(places, 3)}) does not match the account code "
                    f"regex {account_regex}"
                )
            else:
                message = (
                    f"no account code for {listing(places, 3)}, and the account code regex {account_regex} "
                    "requires one: set the default account, the source's account or the project's GL account"
                )
            problems.append(Problem("account", message))
        return problems
    if column is None:
        return problems
    if column.rows == "lines":
        places = [
            f"the lines of {ln.fund_org or '(no fund/org)'} for {ln.source_slug} ({ln.statement})"
            for ln in lines
            if not ln.account
        ]
    else:
        places = [_place(e) for e in entries if not e.account]
    if places:
        problems.append(
            Problem(
                "account",
                f"no account code for {listing(places, 3)}, and the {column.layout} layout writes one: "
                f"{FIX_ACCOUNT} (a layout without an account column, such as summary, needs none)",
            )
        )
    return problems


# --- balance ----------------------------------------------------------------------------------


def balance_problems(
    debit_total: Decimal,
    credit_total: Decimal,
    line_total: Decimal,
    uncredited: Iterable[tuple[str, Decimal]],
    currency: str,
) -> list[Problem]:
    """Σ debits = Σ credits = Σ statement lines, or why not (a source without a credit fund/org)."""

    def fmt(value: Decimal) -> str:
        return format_money(value, currency)

    problems = []
    if debit_total != credit_total:
        reasons = [
            f"source {slug} has no credit fund/org for its {fmt(total)} of debits "
            f"(set one in Sources: openchargeback sources update {slug} --fund-org ...)"
            for slug, total in sorted(uncredited)
        ] or ["the credits do not add up to the debits"]
        problems.append(
            Problem(
                "unbalanced",
                f"debits ({fmt(debit_total)}) ≠ credits ({fmt(credit_total)}): " + "; ".join(reasons),
            )
        )
    if debit_total != line_total:
        problems.append(
            Problem("unbalanced", f"debits ({fmt(debit_total)}) ≠ the statement lines ({fmt(line_total)})")
        )
    return problems
