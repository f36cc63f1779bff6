"""Layouts: CSV quoting and formula neutralising, ledger fields, account codes, descriptions, and
custom formats (Django templates validated on save)."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest

from chargeback.errors import Refused
from journals import selectors, services
from journals.formats import (
    BUILTIN_FORMATS,
    GL_HEADER_TEMPLATE,
    GL_ROW_TEMPLATE,
    FormatSpec,
    csv_cell,
    neutralize,
)
from journals.models import JournalExport
from statements import services as statement_services
from tests.factories import ChargeFactory, PeriodFactory, PIFactory, ProjectFactory, SourceFactory

from .conftest import parse, records

pytestmark = pytest.mark.django_db

FORMULA_PROJECT = '=HYPERLINK("http://evil.example","click")'


def read(export: JournalExport) -> bytes:
    with export.file.open("rb") as fh:
        return fh.read()


@pytest.fixture
def nasty_period(db):
    """A period whose project ids hold a comma, a quote and a formula; other fields hold formulas."""
    period = PeriodFactory(period="2025-03")
    aws = SourceFactory(slug="aws", display_name="AWS", fund_org="IT-AWS", account="54100")
    pi = PIFactory(email="pi@example.edu", name='Doe, "Jane"')
    for project_id, fund_org in (
        ("proj,one", "123456-7890"),
        ('say "hi"', "123456-7891"),
        (FORMULA_PROJECT, "=1+2"),
    ):
        project = ProjectFactory(project_id=project_id, pi=pi, fund_org=fund_org)
        ChargeFactory(
            period=period,
            source=aws,
            project=project,
            billed_cost=Decimal("10.005"),
            list_cost=Decimal("12.00"),
            resource_name="@SUM(A1:A9)",
            service_name="-2+3 service",
        )
    statement_services.statements_generate(period="2025-03")
    return period


def test_neutralize_and_quote():
    assert neutralize("=1+2") == "'=1+2"
    assert neutralize("@SUM(A1)") == "'@SUM(A1)"
    assert neutralize("-cmd|' /C calc'!A0") == "'-cmd|' /C calc'!A0"
    assert neutralize("+x") == "'+x" and neutralize("\tx") == "'\tx"
    assert neutralize("-12.50") == "-12.50" and neutralize("+3") == "+3" and neutralize("") == ""
    assert neutralize("plain") == "plain"
    assert csv_cell("a,b") == '"a,b"'
    assert csv_cell('say "hi"') == '"say ""hi"""'
    assert csv_cell("=1,2") == '"\'=1,2"'
    assert csv_cell("a;b", ";") == '"a;b"' and csv_cell("a;b") == "a;b"


def test_quoting_and_formula_injection_in_every_builtin_format(nasty_period):
    files = {
        name: read(services.journal_export(period="2025-03", format=name))
        for name in ("gl", "summary", "detail")
    }
    summary = files["summary"]
    assert b'"proj,one"' in summary and b'"say ""hi"""' in summary
    assert b'"\'=HYPERLINK(""http://evil.example"",""click"")"' in summary
    rows = records(summary)
    assert {r["ProjectID"] for r in rows} == {"proj,one", 'say "hi"', "'" + FORMULA_PROJECT}
    assert {r["FundOrg"] for r in rows} == {"123456-7890", "123456-7891", "'=1+2"}
    assert {r["ServiceName"] for r in rows} == {"'-2+3 service"}
    # Each line rounded once, half-up: 10.005 → 10.01.
    assert {r["Amount"] for r in rows} == {"10.01"}
    detail = records(files["detail"])
    assert {r["ResourceName"] for r in detail} == {"'@SUM(A1:A9)"}
    assert {r["BilledCost"] for r in detail} == {"10.005"}
    assert {r["ProjectID"] for r in detail} == {"proj,one", 'say "hi"', "'" + FORMULA_PROJECT}
    gl = records(files["gl"])
    assert {r["Fund"] for r in gl} == {"123456-7890", "123456-7891", "'=1+2", "IT-AWS"}
    assert [r["Credit"] for r in gl if r["Credit"]] == ["30.03"]
    for data in files.values():
        table = parse(data)
        assert len({len(row) for row in table}) == 1  # every row as wide as the header
        for row in table:
            for cell in row:
                assert not cell or cell[0] not in "=+-@\t\r" or cell.replace(".", "").lstrip("-+").isdigit()
        assert data.endswith(b"\r\n") and b"\r\n" in data


