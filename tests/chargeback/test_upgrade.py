"""Upgrades: an installation made by the first migration of every app migrates to head with its
data intact, and every migration is forward-safe (or says why not).

Forward-safe here means: `RunPython`/`RunSQL` can be reversed (a no-op reverse is fine), and an
operation that drops data (`RemoveField`, `DeleteModel`) is deliberate: its migration module
sets `DATA_LOSS_REASON = "..."` saying why that is safe. A migration that cannot be reversed at
all sets `FORWARD_ONLY_REASON = "..."` instead. docs/deploy.md has the upgrade procedure
(backup first).
"""

from __future__ import annotations

import datetime as dt
import importlib
import io
from decimal import Decimal
from typing import Any

import pytest
from django.core.management import call_command
from django.db import connection
from django.db.migrations import operations as ops
from django.db.migrations.executor import MigrationExecutor
from django.db.migrations.loader import MigrationLoader

LOCAL_APPS = ("accounts", "billing", "statements", "journals", "chargeback")
UTC = dt.UTC


def _local_migrations(loader: MigrationLoader) -> list[tuple[str, str]]:
    return sorted(key for key in loader.disk_migrations if key[0] in LOCAL_APPS)


def initial_targets(loader: MigrationLoader) -> list[tuple[str, str]]:
    """The earliest state holding the first migration of every local app (and what those need)."""
    graph = loader.graph
    firsts = [node for node in graph.leaf_nodes() if node[0] in LOCAL_APPS]
    firsts = [next(n for n in graph.forwards_plan(leaf) if n[0] == leaf[0]) for leaf in firsts]
    needed: set[tuple[str, str]] = set()
    for node in firsts:
        needed.update(graph.forwards_plan(node))
    targets = []
    for app in sorted({n[0] for n in needed if n[0] in LOCAL_APPS}):
        nodes = [n for n in needed if n[0] == app]
        # The latest needed node of the app: the one every other one of the app leads to.
        targets.append(max(nodes, key=lambda n: len(graph.forwards_plan(n))))
    return targets


def _create(model: Any, **values: Any) -> Any:
    """Create a row of a historical model with the values its fields allow at that state."""
    names = {f.name for f in model._meta.get_fields()} | {"pk"}
    return model.objects.create(**{k: v for k, v in values.items() if k in names})


# Values that must survive every migration, by model: (lookup, {field: value}).
MONEY = {
    "list": Decimal("1234.5678901234"),
    "billed": Decimal("987.6543210987"),
    "credit": Decimal("-12.3400000001"),
}


def populate(state_apps: Any) -> dict[str, Any]:
    """Rows of every billing model, written with the historical models of the initial state."""
    m = {
        name: state_apps.get_model("billing", name)
        for name in (
            "BillingSettings",
            "Source",
            "BillingPeriod",
            "PeriodTransition",
            "PI",
            "Project",
            "AccountMapping",
            "Import",
            "Charge",
            "ChargeFlag",
            "FlagRule",
            "ReviewLog",
        )
    }
    when = dt.datetime(2025, 2, 3, 4, 5, 6, tzinfo=UTC)
    _create(
        m["BillingSettings"],
        pk=1,
        currency_code="EUR",
        fund_org_regex=r"[0-9]{6}-[0-9]{4}",
        tag_project_id="project",
    )
    source = _create(
        m["Source"],
        slug="aws",
        display_name="AWS",
        filename_pattern="aws_*",
        fund_org="IT-AWS",
        account="54100",
    )
    period = _create(m["BillingPeriod"], period="2025-01", status="closed", closed_at=when)
    _create(
        m["PeriodTransition"],
        period=period,
        from_status="open",
        to_status="closed",
        actor_name="cli:test",
        note="done",
    )
    pi = _create(m["PI"], email="pi@example.edu", name="Dr. Pi", department="Physics")
    project = _create(m["Project"], project_id="proj-1", pi=pi, fund_org="123456-7890", reference_1="NSF-1")
    _create(m["AccountMapping"], sub_account_id="012345678901", project=project, fund_org="123456-7890")
    imp = _create(
        m["Import"],
        source=source,
        period=period,
        original_name="aws_2025-01.csv",
        sha256="a" * 64,
        status="completed",
        rows_read=3,
        charges_created=2,
        # An import's totals are the exact sums of the charges it wrote (the ingest guarantees it,
        # and the period totals read them): the usage charge and the credit.
        list_total=MONEY["list"] + MONEY["credit"],
        billed_total=MONEY["billed"] + MONEY["credit"],
    )
    usage = _create(
        m["Charge"],
        period=period,
        source=source,
        import_run=imp,
        pi=pi,
        project=project,
        pi_email="pi@example.edu",
        project_code="proj-1",
        fund_org="123456-7890",
        resource_id="i-0abc",
        service_name="Amazon EC2",
        charge_category="Usage",
        sub_account_id="012345678901",
        quantity=Decimal("720.000000"),
        unit="Hours",
        list_cost=MONEY["list"],
        contracted_cost=MONEY["billed"],
        billed_cost=MONEY["billed"],
        effective_cost=MONEY["billed"],
        line_count=2,
        charge_period_start=when,
        tags={"pi_email": "pi@example.edu"},
        review_state="approved",
        flag_summary="rule:gpu",
    )
    credit = _create(
        m["Charge"],
        period=period,
        source=source,
        import_run=imp,
        pi=pi,
        project=project,
        charge_category="Credit",
        list_cost=MONEY["credit"],
        billed_cost=MONEY["credit"],
        review_state="ok",
    )
    rule = _create(m["FlagRule"], name="gpu", pattern="(?i)gpu", fields=["service_name"], mode="match")
    _create(m["ChargeFlag"], charge=usage, reason="rule", rule=rule, detail="gpu: matches")
    _create(
        m["ReviewLog"],
        charge=usage,
        period=period,
        action="approve",
        from_state="flagged",
        to_state="approved",
        billed_cost=MONEY["billed"],
        note="checked",
        actor_name="cli:test",
    )
    return {"usage": usage.pk, "credit": credit.pk, "import": imp.pk}


