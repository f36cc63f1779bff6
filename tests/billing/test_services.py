"""Billing services: the period state machine, sources, account mappings, review, re-evaluation and
flag rules. Every refusal is a Refused with a precise message and leaves the database unchanged."""

from __future__ import annotations

from decimal import Decimal

import pytest

from billing import services
from billing.models import (
    PI,
    AccountMapping,
    BillingPeriod,
    Charge,
    ChargeFlag,
    FlagReason,
    FlagRule,
    PeriodTransition,
    Project,
    ReviewLog,
    Source,
)
from chargeback.errors import Refused
from tests.factories import (
    ChargeFactory,
    PeriodFactory,
    PIFactory,
    ProjectFactory,
    SourceFactory,
    UserFactory,
)

pytestmark = pytest.mark.django_db
D = Decimal


def flagged_charge(period: BillingPeriod, billed: str = "10.00", **fields) -> Charge:
    """An unattributed, flagged charge as an import writes it."""
    charge: Charge = ChargeFactory(  # type: ignore[assignment]
        period=period,
        project=None,
        billed_cost=D(billed),
        list_cost=D(billed),
        review_state="flagged",
        flag_summary="unattributed",
        attribution_source="none",
        **fields,
    )
    ChargeFlag.objects.create(charge=charge, reason=FlagReason.UNATTRIBUTED, detail="no PI")
    return charge


# --- periods -------------------------------------------------------------------------------------------------


def test_period_lifecycle_records_every_transition():
    user = UserFactory(username="finance")
    period = services.period_open(period="2025-03", actor=user, note="new month")
    assert (period.status, period.closed_at, period.finalized_at) == ("open", None, None)

    closed = services.period_close(period="2025-03", actor=user, note="month end")
    assert closed.status == "closed" and closed.closed_at is not None
    with pytest.raises(Refused, match=r"^a reason is required to reopen a period$"):
        services.period_reopen(period="2025-03", reason="   ", actor=user)
    reopened = services.period_reopen(period="2025-03", reason="  late AWS credit ", actor_name="cli:alice")
    assert (reopened.status, reopened.closed_at) == ("open", None)
    services.period_close(period="2025-03", actor=user)
    final = services.period_finalize(period="2025-03", actor=user, note="audited")
    assert final.status == "finalized" and final.finalized_at is not None
    assert BillingPeriod.objects.get(period="2025-03").is_finalized

    transitions = PeriodTransition.objects.filter(period=period).order_by("id")
    assert [(t.from_status, t.to_status, t.actor_name, t.note) for t in transitions] == [
        ("", "open", "finance", "new month"),
        ("open", "closed", "finance", "month end"),
        ("closed", "open", "cli:alice", "late AWS credit"),
        ("open", "closed", "finance", ""),
        ("closed", "finalized", "finance", "audited"),
    ]
    assert [t.actor for t in transitions] == [user, user, None, user, user]
    assert all(t.created_at is not None for t in transitions)


def test_period_open_is_idempotent_and_validates():
    first = services.period_open(period="2025-04")
    assert services.period_open(period="2025-04") == first
    assert PeriodTransition.objects.count() == 1
    for bad in ("2025-13", "25-01", "2025-1", "", "2025-00"):
        with pytest.raises(Refused, match=rf"^invalid period '{bad}': expected YYYY-MM, e.g. 2025-01$"):
            services.period_open(period=bad)
    with pytest.raises(Refused, match=r"^period 2031-01 does not exist$"):
        services.period_close(period="2031-01")


def test_period_transition_refusals():
    services.period_open(period="2025-05")
    with pytest.raises(Refused, match=r"^period 2025-05 is open; only a closed period can be reopened$"):
        services.period_reopen(period="2025-05", reason="why not")
    with pytest.raises(
        Refused, match=r"^period 2025-05 cannot be finalized: period 2025-05 is open; close it first$"
    ):
        services.period_finalize(period="2025-05")
    services.period_close(period="2025-05")
    assert services.period_close(period="2025-05").status == "closed"  # closed already: nothing to do (cron)
    with pytest.raises(Refused, match=r"^period 2025-05 is closed \(reopen it with a reason\)$"):
        services.period_open(period="2025-05")
    assert PeriodTransition.objects.count() == 2
    assert BillingPeriod.objects.get().status == "closed"


