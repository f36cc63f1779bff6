"""Billing selectors: file-name detection, periods, and the exact period summary."""

from __future__ import annotations

from decimal import Decimal

import pytest
from django.db import models

from billing import selectors
from billing.models import BillingSettings, ChargeFlag, FlagReason
from chargeback.errors import Refused
from tests.factories import (
    ChargeFactory,
    FlagRuleFactory,
    ImportFactory,
    PeriodFactory,
    PIFactory,
    ProjectFactory,
    SourceFactory,
)

pytestmark = pytest.mark.django_db
D = Decimal


# --- file names ----------------------------------------------------------------------------------------------


def test_source_for_filename_longest_pattern_wins():
    aws = SourceFactory(slug="aws", filename_pattern="aws*")
    gov = SourceFactory(slug="aws-gov", filename_pattern="aws-gov*")
    azure = SourceFactory(slug="azure", filename_pattern="*azure*.csv*")
    SourceFactory(slug="gcp", filename_pattern="gcp_*", is_active=False)

    assert selectors.source_for_filename("aws_2025-01.csv") == aws
    assert selectors.source_for_filename("AWS_2025-01.CSV") == aws  # case-insensitive
    assert selectors.source_for_filename("aws-gov_2025-01.csv") == gov
    assert selectors.source_for_filename("export-AZURE-2025-01.csv.gz") == azure
    assert selectors.source_for_filename("gcp_2025-01.csv") is None  # inactive sources are not detected
    assert selectors.source_for_filename("oracle_2025-01.csv") is None


def test_source_for_filename_falls_back_to_slug_prefix():
    hpc = SourceFactory(slug="hpc", filename_pattern="")
    hpc_gpu = SourceFactory(slug="hpc-gpu", filename_pattern="")
    storage = SourceFactory(slug="storage", filename_pattern="nothing-matches-*")

    assert selectors.source_for_filename("hpc_2025-01.csv") == hpc
    assert selectors.source_for_filename("HPC.2025-01.csv") == hpc
    assert selectors.source_for_filename("hpc-gpu_2025-01.csv") == hpc_gpu  # the longest slug
    assert selectors.source_for_filename("storage-2025-01.csv") == storage
    assert selectors.source_for_filename("hpcx_2025-01.csv") is None  # a prefix needs a separator
    assert selectors.source_for_filename("hpc") == hpc
    # An explicit candidate list is honoured.
    assert selectors.source_for_filename("hpc_2025-01.csv", sources=[storage]) is None


def test_source_for_filename_prefers_the_most_specific_source():
    # Patterns as import-config writes them from the original's known_sources (matched anywhere).
    storage = SourceFactory(slug="storage", filename_pattern="*storage*")
    azure = SourceFactory(slug="azure", filename_pattern="azure_*")
    it_storage = SourceFactory(slug="it_storage", filename_pattern="")  # created on first sight: no pattern
    assert selectors.source_for_filename("it_storage_2025-01.csv") == it_storage  # never storage
    assert selectors.source_for_filename("storage_2025-01.csv") == storage
    assert selectors.source_for_filename("campus-storage-2025-01.csv") == storage
    assert selectors.source_for_filename("azure-local_2025-01.csv") is None  # never azure
    azure_local = SourceFactory(slug="azure-local", filename_pattern="*azure-local*")
    assert selectors.source_for_filename("azure-local_2025-01.csv") == azure_local
    assert selectors.source_for_filename("azure_2025-01.csv") == azure
    assert selectors.source_for_filename("azure-2025-01.csv") == azure  # the slug, then a date


def test_source_names():
    names = {
        slug: selectors.source_display_name(slug)
        for slug in (
            "aws",
            "gcp",
            "hpc",
            "openai",
            "azure-local",
            "it_storage",
            "azure",
            "storage",
            "oci_gpu",
        )
    }
    assert names == {
        "aws": "AWS",
        "gcp": "GCP",
        "hpc": "HPC",
        "openai": "OpenAI",
        "azure-local": "Azure Local",
        "it_storage": "IT Storage",
        "azure": "Azure",
        "storage": "Storage",
        "oci_gpu": "OCI GPU",
    }
    assert selectors.source_slug(" AWS ") == "aws"
    with pytest.raises(Refused, match=r"^invalid source name 'a b': use lower-case letters"):
        selectors.source_slug("a b")
    assert selectors.source_name_from_filename("IT_Storage_2025-01.csv") == "it_storage"
    assert selectors.source_name_from_filename("azure-local-202501.csv.gz") == "azure-local"
    assert selectors.source_name_from_filename("2025-01.csv") == ""
    assert selectors.source_name_from_filename("export.csv") == ""


