"""Building a period's journal from its current statements: entries per statement line (debit the
PI's fund/org, credit the source's), lines summed per account, charge rows for the detail layout,
and the problems that refuse an export."""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from decimal import Decimal

from billing.models import BillingPeriod, Charge, Project, Source
from billing.selectors import BILLABLE_STATES, billing_settings_get
from chargeback.money import ZERO, format_money
from chargeback.regex import compile_linear
from journals.entries import (
    CREDIT,
    DEBIT,
    ChargeRow,
    Entry,
    FundOrgSplitter,
    Journal,
    Line,
    Problem,
    StatementRef,
    cut_at_word,
    format_text,
    regex_errors,
    summarize,
    text_template_errors,
)
from journals.formats import (
    neutralize,
)
from journals.models import JournalSettings
from statements.models import Statement, StatementLine
from statements.selectors import current_statements, statement_changes

_KIND_ORDER = {"": 0, "Credit": 1, "Adjustment": 2}


# --- building the journal ---------------------------------------------------------------------


def _listing(items: Iterable[str], limit: int = 5) -> str:
    items = list(dict.fromkeys(items))
    if len(items) <= limit:
        return ", ".join(items)
    return f"{', '.join(items[:limit])} and {len(items) - limit} more"


def _plural(n: int, one: str, many: str) -> str:
    return f"{n} {one if n == 1 else many}"


def _statement_problems(period: BillingPeriod, currency: str) -> list[Problem]:
    """Statements missing or stale, and billable charges nobody can be billed for. The period may
    be open: the journal is that of its current statements, as the original's monthly script
    exports it right after generating."""
    problems = []
    changes = statement_changes(period)
    if changes.new:
        n = len(changes.new)
        who = _listing(f"{d.pi_email} / {d.project_code or '(no project)'}" for d in changes.new)
        problems.append(
            Problem(
                "statements",
                f"{_plural(n, 'PI × project has', 'PI × projects have')} billable charges but no statement "
                f"({who}); run generate",
            )
        )
    stale = [old for _draft, old in changes.changed] + list(changes.withdrawn)
    if stale:
        problems.append(
            Problem(
                "statements",
                f"{_plural(len(stale), 'statement is', 'statements are')} out of date (charges changed "
                f"since generating: {_listing(s.label for s in stale)}); run generate",
            )
        )
    drafts = changes.drafts
    if drafts.unbillable_count:
        n = drafts.unbillable_count
        problems.append(
            Problem(
                "statements",
                f"{_plural(n, 'billable charge', 'billable charges')} "
                f"({format_money(drafts.unbillable_billed, currency)}) {'has' if n == 1 else 'have'} no PI "
                "to bill, so no statement carries them; correct the attribution or reject them",
            )
        )
    return problems


def _most_common(counts: Counter[str]) -> str:
    return min(counts.items(), key=lambda item: (-item[1], item[0]))[0] if counts else ""


def _tag_accounts(period: BillingPeriod, tag_key: str) -> dict[tuple[int, str], str]:
    """Account code per (PI, project) from the account tag of their billable charges (most common)."""
    key = (tag_key or "").strip().lower()
    if not key:
        return {}
    prefixes = [p.lower() for p in billing_settings_get().tag_prefix_list]
    counts: dict[tuple[int, str], Counter[str]] = defaultdict(Counter)
    charges = Charge.objects.filter(
        period=period, review_state__in=BILLABLE_STATES, pi__isnull=False, tags__icontains=key
    ).values_list("pi_id", "project_code", "tags")
    for pi_id, code, tags in charges.order_by().iterator(chunk_size=5000):
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
    return {k: _most_common(c) for k, c in counts.items()}


@dataclass
class _Statement:
    ref: StatementRef
    pi_id: int
    pi_name: str
    project_name: str
    cost_center: str
    reference_1: str
    reference_2: str
    project_account: str
    line_total: Decimal = ZERO