def test_finalize_refused_while_charges_are_flagged():
    period = services.period_open(period="2025-06")
    charges = [flagged_charge(period), flagged_charge(period)]
    services.period_close(period="2025-06")
    with pytest.raises(Refused) as caught:
        services.period_finalize(period="2025-06")
    assert str(caught.value) == (
        "period 2025-06 cannot be finalized: 2 charges still flagged; approve or reject them"
    )
    assert services.period_finalize_problems(BillingPeriod.objects.get()) == [
        "2 charges still flagged; approve or reject them"
    ]
    services.charges_approve(charge_ids=[charges[0].pk])  # review is allowed while closed
    with pytest.raises(Refused, match="1 charge still flagged; approve or reject them"):
        services.period_finalize(period="2025-06")
    # (Unattributed charges cannot bill anyone: rejecting them is what lets the period finalize.)
    services.charges_reject(charge_ids=[c.pk for c in charges], note="not ours")
    assert services.period_finalize_problems(BillingPeriod.objects.get()) == []
    assert services.period_finalize(period="2025-06").status == "finalized"
    assert BillingPeriod.objects.get().status == "finalized"


def test_finalized_period_is_immutable():
    period = services.period_open(period="2025-07")
    # Rejected: nothing billable, so finalizing needs no statements.
    charge = ChargeFactory(period=period, review_state="rejected")
    services.period_close(period="2025-07")
    services.period_finalize(period="2025-07")

    refusals = [
        (
            lambda: services.period_reopen(period="2025-07", reason="oops"),
            "is finalized; only a closed period",
        ),
        (lambda: services.period_finalize(period="2025-07"), "^period 2025-07 is already finalized$"),
        (lambda: services.period_close(period="2025-07"), "is finalized; only an open period can be closed"),
        (lambda: services.period_open(period="2025-07"), "^period 2025-07 is finalized$"),
        (lambda: services.period_ensure_open(period="2025-07"), "finalized: it accepts no imports"),
        (lambda: services.charges_approve(charge_ids=[charge.pk]), "^period 2025-07 is finalized: no review"),
        (
            lambda: services.charges_approve(period="2025-07"),
            "^period 2025-07 is finalized: no review changes$",
        ),
        (lambda: services.charges_reject(charge_ids=[charge.pk], note="x"), "finalized: no review changes"),
        (
            lambda: services.charge_correct_attribution(
                charge_id=charge.pk, pi_email="x@uni.example", project_id="p"
            ),
            "^period 2025-07 is finalized: no review changes$",
        ),
        (lambda: services.period_reevaluate_flags(period="2025-07"), "finalized: no review changes"),
    ]
    for call, message in refusals:
        with pytest.raises(Refused, match=message):
            call()
    charge.refresh_from_db()
    assert (charge.review_state, charge.pi_email) == ("rejected", charge.project.pi.email)
    assert ReviewLog.objects.count() == 0
    assert BillingPeriod.objects.get().status == "finalized"
    assert PeriodTransition.objects.count() == 3
    assert not PI.objects.filter(email="x@uni.example").exists()


def test_period_ensure_open():
    created = services.period_ensure_open(period="2025-08", actor_name="import")
    assert created.status == "open"
    assert created.transitions.get().note == "created by import"
    services.period_close(period="2025-08")
    with pytest.raises(Refused, match=r"^period 2025-08 is closed: it accepts no imports; reopen it first"):
        services.period_ensure_open(period="2025-08")


# --- sources and mappings --------------------------------------------------------------------------------------


def test_source_create_defaults_and_refusals():
    source = services.source_create(slug=" IT_Storage ", fund_org="RC-100", account="4500")
    assert (source.slug, source.display_name, source.filename_pattern) == (
        "it_storage",
        "IT Storage",
        "it_storage_*",
    )
    assert (source.fund_org, source.account, source.is_active) == ("RC-100", "4500", True)
    for bad in ("aws prod", "-aws", "aws!", "", "_x"):
        with pytest.raises(
            Refused, match=r"^invalid source name .*: use lower-case letters, digits, '-' and '_'$"
        ):
            services.source_create(slug=bad)
    with pytest.raises(Refused, match=r"^source it_storage already exists$"):
        services.source_create(slug="it_storage")
    assert Source.objects.count() == 1