def test_source_get_is_case_insensitive():
    aws = SourceFactory(slug="aws")
    assert selectors.source_get("AWS") == aws


def test_period_from_filename():
    cases = {
        "aws_2025-01.csv": "2025-01",
        "azure_202502.csv": "2025-02",
        "hpc_2025_03.csv.gz": "2025-03",
        "focus-export-2025-12-detail.csv": "2025-12",
        "storage_2026-10.csv": "2026-10",
        "aws_2025-13.csv": None,
        "aws_2025-00.csv": None,
        "aws.csv": None,
        "invoice_1202501.csv": None,  # digits around the match: not a period
        "aws_20250199.csv": None,
    }
    assert {name: selectors.period_from_filename(name) for name in cases} == cases


def test_validate_and_get_period():
    assert selectors.validate_period(" 2025-01 ") == "2025-01"
    with pytest.raises(Refused, match=r"^invalid period '2025/01': expected YYYY-MM, e.g. 2025-01$"):
        selectors.validate_period("2025/01")
    period = PeriodFactory(period="2025-01")
    assert selectors.period_get("2025-01") == period
    with pytest.raises(Refused, match=r"^period 2025-02 does not exist$"):
        selectors.period_get("2025-02")


def test_source_get():
    aws = SourceFactory(slug="aws")
    assert selectors.source_get("aws") == aws
    with pytest.raises(Refused, match=r"^unknown source 'gcp' \(known: aws\); add it with `sources add`$"):
        selectors.source_get("gcp")


def test_billing_settings_is_a_singleton():
    first = selectors.billing_settings_get()
    assert (first.pk, first.currency_code, first.tag_prefix_list) == (1, "USD", ["user:", "tag:", "label:"])
    first.tag_prefixes = " user: , ,aws:"
    first.save()
    assert selectors.billing_settings_get().tag_prefix_list == ["user:", "aws:"]
    assert BillingSettings.objects.count() == 1


# --- the period summary ---------------------------------------------------------------------------------------


@pytest.fixture
def month():
    """A small month with every review state, two sources, an unattributed charge and a credit."""
    period = PeriodFactory(period="2025-01")
    aws, hpc = SourceFactory(slug="aws"), SourceFactory(slug="hpc")
    ada, bob = PIFactory(email="ada@uni.example"), PIFactory(email="bob@uni.example")
    genomics = ProjectFactory(project_id="genomics", pi=ada, fund_org="NIH-1")
    proteins = ProjectFactory(project_id="proteins", pi=ada, fund_org="NSF-2")
    climate = ProjectFactory(project_id="climate", pi=bob, fund_org="NOAA-3")

    def charge(project, source, listed, billed, state="ok", **extra):
        return ChargeFactory(
            period=period,
            source=source,
            project=project,
            list_cost=D(listed),
            billed_cost=D(billed),
            review_state=state,
            **extra,
        )

    charge(genomics, aws, "100.0000000001", "85.0000000001")
    charge(genomics, aws, "-5.00", "-5.00", charge_category="Credit")
    charge(genomics, hpc, "800.00", "0.00")  # 100 % subsidy
    charge(proteins, aws, "50.00", "42.50", "approved")
    charge(proteins, aws, "20.00", "20.00", "rejected")
    charge(climate, hpc, "12.3456789012", "12.3456789012", "flagged", flag_summary="rule:x")
    charge(None, aws, "7.77", "7.77", "flagged", flag_summary="unattributed", attribution_source="none")
    # Another period must not count.
    ChargeFactory(period=PeriodFactory(period="2025-02"), source=aws, project=genomics, billed_cost=D("999"))
    return period