def check_intact(ids: dict[str, Any]) -> None:
    from billing import selectors
    from billing.models import (
        PI,
        AccountMapping,
        BillingPeriod,
        BillingSettings,
        Charge,
        ChargeFlag,
        FlagRule,
        Import,
        PeriodTransition,
        Project,
        ReviewLog,
        Source,
    )

    settings = BillingSettings.objects.get(pk=1)
    assert (settings.currency_code, settings.fund_org_regex, settings.tag_project_id) == (
        "EUR",
        r"[0-9]{6}-[0-9]{4}",
        "project",
    )
    source = Source.objects.get(slug="aws")
    assert (source.fund_org, source.account) == ("IT-AWS", "54100")
    period = BillingPeriod.objects.get(period="2025-01")
    assert period.status == "closed"
    assert PeriodTransition.objects.filter(period=period, to_status="closed").count() == 1
    project = Project.objects.get(project_id="proj-1")
    assert project.pi == PI.objects.get(email="pi@example.edu")
    assert AccountMapping.objects.get(sub_account_id="012345678901").project == project
    usage = Charge.objects.get(pk=ids["usage"])
    assert usage.list_cost == MONEY["list"]
    assert usage.billed_cost == usage.contracted_cost == usage.effective_cost == MONEY["billed"]
    assert usage.quantity == Decimal("720.000000")
    assert usage.review_state == "approved"
    assert usage.tags == {"pi_email": "pi@example.edu"}
    assert usage.sub_account_id == "012345678901"
    assert Charge.objects.get(pk=ids["credit"]).billed_cost == MONEY["credit"]
    assert Import.objects.get(pk=ids["import"]).billed_total == MONEY["billed"] + MONEY["credit"]
    assert ChargeFlag.objects.get(charge=usage).rule == FlagRule.objects.get(name="gpu")
    assert ReviewLog.objects.get(charge=usage).billed_cost == MONEY["billed"]
    summary = selectors.period_summary(period)
    assert summary.billed_total == MONEY["billed"] + MONEY["credit"]
    assert summary.list_total == MONEY["list"] + MONEY["credit"]
    assert summary.charges == 2


@pytest.mark.django_db(transaction=True)
def test_first_migration_state_to_head_keeps_the_data():
    executor = MigrationExecutor(connection)
    head = executor.loader.graph.leaf_nodes()
    targets = initial_targets(executor.loader)
    assert ("billing", "0001_initial") in targets
    try:
        executor.migrate(targets)
        executor.loader.build_graph()
        state_apps = executor.loader.project_state(targets).apps
        ids = populate(state_apps)
        executor = MigrationExecutor(connection)
        executor.migrate(head)
    finally:
        # Whatever happened, leave the test database at head for the tests that follow.
        executor = MigrationExecutor(connection)
        executor.loader.build_graph()
        executor.migrate(executor.loader.graph.leaf_nodes())
    check_intact(ids)


def test_initial_targets_are_first_migrations():
    loader = MigrationLoader(None, ignore_no_migrations=True)
    for app, name in initial_targets(loader):
        migration = loader.disk_migrations[(app, name)]
        # The target of an app is its initial migration unless another app's initial one needs more.
        assert migration.initial or any(
            (app, name) in loader.graph.forwards_plan(t) for t in initial_targets(loader) if t[0] != app
        )


@pytest.mark.django_db
def test_models_and_migrations_agree():
    """Model changes without a migration would meet an upgraded database unprepared (every app's:
    ours, and third-party ones whose migrations a setting of ours could change)."""
    out = io.StringIO()
    try:
        call_command("makemigrations", "--check", "--dry-run", stdout=out, stderr=out)
    except SystemExit as exc:
        pytest.fail(f"models changed without a migration:\n{out.getvalue()}" if exc.code else "")


def test_migrations_are_forward_safe():
    loader = MigrationLoader(None, ignore_no_migrations=True)
    problems = []
    for app, name in _local_migrations(loader):
        migration = loader.disk_migrations[(app, name)]
        module = importlib.import_module(migration.__module__)
        forward_only = getattr(module, "FORWARD_ONLY_REASON", "")
        data_loss = getattr(module, "DATA_LOSS_REASON", "")
        for operation in migration.operations:
            label = f"{app}.{name}: {operation.describe()}"
            if isinstance(operation, ops.RunPython) and not operation.reversible and not forward_only:
                problems.append(f"{label}: RunPython without reverse_code (or set FORWARD_ONLY_REASON)")
            if isinstance(operation, ops.RunSQL) and not operation.reversible and not forward_only:
                problems.append(f"{label}: RunSQL without reverse_sql (or set FORWARD_ONLY_REASON)")
            if isinstance(operation, ops.RemoveField | ops.DeleteModel) and not data_loss:
                problems.append(f"{label}: drops data; set DATA_LOSS_REASON explaining why that is safe")
            if (
                isinstance(operation, ops.AddField)
                and not migration.initial  # an initial migration adds to tables it creates
                and not operation.field.many_to_many
                and not operation.field.null
                and not operation.field.has_default()
            ):
                problems.append(f"{label}: NOT NULL without a default fails on existing rows")
    assert not problems, "\n".join(problems)