def test_source_update():
    services.source_create(slug="aws", display_name="AWS")
    updated = services.source_update(
        slug="aws", display_name="Amazon", filename_pattern="cur-*", fund_org=None
    )
    assert (updated.display_name, updated.filename_pattern, updated.fund_org) == ("Amazon", "cur-*", "")
    with pytest.raises(Refused, match=r"^cannot change is_active, name of a source$"):
        services.source_update(slug="aws", name="amazon", is_active="no")
    with pytest.raises(Refused, match=r"^unknown source 'gcp' \(known: aws\); add it with `sources add`$"):
        services.source_update(slug="gcp", display_name="x")


def test_account_mapping_set_creates_and_updates():
    services.source_create(slug="aws")
    mapping = services.account_mapping_set(
        sub_account_id=" 012345678901 ", project_id="lab-a", pi_email="Ada@Uni.Example", fund_org="NSF-1"
    )
    assert (mapping.sub_account_id, mapping.source, mapping.fund_org) == ("012345678901", None, "NSF-1")
    assert (mapping.project.project_id, mapping.project.pi.email, mapping.project.fund_org) == (
        "lab-a",
        "ada@uni.example",
        "NSF-1",
    )
    # The same sub-account for one source only is a second mapping; the global one is updated in place.
    per_source = services.account_mapping_set(
        sub_account_id="012345678901", project_id="lab-b", pi_email="bob@uni.example", source="aws"
    )
    again = services.account_mapping_set(
        sub_account_id="012345678901", project_id="lab-a", pi_email="ada@uni.example", fund_org="NSF-2"
    )
    assert again.pk == mapping.pk and again.fund_org == "NSF-2"
    assert per_source.source.slug == "aws"
    assert AccountMapping.objects.count() == 2
    assert Project.objects.get(project_id="lab-a").fund_org == "NSF-1"  # only a new project takes it


def test_account_mapping_refusals():
    ProjectFactory(project_id="lab-a", pi__email="ada@uni.example")
    cases = [
        (
            {"sub_account_id": " ", "project_id": "lab-a", "pi_email": "ada@uni.example"},
            "^a sub-account id is required$",
        ),
        (
            {"sub_account_id": "1", "project_id": "", "pi_email": "ada@uni.example"},
            "^a project id is required$",
        ),
        (
            {"sub_account_id": "1", "project_id": "lab-x", "pi_email": "not-an-email"},
            "^invalid PI email 'not-an-email'$",
        ),
        (
            {"sub_account_id": "1", "project_id": "lab-a", "pi_email": "bob@uni.example"},
            "^project lab-a belongs to ada@uni.example, not bob@uni.example$",
        ),
        (
            {"sub_account_id": "1", "project_id": "lab-a", "pi_email": "ada@uni.example", "source": "oracle"},
            "^unknown source 'oracle'",
        ),
    ]
    for kwargs, message in cases:
        with pytest.raises(Refused, match=message):
            services.account_mapping_set(**kwargs)
    assert AccountMapping.objects.count() == 0
    assert not Project.objects.filter(project_id="lab-x").exists()


# --- review ------------------------------------------------------------------------------------------------------


@pytest.fixture
def period():
    return services.period_open(period="2025-01")


def test_approve_by_ids(period):
    user = UserFactory(username="reviewer")
    a, b = flagged_charge(period, "10.25"), flagged_charge(period, "4.75")
    untouched = flagged_charge(period, "1.00")

    outcome = services.charges_approve(charge_ids=[a.pk, b.pk, a.pk], note=" lab confirmed ", actor=user)

    assert (outcome.action, outcome.count, outcome.billed_total, outcome.skipped) == (
        "approve",
        2,
        D("15.00"),
        0,
    )
    assert outcome.batch is not None
    states = dict(Charge.objects.values_list("id", "review_state"))
    assert states == {a.pk: "approved", b.pk: "approved", untouched.pk: "flagged"}
    logs = ReviewLog.objects.order_by("charge_id")
    assert [(log.charge_id, log.action, log.from_state, log.to_state, log.billed_cost) for log in logs] == [
        (a.pk, "approve", "flagged", "approved", D("10.25")),
        (b.pk, "approve", "flagged", "approved", D("4.75")),
    ]
    assert {(log.note, log.actor, log.actor_name, log.batch, log.period_id) for log in logs} == {
        ("lab confirmed", user, "reviewer", outcome.batch, period.pk)
    }
    # Flags stay recorded; approval only lets the charge bill.
    assert ChargeFlag.objects.filter(charge=a).count() == 1

    again = services.charges_approve(charge_ids=[a.pk])
    assert (again.count, again.skipped, again.batch, again.billed_total) == (0, 1, None, D(0))
    assert ReviewLog.objects.count() == 2


