"""Flagging: every reason a charge needs a reviewer, recorded in full, at ingest and afterwards."""

from __future__ import annotations

import csv
import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from billing import selectors, services
from billing.ingest.flagging import CompiledRule, Flag, FlagContext, compile_rule, summarize
from billing.models import Charge, ChargeFlag, FlagReason, FlagRule
from chargeback.regex import compile_linear
from tests.factories import FlagRuleFactory, ProjectFactory, SourceFactory

D = Decimal


def context(fund_org_regex: str = "", rules: tuple = ()) -> FlagContext:
    return FlagContext(fund_org_regex=compile_linear(fund_org_regex) if fund_org_regex else None, rules=rules)


def attribution(ctx: FlagContext, **overrides) -> list[Flag]:
    values: dict[str, Any] = {
        "has_pi": True,
        "project_code": "lab-a",
        "fund_org": "NSF-0001",
        "project_owner_email": "ada@uni.example",
        "pi_email": "ada@uni.example",
    }
    values.update(overrides)
    return ctx.attribution_flags(**values)


# --- the rules themselves (no database) -----------------------------------------------------------------------


def test_attribution_flags():
    ctx = context(r"[A-Z]+-[0-9]{4}")
    assert attribution(ctx) == []
    assert attribution(ctx, has_pi=False) == [
        Flag(FlagReason.UNATTRIBUTED, "no PI in tags and no account mapping")
    ]
    assert attribution(ctx, project_code="", project_owner_email=None) == [
        Flag(FlagReason.MISSING_PROJECT, "no project id")
    ]
    assert attribution(ctx, fund_org="") == [Flag(FlagReason.MISSING_FUND_ORG, "no fund/org")]
    # The regex must match the whole fund/org.
    assert attribution(ctx, fund_org="NSF-00012") == [
        Flag(FlagReason.INVALID_FUND_ORG, "'NSF-00012' does not match [A-Z]+-[0-9]{4}")
    ]
    assert attribution(context(), fund_org="anything at all") == []
    assert attribution(ctx, pi_email="bob@uni.example") == [
        Flag(
            FlagReason.PROJECT_PI_MISMATCH, "project lab-a belongs to ada@uni.example, tagged bob@uni.example"
        )
    ]
    # Every reason, not only the first.
    flags = attribution(ctx, project_code="", fund_org="bad", project_owner_email="x@uni.example")
    assert [f.reason for f in flags] == ["missing_project", "invalid_fund_org", "project_pi_mismatch"]


def test_compiled_rules():
    match = CompiledRule(1, "gpu", compile_linear("(?i)gpu"), ("service_name", "sku_id"), False, None)
    must = CompiledRule(2, "fund format", compile_linear(r"^[A-Z]+-\d+$"), ("fund_org",), True, 7)

    assert match.applies({"service_name": "HPC GPU Cluster"}, 3) == Flag(
        "rule", "gpu: service_name 'HPC GPU Cluster' matches (?i)gpu", 1
    )
    assert match.applies({"service_name": "EC2", "sku_id": "A100-GPU"}, 3).detail == (
        "gpu: sku_id 'A100-GPU' matches (?i)gpu"
    )
    assert match.applies({"service_name": "EC2"}, 3) is None
    assert must.applies({"fund_org": "nsf 1"}, 7) == Flag(
        "rule", "fund format: fund_org 'nsf 1' does not match ^[A-Z]+-\\d+$", 2
    )
    assert must.applies({"fund_org": ""}, 7).detail.startswith("fund format: fund_org '' does not match")
    assert must.applies({"fund_org": "NSF-1"}, 7) is None
    assert must.applies({"fund_org": "nsf 1"}, 8) is None  # scoped to source 7

    ctx = context(rules=(match, must))
    assert ctx.rule_flags({"service_name": "GPU", "fund_org": "x"}, 7) == [
        match.applies({"service_name": "GPU"}, 7),
        must.applies({"fund_org": "x"}, 7),
    ]


def test_summarize():
    flags = [
        Flag("missing_fund_org", "no fund/org"),
        Flag("rule", "gpu: service_name 'GPU' matches gpu", 1),
        Flag("rule", "gpu: sku_id 'GPU' matches gpu", 1),
        Flag("rule", "fund format: fund_org 'x' does not match y", 2),
    ]
    assert summarize(flags) == "missing_fund_org, rule:gpu, rule:fund format"
    assert summarize([]) == ""
    assert len(summarize([Flag("rule", f"r{n}" * 40 + ": x") for n in range(20)])) == 500


@pytest.mark.django_db
def test_flag_context_loads_active_rules_and_settings():
    settings = selectors.billing_settings_get()
    settings.fund_org_regex = r"[A-Z]+-\d+"
    settings.save()
    FlagRuleFactory(name="b rule", pattern="x", fields=["region"])
    FlagRuleFactory(name="a rule", pattern="y", fields=[])  # no fields: fund/org
    FlagRuleFactory(name="off", is_active=False)
    ctx = FlagContext.load(settings)
    assert ctx.fund_org_regex.pattern == r"[A-Z]+-\d+"
    assert [(r.name, r.fields) for r in ctx.rules] == [("a rule", ("fund_org",)), ("b rule", ("region",))]
    rule = FlagRule.objects.get(name="b rule")
    assert compile_rule(rule) == CompiledRule(
        rule.pk, "b rule", compile_linear("x"), ("region",), False, None
    )