def journal_assemble(period: BillingPeriod, settings: JournalSettings) -> Journal:
    """The journal of a period from its current statements, and every reason it cannot be exported
    (`journal.problems`; empty when it can). Never raises for a business problem."""
    currency = billing_settings_get().currency_code
    journal = Journal(period=period.period, currency=currency, status=period.status)
    problems = journal.problems
    problems += _statement_problems(period, currency)

    def fmt(value: Decimal) -> str:
        return format_money(value, currency)

    # Settings saved before validation existed (or written around it) are checked again here.
    regex_problem = regex_errors(settings.fund_org_regex, named_groups=True)
    if regex_problem:
        problems.append(Problem("fund_org", f"the fund/org split regex is unusable: {regex_problem[0]}"))
    splitter = FundOrgSplitter("" if regex_problem else settings.fund_org_regex)
    account_regex = settings.account_regex
    if account_regex and regex_errors(account_regex):
        problems.append(
            Problem("account", f"the account code regex is unusable: {regex_errors(account_regex)[0]}")
        )
        account_regex = ""
    template_ok = True
    for name in ("debit_description", "credit_description", "reference_template"):
        errors = text_template_errors(getattr(settings, name))
        if errors:
            template_ok = False
            problems.append(Problem("template", f"the {name.replace('_', ' ')} is unusable: {errors[0]}"))

    current = current_statements(period)
    tag_accounts = _tag_accounts(period, settings.account_tag)
    project_accounts = dict(
        Project.objects.filter(pk__in=current.values("project_id"))
        .exclude(gl_account="")
        .values_list("pk", "gl_account")
    )
    statements: dict[int, _Statement] = {}
    other_currency = []
    for row in current.values(
        "pk",
        "number",
        "version",
        "pi_id",
        "pi_email",
        "pi_name",
        "project_code",
        "project_id",
        "project_name",
        "fund_org",
        "cost_center",
        "reference_1",
        "reference_2",
        "currency",
        "billed_total",
    ):
        ref = StatementRef(
            number=row["number"],
            version=row["version"],
            pi_email=row["pi_email"],
            project_id=row["project_code"],
            fund_org=row["fund_org"],
            billed_total=row["billed_total"],
        )
        statements[row["pk"]] = _Statement(
            ref=ref,
            pi_id=row["pi_id"],
            pi_name=row["pi_name"],
            project_name=row["project_name"],
            cost_center=row["cost_center"],
            reference_1=row["reference_1"],
            reference_2=row["reference_2"],
            project_account=project_accounts.get(row["project_id"], "")
            or tag_accounts.get((row["pi_id"], row["project_code"]), ""),
        )
        if row["currency"] != currency:
            other_currency.append(ref.label)
    journal.statements = [s.ref for s in statements.values()]
    if other_currency:
        problems.append(
            Problem(
                "statements",
                f"{_listing(other_currency)} {'was' if len(other_currency) == 1 else 'were'} issued in "
                f"another currency than {currency}; run generate",
            )
        )
    if not statements and not any(p.code == "statements" for p in problems):
        problems.append(
            Problem(
                "statements",
                f"{period.period} has no issued statements (nothing billable): nothing to export",
            )
        )

    sources = {s.pk: s for s in Source.objects.all()}
    debits: dict[tuple[str, int, str], Entry] = {}
    lines = StatementLine.objects.filter(statement__period=period).exclude(
        statement__state=Statement.State.SUPERSEDED
    )
    for (
        statement_id,
        source_id,
        source_name,
        service_name,
        kind,
        charge_count,
        list_amount,
        discount_amount,
        amount,
    ) in lines.order_by("statement_id", "position").values_list(
        "statement_id",
        "source_id",
        "source_name",
        "service_name",
        "kind",
        "charge_count",
        "list_amount",
        "discount_amount",
        "amount",
    ):
        st = statements[statement_id]
        source = sources[source_id]
        fund_org = st.ref.fund_org
        ledger = (splitter.split(fund_org) if fund_org else None) or {}
        account = (
            st.project_account or ledger.get("account", "") or source.account or settings.default_account
        )
        st.line_total += amount
        journal.lines.append(
            Line(
                period=period.period,
                statement=st.ref.number,
                version=st.ref.version,
                pi_email=st.ref.pi_email,
                pi_name=st.pi_name,
                project_id=st.ref.project_id,
                project_name=st.project_name,
                fund_org=fund_org,
                cost_center=st.cost_center,
                reference_1=st.reference_1,
                reference_2=st.reference_2,
                source_slug=source.slug,
                source_name=source_name,
                service_name=service_name,
                kind=kind,
                charge_count=charge_count,
                list_amount=list_amount,
                discount_amount=discount_amount,
                amount=amount,
                account=account,
                ledger=ledger,
            )
        )
        key = (fund_org, source_id, account)
        entry = debits.get(key)
        if entry is None:
            entry = debits[key] = Entry(
                side=DEBIT,
                period=period.period,
                source_slug=source.slug,
                source_name=source.display_name or source.slug,
                fund_org=fund_org,
                ledger=ledger,
                account=account,
                amount=ZERO,
            )
        entry.amount += amount
        entry.line_count += 1
        for known, value in (
            (entry.pi_emails, st.ref.pi_email),
            (entry.project_ids, st.ref.project_id),
            (entry.statements, st.ref.number),
        ):
            if value not in known:
                known.append(value)

    for st in statements.values():
        if st.line_total != st.ref.billed_total:
            problems.append(
                Problem(
                    "statements",
                    f"statement {st.ref.label}: total {fmt(st.ref.billed_total)} is not the sum of its lines "
                    f"({fmt(st.line_total)}); run generate",
                )
            )
    journal.lines.sort(
        key=lambda ln: (
            ln.pi_email,
            ln.project_id,
            ln.service_name,
            ln.source_slug,
            _KIND_ORDER.get(ln.kind, 9),
            ln.statement,
        )
    )

    include_zero = settings.include_zero_entries
    emitted = [e for e in debits.values() if include_zero or e.amount != 0]

    # Debits: a fund/org to debit, that the regex can split.
    no_fund_org: list[Entry] = []
    unsplittable: dict[str, list[str]] = defaultdict(list)
    for entry in emitted:
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
                f"{_plural(len(set(labels)), 'statement has', 'statements have')} no fund/org to debit "
                f"({_listing(labels)}; {fmt(total)}): set the fund/org of the project (or correct the "
                "charges) and run generate",
            )
        )
    for fund_org, labels in sorted(unsplittable.items()):
        problems.append(
            Problem(
                "fund_org",
                f"fund/org {fund_org!r} ({'statement' if len(set(labels)) == 1 else 'statements'} "
                f"{_listing(labels)}) does not match the fund/org split regex {settings.fund_org_regex}",
            )
        )

    # Credits: one per source, to its credit fund/org, for the sum of its debits.
    by_source: dict[int, list[Entry]] = defaultdict(list)
    for key, entry in debits.items():
        if include_zero or entry.amount != 0:
            by_source[key[1]].append(entry)
    credits: list[Entry] = []
    without_credit: list[tuple[Source, Decimal]] = []
    for source_id, entries in sorted(by_source.items(), key=lambda item: sources[item[0]].slug):
        source = sources[source_id]
        total = sum((e.amount for e in entries), ZERO)
        if total == 0 and not include_zero:
            continue
        if not source.fund_org:
            without_credit.append((source, total))
            continue
        split = splitter.split(source.fund_org)
        if split is None:
            problems.append(
                Problem(
                    "fund_org",
                    f"credit fund/org {source.fund_org!r} of source {source.slug} does not match the fund/org "
                    f"split regex {settings.fund_org_regex}",
                )
            )
        ledger = split or {}
        account = source.account or ledger.get("account", "") or settings.default_account
        credited = sorted({n for e in entries for n in e.statements})
        credits.append(
            Entry(
                side=CREDIT,
                period=period.period,
                source_slug=source.slug,
                source_name=source.display_name or source.slug,
                fund_org=source.fund_org,
                ledger=ledger,
                account=account,
                amount=total,
                statements=credited,
                line_count=sum(e.line_count for e in entries),
            )
        )

    def order(e: Entry) -> tuple[str, str, str]:
        return (e.fund_org, e.source_slug, e.account)

    journal.entries = sorted(emitted, key=order) + sorted(credits, key=order)

    # Descriptions and references.
    if template_ok:
        limit = settings.description_max_length or None
        for entry in journal.entries:
            values = {
                "source": entry.source_name,
                "period": period.period,
                "fund_org": entry.fund_org,
                "pi_email": summarize(entry.pi_emails),
                "project_id": summarize(entry.project_ids),
            }
            template = settings.debit_description if entry.is_debit else settings.credit_description
            description = format_text(template, values, limit)
            if limit and neutralize(description) != description:
                # The apostrophe that neutralises a formula counts against the length too.
                description = cut_at_word(description, limit - 1)
            entry.description = description
            entry.reference = format_text(settings.reference_template, values)

    # Account codes.
    if account_regex:
        compiled = compile_linear(account_regex)
        accounts = sorted({entry.account for entry in journal.entries})
        valid = dict(zip(accounts, compiled.fullmatch_many(accounts).tolist(), strict=True))
        bad: dict[str, list[str]] = defaultdict(list)
        for entry in journal.entries:
            if not valid[entry.account]:
                where = (
                    f"debit of {entry.fund_org or '(no fund/org)'} for {entry.source_slug}"
                    if entry.is_debit
                    else f"credit of {entry.source_slug}"
                )
                bad[entry.account].append(where)
        for account, places in sorted(bad.items()):
            if account:
                message = (
                    f"account code {account!r} ({_listing(places, 3)}) does not match the account code "
                    f"regex {account_regex}"
                )
            else:
                message = (
                    f"no account code for {_listing(places, 3)}, and the account code regex {account_regex} "
                    "requires one: set the default account, the source's account or the project's GL account"
                )
            problems.append(Problem("account", message))

    # Balance: Σ debits = Σ credits = Σ statement totals.
    debit_total, credit_total = journal.debit_total, journal.credit_total
    if debit_total != credit_total:
        reasons = [
            f"source {source.slug} has no credit fund/org for its {fmt(total)} of debits "
            f"(set one in Sources: openchargeback sources update {source.slug} --fund-org ...)"
            for source, total in sorted(without_credit, key=lambda item: item[0].slug)
        ] or ["the credits do not add up to the debits"]
        problems.append(
            Problem(
                "unbalanced",
                f"debits ({fmt(debit_total)}) ≠ credits ({fmt(credit_total)}): " + "; ".join(reasons),
            )
        )
    line_total = sum((st.line_total for st in statements.values()), ZERO)
    if debit_total != line_total:
        problems.append(
            Problem(
                "unbalanced",
                f"debits ({fmt(debit_total)}) ≠ the statement lines ({fmt(line_total)})",
            )
        )

    by_key = {(st.pi_id, st.ref.project_id): st.ref for st in statements.values()}
    journal.charges = lambda: _charge_rows(period, by_key)
    return journal


