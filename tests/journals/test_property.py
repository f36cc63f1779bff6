"""Property: for any period — any mix of sources, funds, PIs, projects, credits, adjustments and
subsidies — Σ debits = Σ credits = Σ statement totals, in the journal and in the files, and every
amount obeys the cent rule. The stages of `journals.build` are driven directly too, from random
statement lines (no database): every line lands in exactly one debit, zero filtering never
unbalances, and the journal is refused exactly when it is wrong."""

from __future__ import annotations

import datetime as dt
import io
from collections import defaultdict
from dataclasses import replace
from decimal import Decimal

import pytest
from django.db import transaction
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from billing.models import Charge
from billing.selectors import period_get
from chargeback.money import ZERO, round_currency
from journals.build import (
    AccountColumn,
    JournalInputs,
    LineInput,
    SettingsInput,
    SourceInput,
    StatementInput,
    journal_from_inputs,
)
from journals.build.stages import credit_entries, debit_entries, drop_zero_entries, resolve_lines
from journals.entries import FundOrgSplitter, Journal
from journals.formats import BUILTIN_FORMATS, FormatSpec, write_journal
from journals.selectors import journal_build
from journals.services import journal_settings_update
from statements.models import Statement, StatementLine
from statements.services import statements_generate
from tests.factories import (
    ChargeFactory,
    ImportFactory,
    PeriodFactory,
    PIFactory,
    ProjectFactory,
    SourceFactory,
)

from .conftest import amount, records

pytestmark = pytest.mark.django_db

FUNDS = ["111111-2222", "333333-4444", "555555-6666", "777777-8888"]
SOURCES = [("aws", "900000-0001", "54100"), ("hpc", "900000-0002", ""), ("storage", "910000-0003", "54300")]
PROJECTS = 4  # over 2 PIs

# Up to ±1,000 with the 10 decimal places costs are stored with.
exact_money = st.integers(min_value=0, max_value=10**13).map(lambda n: Decimal(n).scaleb(-10))
charges = st.lists(
    st.fixed_dictionaries(
        {
            "source": st.integers(0, len(SOURCES) - 1),
            "project": st.integers(0, PROJECTS - 1),
            "fund": st.integers(0, len(FUNDS) - 1),
            "service": st.sampled_from(["Compute", "Storage"]),
            "category": st.sampled_from(["Usage", "Usage", "Usage", "Credit", "Adjustment"]),
            "negative_adjustment": st.booleans(),
            "billed": exact_money,
            "subsidy": st.sampled_from(["none", "discount", "full"]),
        }
    ),
    min_size=1,
    max_size=12,
)
periods = st.builds(lambda y, m: f"{y}-{m:02d}", st.integers(2020, 2030), st.integers(1, 12))


def render_journal(journal: Journal, spec: FormatSpec, *, exported_at: dt.datetime) -> bytes:
    """The whole file in memory (exports stream to a temporary file)."""
    buffer = io.BytesIO()
    write_journal(journal, spec, buffer, exported_at=exported_at)
    return buffer.getvalue()