def test_reject_needs_a_note(period):
    charge = flagged_charge(period)
    for note in ("", "   "):
        with pytest.raises(Refused, match=r"^a note is required to reject charges$"):
            services.charges_reject(charge_ids=[charge.pk], note=note)
    charge.refresh_from_db()
    assert charge.review_state == "flagged"

    outcome = services.charges_reject(
        charge_ids=[charge.pk], note="not a university account", actor_name="cli:bo"
    )
    assert (outcome.action, outcome.count, outcome.billed_total) == ("reject", 1, D("10.00"))
    log = ReviewLog.objects.get()
    assert (log.action, log.from_state, log.to_state, log.note, log.actor_name, log.actor) == (
        "reject",
        "flagged",
        "rejected",
        "not a university account",
        "cli:bo",
        None,
    )
    # An approved charge can still be rejected (by id), and the log says from where.
    other = ChargeFactory(period=period, review_state="approved")
    services.charges_reject(charge_ids=[other.pk], note="billed twice")
    assert ReviewLog.objects.get(charge=other).from_state == "approved"


def test_bulk_review_by_period_acts_on_flagged_only(period):
    other_period = PeriodFactory(period="2025-02")
    ok = ChargeFactory(period=period)
    approved = ChargeFactory(period=period, review_state="approved")
    rejected = ChargeFactory(period=period, review_state="rejected")
    flagged = [flagged_charge(period, "1.10"), flagged_charge(period, "2.20"), flagged_charge(period, "3.30")]
    elsewhere = flagged_charge(other_period)

    outcome = services.charges_approve(period="2025-01", note="all fine")

    assert (outcome.count, outcome.billed_total) == (3, D("6.60"))
    states = dict(Charge.objects.values_list("id", "review_state"))
    assert [states[c.pk] for c in flagged] == ["approved"] * 3
    assert (states[ok.pk], states[approved.pk], states[rejected.pk], states[elsewhere.pk]) == (
        "ok",
        "approved",
        "rejected",
        "flagged",
    )
    assert set(ReviewLog.objects.values_list("charge_id", flat=True)) == {c.pk for c in flagged}
    assert len(set(ReviewLog.objects.values_list("batch", flat=True))) == 1

    more = [flagged_charge(period), flagged_charge(period)]
    rejected_all = services.charges_reject(period="2025-01", note="test accounts")
    assert rejected_all.count == 2
    assert set(Charge.objects.filter(pk__in=[c.pk for c in more]).values_list("review_state", flat=True)) == {
        "rejected"
    }
    assert services.charges_approve(period="2025-01").count == 0


def test_review_refusals(period):
    charge = flagged_charge(period)
    cases = [
        (
            lambda: services.charges_approve(charge_ids=[charge.pk, 999_999, 999_998]),
            "^no charge with id 999998, 999999$",
        ),
        (lambda: services.charges_reject(charge_ids=[999_999], note="x"), "^no charge with id 999999$"),
        (lambda: services.charges_approve(charge_ids=[]), "^no charges given$"),
        (lambda: services.charges_approve(), "^give charge ids or a period$"),
        (lambda: services.charges_approve(period="2030-01"), "^period 2030-01 does not exist$"),
    ]
    for call, message in cases:
        with pytest.raises(Refused, match=message):
            call()
    charge.refresh_from_db()
    assert charge.review_state == "flagged"
    assert ReviewLog.objects.count() == 0


# --- correcting attribution ----------------------------------------------------------------------------------------


