"""Generating statements: the cent rule, held back / rejected charges, idempotent versions,
numbering, period rules and what finalize checks."""

from __future__ import annotations

import json
from decimal import Decimal

import pytest

from billing import selectors as billing_selectors
from billing import services as billing_services
from billing.models import PI, BillingPeriod, Charge, PeriodTransition
from chargeback.errors import Refused
from statements import selectors, services
from statements.drafts import statement_drafts
from statements.models import Statement, StatementLine
from tests.conftest import REFERENCE_TOTALS
from tests.factories import ChargeFactory, PeriodFactory, PIFactory, ProjectFactory, SourceFactory

from .conftest import generate_and_render

pytestmark = pytest.mark.django_db


def current(period: str = "2025-01"):
    return Statement.objects.filter(period__period=period).exclude(state="superseded")


# --- the reference month ------------------------------------------------------------------------


def test_reference_month_statements_match_readme(generated):
    statements = {(s.pi_email, s.project_code): s for s in current()}
    assert set(statements) == set(REFERENCE_TOTALS)
    for key, (fund_org, billed) in REFERENCE_TOTALS.items():
        assert statements[key].fund_org == fund_org, key
        assert statements[key].billed_total == Decimal(billed), key
    assert sum((s.billed_total for s in statements.values()), Decimal(0)) == Decimal("20227.00")
    assert sum((s.list_total for s in statements.values()), Decimal(0)) == Decimal("32260.00")
    genomics = statements[("zorp.blinkman@example.edu", "genomics-sequencing")]
    assert (genomics.list_total, genomics.discount_total, genomics.billed_total) == (
        Decimal("2720.00"),
        Decimal("412.25"),
        Decimal("2307.75"),
    )
    cfd = statements[("frin.bumberly@example.edu", "cfd-turbulence")]
    assert cfd.list_total == Decimal("3665.00")
    assert all(s.pdf and s.version == 1 and s.state == "issued" for s in statements.values())


def test_generate_leaves_the_period_state_alone(reference_month):
    """Issuing statements on an open period is allowed (the original's monthly script does); a
    later import plus generate issues new versions of what changed."""
    assert reference_month.status == "open"
    outcome = services.statements_generate(period="2025-01", actor_name="test")
    assert outcome.count("new") == 10
    period = billing_selectors.period_get("2025-01")
    assert period.status == "open" and not PeriodTransition.objects.filter(to_status="closed").exists()
    services.statements_generate(period="2025-01")  # nothing changed: nothing new
    billing_services.period_close(period="2025-01")
    assert services.statements_generate(period="2025-01").count("unchanged") == 10  # closed: still fine
    assert billing_selectors.period_get("2025-01").status == "closed"


def test_dry_run_writes_nothing(reference_month):
    outcome = services.statements_generate(period="2025-01", dry_run=True)
    assert outcome.dry_run
    assert len(outcome.statements) == 10
    assert {s.status for s in outcome.statements} == {"new"}
    assert [s.number for s in outcome.statements][:2] == ["2025-01-0001", "2025-01-0002"]
    assert outcome.billed_total == Decimal("20227.00")
    assert not Statement.objects.exists()
    assert billing_selectors.period_get("2025-01").status == "open"


def test_regenerating_unchanged_keeps_every_version(generated):
    before = {s.pk: (s.version, s.pdf.name) for s in Statement.objects.all()}
    outcome = services.statements_generate(period="2025-01")
    assert outcome.count("unchanged") == 10 and outcome.count("new") == outcome.count("revised") == 0
    assert outcome.to_render == []
    assert {s.pk: (s.version, s.pdf.name) for s in Statement.objects.all()} == before