def test_fund_org_split_into_ledger_fields(nasty_period):
    services.journal_settings_update(
        fund_org_regex=r"(?P<fund>\d{6})-(?P<orgn>\d{4})|(?P<program>=.*)|IT-(?P<location>\w+)"
    )
    gl = records(read(services.journal_export(period="2025-03")))
    first = gl[0]
    assert (first["Fund"], first["Orgn"], first["Program"]) == ("123456", "7890", "")
    formula = next(r for r in gl if r["Program"])
    # The regex has a fund group: an alternative without it leaves Fund empty.
    assert formula["Program"] == "'=1+2" and formula["Fund"] == ""
    credit = gl[-1]
    assert credit["Location"] == "AWS" and credit["Credit"] == "30.03"


def test_settings_are_validated():
    with pytest.raises(Refused, match="unknown named group"):
        services.journal_settings_update(fund_org_regex=r"(?P<fundd>\d+)")
    with pytest.raises(Refused, match="invalid regular expression"):
        services.journal_settings_update(account_regex="(")
    with pytest.raises(Refused, match=r"unknown placeholder \{pi\}"):
        services.journal_settings_update(debit_description="{pi} charges")
    with pytest.raises(Refused, match="unknown placeholder"):
        services.journal_settings_update(reference_template="{source.__class__}")
    with pytest.raises(Refused, match="description max length"):
        services.journal_settings_update(description_max_length=0)
    with pytest.raises(Refused, match="does not match the account code regex"):
        services.journal_settings_update(account_regex=r"\d{5}", default_account="5400")
    with pytest.raises(Refused, match="unknown journal setting"):
        services.journal_settings_update(colour="red")
    assert (
        selectors.journal_settings_get().debit_description == "{source} {period} Research Computing Charges"
    )


def test_account_codes_by_project_tag_fund_org_source_and_default(db):
    period = PeriodFactory(period="2025-04")
    aws = SourceFactory(slug="aws", display_name="AWS", fund_org="900000", account="54100")
    lab = SourceFactory(slug="lab", display_name="Lab", fund_org="910000-55555", account="")
    services.journal_settings_update(
        fund_org_regex=r"(?P<fund>\d{6})(?:-(?P<account>\d{5}))?",
        default_account="59999",
        account_regex=r"\d{5}",
    )
    pi = PIFactory(email="pi@example.edu")
    made = {}
    for code, fund_org in (("a", "111111"), ("b", "222222"), ("c", "333333-53333"), ("d", "444444")):
        made[code] = ProjectFactory(project_id=code, pi=pi, fund_org=fund_org)
    made["a"].gl_account = "51111"
    made["a"].save()
    ChargeFactory(period=period, source=aws, project=made["a"], tags={"account_code": "58888"})
    ChargeFactory(period=period, source=aws, project=made["b"], tags={"user:Account_Code": "52222"})
    ChargeFactory(period=period, source=aws, project=made["c"])
    ChargeFactory(period=period, source=aws, project=made["d"])
    ChargeFactory(period=period, source=lab, project=made["d"])
    statement_services.statements_generate(period="2025-04")
    gl = records(read(services.journal_export(period="2025-04")))
    accounts = {(r["Fund"], "D" if r["Debit"] else "C", r["Description"][:3]): r["Account"] for r in gl}
    assert accounts == {
        ("111111", "D", "AWS"): "51111",  # project's GL account (beats its tag)
        ("222222", "D", "AWS"): "52222",  # account tag on the project's charges (prefix, any case)
        ("333333", "D", "AWS"): "53333",  # account group of the PI's fund/org
        ("444444", "D", "AWS"): "54100",  # the source's account
        ("444444", "D", "Lab"): "59999",  # neither project, fund/org nor source: the default
        ("900000", "C", "AWS"): "54100",  # credit: the source's account
        ("910000", "C", "Lab"): "55555",  # credit: account group of the source's fund/org
    }