def test_correct_attribution_creates_pi_and_project_and_clears_flags(period):
    charge = flagged_charge(period, "12.34", sub_account_id="012345678901")
    user = UserFactory(username="fixer")

    corrected = services.charge_correct_attribution(
        charge_id=charge.pk,
        pi_email=" Ada@Uni.Example ",
        project_id=" lab-a ",
        fund_org=" NSF-0001 ",
        note="per ticket 42",
        actor=user,
    )

    charge.refresh_from_db()
    assert charge == corrected
    assert (charge.pi.email, charge.pi_email, charge.project.project_id, charge.project_code) == (
        "ada@uni.example",
        "ada@uni.example",
        "lab-a",
        "lab-a",
    )
    assert (charge.fund_org, charge.attribution_source, charge.review_state, charge.flag_summary) == (
        "NSF-0001",
        "manual",
        "ok",
        "",
    )
    assert Project.objects.get(project_id="lab-a").fund_org == "NSF-0001"
    assert not ChargeFlag.objects.filter(charge=charge).exists()
    log = ReviewLog.objects.get()
    assert (log.action, log.from_state, log.to_state, log.note, log.actor, log.billed_cost) == (
        "correct",
        "flagged",
        "ok",
        "per ticket 42",
        user,
        D("12.34"),
    )
    assert log.details == {
        "before": {"pi_email": "", "project_code": "", "fund_org": ""},
        "after": {"pi_email": "ada@uni.example", "project_code": "lab-a", "fund_org": "NSF-0001"},
    }


def test_correct_attribution_reruns_every_rule(period):
    services.flag_rule_save(name="no test funds", pattern="^TEST", fields=["fund_org"])
    owner = PIFactory(email="owner@uni.example")
    ProjectFactory(project_id="owned", pi=owner, fund_org="")

    charge = flagged_charge(period)
    services.charge_correct_attribution(
        charge_id=charge.pk, pi_email="someone@uni.example", project_id="owned", fund_org="TEST-1"
    )
    charge.refresh_from_db()
    reasons = sorted(ChargeFlag.objects.filter(charge=charge).values_list("reason", flat=True))
    assert reasons == ["project_pi_mismatch", "rule"]
    assert charge.review_state == "flagged"
    assert charge.flag_summary == "project_pi_mismatch, rule:no test funds"
    mismatch = ChargeFlag.objects.get(charge=charge, reason="project_pi_mismatch")
    assert mismatch.detail == "project owned belongs to owner@uni.example, tagged someone@uni.example"
    assert ChargeFlag.objects.get(charge=charge, reason="rule").rule == FlagRule.objects.get()

    # No project and no fund/org: both are flagged, and the fund/org comes from nowhere.
    services.charge_correct_attribution(charge_id=charge.pk, pi_email="owner@uni.example", project_id="")
    charge.refresh_from_db()
    assert charge.flag_summary == "missing_project, missing_fund_org"
    assert (charge.project, charge.project_code, charge.fund_org) == (None, "", "")

    # The project's fund/org applies when none is given.
    ProjectFactory(project_id="funded", pi=owner, fund_org="DOE-9")
    services.charge_correct_attribution(
        charge_id=charge.pk, pi_email="owner@uni.example", project_id="funded"
    )
    charge.refresh_from_db()
    assert (charge.fund_org, charge.review_state, charge.flag_summary) == ("DOE-9", "ok", "")
    assert ReviewLog.objects.filter(action="correct").count() == 3


def test_correct_attribution_keeps_a_decision(period):
    charge = flagged_charge(period)
    services.charges_approve(charge_ids=[charge.pk])
    services.charge_correct_attribution(charge_id=charge.pk, pi_email="ada@uni.example", project_id="")
    charge.refresh_from_db()
    assert charge.review_state == "approved"
    assert charge.flag_summary == "missing_project, missing_fund_org"
    log = ReviewLog.objects.get(action="correct")
    assert (log.from_state, log.to_state) == ("approved", "approved")
    with pytest.raises(Refused, match=r"^invalid PI email 'nobody'$"):
        services.charge_correct_attribution(charge_id=charge.pk, pi_email="nobody", project_id="")


# --- re-evaluation after a rule change ---------------------------------------------------------------------------