def _charge_rows(
    period: BillingPeriod, statements: dict[tuple[int, str], StatementRef]
) -> Iterator[ChargeRow]:
    """The billed charges of the period's current statements, by PI, project, source, service."""
    charges = (
        Charge.objects.filter(period=period, review_state__in=BILLABLE_STATES, pi__isnull=False)
        .order_by(
            "pi__email",
            "project_code",
            "source__slug",
            "service_name",
            "charge_category",
            "resource_id",
            "id",
        )
        .values_list(
            "pi_id",
            "pi__email",
            "project_code",
            "source__slug",
            "source__display_name",
            "service_name",
            "service_category",
            "charge_category",
            "resource_id",
            "resource_name",
            "sub_account_id",
            "region",
            "sku_id",
            "quantity",
            "unit",
            "list_cost",
            "billed_cost",
            "line_count",
        )
    )
    for row in charges.iterator(chunk_size=5000):
        ref = statements.get((row[0], row[2]))
        if ref is None:
            continue
        yield ChargeRow(
            period=period.period,
            statement=ref.number,
            pi_email=row[1],
            project_id=row[2],
            fund_org=ref.fund_org,
            source_slug=row[3],
            source_name=row[4],
            service_name=row[5],
            service_category=row[6],
            charge_category=row[7],
            resource_id=row[8],
            resource_name=row[9],
            sub_account_id=row[10],
            region=row[11],
            sku_id=row[12],
            quantity=row[13],
            unit=row[14],
            list_cost=row[15],
            billed_cost=row[16],
            line_count=row[17],
        )
