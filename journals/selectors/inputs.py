"""What a period's journal is built from, read from the database into plain data
(`journals.build.inputs`): the settings, the current statements (issued or sent, not superseded)
and their lines, the sources, the projects' account codes, how the statements differ from what
they should say, and the billed charges (read when a layout asks for them). Queries only: every
rule is in `journals.build`."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import fields

from billing.models import BillingPeriod, Charge, Project, Source
from billing.selectors import BILLABLE_STATES, billing_settings_get
from journals.build.inputs import (
    JournalInputs,
    LineInput,
    SettingsInput,
    SourceInput,
    StatementChangesInput,
    StatementInput,
    StatementKeys,
)
from journals.build.stages import tag_accounts
from journals.entries import ChargeRow
from journals.models import JournalSettings
from statements.models import Statement, StatementLine
from statements.selectors import current_statements, statement_changes


def settings_input(settings: JournalSettings) -> SettingsInput:
    """The settings the journal uses (every field of `SettingsInput` is a JournalSettings field)."""
    return SettingsInput(**{f.name: getattr(settings, f.name) for f in fields(SettingsInput)})


def changes_input(period: BillingPeriod) -> StatementChangesInput:
    """Statements missing (billable charges without one), stale (changed or withdrawn since
    generating), and billable charges without a PI."""
    changes = statement_changes(period)
    stale = [old for _draft, old in changes.changed] + list(changes.withdrawn)
    return StatementChangesInput(
        new=tuple((d.pi_email, d.project_code) for d in changes.new),
        stale=tuple(s.label for s in stale),
        unbillable_count=changes.drafts.unbillable_count,
        unbillable_billed=changes.drafts.unbillable_billed,
    )


def _tag_accounts(period: BillingPeriod, tag_key: str) -> dict[tuple[int, str], str]:
    """The account tag of each (PI, project) from its billable charges' tags."""
    if not (tag_key or "").strip():
        return {}
    tagged = (
        Charge.objects.filter(
            period=period,
            review_state__in=BILLABLE_STATES,
            pi__isnull=False,
            tags__icontains=tag_key.strip().lower(),
        )
        .values_list("pi_id", "project_code", "tags")
        .order_by()
        .iterator(chunk_size=5000)
    )
    return tag_accounts(tagged, tag_key, billing_settings_get().tag_prefix_list)


def statements_input(period: BillingPeriod, tag_key: str) -> tuple[StatementInput, ...]:
    """The current statements by number, with their project's GL account and account tag."""
    current = current_statements(period)
    tagged = _tag_accounts(period, tag_key)
    gl_accounts = dict(
        Project.objects.filter(pk__in=current.values("project_id"))
        .exclude(gl_account="")
        .values_list("pk", "gl_account")
    )
    return tuple(
        StatementInput(
            id=row["pk"],
            number=row["number"],
            version=row["version"],
            pi_id=row["pi_id"],
            pi_email=row["pi_email"],
            pi_name=row["pi_name"],
            project_id=row["project_code"],
            project_name=row["project_name"],
            fund_org=row["fund_org"],
            billed_total=row["billed_total"],
            currency=row["currency"],
            cost_center=row["cost_center"],
            reference_1=row["reference_1"],
            reference_2=row["reference_2"],
            project_gl_account=gl_accounts.get(row["project_id"], ""),
            tag_account=tagged.get((row["pi_id"], row["project_code"]), ""),
        )
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
        )
    )


def lines_input(period: BillingPeriod) -> tuple[LineInput, ...]:
    """The lines of the current statements, by statement and position."""
    lines = StatementLine.objects.filter(statement__period=period).exclude(
        statement__state=Statement.State.SUPERSEDED
    )
    fields = (
        "statement_id",
        "source_id",
        "source_name",
        "service_name",
        "kind",
        "charge_count",
        "list_amount",
        "discount_amount",
        "amount",
    )
    return tuple(
        LineInput(**dict(zip(fields, row, strict=True)))
        for row in lines.order_by("statement_id", "position").values_list(*fields)
    )


def sources_input() -> dict[int, SourceInput]:
    return {
        s.pk: SourceInput(
            id=s.pk, slug=s.slug, display_name=s.display_name, fund_org=s.fund_org, account=s.account
        )
        for s in Source.objects.all()
    }


def journal_inputs(period: BillingPeriod, settings: JournalSettings) -> JournalInputs:
    """Everything the journal of a period is built from (`journals.build.journal_from_inputs`)."""
    return JournalInputs(
        period=period.period,
        status=period.status,
        currency=billing_settings_get().currency_code,
        settings=settings_input(settings),
        changes=changes_input(period),
        statements=statements_input(period, settings.account_tag),
        lines=lines_input(period),
        sources=sources_input(),
        charges=lambda statements: charge_rows(period, statements),
    )


def charge_rows(period: BillingPeriod, statements: StatementKeys) -> Iterator[ChargeRow]:
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
