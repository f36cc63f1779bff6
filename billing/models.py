"""The billing domain: sources, periods, PIs, projects, imports, charges, flag rules."""

from __future__ import annotations

import calendar
import datetime as dt

from django.conf import settings
from django.db import models
from django.db.models import Q

from chargeback.money import MoneyField

PERIOD_REGEX = r"^[0-9]{4}-(0[1-9]|1[0-2])$"


class BillingSettings(models.Model):
    """The installation's billing settings; a singleton (pk=1), read via selectors.billing_settings()."""

    organization_name = models.CharField(max_length=200, default="Research Computing")
    contact_email = models.EmailField(blank=True, default="")
    currency_code = models.CharField(
        max_length=3, default="USD", help_text="ISO 4217 code, used on every page, PDF, email and CLI output."
    )
    tag_pi_email = models.CharField("tag key: PI email", max_length=100, default="pi_email")
    tag_project_id = models.CharField("tag key: project id", max_length=100, default="project_id")
    tag_fund_org = models.CharField("tag key: fund/org", max_length=100, default="fund_org")
    tag_cost_center = models.CharField("tag key: cost center", max_length=100, default="cost_center")
    tag_reference_1 = models.CharField("tag key: reference 1", max_length=100, default="grant_number")
    tag_reference_2 = models.CharField("tag key: reference 2", max_length=100, default="request_id")
    reference_1_label = models.CharField(max_length=50, default="Grant number")
    reference_2_label = models.CharField(max_length=50, default="Request id")
    tag_prefixes = models.CharField(
        max_length=200,
        default="user:,tag:,label:",
        help_text="Comma-separated provider prefixes stripped from tag keys (AWS adds 'user:').",
    )
    fund_org_regex = models.CharField(
        "fund/org regex",
        max_length=500,
        blank=True,
        default="",
        help_text="A fund/org that does not match this regex is flagged 'invalid fund/org'. Empty: any value.",
    )
    # Branding of statements and emails (billing/branding.py checks them; statements/branding.py
    # draws them). Presentation only: changing them never makes a new statement version.
    logo = models.FileField(
        "statement logo",
        upload_to="branding/",
        max_length=300,
        blank=True,
        default="",
        help_text="PNG, JPEG or SVG, shown at the top of every statement PDF.",
    )
    organization_address = models.TextField(
        "address", blank=True, default="", help_text="Postal address, one line per line, under the name."
    )
    contact_line = models.CharField(
        "contact",
        max_length=200,
        blank=True,
        default="",
        help_text="Phone, web site or office hours, shown under the address (the contact email is added).",
    )
    accent_color = models.CharField(
        "accent colour",
        max_length=7,
        default="#1d4e89",
        help_text="Hex colour of the statement's name, rules and amount due, e.g. #1d4e89.",
    )
    payment_instructions = models.TextField(
        "payment or remittance instructions",
        blank=True,
        default="",
        help_text="How to pay: shown in a box under the amount due on every statement.",
    )
    statement_footer = models.CharField(
        "statement footer",
        max_length=300,
        blank=True,
        default="",
        help_text="One line at the end of every statement, e.g. a tax id or 'Thank you'.",
    )
    email_subject_template = models.TextField(
        "email subject template",
        blank=True,
        default="",
        help_text="Django template of the statement email's subject. Empty: the site's file "
        "(DATA_DIR/templates/statements/email/subject.txt) or the built-in one.",
    )
    email_text_template = models.TextField(
        "email text template",
        blank=True,
        default="",
        help_text="Django template of the plain-text body. Empty: statements/email/statements.txt.",
    )
    email_html_template = models.TextField(
        "email HTML template",
        blank=True,
        default="",
        help_text="Django template of the HTML body. Empty: statements/email/statements.html.",
    )
    # The original's config.yaml read with -c (chargeback.operations.legacy_config.config_apply): the settings it
    # manages are applied again whenever the file changes, over edits made here.
    config_path = models.CharField(max_length=500, blank=True, default="", editable=False)
    config_sha256 = models.CharField(max_length=64, blank=True, default="", editable=False)
    config_applied_at = models.DateTimeField(null=True, blank=True, editable=False)
    config_managed = models.JSONField(
        default=list, blank=True, editable=False, help_text="The keys of config.yaml applied to the database."
    )
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name = "billing settings"
        verbose_name_plural = "billing settings"
        constraints = [models.CheckConstraint(condition=Q(pk=1), name="billing_settings_singleton")]

    def __str__(self) -> str:
        return "Billing settings"

    @property
    def tag_prefix_list(self) -> list[str]:
        return [p.strip() for p in self.tag_prefixes.split(",") if p.strip()]