def test_descriptions_references_and_truncation(nasty_period):
    services.journal_settings_update(
        debit_description="{project_id} for {pi_email} {source} {period} {fund_org}",
        credit_description="{source} credit {period} {fund_org} [{pi_email}]",
        description_max_length=40,
        reference_template="{period}-{source:.2}",
    )
    gl = records(read(services.journal_export(period="2025-03")))
    assert gl[0]["Description"] == "proj,one for pi@example.edu AWS 2025-03"
    assert all(len(r["Description"]) <= 40 for r in gl)
    assert gl[-1]["Description"] == "AWS credit 2025-03 IT-AWS []"
    assert {r["Reference ID"] for r in gl} == {"2025-03-AW"}


def test_several_pis_in_one_debit(db):
    period = PeriodFactory(period="2025-05")
    aws = SourceFactory(slug="aws", display_name="AWS", fund_org="IT-AWS")
    for n in range(3):
        project = ProjectFactory(
            project_id=f"p{n}", pi=PIFactory(email=f"pi{n}@example.edu"), fund_org="SHARED"
        )
        ChargeFactory(period=period, source=aws, project=project)
    statement_services.statements_generate(period="2025-05")
    services.journal_settings_update(
        debit_description="{pi_email} / {project_id}", description_max_length=100
    )
    gl = records(read(services.journal_export(period="2025-05")))
    assert len(gl) == 2
    assert gl[0]["Description"] == "pi0@example.edu +2 / p0 +2" and gl[0]["Debit"] == "255.00"


# --- custom formats -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("rows", "row_template", "writes"),
    [
        ("entries", GL_ROW_TEMPLATE, True),
        ("entries", "{{ row.account|default:'x' }}", True),
        ("entries", "{% if entry.account %}{{ entry.account }}{% endif %}", True),
        ("entries", "{{ entry.fund }},{{ entry.amount }}", False),
        ("entries", "{{ entry.accounting }}", False),
        ("lines", "{{ line.account }}", True),
        ("lines", "{{ entry.account }}", False),  # not a line's variable
        ("charges", "{{ row.account }}", False),  # charges have no account
    ],
)
def test_which_formats_write_an_account(rows, row_template, writes):
    assert FormatSpec("mine", "mine", rows, row_template=row_template).writes_account is writes


def test_which_builtin_formats_write_an_account():
    assert {name: spec.writes_account for name, spec in BUILTIN_FORMATS.items()} == {
        "gl": True,
        "summary": False,
        "detail": False,
    }


def test_custom_format_as_gl_template_gives_the_builtin_bytes(nasty_period):
    services.journal_format_save(
        name="gl-copy", header_template=GL_HEADER_TEMPLATE, row_template=GL_ROW_TEMPLATE
    )
    builtin = read(services.journal_export(period="2025-03", format="gl"))
    custom = read(services.journal_export(period="2025-03", format="gl-copy"))
    assert custom == builtin


def test_custom_format_of_lines_with_semicolons_and_filters(nasty_period):
    services.journal_format_save(
        name="banner-lines",
        rows="lines",
        delimiter=";",
        header_template="H;{{ period }};{{ statement_total }}\nPROJECT;NAME;AMOUNT;N\n",
        row_template="{{ line.project_id }}; {{ line.pi_name }};{{ line.amount }};{{ number }}\n",
    )
    export = services.journal_export(period="2025-03", format="banner-lines")
    table = parse(read(export), ";")
    assert table[0] == ["H", "2025-03", "30.03"]
    assert table[1] == ["PROJECT", "NAME", "AMOUNT", "N"]
    assert [row[0] for row in table[2:]] == ["'" + FORMULA_PROJECT, "proj,one", 'say "hi"']
    assert {row[1] for row in table[2:]} == {'Doe, "Jane"'}
    assert export.row_count == 3 and export.journal_format is not None