def test_period_summary_numbers(month):
    summary = selectors.period_summary(month)
    assert summary.period == month
    assert (summary.charges, summary.pis, summary.projects) == (7, 2, 3)
    assert (summary.flagged, summary.flagged_billed, summary.rejected) == (2, D("20.1156789012"), 1)
    assert summary.list_total == D("985.1156789013")
    assert summary.billed_total == D("162.6156789013")
    assert summary.discount == D("822.5000000000")
    assert summary.billable_total == D("122.5000000001")  # ok + approved
    assert summary.by_source == {"aws": D("150.2700000001"), "hpc": D("12.3456789012")}
    rows = [
        (
            p.pi_email,
            p.project_code,
            p.fund_org,
            p.charges,
            p.list_total,
            p.billed_total,
            p.flagged_count,
            p.flagged_billed,
        )
        for p in summary.by_project
    ]
    assert rows == [
        ("", "", "", 1, D("7.77"), D("7.77"), 1, D("7.77")),
        ("ada@uni.example", "genomics", "NIH-1", 3, D("895.0000000001"), D("80.0000000001"), 0, D(0)),
        ("ada@uni.example", "proteins", "NSF-2", 2, D("70.00"), D("62.50"), 0, D(0)),
        (
            "bob@uni.example",
            "climate",
            "NOAA-3",
            1,
            D("12.3456789012"),
            D("12.3456789012"),
            1,
            D("12.3456789012"),
        ),
    ]
    assert summary.by_project[1].discount == D("815.00")


def test_one_period_totals_for_every_reader(month):
    """The dashboard, `periods list` and `period summary` read one PeriodTotals, computed one way."""
    from django.core.cache import cache

    cache.clear()
    overview = {t.period.period: t for t in selectors.periods_overview()}
    assert list(overview) == ["2025-02", "2025-01"]
    one = selectors.period_totals(month)
    assert overview["2025-01"] == one == selectors.period_summary(month).totals
    assert (one.charges, one.imports, one.list_total, one.billed_total) == (
        7,
        7,
        D("985.1156789013"),
        D("162.6156789013"),
    )
    assert (one.flagged, one.flagged_billed, one.rejected, one.rejected_billed) == (
        2,
        D("20.1156789012"),
        1,
        D("20.00"),
    )
    assert one.billable_total == D("122.5000000001")
    assert [(s.slug, s.billed_total) for s in one.by_source] == [
        ("aws", D("150.2700000001")),
        ("hpc", D("12.3456789012")),
    ]
    assert sum(s.charges for s in one.by_source) == 7
    assert selectors.periods_totals([]) == {}


def test_period_summary_of_an_empty_period():
    summary = selectors.period_summary(PeriodFactory(period="2025-03"))
    assert (summary.charges, summary.pis, summary.projects, summary.flagged) == (0, 0, 0, 0)
    assert (summary.list_total, summary.billed_total, summary.billable_total) == (D(0), D(0), D(0))
    assert (summary.by_source, summary.by_project) == ({}, [])


def test_pi_period_projects(month):
    rows = selectors.pi_period_projects(" Ada@Uni.Example ", month)
    assert [(r.project_code, r.billed_total) for r in rows] == [
        ("genomics", D("80.0000000001")),
        ("proteins", D("62.50")),
    ]
    with pytest.raises(Refused, match=r"^no PI with email nobody@uni.example$"):
        selectors.pi_period_projects("nobody@uni.example", month)


def test_flagged_charges_by_reason(month):
    rule = FlagRuleFactory(name="gpu")
    flagged = list(selectors.flagged_charges(month))
    assert len(flagged) == 2
    unattributed = next(c for c in flagged if c.attribution_source == "none")
    ruled = next(c for c in flagged if c.attribution_source != "none")
    ChargeFlag.objects.create(charge=unattributed, reason=FlagReason.UNATTRIBUTED)
    ChargeFlag.objects.create(charge=ruled, reason=FlagReason.RULE, rule=rule)
    assert list(selectors.flagged_charges(month, "unattributed")) == [unattributed]
    assert list(selectors.flagged_charges(reason="rule:gpu")) == [ruled]
    assert list(selectors.flagged_charges(month, "rule:other")) == []
    assert selectors.flagged_charges(PeriodFactory(period="2025-04")).count() == 0