def test_reevaluate_flags_changes_only_undecided_charges(period):
    old_rule = services.flag_rule_save(name="old", pattern="^NSF-2$", fields=["fund_org"])
    charges = {
        "ok match": ChargeFactory(period=period, fund_org="TEST-1"),
        "ok clean": ChargeFactory(period=period, fund_org="NSF-1"),
        "approved match": ChargeFactory(period=period, fund_org="TEST-2", review_state="approved"),
        "rejected match": ChargeFactory(period=period, fund_org="TEST-3", review_state="rejected"),
        "flagged by old rule": ChargeFactory(
            period=period, fund_org="NSF-2", review_state="flagged", flag_summary="rule:old"
        ),
        "unattributed": flagged_charge(period),
    }
    ChargeFlag.objects.create(
        charge=charges["flagged by old rule"], reason="rule", rule=old_rule, detail="old"
    )

    services.flag_rule_save(
        name="old", pattern="^NSF-2$", fields=["fund_org"], is_active=False, rule_id=old_rule.pk
    )
    services.flag_rule_save(name="test funds", pattern="^TEST-", fields=["fund_org"])
    changed = services.period_reevaluate_flags(period="2025-01", actor_name="cli:rev")

    assert changed == 2
    state = {name: Charge.objects.get(pk=c.pk) for name, c in charges.items()}
    assert {name: (c.review_state, c.flag_summary) for name, c in state.items()} == {
        "ok match": ("flagged", "rule:test funds"),
        "ok clean": ("ok", ""),
        "approved match": ("approved", ""),
        "rejected match": ("rejected", ""),
        "flagged by old rule": ("ok", ""),
        "unattributed": ("flagged", "unattributed"),
    }
    flag = ChargeFlag.objects.get(charge=charges["ok match"])
    assert (flag.reason, flag.rule.name) == ("rule", "test funds")
    assert flag.detail == "test funds: fund_org 'TEST-1' matches ^TEST-"
    assert not ChargeFlag.objects.filter(charge=charges["flagged by old rule"]).exists()
    assert not ChargeFlag.objects.filter(charge=charges["approved match"]).exists()
    logs = ReviewLog.objects.order_by("charge_id")
    assert [
        (log.charge_id, log.action, log.from_state, log.to_state, log.actor_name) for log in logs
    ] == sorted(
        [
            (charges["ok match"].pk, "reevaluate", "ok", "flagged", "cli:rev"),
            (charges["flagged by old rule"].pk, "reevaluate", "flagged", "ok", "cli:rev"),
        ]
    )
    assert services.period_reevaluate_flags(period="2025-01") == 0


def test_reevaluate_with_must_match_rule_and_source_scope(period):
    aws, hpc = SourceFactory(slug="aws"), SourceFactory(slug="hpc")
    good = ChargeFactory(period=period, source=aws, fund_org="NSF-0001")
    bad = ChargeFactory(period=period, source=aws, fund_org="nsf 1")
    other_source = ChargeFactory(period=period, source=hpc, fund_org="nsf 1")
    services.flag_rule_save(
        name="fund format", pattern=r"^[A-Z]+-[0-9]{4}$", fields=["fund_org"], mode="must_match", source="aws"
    )
    assert services.period_reevaluate_flags(period="2025-01") == 1
    states = dict(Charge.objects.values_list("id", "review_state"))
    assert (states[good.pk], states[bad.pk], states[other_source.pk]) == ("ok", "flagged", "ok")
    assert ChargeFlag.objects.get().detail == "fund format: fund_org 'nsf 1' does not match ^[A-Z]+-[0-9]{4}$"


# --- flag rules ------------------------------------------------------------------------------------------------------


def test_flag_rule_save_validates():
    with pytest.raises(
        Refused, match=r"^pattern '\(unclosed': invalid regular expression: missing \): \(unclosed"
    ):
        services.flag_rule_save(name="broken", pattern="(unclosed", fields=["fund_org"])
    with pytest.raises(
        Refused, match=r"^unknown field\(s\) colour; choose from charge_category, cost_center, "
    ):
        services.flag_rule_save(name="x", pattern="a", fields=["fund_org", "colour"])
    with pytest.raises(Refused, match=r"^unknown field\(s\) \(none given\)"):
        services.flag_rule_save(name="x", pattern="a", fields=[])
    with pytest.raises(Refused, match=r"^unknown source 'oracle'"):
        services.flag_rule_save(name="x", pattern="a", fields=["region"], source="oracle")
    assert FlagRule.objects.count() == 0

    rule = services.flag_rule_save(name=" GPU ", pattern="(?i)gpu", fields=["service_name", "sku_id"])
    assert (rule.name, rule.pattern, rule.fields, rule.mode, rule.is_active) == (
        "GPU",
        "(?i)gpu",
        ["service_name", "sku_id"],
        "match",
        True,
    )
    with pytest.raises(Refused, match=r"^a flag rule named 'GPU' already exists$"):
        services.flag_rule_save(name="GPU", pattern="x", fields=["region"])
    updated = services.flag_rule_save(
        name="GPU", pattern="A100", fields=["sku_id"], description="big GPUs", rule_id=rule.pk
    )
    assert (updated.pk, updated.pattern, updated.fields, updated.description) == (
        rule.pk,
        "A100",
        ["sku_id"],
        "big GPUs",
    )
    with pytest.raises(Refused, match=r"^pattern .\[.: invalid regular expression"):
        services.flag_rule_save(name="GPU", pattern="[", fields=["sku_id"], rule_id=rule.pk)
    assert FlagRule.objects.get().pattern == "A100"


