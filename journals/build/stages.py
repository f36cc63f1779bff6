"""The stages that turn a period's statement lines into journal entries, in the order
`journals.build.pipeline` runs them. Each is a function of plain data (`journals.build.inputs`);
none reads the database.

Amounts follow the cent rule: a line's amount is its statement line's, already rounded; a debit
is a sum of lines, a credit the sum of its source's debits, so Σ debits = Σ credits = Σ lines.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from decimal import Decimal

from chargeback.csv_safety import neutralize
from chargeback.money import ZERO
from journals.entries import (
    CREDIT,
    DEBIT,
    Entry,
    FundOrgSplitter,
    Line,
    cut_at_word,
    format_text,
    summarize,
)

from .inputs import LineInput, SettingsInput, SourceInput, StatementInput

# Where a line of each kind stands among the lines of one service.
_KIND_ORDER = {"": 0, "Credit": 1, "Adjustment": 2}


# --- account codes from tags ------------------------------------------------------------------


def tag_accounts(
    tagged: Iterable[tuple[int, str, object]], tag_key: str, prefixes: Sequence[str]
) -> dict[tuple[int, str], str]:
    """Account code per (PI id, project code) from the account tag of their charges: the most
    common value (the smallest of equals). `tagged` holds (PI id, project code, tags) per charge;
    a tag key may carry one of the import's tag `prefixes`, and keys compare without case."""
    key = (tag_key or "").strip().lower()
    if not key:
        return {}
    prefixes = [p.lower() for p in prefixes]
    counts: dict[tuple[int, str], Counter[str]] = defaultdict(Counter)
    for pi_id, code, tags in tagged:
        if not isinstance(tags, dict):
            continue
        for raw_key, value in tags.items():
            name = str(raw_key).strip().lower()
            for prefix in prefixes:
                if name.startswith(prefix):
                    name = name[len(prefix) :]
                    break
            if name == key and value not in (None, "") and str(value).strip():
                counts[(pi_id, code)][str(value).strip()] += 1
    return {k: min(c.items(), key=lambda item: (-item[1], item[0]))[0] for k, c in counts.items() if c}


# --- stage 1: each statement line's fund/org split and account code -------------------------


@dataclass(frozen=True)
class ResolvedLine:
    """A statement line with its statement, its source, the ledger fields of the PI's fund/org
    (empty when the fund/org is empty or the regex cannot split it) and its debit account code."""

    statement: StatementInput
    source: SourceInput
    line: LineInput
    ledger: dict[str, str]
    account: str

    @property
    def fund_org(self) -> str:
        return self.statement.fund_org


def debit_account(
    statement: StatementInput, ledger: Mapping[str, str], source: SourceInput, default_account: str
) -> str:
    """A debit's account code: the project's GL account, else the account tag on the project's
    charges, else the `account` group of the PI's fund/org, else the source's account, else the
    default ("" when none gives one)."""
    return (
        statement.project_gl_account
        or statement.tag_account
        or ledger.get("account", "")
        or source.account
        or default_account
    )


def resolve_lines(
    statements: Iterable[StatementInput],
    lines: Iterable[LineInput],
    sources: Mapping[int, SourceInput],
    splitter: FundOrgSplitter,
    default_account: str,
) -> list[ResolvedLine]:
    """Stage 1: every statement line, in the order given, with its fund/org's ledger fields and
    its account code (`debit_account`). A line of a statement or source not given is an error
    of the caller (KeyError): the lines come from those statements."""
    by_id = {s.id: s for s in statements}
    resolved = []
    for line in lines:
        statement = by_id[line.statement_id]
        source = sources[line.source_id]
        fund_org = statement.fund_org
        ledger = (splitter.split(fund_org) if fund_org else None) or {}
        account = debit_account(statement, ledger, source, default_account)
        resolved.append(ResolvedLine(statement, source, line, ledger, account))
    return resolved


def journal_lines(resolved: Iterable[ResolvedLine], period: str) -> list[Line]:
    """The summary level: one `Line` per statement line, by PI, project, service, source, kind
    (usage, credit, adjustment) and statement, as the original sorted its journal."""
    lines = []
    for r in resolved:
        st, ln = r.statement, r.line
        lines.append(
            Line(
                period=period,
                statement=st.number,
                version=st.version,
                pi_email=st.pi_email,
                pi_name=st.pi_name,
                project_id=st.project_id,
                project_name=st.project_name,
                fund_org=st.fund_org,
                cost_center=st.cost_center,
                reference_1=st.reference_1,
                reference_2=st.reference_2,
                source_slug=r.source.slug,
                source_name=ln.source_name,
                service_name=ln.service_name,
                kind=ln.kind,
                charge_count=ln.charge_count,
                list_amount=ln.list_amount,
                discount_amount=ln.discount_amount,
                amount=ln.amount,
                account=r.account,
                ledger=r.ledger,
            )
        )
    lines.sort(
        key=lambda ln: (
            ln.pi_email,
            ln.project_id,
            ln.service_name,
            ln.source_slug,
            _KIND_ORDER.get(ln.kind, 9),
            ln.statement,
        )
    )
    return lines