def test_statement_numbers_are_stable_and_unique(generated):
    numbers = list(current().order_by("sequence").values_list("number", flat=True))
    assert numbers == [f"2025-01-{n:04d}" for n in range(1, 11)]
    # A late approval for a new project issues the next number; existing numbers stay.
    project = ProjectFactory(project_id="late-project", pi=PI.objects.get(email=REF_PI))
    period = billing_selectors.period_get("2025-01")
    ChargeFactory(period=period, project=project, source=SourceFactory(slug="aws"))
    outcome = services.statements_generate(period="2025-01")
    new = [s for s in outcome.statements if s.status == "new"]
    assert [(s.number, s.version, s.project_code) for s in new] == [("2025-01-0011", 1, "late-project")]
    assert list(current().order_by("sequence").values_list("number", flat=True))[:10] == numbers


REF_PI = "zorp.blinkman@example.edu"


def test_approving_a_held_back_charge_revises_only_that_statement(reference_month, client, admin_user):
    billing_services.flag_rule_save(
        name="check compute-02", pattern="^genomics-compute-02$", fields=["resource_name"]
    )
    billing_services.period_reevaluate_flags(period="2025-01")
    flagged = Charge.objects.get(review_state="flagged")
    assert flagged.project_code == "genomics-sequencing"

    first = generate_and_render("2025-01")
    genomics = Statement.objects.get(project_code="genomics-sequencing")
    assert genomics.held_back_count == 1 and genomics.held_back_amount == Decimal("756.50")
    assert genomics.billed_total == Decimal("2307.75") - Decimal("756.50")
    assert first.held_back_count == 1 and first.held_back_billed == Decimal("756.5")
    old_pdf = genomics.pdf.name
    others = {s.pk: s.version for s in current() if s.pk != genomics.pk}

    billing_services.charges_approve(charge_ids=[flagged.pk], note="checked")
    second = generate_and_render("2025-01")
    assert second.count("revised") == 1 and second.count("unchanged") == 9
    revised = next(s for s in second.statements if s.status == "revised")
    assert (revised.number, revised.version, revised.replaces) == (
        genomics.number,
        2,
        f"{genomics.number} v1",
    )

    genomics.refresh_from_db()
    assert genomics.state == "superseded" and genomics.superseded_at is not None
    assert genomics.pdf.name == old_pdf and genomics.pdf.storage.exists(old_pdf)
    v2 = Statement.objects.get(project_code="genomics-sequencing", version=2)
    assert v2.number == genomics.number and v2.supersedes_id == genomics.pk and v2.pdf
    assert v2.billed_total == Decimal("2307.75") and v2.held_back_count == 0
    assert {s.pk: s.version for s in current() if s.project_code != "genomics-sequencing"} == others

    # The old version stays downloadable.
    client.force_login(admin_user)
    response = client.get(f"/admin/statements/statement/{genomics.pk}/pdf/")
    assert response.status_code == 200
    assert b"".join(response.streaming_content).startswith(b"%PDF")


def test_flagged_held_back_rejected_excluded_and_withdrawn(db):
    period = PeriodFactory(period="2025-03", status="closed")
    source = SourceFactory(slug="hpc")
    project = ProjectFactory(project_id="p-mixed")
    ok = ChargeFactory(period=period, source=source, project=project, billed_cost=Decimal("10.00"))
    ChargeFactory(
        period=period, source=source, project=project, billed_cost=Decimal("7.00"), review_state="flagged"
    )
    ChargeFactory(
        period=period, source=source, project=project, billed_cost=Decimal("99.00"), review_state="rejected"
    )
    outcome = services.statements_generate(period="2025-03")
    statement = Statement.objects.get()
    assert statement.billed_total == Decimal("10.00")
    assert (statement.held_back_count, statement.held_back_amount, statement.rejected_count) == (
        1,
        Decimal("7.00"),
        1,
    )
    assert outcome.rejected_count == 1 and outcome.rejected_billed == Decimal("99.00")

    # Every billable charge rejected: the statement is withdrawn (superseded, no successor).
    Charge.objects.filter(pk=ok.pk).update(review_state="rejected")
    again = services.statements_generate(period="2025-03")
    assert [w.label for w in again.withdrawn] == [statement.label]
    statement.refresh_from_db()
    assert statement.state == "superseded" and statement.note.startswith("withdrawn")
    assert not current("2025-03").exists()
    assert selectors.period_statement_problems(period) == []


