"""The stages and checks of `journals.build`, each from hand-written inputs: no database."""

from __future__ import annotations

import ast
import sys
from decimal import Decimal
from pathlib import Path

import pytest

from journals.build import (
    AccountColumn,
    JournalInputs,
    LineInput,
    SettingsInput,
    SourceInput,
    StatementChangesInput,
    StatementInput,
    journal_from_inputs,
)
from journals.build.checks import (
    account_problems,
    balance_problems,
    check_settings,
    fund_org_problems,
    statement_change_problems,
    statement_set_problems,
    statement_total_problems,
)
from journals.build.stages import (
    credit_entries,
    debit_account,
    debit_entries,
    describe_entries,
    drop_zero_entries,
    entry_order,
    journal_lines,
    resolve_lines,
    tag_accounts,
)
from journals.entries import CREDIT, DEBIT, Entry, FundOrgSplitter

D = Decimal
PERIOD = "2025-01"
SPLIT = r"(?P<fund>\d{6})-(?P<orgn>\d{4})(?:-(?P<account>\d{5}))?"

AWS = SourceInput(id=1, slug="aws", display_name="AWS", fund_org="900000-0001", account="54100")
HPC = SourceInput(id=2, slug="hpc", fund_org="900000-0002")
SOURCES = {s.id: s for s in (AWS, HPC)}


def statement(id: int, fund_org: str = "111111-2222", **values) -> StatementInput:
    fields = {
        "number": f"2025-01-{id:04d}",
        "version": 1,
        "pi_id": id,
        "pi_email": f"pi{id}@example.edu",
        "pi_name": f"PI {id}",
        "project_id": f"project-{id}",
        "project_name": f"Project {id}",
        "billed_total": D("0"),
        "currency": "USD",
        **values,
    }
    return StatementInput(id=id, fund_org=fund_org, **fields)


def line(statement_id: int, source: SourceInput, amount: str, service: str = "Compute", kind: str = ""):
    return LineInput(
        statement_id=statement_id,
        source_id=source.id,
        source_name=source.name,
        service_name=service,
        amount=D(amount),
        kind=kind,
    )


def debit(fund_org: str, source: str, amount: str, account: str = "", statements=("S1",)) -> Entry:
    return Entry(
        side=DEBIT,
        period=PERIOD,
        source_slug=source,
        source_name=source.upper(),
        fund_org=fund_org,
        ledger={},
        account=account,
        amount=D(amount),
        statements=list(statements),
        line_count=1,
    )


def credit(source: str, amount: str, fund_org: str = "900000-0001", account: str = "54100") -> Entry:
    return Entry(
        side=CREDIT,
        period=PERIOD,
        source_slug=source,
        source_name=source.upper(),
        fund_org=fund_org,
        ledger={},
        account=account,
        amount=D(amount),
    )


# --- purity -----------------------------------------------------------------------------------

PURE_IMPORTS = {"chargeback.money", "chargeback.regex", "chargeback.csv_safety", "journals.entries"}


@pytest.mark.parametrize(
    "path", sorted((Path(__file__).resolve().parents[2] / "journals" / "build").glob("*.py")), ids=str
)
def test_the_build_package_reads_no_database(path):
    """Its imports are the standard library, plain helpers and its own modules: no Django, no
    models, no selectors."""
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level:
            continue
        names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
        if isinstance(node, ast.ImportFrom):
            names = [node.module or ""]
        for name in names:
            top = name.split(".")[0]
            assert top in sys.stdlib_module_names or name in PURE_IMPORTS or top == "__future__", (
                path.name,
                name,
            )


# --- tag accounts -----------------------------------------------------------------------------


def test_tag_accounts_take_the_most_common_value_then_the_smallest():
    tagged = [
        (1, "p", {"account_code": "54200"}),
        (1, "p", {"Account_Code": " 54100 "}),
        (1, "p", {"user:account_code": "54100"}),  # a prefix of the import's is left out
        (2, "q", {"account_code": "54300"}),
        (2, "q", {"account_code": "54200"}),
        (3, "r", {"account_code": ""}),
        (3, "r", "not a dict"),
        (4, "s", {"other": "54900"}),
    ]
    assert tag_accounts(tagged, "account_code", ["user:"]) == {(1, "p"): "54100", (2, "q"): "54200"}
    assert tag_accounts(tagged, " ", ["user:"]) == {}