@settings(
    max_examples=30,
    deadline=None,
    database=None,  # no .hypothesis/ folder in the project
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(period=periods, rows=charges, include_zero=st.booleans(), split=st.booleans())
def test_debits_equal_credits_equal_statement_totals(db, period, rows, include_zero, split):
    with transaction.atomic():
        check_period(period, rows, include_zero=include_zero, split=split)
        transaction.set_rollback(True)


def check_period(period: str, rows: list[dict], *, include_zero: bool, split: bool) -> None:
    journal_settings_update(
        include_zero_entries=include_zero,
        fund_org_regex=r"(?P<fund>\d{6})-(?P<orgn>\d{4})" if split else "",
        description_max_length=35,
    )
    created = PeriodFactory(period=period)
    sources = [SourceFactory(slug=slug, fund_org=fund, account=account) for slug, fund, account in SOURCES]
    imports = [ImportFactory(source=s, period=created) for s in sources]
    pis = [PIFactory(email=f"pi{n}@example.edu") for n in range(2)]
    projects = [
        ProjectFactory(project_id=f"project-{n}", pi=pis[n % 2], fund_org=FUNDS[n]) for n in range(PROJECTS)
    ]
    for row in rows:
        billed = row["billed"]
        if row["category"] == "Credit" or (row["category"] == "Adjustment" and row["negative_adjustment"]):
            billed = -billed
        if row["subsidy"] == "full":
            list_cost, billed = abs(billed) or Decimal("1.00"), ZERO
        elif row["subsidy"] == "discount":
            list_cost = billed * Decimal("1.25")
        else:
            list_cost = billed
        ChargeFactory(
            period=created,
            source=sources[row["source"]],
            import_run=imports[row["source"]],
            project=projects[row["project"]],
            fund_org=FUNDS[row["fund"]],
            service_name=row["service"],
            charge_category=row["category"],
            billed_cost=billed,
            list_cost=list_cost,
        )

    statements_generate(period=period, actor_name="test")
    period_obj = period_get(period)
    journal = journal_build(period_obj)
    assert journal.problems == []

    statements = Statement.objects.filter(period=period_obj).exclude(state=Statement.State.SUPERSEDED)
    statement_total = sum((s.billed_total for s in statements), ZERO)
    # The cent rule: a line is the exact sum of its charges rounded once; a statement is Σ its lines.
    exact: dict[tuple[int | None, str, int, str, str], Decimal] = defaultdict(Decimal)
    for c in Charge.objects.filter(period=period_obj):
        kind = c.charge_category if c.charge_category in ("Credit", "Adjustment") else ""
        exact[(c.pi_id, c.project_code, c.source_id, c.service_name, kind)] += c.billed_cost
    lines = list(StatementLine.objects.filter(statement__in=statements).select_related("statement"))
    assert len(lines) == len(exact) == len(journal.lines)
    for line in lines:
        key = (
            line.statement.pi_id,
            line.statement.project_code,
            line.source_id,
            line.service_name,
            line.kind,
        )
        assert line.billed_exact == exact[key]
        assert line.amount == round_currency(exact[key])
    for statement in statements:
        assert statement.billed_total == sum(
            (ln.amount for ln in lines if ln.statement_id == statement.pk), ZERO
        )
    assert statement_total == sum((ln.amount for ln in journal.lines), ZERO)

    # Σ debits = Σ credits = Σ statement totals; each credit is the sum of its source's debits.
    assert journal.debit_total == journal.credit_total == statement_total
    debits_by_source: dict[str, Decimal] = defaultdict(Decimal)
    for entry in journal.debits:
        debits_by_source[entry.source_slug] += entry.amount
        assert include_zero or entry.amount != 0
    credit_funds = {slug: fund for slug, fund, _account in SOURCES}
    for entry in journal.credits:
        assert entry.amount == debits_by_source[entry.source_slug]
        assert entry.fund_org == credit_funds[entry.source_slug]
    # One credit per source with debits (of 0.00 too when zero entries are included).
    expected = {slug for slug, total in debits_by_source.items() if include_zero or total}
    assert sorted(e.source_slug for e in journal.credits) == sorted(expected)

    # The files say the same, to the cent.
    when = dt.datetime(2025, 2, 1, tzinfo=dt.UTC)
    gl = records(render_journal(journal, BUILTIN_FORMATS["gl"], exported_at=when))
    assert sum(amount(r["Debit"]) for r in gl) == sum(amount(r["Credit"]) for r in gl) == statement_total
    assert all(len(r["Description"]) <= 35 for r in gl)
    if split:
        assert all(r["Orgn"] for r in gl)
    summary = records(render_journal(journal, BUILTIN_FORMATS["summary"], exported_at=when))
    assert sum(Decimal(r["Amount"]) for r in summary) == statement_total
    assert sum(int(r["ResourceCount"]) for r in summary) == len(rows)
    detail = records(render_journal(journal, BUILTIN_FORMATS["detail"], exported_at=when))
    assert len(detail) == len(rows)
    assert sum(Decimal(r["BilledCost"]) for r in detail) == sum(
        (c.billed_cost for c in Charge.objects.filter(period=period_obj)), ZERO
    )


# --- the pure stages, from random statement lines -----------------------------------------------

SPLIT = r"(?P<fund>\d{6})-(?P<orgn>\d{4})"
cents = st.integers(min_value=-(10**6), max_value=10**6).map(lambda n: Decimal(n).scaleb(-2))
pure_lines = st.lists(
    st.tuples(
        st.integers(0, PROJECTS - 1),  # statement (one per project)
        st.integers(0, len(SOURCES) - 1),
        st.sampled_from(["Compute", "Storage"]),
        st.sampled_from(["", "", "Credit", "Adjustment"]),
        st.one_of(st.just(ZERO), cents),
    ),
    max_size=25,
)


def pure_inputs(
    rows: list[tuple[int, int, str, str, Decimal]],
    *,
    include_zero: bool,
    default_account: str,
    gl_accounts: list[str],
    credited: list[bool],
) -> JournalInputs:
    sources = {
        n + 1: SourceInput(id=n + 1, slug=slug, fund_org=fund if credited[n] else "", account=account)
        for n, (slug, fund, account) in enumerate(SOURCES)
    }
    lines = tuple(
        LineInput(
            statement_id=statement + 1,
            source_id=source + 1,
            source_name=SOURCES[source][0],
            service_name=service,
            kind=kind,
            amount=amount,
        )
        for statement, source, service, kind, amount in rows
    )
    statements = tuple(
        StatementInput(
            id=n + 1,
            number=f"2025-01-{n + 1:04d}",
            version=1,
            pi_id=n % 2 + 1,
            pi_email=f"pi{n % 2}@example.edu",
            pi_name="",
            project_id=f"project-{n}",
            project_name="",
            fund_org=FUNDS[n],
            billed_total=sum((ln.amount for ln in lines if ln.statement_id == n + 1), ZERO),
            currency="USD",
            project_gl_account=gl_accounts[n],
        )
        for n in range(PROJECTS)
        if any(ln.statement_id == n + 1 for ln in lines)
    )
    return JournalInputs(
        period="2025-01",
        status="closed",
        currency="USD",
        settings=SettingsInput(
            fund_org_regex=SPLIT, default_account=default_account, include_zero_entries=include_zero
        ),
        statements=statements,
        lines=lines,
        sources=sources,
    )


pure_settings = {
    "rows": pure_lines,
    "include_zero": st.booleans(),
    "default_account": st.sampled_from(["", "59999"]),
    "gl_accounts": st.lists(st.sampled_from(["", "", "51000"]), min_size=PROJECTS, max_size=PROJECTS),
    "credited": st.lists(st.booleans(), min_size=len(SOURCES), max_size=len(SOURCES)),
}


@settings(max_examples=200, deadline=None, database=None)
@given(**pure_settings)
def test_every_line_lands_in_exactly_one_debit(rows, include_zero, default_account, gl_accounts, credited):
    inputs = pure_inputs(
        rows,
        include_zero=include_zero,
        default_account=default_account,
        gl_accounts=gl_accounts,
        credited=credited,
    )
    resolved = resolve_lines(
        inputs.statements, inputs.lines, inputs.sources, FundOrgSplitter(SPLIT), default_account
    )
    debits = debit_entries(resolved, "2025-01")
    keys = [(e.fund_org, e.source_slug, e.account) for e in debits]
    assert len(keys) == len(set(keys))  # one debit per key
    landed: dict[tuple[str, str, str], list[Decimal]] = defaultdict(list)
    for r in resolved:
        landed[(r.fund_org, r.source.slug, r.account)].append(r.line.amount)
    assert set(landed) == set(keys)
    for entry in debits:
        amounts = landed[(entry.fund_org, entry.source_slug, entry.account)]
        assert entry.amount == sum(amounts, ZERO) and entry.line_count == len(amounts)
    assert sum(e.line_count for e in debits) == len(rows)

    # Leaving out entries of 0.00 changes no total, and leaves out nothing else.
    kept = drop_zero_entries(debits, include_zero)
    assert sum((e.amount for e in kept), ZERO) == sum((e.amount for e in debits), ZERO)
    assert [e for e in debits if e not in kept] == (
        [] if include_zero else [e for e in debits if e.amount == 0]
    )


@settings(max_examples=200, deadline=None, database=None)
@given(**pure_settings)
def test_credits_balance_the_debits_unless_a_source_has_no_credit_fund_org(
    rows, include_zero, default_account, gl_accounts, credited
):
    inputs = pure_inputs(
        rows,
        include_zero=include_zero,
        default_account=default_account,
        gl_accounts=gl_accounts,
        credited=credited,
    )
    line_total = sum((ln.amount for ln in inputs.lines), ZERO)
    journal = journal_from_inputs(inputs)
    assert journal.debit_total == line_total == journal.statement_total
    assert all(include_zero or e.amount != 0 for e in journal.entries)
    splitter = FundOrgSplitter(SPLIT)
    resolved = resolve_lines(inputs.statements, inputs.lines, inputs.sources, splitter, default_account)
    debits = drop_zero_entries(debit_entries(resolved, "2025-01"), include_zero)
    credits = credit_entries(
        debits, inputs.sources.values(), splitter, default_account, "2025-01", include_zero
    )
    uncredited = sum((total for _slug, total in credits.uncredited), ZERO)
    assert journal.credit_total + uncredited == journal.debit_total
    unbalanced = [p for p in journal.problems if p.code == "unbalanced"]
    assert bool(unbalanced) == (uncredited != 0)
    # The same lines with every entry of 0.00 written balance the same way.
    flipped = replace(inputs, settings=replace(inputs.settings, include_zero_entries=not include_zero))
    other = journal_from_inputs(flipped)
    assert (other.debit_total, other.credit_total) == (journal.debit_total, journal.credit_total)
    if all(credited) and inputs.statements:
        assert journal.problems == [] and journal.debit_total == journal.credit_total


@settings(max_examples=200, deadline=None, database=None)
@given(**pure_settings)
def test_an_account_column_refuses_exactly_the_entries_without_one(
    rows, include_zero, default_account, gl_accounts, credited
):
    inputs = pure_inputs(
        rows,
        include_zero=include_zero,
        default_account=default_account,
        gl_accounts=gl_accounts,
        credited=credited,
    )
    plain = journal_from_inputs(inputs)
    for rows_kind, items in (("entries", plain.entries), ("lines", plain.lines)):
        journal = journal_from_inputs(inputs, account_column=AccountColumn("gl", rows_kind))
        added = [p for p in journal.problems if p not in plain.problems]
        assert [p.code for p in added] == (["account"] if any(not i.account for i in items) else [])
    if default_account:
        assert all(e.account for e in plain.entries) and all(ln.account for ln in plain.lines)