def test_drafts_gather_each_statement_whatever_the_order_of_its_charges(db):
    """Charges are read one PI × project at a time: interleaved ids, sources, a PI with two
    projects, a project code without a project, and charges without a PI all land where they belong."""
    period = PeriodFactory(period="2025-06", status="closed")
    aws, hpc = SourceFactory(slug="aws"), SourceFactory(slug="hpc")
    ada = PIFactory(email="ada@uni.example")
    first, second = ProjectFactory(project_id="p-b", pi=ada), ProjectFactory(project_id="p-a", pi=ada)
    other = ProjectFactory(project_id="p-c", pi__email="bo@uni.example")
    for i in range(4):  # interleaved: each statement's charges are far apart in id order
        for project in (first, other, second):
            ChargeFactory(
                period=period, source=(aws, hpc)[i % 2], project=project, billed_cost=Decimal("1.25")
            )
        ChargeFactory(
            period=period, source=aws, project=None, pi=ada, pi_email=ada.email, project_code="loose"
        )
        ChargeFactory(
            period=period, source=aws, project=None, billed_cost=Decimal("3"), review_state="flagged"
        )
        ChargeFactory(period=period, source=hpc, project=None, billed_cost=Decimal("2"))

    drafts = statement_drafts(period)

    assert [(d.pi_email, d.project_code, d.charge_count, d.billed_total) for d in drafts.drafts.values()] == [
        ("ada@uni.example", "loose", 4, Decimal("340.00")),
        ("ada@uni.example", "p-a", 4, Decimal("5.00")),
        ("ada@uni.example", "p-b", 4, Decimal("5.00")),
        ("bo@uni.example", "p-c", 4, Decimal("5.00")),
    ]
    assert [len(d.lines) for d in drafts.drafts.values()] == [1, 2, 2, 2]
    assert (drafts.unbillable_count, drafts.unbillable_billed) == (4, Decimal("8"))
    assert [(h.pi_email, h.count, h.billed) for h in drafts.held_back_elsewhere] == [("", 4, Decimal("12"))]
    assert drafts.held_back_count == 4


def test_cent_rule_each_line_rounded_once_total_is_sum_of_lines(db):
    period = PeriodFactory(period="2025-04", status="closed")
    aws, hpc = SourceFactory(slug="aws"), SourceFactory(slug="hpc")
    project = ProjectFactory(project_id="p-cents")

    def charge(source, service, billed, **kw):
        return ChargeFactory(
            period=period,
            source=source,
            project=project,
            service_name=service,
            billed_cost=Decimal(billed),
            list_cost=Decimal(billed),
            **kw,
        )

    # One line of three charges: 0.0025 × 2 + 0.0001 = 0.0051 → 0.01 (rounded once, not per charge).
    charge(aws, "EC2", "0.0025")
    charge(aws, "EC2", "0.0025")
    charge(aws, "EC2", "0.0001")
    # Half-up: 1.005 → 1.01 (banker's rounding would give 1.00).
    charge(aws, "S3", "1.005")
    # Another source, same service name: its own line.
    charge(hpc, "EC2", "0.004")
    # A credit stays its own negative line.
    charge(aws, "EC2", "-2.50", charge_category="Credit")
    services.statements_generate(period="2025-04")
    statement = Statement.objects.get()
    lines = [(ln.source_name, ln.service_name, ln.kind, ln.amount) for ln in statement.lines.all()]
    assert lines == [
        ("AWS", "EC2", "", Decimal("0.01")),
        ("AWS", "EC2", "Credit", Decimal("-2.50")),
        ("AWS", "S3", "", Decimal("1.01")),
        ("HPC", "EC2", "", Decimal("0.00")),
    ]
    assert statement.billed_total == Decimal("0.01") - Decimal("2.50") + Decimal("1.01")
    exact = StatementLine.objects.get(statement=statement, service_name="EC2", kind="", source__slug="aws")
    assert exact.billed_exact == Decimal("0.0051")