# --- stage 1: resolve lines -------------------------------------------------------------------


def test_debit_account_precedence():
    st = statement(1, project_gl_account="51000", tag_account="52000")
    ledger = {"account": "53000"}
    assert debit_account(st, ledger, AWS, "59999") == "51000"
    st = statement(1, tag_account="52000")
    assert debit_account(st, ledger, AWS, "59999") == "52000"
    assert debit_account(statement(1), ledger, AWS, "59999") == "53000"
    assert debit_account(statement(1), {}, AWS, "59999") == "54100"
    assert debit_account(statement(1), {}, HPC, "59999") == "59999"
    assert debit_account(statement(1), {}, HPC, "") == ""


def test_resolve_lines_splits_the_fund_org_and_chooses_the_account():
    statements = [statement(1, "111111-2222-53000"), statement(2, "not-splittable"), statement(3, "")]
    lines = [line(1, HPC, "10.00"), line(2, HPC, "5.00"), line(3, AWS, "1.00")]
    resolved = resolve_lines(statements, lines, SOURCES, FundOrgSplitter(SPLIT), "59999")
    assert [r.line for r in resolved] == lines
    assert resolved[0].ledger["fund"] == "111111" and resolved[0].ledger["orgn"] == "2222"
    assert resolved[0].account == "53000"  # the fund/org's account group
    assert resolved[1].ledger == {} and resolved[1].account == "59999"  # unsplittable: no fields
    assert resolved[2].ledger == {} and resolved[2].account == "54100" and resolved[2].fund_org == ""


def test_journal_lines_are_sorted_as_the_original_sorted_them():
    statements = [statement(2, pi_email="b@x.edu"), statement(1, pi_email="a@x.edu")]
    lines = [
        line(2, AWS, "1.00"),
        line(1, AWS, "-2.00", "Storage", "Adjustment"),
        line(1, AWS, "-1.00", "Storage", "Credit"),
        line(1, AWS, "3.00", "Storage"),
        line(1, HPC, "4.00", "Compute"),
    ]
    resolved = resolve_lines(statements, lines, SOURCES, FundOrgSplitter(""), "")
    out = journal_lines(resolved, PERIOD)
    assert [(ln.pi_email, ln.service_name, ln.kind, ln.amount) for ln in out] == [
        ("a@x.edu", "Compute", "", D("4.00")),
        ("a@x.edu", "Storage", "", D("3.00")),
        ("a@x.edu", "Storage", "Credit", D("-1.00")),
        ("a@x.edu", "Storage", "Adjustment", D("-2.00")),
        ("b@x.edu", "Compute", "", D("1.00")),
    ]
    assert out[0].ledger == {
        "fund": "111111-2222",
        **dict.fromkeys(("orgn", "account", "program", "activity", "location"), ""),
    }
    assert {ln.period for ln in out} == {PERIOD} and out[0].source_slug == "hpc"


# --- stage 2: debits --------------------------------------------------------------------------


def test_one_debit_per_fund_org_source_and_account():
    statements = [
        statement(1, "F1"),
        statement(2, "F1"),
        statement(3, "F1", project_gl_account="51000"),
        statement(4, "F2"),
    ]
    lines = [
        line(1, AWS, "10.00"),
        line(1, AWS, "2.50", "Storage"),
        line(2, AWS, "-1.25", kind="Credit"),
        line(1, HPC, "7.00"),
        line(3, AWS, "4.00"),
        line(4, AWS, "0.00"),
    ]
    resolved = resolve_lines(statements, lines, SOURCES, FundOrgSplitter(""), "")
    debits = debit_entries(resolved, PERIOD)
    summary = [(e.fund_org, e.source_slug, e.account, e.amount, e.line_count) for e in debits]
    assert summary == [
        ("F1", "aws", "54100", D("11.25"), 3),
        ("F1", "hpc", "", D("7.00"), 1),
        ("F1", "aws", "51000", D("4.00"), 1),
        ("F2", "aws", "54100", D("0.00"), 1),
    ]
    first = debits[0]
    assert first.side == DEBIT and first.source_name == "AWS" and first.period == PERIOD
    assert first.pi_emails == ["pi1@example.edu", "pi2@example.edu"]
    assert first.project_ids == ["project-1", "project-2"]
    assert first.statements == ["2025-01-0001", "2025-01-0002"]
    assert debits[1].source_name == "hpc"  # no display name: the slug