def test_exact_sum_and_current_imports(month):
    from billing.models import Charge, Import

    assert selectors.exact_sum(Charge.objects.filter(period=month), "billed_cost") == D("162.6156789013")
    assert selectors.exact_sum(Charge.objects.none(), "billed_cost") == D(0)
    aws = SourceFactory(slug="aws")
    done = ImportFactory(source=aws, period=month)
    ImportFactory(source=aws, period=month, status=Import.Status.SUPERSEDED)
    ImportFactory(source=aws, period=month, status=Import.Status.FAILED)
    current = set(selectors.current_imports(aws, month))
    assert done in current
    assert all(i.status == "completed" for i in current)


# --- cached rankings ---------------------------------------------------------------------------------------


def test_rankings_stay_cached_through_review_decisions_and_follow_corrections(django_assert_max_num_queries):
    from django.core.cache import cache

    from billing import services

    cache.clear()
    ada, bob = ProjectFactory(project_id="ada-lab"), ProjectFactory(project_id="bob-lab")
    charges = [
        ChargeFactory(project=ada, billed_cost=D("30.00")),
        ChargeFactory(project=bob, billed_cost=D("20.00")),
    ]
    period = charges[0].period
    first = selectors.period_rankings(period)
    assert [(p.key, p.billed_total) for p in first.top_projects] == [
        ("ada-lab", D("30.00")),
        ("bob-lab", D("20.00")),
    ]

    # Approving or rejecting changes review states only: the rankings are read from the cache.
    services.charges_review(action="reject", charge_ids=[charges[0].pk], note="not ours", actor_name="rita")
    with django_assert_max_num_queries(3):  # the fingerprint's two queries and the cache
        again = selectors.period_rankings(period)
    assert again.top_projects == first.top_projects
    assert selectors.period_rankings_cached(period) is not None

    # A correction moves money between PIs and projects: computed again.
    services.charge_correct_attribution(
        charge_id=charges[0].pk, pi_email=bob.pi.email, project_id="bob-lab", note="moved", actor_name="rita"
    )
    assert selectors.period_rankings_cached(period) is None
    moved = selectors.period_rankings(period)
    assert [(p.key, p.billed_total) for p in moved.top_projects] == [("bob-lab", D("50.00"))]
    cache.clear()


def test_a_credit_changes_the_cached_rankings():
    from django.core.cache import cache

    from billing.credits import charge_credit_add

    cache.clear()
    ada = ProjectFactory(project_id="ada-lab")
    charge = ChargeFactory(project=ada, billed_cost=D("30.00"))
    assert selectors.period_rankings(charge.period).top_projects[0].billed_total == D("30.00")
    charge_credit_add(
        period=charge.period.period,
        source=charge.source,
        pi_email=ada.pi.email,
        project_id="ada-lab",
        amount=D("5.00"),
        description="outage",
        reference="CR-1",
        actor_name="rita",
    )
    assert selectors.period_rankings(charge.period).top_projects[0].billed_total == D("25.00")
    assert selectors.period_totals(charge.period).billed_total == D("25.00")
    cache.clear()


# --- cached totals and review groups -----------------------------------------------------------------------


def test_after_a_review_decision_only_the_flagged_and_rejected_charges_are_summed_again():
    from django.core.cache import cache
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from billing import services

    cache.clear()
    ok = ChargeFactory(billed_cost=D("10.00"))
    flagged = [
        ChargeFactory(period=ok.period, billed_cost=D(f"{n}.25"), review_state="flagged") for n in (1, 2, 3)
    ]
    first = selectors.period_totals(ok.period)
    assert (first.charges, first.billed_total, first.flagged, first.flagged_billed) == (
        4,
        D("16.75"),
        3,
        D("6.75"),
    )

    services.charges_review(action="reject", charge_ids=[flagged[0].pk], note="not ours", actor_name="rita")
    with CaptureQueriesContext(connection) as queries:
        after = selectors.period_totals(ok.period)
    charge_queries = [q["sql"] for q in queries.captured_queries if "billing_charge" in q["sql"]]
    assert charge_queries and all("review_state" in sql for sql in charge_queries), charge_queries
    assert (after.charges, after.billed_total, after.flagged, after.flagged_billed) == (
        4,
        D("16.75"),
        2,
        D("5.50"),
    )
    assert (after.rejected, after.rejected_billed, after.billable_total) == (1, D("1.25"), D("10.00"))
    assert selectors.period_totals(ok.period) == after
    cache.clear()