def test_demo_month_statement_totals_match_expected(demo_month, demo_dir):
    expected = json.loads((demo_dir / "expected.json").read_text())
    outcome = generate_and_render("2026-10")
    totals = {f"{s.pi_email}|{s.project_code}": str(s.billed_total) for s in outcome.statements}
    assert totals == expected["statement_totals"]
    assert sum((s.billed_total for s in outcome.statements), Decimal(0)) == Decimal(
        expected["statement_grand_total"]
    )
    # Held back: the unattributed row and the row without a fund/org (no statement for either).
    assert outcome.held_back_billed == Decimal(expected["held_back_billed"])
    assert {(h.pi_email, h.project_code) for h in outcome.held_back_elsewhere} == {
        ("", ""),
        ("dmitri.volkov@university.example", "econ-survey-pilot"),
    }
    # Credits are their own negative lines.
    credits = StatementLine.objects.filter(kind="Credit")
    assert {(ln.statement.project_code, ln.amount) for ln in credits} == {
        ("chem-ml", Decimal("-50.00")),
        ("econ-panel", Decimal("-25.00")),
    }


def test_pi_filter_generates_only_that_pi(reference_month):
    outcome = services.statements_generate(period="2025-01", pi_email="ZORP.blinkman@example.edu ")
    assert {s.pi_email for s in outcome.statements} == {REF_PI}
    assert len(outcome.statements) == 2
    with pytest.raises(Refused, match="no PI with email"):
        services.statements_generate(period="2025-01", pi_email="nobody@example.edu")
    # The others follow with their own numbers.
    rest = services.statements_generate(period="2025-01")
    assert rest.count("new") == 8 and rest.count("unchanged") == 2
    assert len({s.number for s in rest.statements}) == 10


def test_finalized_period_refuses_regeneration_and_finalize_checks_statements(reference_month):
    period = billing_selectors.period_get("2025-01")
    billing_services.period_close(period="2025-01")
    period.refresh_from_db()
    problems = billing_services.period_finalize_problems(period)
    assert any("no statement" in p for p in problems)
    with pytest.raises(Refused, match="no statement"):
        billing_services.period_finalize(period="2025-01")

    services.statements_generate(period="2025-01")
    assert any("no PDF" in p for p in selectors.period_statement_problems(period))
    generate_and_render("2025-01")
    assert selectors.period_statement_problems(period) == []

    # A change after generating makes them stale.
    charge = Charge.objects.filter(project_code="exoplanet-survey").first()
    billing_services.charges_reject(charge_ids=[charge.pk], note="duplicate")
    assert any("out of date" in p for p in selectors.period_statement_problems(period))
    generate_and_render("2025-01")

    billing_services.period_finalize(period="2025-01")
    with pytest.raises(Refused, match="finalized"):
        services.statements_generate(period="2025-01")
    with pytest.raises(Refused, match="finalized"):
        services.statements_generate(period="2025-01", dry_run=True)


def test_approved_charge_without_pi_is_a_problem(db):
    period = PeriodFactory(period="2025-05", status="closed")
    ChargeFactory(period=period, project=None, pi=None, review_state="approved", billed_cost=Decimal("3.00"))
    outcome = services.statements_generate(period="2025-05")
    assert outcome.unbillable_count == 1 and not outcome.statements
    problems = selectors.period_statement_problems(BillingPeriod.objects.get(period="2025-05"))
    assert any("no PI to bill" in p and "$3.00" in p for p in problems)


def test_project_without_code_is_billed_on_its_own_statement(db):
    period = PeriodFactory(period="2025-06", status="closed")
    pi = PIFactory(email="solo@university.example")
    ChargeFactory(period=period, project=None, pi=pi, pi_email=pi.email, review_state="approved")
    services.statements_generate(period="2025-06")
    statement = Statement.objects.get()
    assert statement.project_code == "" and statement.pi_email == pi.email