class Source(models.Model):
    """Where costs come from (aws, azure, hpc, ...), and where the journal credits them."""

    slug = models.SlugField(max_length=50, unique=True)
    display_name = models.CharField(max_length=100)
    filename_pattern = models.CharField(
        max_length=200,
        blank=True,
        default="",
        help_text="Glob matched case-insensitively against upload file names, e.g. 'aws*'. Longest match wins.",
    )
    fund_org = models.CharField("credit fund/org", max_length=100, blank=True, default="")
    account = models.CharField("credit GL account", max_length=50, blank=True, default="")
    is_active = models.BooleanField(verbose_name="active", default=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["slug"]

    def __str__(self) -> str:
        return self.slug


class BillingPeriod(models.Model):
    class Status(models.TextChoices):
        OPEN = "open", "Open"
        CLOSED = "closed", "Closed"
        FINALIZED = "finalized", "Finalized"

    period = models.CharField(max_length=7, unique=True, help_text="YYYY-MM")
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.OPEN)
    created_at = models.DateTimeField(auto_now_add=True)
    closed_at = models.DateTimeField(null=True, blank=True)
    finalized_at = models.DateTimeField(null=True, blank=True)
    statement_note = models.TextField(
        "note on statements",
        blank=True,
        default="",
        help_text="Shown on every statement of this period rendered from now on (e.g. a price change).",
    )

    class Meta:
        ordering = ["-period"]
        constraints = [
            models.CheckConstraint(condition=Q(period__regex=PERIOD_REGEX), name="billing_period_format"),
            models.CheckConstraint(
                condition=Q(status__in=["open", "closed", "finalized"]), name="billing_period_status"
            ),
        ]

    def __str__(self) -> str:
        return self.period

    @property
    def start_date(self) -> dt.date:
        year, month = (int(p) for p in self.period.split("-"))
        return dt.date(year, month, 1)

    @property
    def end_date(self) -> dt.date:
        year, month = (int(p) for p in self.period.split("-"))
        return dt.date(year, month, calendar.monthrange(year, month)[1])

    @property
    def is_finalized(self) -> bool:
        return self.status == self.Status.FINALIZED