def test_review_groups_are_cached_until_decisions_flags_or_rules_change():
    from django.core.cache import cache
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from billing import services
    from billing.models import FlagRule

    cache.clear()
    fund = [ChargeFactory(fund_org="", billed_cost=D("2.50"), review_state="flagged") for _ in range(2)]
    period = fund[0].period
    ChargeFlag.objects.bulk_create([ChargeFlag(charge=c, reason=FlagReason.MISSING_FUND_ORG) for c in fund])

    def groups() -> dict[str, tuple[str, int, D]]:
        return {g.key: (g.label, g.count, g.billed) for g in selectors.review_queue_groups(period)}

    assert groups() == {"missing_fund_org": ("Missing fund/org", 2, D("5.00"))}
    with CaptureQueriesContext(connection) as queries:
        assert groups() == {"missing_fund_org": ("Missing fund/org", 2, D("5.00"))}
    assert not any("SUM(" in q["sql"] for q in queries.captured_queries)

    # A decision changes the period's fingerprint.
    services.charges_review(action="approve", charge_ids=[fund[0].pk], note="ok", actor_name="rita")
    assert groups() == {"missing_fund_org": ("Missing fund/org", 1, D("2.50"))}

    # Re-evaluating a rule adds a flag to a charge that stays flagged (no decision logged).
    rule = FlagRuleFactory(name="no fund", pattern="^$", fields=["fund_org"])
    services.period_reevaluate_flags(period=period.period)
    assert groups()["rule:no fund"] == ("Rule: no fund", 1, D("2.50"))

    # A renamed rule is named as it is now; a deleted one as deleted.
    FlagRule.objects.filter(pk=rule.pk).update(name="empty fund/org")
    assert groups()["rule:empty fund/org"] == ("Rule: empty fund/org", 1, D("2.50"))
    rule.delete()
    assert groups()["rule"] == ("Flag rule (deleted)", 1, D("2.50"))
    cache.clear()


def test_the_flagged_and_rejected_sums_read_the_period_state_billed_index_alone():
    from django.db import connection

    from billing.models import Charge

    period = ChargeFactory(review_state="flagged").period
    flagged = (
        Charge.objects.filter(period=period, review_state__in=["flagged", "rejected"])
        .values_list("period_id", "review_state")
        .annotate(billed=models.Sum("billed_cost"))
        .order_by()
    )
    sql, params = flagged.query.sql_with_params()
    with connection.cursor() as cursor:
        if connection.vendor == "sqlite":
            cursor.execute(f"EXPLAIN QUERY PLAN {sql}", params)
            plan = "\n".join(str(row[-1]) for row in cursor.fetchall())
            assert "COVERING INDEX charge_period_state_billed" in plan, plan
        else:
            cursor.execute("SET LOCAL enable_seqscan = off")
            cursor.execute("SET LOCAL enable_bitmapscan = off")
            cursor.execute(f"EXPLAIN {sql}", params)
            plan = "\n".join(row[0] for row in cursor.fetchall())
            assert "Index Only Scan using charge_period_state_billed" in plan, plan


def test_a_periods_charge_id_range_is_one_query(django_assert_num_queries):
    first = ChargeFactory()
    period = first.period
    later = ChargeFactory(period=period, source=SourceFactory(slug="gcp"))
    ChargeFactory(period=PeriodFactory(period="2025-02"))
    ChargeFactory(period=period, import_run=later.import_run, source=later.source)
    last = ChargeFactory(period=period, import_run=first.import_run, source=first.source)
    with django_assert_num_queries(1):
        assert selectors.period_charge_id_range(period) == (first.pk, last.pk)
    assert selectors.period_charge_id_range(PeriodFactory(period="2025-03")) is None

    # A credit's import has no period: its charge is the period's all the same.
    from billing.credits import charge_credit_add

    credit = charge_credit_add(
        period=period.period,
        source=first.source,
        pi_email=first.pi_email,
        project_id=first.project_code,
        amount=D("5.00"),
        description="outage",
        reference="CR-2",
        actor_name="rita",
    ).charge
    assert selectors.period_charge_id_range(period) == (first.pk, credit.pk)
    assert selectors.period_charge_id_range(PeriodFactory(period="2025-02")) != (first.pk, credit.pk)