# --- stage 3: entries of 0.00 -----------------------------------------------------------------


def test_drop_zero_entries_keeps_them_only_on_request():
    entries = [debit("F1", "aws", "1.00"), debit("F2", "aws", "0.00"), debit("F3", "aws", "-1.00")]
    assert [e.fund_org for e in drop_zero_entries(entries, False)] == ["F1", "F3"]
    assert drop_zero_entries(entries, True) == entries


# --- stage 4: credits -------------------------------------------------------------------------


def test_one_credit_per_source_for_the_sum_of_its_debits():
    storage = SourceInput(id=3, slug="storage", fund_org="910000-0003-54300")
    sources = [AWS, HPC, storage, SourceInput(id=4, slug="azure")]
    debits = [
        debit("F2", "storage", "5.00", statements=["S2"]),
        debit("F1", "aws", "10.00", statements=["S2", "S1"]),
        debit("F2", "aws", "-2.50", statements=["S3"]),
        debit("F1", "hpc", "0.00"),
        debit("F1", "azure", "3.00"),
    ]
    credits = credit_entries(debits, sources, FundOrgSplitter(SPLIT), "59999", PERIOD, include_zero=False)
    summary = [
        (e.source_slug, e.fund_org, e.account, e.amount, e.statements, e.line_count) for e in credits.entries
    ]
    assert summary == [
        ("aws", "900000-0001", "54100", D("7.50"), ["S1", "S2", "S3"], 2),
        ("storage", "910000-0003-54300", "54300", D("5.00"), ["S2"], 1),  # its fund/org's account group
    ]
    assert all(e.side == CREDIT for e in credits.entries)
    assert credits.entries[0].ledger["fund"] == "900000"
    assert credits.uncredited == [("azure", D("3.00"))]
    # 0.00 is credited on request, to the default account when nothing else names one.
    with_zero = credit_entries(debits, sources, FundOrgSplitter(SPLIT), "59999", PERIOD, include_zero=True)
    hpc = next(e for e in with_zero.entries if e.source_slug == "hpc")
    assert hpc.amount == 0 and hpc.account == "59999"


def test_entry_order_is_fund_org_source_account():
    entries = [
        debit("F2", "aws", "1"),
        debit("F1", "hpc", "1"),
        debit("F1", "aws", "1", "2"),
        debit("F1", "aws", "1", "1"),
    ]
    assert [(e.fund_org, e.source_slug, e.account) for e in entry_order(entries)] == [
        ("F1", "aws", "1"),
        ("F1", "aws", "2"),
        ("F1", "hpc", ""),
        ("F2", "aws", ""),
    ]


# --- stage 5: descriptions --------------------------------------------------------------------


def test_descriptions_and_references():
    settings = SettingsInput(
        debit_description="{source} {period} {pi_email} charges",
        credit_description="=revenue {source}",
        reference_template="{period:.4}-{fund_org}",
        description_max_length=25,
    )
    entry = debit("F1", "aws", "1.00")
    entry.pi_emails = ["b@x.edu", "a@x.edu", "c@x.edu"]
    described = describe_entries([entry, credit("aws", "1.00")], settings)
    assert described[0].description == "AWS 2025-01 a@x.edu +2"  # cut at a word, within 25
    assert described[0].reference == "2025-F1"
    # A formula gets an apostrophe when written: it counts against the length too.
    assert described[1].description == "=revenue AWS"
    assert entry.description == ""  # the input entries are left as they were


def test_a_description_that_becomes_text_leaves_room_for_its_apostrophe():
    settings = SettingsInput(credit_description="=abc defgh", description_max_length=10)
    assert describe_entries([credit("aws", "1")], settings)[0].description == "=abc"


# --- checks -----------------------------------------------------------------------------------


def test_unusable_settings_are_problems_and_left_unused():
    checked = check_settings(
        SettingsInput(fund_org_regex="(unnamed)", account_regex="(", debit_description="{nope}")
    )
    assert [p.code for p in checked.problems] == ["fund_org", "account", "template"]
    assert checked.splitter.regex is None and checked.account_regex == "" and not checked.templates_ok
    ok = check_settings(SettingsInput(fund_org_regex=SPLIT, account_regex=r"\d{5}"))
    assert ok.problems == [] and ok.splitter.pattern == SPLIT and ok.account_regex == r"\d{5}"
    assert ok.templates_ok