def test_flag_rule_edits_and_bulk_toggles_are_audited():
    """Every rule change is saved through the model, so the audit log records it (a
    QuerySet.update would leave rule edits unaudited)."""
    from auditlog.models import LogEntry

    rule = services.flag_rule_save(name="gpu", pattern="gpu", fields=["resource_name"])
    other = services.flag_rule_save(name="cpu", pattern="cpu", fields=["resource_name"], is_active=False)
    services.flag_rule_save(name="gpu", pattern="(?i)gpu", fields=["resource_name"], rule_id=rule.pk)
    entries = list(LogEntry.objects.get_for_object(rule).order_by("pk"))
    assert [e.action for e in entries] == [LogEntry.Action.CREATE, LogEntry.Action.UPDATE]
    assert entries[1].changes_dict["pattern"] == ["gpu", "(?i)gpu"]

    assert services.flag_rules_set_active(rule_ids=[rule.pk, other.pk], active=False) == 1
    assert services.flag_rules_set_active(rule_ids=[rule.pk, other.pk], active=False) == 0
    assert list(FlagRule.objects.order_by("name").values_list("name", "is_active")) == [
        ("cpu", False),
        ("gpu", False),
    ]
    toggled = LogEntry.objects.get_for_object(rule).order_by("pk").last()
    assert toggled is not None and toggled.changes_dict["is_active"] == ["True", "False"]
    assert LogEntry.objects.get_for_object(other).count() == 1  # unchanged: no entry
    assert services.flag_rules_set_active(rule_ids=[], active=True) == 0


def test_a_review_decision_refreshes_the_cached_rankings_on_commit(
    period, django_capture_on_commit_callbacks
):
    """Whoever decides (admin, CLI, task), the dashboard's rankings are current once it commits.
    Rankings sum every review state, so an approval keeps them; a correction moves money between
    PIs and projects, so its commit recomputes them."""
    from billing import selectors

    charge = flagged_charge(period, "10.00")
    selectors.period_rankings(period, refresh=True)
    with django_capture_on_commit_callbacks(execute=True):
        services.charges_approve(charge_ids=[charge.pk])
    kept = selectors.period_rankings_cached(period)
    assert kept is not None and kept.top_projects == []  # still the unattributed charge alone
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        services.charge_correct_attribution(charge_id=charge.pk, pi_email="ada@uni.example", project_id="lab")
    assert selectors.period_rankings_cached(period) is None  # the correction changed the period
    assert callbacks
    for callback in callbacks:
        callback()
    refreshed = selectors.period_rankings_cached(period)
    assert refreshed is not None
    assert [(p.key, p.billed_total) for p in refreshed.top_projects] == [("lab", Decimal("10.00"))]


def test_interrupted_imports_are_marked_failed():
    """Runs whose process is gone (this host) or that are a day old (another host) are interrupted."""
    import datetime as dt
    import os
    import socket

    from django.utils import timezone

    from billing.models import Import
    from tests.factories import ImportFactory

    now = timezone.now()
    alive = ImportFactory(status="running", runner=f"{socket.gethostname()}:{os.getpid()}", started_at=now)
    dead_here = ImportFactory(status="running", runner=f"{socket.gethostname()}:999999999", started_at=now)
    old_elsewhere = ImportFactory(
        status="running", runner="other-host:123", started_at=now - dt.timedelta(hours=25)
    )
    recent_elsewhere = ImportFactory(status="running", runner="other-host:124", started_at=now)

    assert services.imports_fail_interrupted() == 2

    states = dict(Import.objects.values_list("pk", "status"))
    assert states[alive.pk] == "running" and states[recent_elsewhere.pk] == "running"
    assert states[dead_here.pk] == "failed" and states[old_elsewhere.pk] == "failed"
    assert Import.objects.get(pk=dead_here.pk).error_message.startswith("interrupted:")