class PeriodTransition(models.Model):
    """Every status change of a period: who, when, why."""

    period = models.ForeignKey(BillingPeriod, on_delete=models.CASCADE, related_name="transitions")
    from_status = models.CharField(max_length=10, blank=True, default="")
    to_status = models.CharField(max_length=10)
    actor = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    actor_name = models.CharField(max_length=150)
    note = models.TextField(blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["created_at", "id"]

    def __str__(self) -> str:
        return f"{self.period}: {self.from_status or '-'} → {self.to_status}"


class PI(models.Model):
    email = models.EmailField(unique=True)
    name = models.CharField(max_length=200, blank=True, default="")
    department = models.CharField(max_length=200, blank=True, default="")
    user = models.OneToOneField(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="pi"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        verbose_name = "PI"
        verbose_name_plural = "PIs"
        ordering = ["email"]

    def __str__(self) -> str:
        return self.email

    @property
    def display_name(self) -> str:
        return self.name or self.email


class Project(models.Model):
    project_id = models.CharField(max_length=200, unique=True)
    name = models.CharField(max_length=200, blank=True, default="")
    pi = models.ForeignKey(PI, verbose_name="PI", on_delete=models.PROTECT, related_name="projects")
    fund_org = models.CharField("fund/org", max_length=100, blank=True, default="")
    cost_center = models.CharField(max_length=100, blank=True, default="")
    reference_1 = models.CharField(max_length=200, blank=True, default="")
    reference_2 = models.CharField(max_length=200, blank=True, default="")
    gl_account = models.CharField("GL account", max_length=50, blank=True, default="")
    is_active = models.BooleanField(verbose_name="active", default=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["project_id"]

    def __str__(self) -> str:
        return self.project_id


class AccountMapping(models.Model):
    """A provider sub-account (AWS account, Azure subscription, GCP project) billed to a project."""

    sub_account_id = models.CharField(verbose_name="sub-account id", max_length=200)
    source = models.ForeignKey(
        Source, null=True, blank=True, on_delete=models.CASCADE, help_text="Empty: applies to every source."
    )
    project = models.ForeignKey(Project, on_delete=models.PROTECT, related_name="account_mappings")
    fund_org = models.CharField(
        "fund/org", max_length=100, blank=True, default="", help_text="Overrides the project's fund/org."
    )
    note = models.CharField(max_length=200, blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["sub_account_id"]
        constraints = [
            models.UniqueConstraint(
                fields=["sub_account_id", "source"],
                condition=Q(source__isnull=False),
                name="account_mapping_unique_per_source",
            ),
            models.UniqueConstraint(
                fields=["sub_account_id"], condition=Q(source__isnull=True), name="account_mapping_unique_any"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.sub_account_id} → {self.project_id}"


class Import(models.Model):
    class Status(models.TextChoices):
        PENDING = "pending", "Pending"
        RUNNING = "running", "Running"
        COMPLETED = "completed", "Completed"
        FAILED = "failed", "Failed"
        SUPERSEDED = "superseded", "Superseded"

    source = models.ForeignKey(Source, on_delete=models.PROTECT, related_name="imports")
    period = models.ForeignKey(
        BillingPeriod, null=True, blank=True, on_delete=models.PROTECT, related_name="imports"
    )
    original_name = models.CharField(max_length=255)
    file = models.FileField(upload_to="imports/%Y/%m/", max_length=500, blank=True)
    sha256 = models.CharField(verbose_name="SHA-256 checksum", max_length=64, db_index=True)
    size_bytes = models.BigIntegerField(verbose_name="size (bytes)", default=0)
    status = models.CharField(max_length=12, choices=Status.choices, default=Status.PENDING)
    replace = models.BooleanField(
        default=False,
        help_text="Superseded every earlier import of its source and period(s), not only an earlier "
        "import of the same file name.",
    )
    supersedes = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.SET_NULL, related_name="superseded_by"
    )
    part_of = models.ForeignKey(
        "self",
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="parts",
        help_text="The import of the same file that holds its other billing period (a file whose rows "
        "span several periods is one import per period).",
    )
    rows_read = models.PositiveIntegerField(default=0)
    charges_created = models.PositiveIntegerField(default=0)
    charges_flagged = models.PositiveIntegerField(default=0)
    decisions_carried = models.PositiveIntegerField(default=0)
    list_total = MoneyField(default=0)
    billed_total = MoneyField(default=0)
    errors = models.JSONField(default=list, blank=True, help_text="[{line, column, value, message}]")
    warnings = models.JSONField(default=list, blank=True)
    error_message = models.TextField(blank=True, default="")
    actor = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    actor_name = models.CharField(verbose_name="by", max_length=150, blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    runner = models.CharField(
        max_length=200,
        blank=True,
        default="",
        help_text="host:pid of the process running it, to spot dead runs.",
    )

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["source", "period", "status"], name="import_source_period_status")]

    def __str__(self) -> str:
        return f"#{self.pk} {self.original_name}"


class FlagReason(models.TextChoices):
    UNATTRIBUTED = "unattributed", "Unattributed"
    MISSING_PROJECT = "missing_project", "Missing project"
    MISSING_FUND_ORG = "missing_fund_org", "Missing fund/org"
    INVALID_FUND_ORG = "invalid_fund_org", "Invalid fund/org"
    PROJECT_PI_MISMATCH = "project_pi_mismatch", "Project seen under another PI"
    PERIOD_MISMATCH = "period_mismatch", "Billing period mismatch"
    AMBIGUOUS_TAGS = "ambiguous_tags", "Ambiguous tags"
    INVALID_PI_EMAIL = "invalid_pi_email", "Invalid PI email"
    RULE = "rule", "Flag rule"


class Charge(models.Model):
    class ReviewState(models.TextChoices):
        OK = "ok", "OK"
        FLAGGED = "flagged", "Flagged"
        APPROVED = "approved", "Approved"
        REJECTED = "rejected", "Rejected"

    # Foreign keys without their own index are covered by the composite indexes below: every
    # index costs time on each of the up to a million rows an import writes.
    period = models.ForeignKey(
        BillingPeriod, on_delete=models.PROTECT, related_name="charges", db_index=False
    )
    source = models.ForeignKey(Source, on_delete=models.PROTECT, related_name="charges", db_index=False)
    import_run = models.ForeignKey(
        Import, verbose_name="import", on_delete=models.PROTECT, related_name="charges"
    )
    # Attribution: the resolved PI/project, and the values as found in the file.
    pi = models.ForeignKey(
        PI,
        verbose_name="PI",
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="charges",
        db_index=False,
    )
    project = models.ForeignKey(
        Project, null=True, blank=True, on_delete=models.PROTECT, related_name="charges", db_index=False
    )
    pi_email = models.CharField(verbose_name="PI email (as found)", max_length=254, blank=True, default="")
    project_code = models.CharField("project id", max_length=200, blank=True, default="")
    fund_org = models.CharField("fund/org", max_length=100, blank=True, default="")
    cost_center = models.CharField(max_length=100, blank=True, default="")
    reference_1 = models.CharField(max_length=200, blank=True, default="")
    reference_2 = models.CharField(max_length=200, blank=True, default="")
    attribution_source = models.CharField(
        max_length=12, default="tags", help_text="tags, project, mapping, manual, ambiguous or none"
    )
    # What was charged.
    resource_id = models.CharField(max_length=500, blank=True, default="")
    resource_name = models.CharField(max_length=500, blank=True, default="")
    service_name = models.CharField(max_length=200, blank=True, default="")
    service_category = models.CharField(max_length=100, blank=True, default="")
    charge_category = models.CharField(max_length=20, blank=True, default="Usage")
    sub_account_id = models.CharField(verbose_name="sub-account id", max_length=200, blank=True, default="")
    region = models.CharField(max_length=100, blank=True, default="")
    sku_id = models.CharField(verbose_name="SKU id", max_length=200, blank=True, default="")
    quantity = models.DecimalField(max_digits=28, decimal_places=6, null=True, blank=True)
    unit = models.CharField(max_length=50, blank=True, default="")
    list_cost = MoneyField(default=0)
    contracted_cost = MoneyField(default=0)
    billed_cost = MoneyField(default=0)
    effective_cost = MoneyField(default=0)
    line_count = models.PositiveIntegerField(default=1, help_text="Source lines summed into this charge.")
    charge_period_start = models.DateTimeField(null=True, blank=True)
    charge_period_end = models.DateTimeField(null=True, blank=True)
    tags = models.JSONField(default=dict, blank=True)
    # Review.
    review_state = models.CharField(max_length=10, choices=ReviewState.choices, default=ReviewState.OK)
    flag_summary = models.CharField(max_length=500, blank=True, default="")

    class Meta:
        indexes = [
            # Newest first within a state (review pages), and billed: the flagged and rejected sums
            # (totals, the review queue's groups) read the index alone.
            models.Index(
                fields=["period", "review_state", "id", "billed_cost"], name="charge_period_state_billed"
            ),
            models.Index(fields=["period", "pi", "project"], name="charge_period_pi_project"),
            models.Index(fields=["period", "source"], name="charge_period_source"),
            models.Index(fields=["period", "service_name"], name="charge_period_service"),
        ]
        constraints = [
            models.CheckConstraint(
                condition=Q(review_state__in=["ok", "flagged", "approved", "rejected"]),
                name="charge_review_state",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.resource_id or self.resource_name or self.service_name} ({self.period_id})"

    @property
    def discount(self):
        return self.list_cost - self.billed_cost


class ChargeFlag(models.Model):
    """One reason a charge is flagged; a charge keeps all of its reasons."""

    charge = models.ForeignKey(Charge, on_delete=models.CASCADE, related_name="flags", db_index=False)
    reason = models.CharField(max_length=30, choices=FlagReason.choices)
    rule = models.ForeignKey("FlagRule", null=True, blank=True, on_delete=models.SET_NULL)
    detail = models.CharField(max_length=300, blank=True, default="")

    class Meta:
        indexes = [
            models.Index(fields=["charge", "reason"], name="chargeflag_charge"),
            models.Index(fields=["reason", "charge"], name="chargeflag_reason"),
        ]

    def __str__(self) -> str:
        return f"{self.reason}: {self.detail}"


class FlagRule(models.Model):
    class Mode(models.TextChoices):
        FLAG_IF_MATCH = "match", "Flag when the pattern matches"
        FLAG_UNLESS_MATCH = "must_match", "Flag when the pattern does not match"

    FIELD_CHOICES = [
        ("pi_email", "PI email"),
        ("project_code", "Project id"),
        ("fund_org", "Fund/org"),
        ("cost_center", "Cost center"),
        ("resource_id", "Resource id"),
        ("resource_name", "Resource name"),
        ("service_name", "Service name"),
        ("service_category", "Service category"),
        ("charge_category", "Charge category"),
        ("sub_account_id", "Sub-account id"),
        ("region", "Region"),
        ("sku_id", "SKU"),
        ("reference_1", "Reference 1"),
        ("reference_2", "Reference 2"),
    ]

    name = models.CharField(max_length=100, unique=True)
    description = models.TextField(blank=True, default="")
    pattern = models.CharField(max_length=500)
    fields = models.JSONField(default=list, help_text="Charge fields the pattern is tested against.")
    mode = models.CharField(max_length=12, choices=Mode.choices, default=Mode.FLAG_IF_MATCH)
    source = models.ForeignKey(
        Source, null=True, blank=True, on_delete=models.CASCADE, help_text="Empty: every source."
    )
    is_active = models.BooleanField(verbose_name="active", default=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class ReviewLog(models.Model):
    """Every review decision on a charge: approve, reject, correct, carry-over, re-flag."""

    class Action(models.TextChoices):
        APPROVE = "approve", "Approved"
        REJECT = "reject", "Rejected"
        CORRECT = "correct", "Attribution corrected"
        CARRY_OVER = "carry_over", "Decision carried over on re-import"
        REEVALUATE = "reevaluate", "Rules re-evaluated"
        CREDIT = "credit", "Credit issued"

    charge = models.ForeignKey(Charge, null=True, on_delete=models.SET_NULL, related_name="review_logs")
    period = models.ForeignKey(BillingPeriod, on_delete=models.CASCADE, related_name="review_logs")
    action = models.CharField(max_length=12, choices=Action.choices)
    from_state = models.CharField(max_length=10)
    to_state = models.CharField(max_length=10)
    billed_cost = MoneyField(default=0)
    note = models.TextField(blank=True, default="")
    details = models.JSONField(default=dict, blank=True)
    actor = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    actor_name = models.CharField(verbose_name="by", max_length=150)
    batch = models.UUIDField(null=True, blank=True, db_index=True, help_text="Decisions taken together.")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        verbose_name = "review log entry"
        verbose_name_plural = "review log"
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["period", "-created_at"], name="reviewlog_period_recent")]

    def __str__(self) -> str:
        return f"{self.action} charge {self.charge_id} by {self.actor_name}"


# Rates, subsidies and rated usage live in their own package (billing/rating); their models belong
# to this app, so they are imported here for Django to find them.
from .collection.models import CollectedObject, CollectionPoint  # noqa: E402
from .rating.models import (  # noqa: E402
    ChargeRating,
    ChargeSubsidy,
    Rate,
    Rerate,
    Subsidy,
    UsageFile,
)

__all__ = [
    "PI",
    "AccountMapping",
    "BillingPeriod",
    "BillingSettings",
    "Charge",
    "ChargeFlag",
    "ChargeRating",
    "ChargeSubsidy",
    "CollectedObject",
    "CollectionPoint",
    "FlagReason",
    "FlagRule",
    "Import",
    "PeriodTransition",
    "Project",
    "Rate",
    "Rerate",
    "ReviewLog",
    "Source",
    "Subsidy",
    "UsageFile",
]