# --- at ingest ------------------------------------------------------------------------------------------------

HEADER = ["BillingPeriodStart", "BilledCost", "ResourceId", "ServiceName", "SubAccountId", "RegionId", "Tags"]


def import_rows(tmp_path: Path, rows: list[tuple[str, str, dict]], source: str = "aws"):
    """rows: (resource id, service name, tags); 1.00 each."""
    path = tmp_path / f"{source}_2025-01.csv"
    with open(path, "w", newline="") as fh:
        out = csv.writer(fh)
        out.writerow(HEADER)
        for resource, service, tags in rows:
            out.writerow(
                ["2025-01-01", "1.00", resource, service, "123456789012", "us-east-1", json.dumps(tags)]
            )
    outcome = services.import_file(path=path, source=source, period="2025-01")
    return {c.resource_id: c for c in Charge.objects.filter(import_run_id=outcome.import_id)}, outcome


def reasons(charge: Charge) -> list[str]:
    return sorted(charge.flags.values_list("reason", flat=True))


@pytest.mark.django_db
def test_ingest_records_every_flag_reason(tmp_path):
    SourceFactory(slug="aws")
    SourceFactory(slug="hpc")
    settings = selectors.billing_settings_get()
    settings.fund_org_regex = r"[A-Z]+-[0-9]{4}"
    settings.save()
    ProjectFactory(project_id="owned", pi__email="owner@uni.example", fund_org="DOE-0001")
    gpu = services.flag_rule_save(name="gpu", pattern="(?i)gpu", fields=["service_name"])
    services.flag_rule_save(name="hpc only", pattern=".", fields=["region"], source="hpc")
    ada = "ada@uni.example"

    charges, outcome = import_rows(
        tmp_path,
        [
            ("clean", "EC2", {"pi_email": ada, "project_id": "lab-a", "fund_org": "NSF-0001"}),
            ("untagged", "EC2", {"environment": "prod"}),
            ("no project", "EC2", {"pi_email": ada, "fund_org": "NSF-0001"}),
            ("no fund", "EC2", {"pi_email": ada, "project_id": "lab-b"}),
            ("bad fund", "EC2", {"pi_email": ada, "project_id": "lab-c", "fund_org": "nsf 1"}),
            ("other pi", "EC2", {"pi_email": ada, "project_id": "owned", "fund_org": "NSF-0001"}),
            ("gpu", "HPC GPU Cluster", {"pi_email": ada, "project_id": "lab-a", "fund_org": "NSF-0001"}),
            ("everything", "gpu box", {"pi_email": ada}),
        ],
    )

    assert {rid: (c.review_state, c.flag_summary) for rid, c in charges.items()} == {
        "clean": ("ok", ""),
        "untagged": ("flagged", "unattributed"),
        "no project": ("flagged", "missing_project"),
        "no fund": ("flagged", "missing_fund_org"),
        "bad fund": ("flagged", "invalid_fund_org"),
        "other pi": ("flagged", "project_pi_mismatch"),
        "gpu": ("flagged", "rule:gpu"),
        "everything": ("flagged", "missing_project, missing_fund_org, rule:gpu"),
    }
    assert reasons(charges["everything"]) == ["missing_fund_org", "missing_project", "rule"]
    assert charges["everything"].flags.get(reason="rule").rule == gpu
    assert charges["gpu"].flags.get().detail == "gpu: service_name 'HPC GPU Cluster' matches (?i)gpu"
    assert charges["bad fund"].flags.get().detail == "'nsf 1' does not match [A-Z]+-[0-9]{4}"
    assert (
        charges["other pi"].flags.get().detail
        == "project owned belongs to owner@uni.example, tagged ada@uni.example"
    )
    assert charges["other pi"].project.pi.email == "owner@uni.example"
    assert ChargeFlag.objects.count() == 9
    assert outcome.flagged == 7
    assert set(selectors.flagged_charges(reason="rule:gpu").values_list("resource_id", flat=True)) == {
        "gpu",
        "everything",
    }

    # The hpc-only rule flags every row of an hpc file, and nothing of the aws file above.
    hpc, _ = import_rows(
        tmp_path,
        [("node-1", "HPC Cluster", {"pi_email": ada, "project_id": "lab-a", "fund_org": "NSF-0001"})],
        "hpc",
    )
    assert hpc["node-1"].flag_summary == "rule:hpc only"


@pytest.mark.django_db
def test_flagged_amounts_are_held_apart_in_the_summary(tmp_path):
    SourceFactory(slug="aws")
    import_rows(
        tmp_path,
        [
            ("a", "EC2", {"pi_email": "ada@uni.example", "project_id": "lab-a", "fund_org": "NSF-0001"}),
            ("b", "EC2", {}),
            ("c", "EC2", {"pi_email": "ada@uni.example"}),
        ],
    )
    summary = selectors.period_summary(selectors.period_get("2025-01"))
    assert (summary.flagged, summary.flagged_billed, summary.billable_total, summary.billed_total) == (
        2,
        D("2.00"),
        D("1.00"),
        D("3.00"),
    )