# --- stage 2: one debit per (fund/org, source, account) ---------------------------------------


def debit_entries(resolved: Iterable[ResolvedLine], period: str) -> list[Entry]:
    """Stage 2: one debit per (PI fund/org, source, account code), the sum of its lines, in the
    order its first line comes; each lists its PIs, projects and statements in the lines' order."""
    debits: dict[tuple[str, int, str], Entry] = {}
    for r in resolved:
        key = (r.fund_org, r.source.id, r.account)
        entry = debits.get(key)
        if entry is None:
            entry = debits[key] = Entry(
                side=DEBIT,
                period=period,
                source_slug=r.source.slug,
                source_name=r.source.name,
                fund_org=r.fund_org,
                ledger=r.ledger,
                account=r.account,
                amount=ZERO,
            )
        entry.amount += r.line.amount
        entry.line_count += 1
        for known, value in (
            (entry.pi_emails, r.statement.pi_email),
            (entry.project_ids, r.statement.project_id),
            (entry.statements, r.statement.number),
        ):
            if value not in known:
                known.append(value)
    return list(debits.values())


# --- stage 3: entries of 0.00 -----------------------------------------------------------------


def keeps(amount: Decimal, include_zero: bool) -> bool:
    """Whether an entry of this amount is written: always, unless it is 0.00 and the settings
    leave such entries out."""
    return include_zero or amount != 0


def drop_zero_entries(entries: Iterable[Entry], include_zero: bool) -> list[Entry]:
    """Stage 3: the entries the journal writes (`keeps`), in their order. Leaving out entries of
    0.00 changes no total, so the journal stays balanced."""
    return [e for e in entries if keeps(e.amount, include_zero)]


# --- stage 4: one credit per source ---------------------------------------------------------


@dataclass(frozen=True)
class Credits:
    """The credits of the sources, by slug, and the sources that have debits but no credit
    fund/org to credit (slug, Σ debits): those leave the journal unbalanced."""

    entries: list[Entry]
    uncredited: list[tuple[str, Decimal]]


def credit_entries(
    debits: Iterable[Entry],
    sources: Iterable[SourceInput],
    splitter: FundOrgSplitter,
    default_account: str,
    period: str,
    include_zero: bool,
) -> Credits:
    """Stage 4: one credit per source of the (written) debits, to the source's credit fund/org,
    for the sum of its debits; a source whose sum is 0.00 is credited only when the settings
    include such entries. Account code: the source's, else the `account` group of its fund/org,
    else the default. A fund/org the regex cannot split is credited without ledger fields (the
    checks refuse it)."""
    by_slug = {s.slug: s for s in sources}
    grouped: dict[str, list[Entry]] = defaultdict(list)
    for entry in debits:
        grouped[entry.source_slug].append(entry)
    credits: list[Entry] = []
    uncredited: list[tuple[str, Decimal]] = []
    for slug, entries in sorted(grouped.items()):
        source = by_slug[slug]
        total = sum((e.amount for e in entries), ZERO)
        if not keeps(total, include_zero):
            continue
        if not source.fund_org:
            uncredited.append((slug, total))
            continue
        ledger = splitter.split(source.fund_org) or {}
        credits.append(
            Entry(
                side=CREDIT,
                period=period,
                source_slug=slug,
                source_name=source.name,
                fund_org=source.fund_org,
                ledger=ledger,
                account=source.account or ledger.get("account", "") or default_account,
                amount=total,
                statements=sorted({n for e in entries for n in e.statements}),
                line_count=sum(e.line_count for e in entries),
            )
        )
    return Credits(credits, uncredited)


def entry_order(entries: Iterable[Entry]) -> list[Entry]:
    """Entries by fund/org, source and account code."""
    return sorted(entries, key=lambda e: (e.fund_org, e.source_slug, e.account))


# --- stage 5: descriptions and references -----------------------------------------------------


def describe_entries(entries: Iterable[Entry], settings: SettingsInput) -> list[Entry]:
    """Stage 5: each entry with its description (the debit or credit template, cut at a word to
    the maximum length) and its reference, from checked templates. Several PIs or projects in one
    debit show as 'first +N'."""
    limit = settings.description_max_length or None
    described = []
    for entry in entries:
        values = {
            "source": entry.source_name,
            "period": entry.period,
            "fund_org": entry.fund_org,
            "pi_email": summarize(entry.pi_emails),
            "project_id": summarize(entry.project_ids),
        }
        template = settings.debit_description if entry.is_debit else settings.credit_description
        description = format_text(template, values, limit)
        if limit and neutralize(description) != description:
            # The apostrophe that neutralises a formula counts against the length too.
            description = cut_at_word(description, limit - 1)
        reference = format_text(settings.reference_template, values)
        described.append(replace(entry, description=description, reference=reference))
    return described