def test_statement_change_problems():
    changes = StatementChangesInput(
        new=(("a@x.edu", "p1"), ("b@x.edu", "")),
        stale=("2025-01-0003 v1",),
        unbillable_count=1,
        unbillable_billed=D("85.00"),
    )
    messages = [p.message for p in statement_change_problems(changes, "USD")]
    assert messages == [
        "2 PI × projects have billable charges but no statement (a@x.edu / p1, b@x.edu / (no project)); "
        "run generate",
        "1 statement is out of date (charges changed since generating: 2025-01-0003 v1); run generate",
        "1 billable charge ($85.00) has no PI to bill, so no statement carries them; correct the attribution "
        "or reject them",
    ]
    assert statement_change_problems(StatementChangesInput(), "USD") == []


def test_statement_set_problems():
    euro = [statement(1, currency="EUR")]
    assert [
        p.message for p in statement_set_problems(euro, "USD", PERIOD, other_statement_problems=False)
    ] == ["2025-01-0001 v1 was issued in another currency than USD; run generate"]
    none = statement_set_problems([], "USD", PERIOD, other_statement_problems=False)
    assert [p.message for p in none] == [
        "2025-01 has no issued statements (nothing billable): nothing to export"
    ]
    assert statement_set_problems([], "USD", PERIOD, other_statement_problems=True) == []


def test_statement_totals_must_be_the_sum_of_their_lines():
    statements = [statement(1, billed_total=D("12.50")), statement(2, billed_total=D("1.00"))]
    lines = [line(1, AWS, "10.00"), line(1, HPC, "2.50"), line(2, AWS, "0.99")]
    problems = statement_total_problems(statements, lines, "USD")
    assert [p.message for p in problems] == [
        "statement 2025-01-0002 v1: total $1.00 is not the sum of its lines ($0.99); run generate"
    ]


def test_fund_org_problems():
    splitter = FundOrgSplitter(SPLIT)
    debits = [
        debit("", "aws", "12.00", statements=["S1"]),
        debit("BAD", "aws", "1.00", statements=["S2"]),
        debit("BAD", "hpc", "1.00", statements=["S3"]),
        debit("111111-2222", "aws", "1.00"),
    ]
    credits = [credit("aws", "1.00", fund_org="IT-AWS"), credit("hpc", "1.00", fund_org="900000-0002")]
    messages = [p.message for p in fund_org_problems(debits, credits, splitter, "USD")]
    assert messages == [
        "1 statement has no fund/org to debit (S1; $12.00): set the fund/org of the project (or correct the "
        "charges) and run generate",
        f"fund/org 'BAD' (statements S2, S3) does not match the fund/org split regex {SPLIT}",
        f"credit fund/org 'IT-AWS' of source aws does not match the fund/org split regex {SPLIT}",
    ]
    assert fund_org_problems(debits[1:], credits, FundOrgSplitter(""), "USD") == []


def test_account_codes_against_the_regex():
    entries = [
        debit("F1", "aws", "1", "54A00"),
        debit("F2", "aws", "1", "54100"),
        debit("F3", "hpc", "1", ""),
        credit("hpc", "1", account=""),
    ]
    problems = account_problems(entries, [], r"\d{5}")
    assert [p.code for p in problems] == ["account", "account"]
    assert problems[0].message == (
        "no account code for debit of F3 for hpc, credit of hpc, and the account code regex \\d{5} requires "
        "one: set the default account, the source's account or the project's GL account"
    )
    assert problems[1].message.startswith("account code '54A00' (debit of F1 for aws) does not match")
    # The layout's column adds nothing: the regex said it already.
    column = AccountColumn("gl", "entries")
    assert account_problems(entries, [], r"\d{5}", column) == problems
    assert account_problems(entries, [], "") == []


def test_an_empty_account_is_refused_where_the_layout_writes_one():
    entries = [debit("F1", "aws", "1", "54100"), debit("", "hpc", "1", ""), credit("hpc", "1", account="")]
    problems = account_problems(entries, [], "", AccountColumn("gl", "entries"))
    assert len(problems) == 1 and problems[0].code == "account"
    message = problems[0].message
    assert message.startswith(
        "no account code for debit of (no fund/org) for hpc, credit of hpc, and the gl layout writes one: "
        "set the default account in the journal settings, the source's account"
    )
    assert "the project's GL account" in message and "summary" in message
    assert account_problems(entries[:1], [], "", AccountColumn("gl", "entries")) == []