def test_custom_format_that_leaves_rows_out_and_neutralises_its_own_text(nasty_period):
    services.journal_format_save(
        name="debits-only",
        header_template="fund,amount,note",
        row_template="{% if entry.is_debit %}{{ entry.fund_org }},{{ entry.amount }},=SUM(A1){% endif %}",
    )
    table = parse(read(services.journal_export(period="2025-03", format="debits-only")))
    assert table[0] == ["fund", "amount", "note"]
    assert [row[0] for row in table[1:]] == ["123456-7890", "123456-7891", "'=1+2"]
    assert {row[2] for row in table[1:]} == {"'=SUM(A1)"}


def test_custom_format_of_charges(nasty_period):
    services.journal_format_save(
        name="charges",
        rows="charges",
        header_template="",
        row_template="{{ charge.statement }},{{ charge.resource_name }},{{ charge.billed_cost }}",
    )
    table = parse(read(services.journal_export(period="2025-03", format="charges")))
    assert len(table) == 3 and {row[1] for row in table} == {"'@SUM(A1:A9)"}


def test_header_timestamp_is_the_only_difference(nasty_period, monkeypatch):
    services.journal_format_save(
        name="stamped",
        header_template="# exported {{ exported_at }} for {{ period }}\n" + GL_HEADER_TEMPLATE,
        row_template=GL_ROW_TEMPLATE,
    )
    times = iter(
        [dt.datetime(2025, 4, 1, 8, 0, tzinfo=dt.UTC), dt.datetime(2025, 4, 2, 9, 30, tzinfo=dt.UTC)]
    )
    monkeypatch.setattr(services, "export_time", lambda: next(times))
    first = read(services.journal_export(period="2025-03", format="stamped"))
    second = read(services.journal_export(period="2025-03", format="stamped"))
    assert first != second
    assert first.split(b"\r\n", 1)[0] == b"# exported 2025-04-01T08:00:00Z for 2025-03"
    assert first.split(b"\r\n", 1)[1] == second.split(b"\r\n", 1)[1]
    exports = list(JournalExport.objects.order_by("id"))
    assert exports[0].rows_sha256 == exports[1].rows_sha256 and exports[0].sha256 != exports[1].sha256


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"name": "gl"}, "gl is a built-in format"),
        ({"row_template": "{{ entry.fnud }}"}, r"unknown variable\(s\) entry.fnud"),
        ({"row_template": "{% if entry.is_debit %}{{ entry.nope }}{% endif %}"}, "entry.nope"),
        ({"row_template": "{{ fund }}"}, r"unknown variable\(s\) fund"),
        ({"row_template": "{% if %}"}, "template error"),
        ({"row_template": "{% include 'admin/base.html' %}"}, "TemplateDoesNotExist"),
        # Removing the quotes a value arrived with breaks its commas out into extra cells.
        (
            {"row_template": GL_ROW_TEMPLATE.replace("entry.reference", "entry.reference|cut:'\"'")},
            "11 cells",
        ),
        ({"header_template": "A,B,C", "row_template": "{{ entry.fund }},{{ entry.orgn }}"}, "has 2 cells"),
        ({"row_template": '"{{ entry.description }}"'}, "not valid CSV"),
        ({"row_template": "   "}, "cannot be empty"),
    ],
)
def test_invalid_formats_are_refused_on_save(changes, message):
    values = {
        "name": "mine",
        "header_template": GL_HEADER_TEMPLATE,
        "row_template": GL_ROW_TEMPLATE,
        **changes,
    }
    with pytest.raises(Refused, match=message):
        services.journal_format_save(**values)
    assert not selectors.JournalFormat.objects.exists()


def test_formats_listed_and_deleted_keeping_exports(nasty_period):
    services.journal_format_save(
        name="mine", row_template=GL_ROW_TEMPLATE, header_template=GL_HEADER_TEMPLATE
    )
    assert [s.name for s in selectors.journal_formats_available()] == ["gl", "summary", "detail", "mine"]
    export = services.journal_export(period="2025-03", format="mine")
    services.journal_format_delete(name="mine")
    export.refresh_from_db()
    assert export.format_name == "mine" and export.journal_format is None and read(export)
    with pytest.raises(Refused):
        services.journal_format_delete(name="mine")