def test_an_empty_account_on_a_line_is_refused_where_the_layout_writes_lines():
    statements = [statement(1, "F1"), statement(2, "F2", project_gl_account="51000")]
    lines = journal_lines(
        resolve_lines(
            statements, [line(1, HPC, "0.00"), line(2, HPC, "1.00")], SOURCES, FundOrgSplitter(""), ""
        ),
        PERIOD,
    )
    problems = account_problems([], lines, "", AccountColumn("mine", "lines"))
    assert [p.message.split(", and")[0] for p in problems] == [
        "no account code for the lines of F1 for hpc (2025-01-0001)"
    ]
    assert "the mine layout writes one" in problems[0].message


def test_balance_problems():
    assert balance_problems(D("10"), D("10"), D("10"), [], "USD") == []
    problems = balance_problems(D("10"), D("7"), D("10"), [("azure", D("3"))], "USD")
    assert [p.code for p in problems] == ["unbalanced"]
    assert problems[0].message == (
        "debits ($10.00) ≠ credits ($7.00): source azure has no credit fund/org for its $3.00 of debits "
        "(set one in Sources: openchargeback sources update azure --fund-org ...)"
    )
    problems = balance_problems(D("10"), D("9"), D("11"), [], "USD")
    assert [p.message for p in problems] == [
        "debits ($10.00) ≠ credits ($9.00): the credits do not add up to the debits",
        "debits ($10.00) ≠ the statement lines ($11.00)",
    ]


# --- the pipeline -----------------------------------------------------------------------------


def small_inputs(**values) -> JournalInputs:
    statements = (
        statement(1, "111111-2222", billed_total=D("12.50")),
        statement(2, "333333-4444", billed_total=D("-1.00"), project_gl_account="51000"),
    )
    lines = (
        line(1, AWS, "10.00"),
        line(1, HPC, "2.50", "Storage"),
        line(2, AWS, "-1.00", kind="Credit"),
    )
    fields = {
        "period": PERIOD,
        "status": "closed",
        "currency": "USD",
        "settings": SettingsInput(fund_org_regex=SPLIT, default_account="59999"),
        "statements": statements,
        "lines": lines,
        "sources": SOURCES,
        **values,
    }
    return JournalInputs(**fields)


def test_the_pipeline_builds_a_balanced_journal():
    seen = {}

    def charges(keys):
        seen.update(keys)
        return iter(())

    journal = journal_from_inputs(small_inputs(charges=charges))
    assert journal.problems == []
    assert journal.debit_total == journal.credit_total == journal.statement_total == D("11.50")
    assert [(e.side, e.fund_org, e.source_slug, e.account, e.amount) for e in journal.entries] == [
        (DEBIT, "111111-2222", "aws", "54100", D("10.00")),
        (DEBIT, "111111-2222", "hpc", "59999", D("2.50")),
        (DEBIT, "333333-4444", "aws", "51000", D("-1.00")),
        (CREDIT, "900000-0001", "aws", "54100", D("9.00")),
        (CREDIT, "900000-0002", "hpc", "59999", D("2.50")),
    ]
    assert journal.entries[0].description == "AWS 2025-01 Research Computing"
    assert [s.label for s in journal.statements] == ["2025-01-0001 v1", "2025-01-0002 v1"]
    assert len(journal.lines) == 3 and journal.period == PERIOD and journal.status == "closed"
    assert list(journal.charges()) == [] and set(seen) == {(1, "project-1"), (2, "project-2")}


def test_the_pipeline_lists_every_problem_in_order():
    inputs = small_inputs(
        settings=SettingsInput(fund_org_regex=SPLIT, account_regex="("),
        changes=StatementChangesInput(stale=("2025-01-0009 v1",)),
        sources={1: AWS, 2: SourceInput(id=2, slug="hpc")},
    )
    journal = journal_from_inputs(inputs, account_column=AccountColumn("gl", "entries"))
    assert [p.code for p in journal.problems] == ["statements", "account", "account", "unbalanced"]
    assert "hpc" in journal.problems[2].message  # its debit has no account code
    # Without the layout's column, an empty account code is no problem.
    assert [p.code for p in journal_from_inputs(inputs).problems] == ["statements", "account", "unbalanced"]
