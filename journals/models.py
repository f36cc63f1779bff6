"""Journal settings (a singleton), admin-edited journal formats, and every export made.

The built-in formats (gl, summary, detail) live in code (`journals.formats`); a JournalFormat is
an institution's own layout: a header and a row template (Django template language), validated
on save by rendering a sample journal.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.db.models import Q

from chargeback.money import MoneyField
from chargeback.regex import compile_linear

from .entries import DEFAULT_DESCRIPTION, LEDGER_FIELDS, PLACEHOLDERS, regex_errors, text_template_errors

_PLACEHOLDER_HELP = " ".join("{" + p + "}" for p in PLACEHOLDERS)


class JournalSettings(models.Model):
    """How the journal splits fund/orgs, chooses account codes and words descriptions; pk=1."""

    fund_org_regex = models.CharField(
        "fund/org split regex",
        max_length=500,
        blank=True,
        default="",
        help_text="Splits a fund/org into ledger fields with named groups ("
        + ", ".join(LEDGER_FIELDS)
        + r"; any subset), matched against the whole fund/org, e.g. ^(?P<fund>\d{6})-(?P<orgn>\d{4})$. "
        "Empty: the whole fund/org is the Fund. A fund/org it cannot split refuses the export.",
    )
    default_account = models.CharField(
        "default account code",
        max_length=50,
        blank=True,
        default="",
        help_text="Used when neither the project, the fund/org nor the source gives an account code.",
    )
    account_regex = models.CharField(
        "account code regex",
        max_length=500,
        blank=True,
        default="",
        help_text=r"Every account code must match it (whole string), e.g. ^\d{5}$; an empty account code "
        "fails it too. Empty: no check.",
    )
    account_tag = models.CharField(
        "tag key: account code",
        max_length=100,
        blank=True,
        default="account_code",
        help_text="Charges tagged with this key give their project's debit account code (after the "
        "project's own GL account). Empty: tags are not read.",
    )
    debit_description = models.CharField(
        max_length=200,
        default=DEFAULT_DESCRIPTION,
        help_text=f"Placeholders: {_PLACEHOLDER_HELP}. Several PIs or projects in one debit show as "
        "'first +N'.",
    )
    credit_description = models.CharField(
        max_length=200,
        default=DEFAULT_DESCRIPTION,
        help_text=f"Placeholders: {_PLACEHOLDER_HELP} ({{pi_email}} and {{project_id}} are empty on credits).",
    )
    description_max_length = models.PositiveSmallIntegerField(
        default=35,
        validators=[MinValueValidator(1), MaxValueValidator(500)],
        help_text="Descriptions are cut to this many characters (35 in Banner's journal upload).",
    )
    reference_template = models.CharField(
        "reference ID",
        max_length=200,
        blank=True,
        default="",
        help_text=f"The Reference ID column, same placeholders ({_PLACEHOLDER_HELP}); "
        "'{period:.7}'-style precision cuts a value. Empty: no reference.",
    )
    include_zero_entries = models.BooleanField(
        default=False,
        help_text="Also write debits and credits of 0.00 (e.g. a fully subsidised source). Statement "
        "lines of 0.00 always appear in the summary and detail formats.",
    )
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name = "journal settings"
        verbose_name_plural = "journal settings"
        constraints = [
            models.CheckConstraint(condition=Q(pk=1), name="journal_settings_singleton"),
            models.CheckConstraint(
                condition=Q(description_max_length__gte=1), name="journal_description_length_positive"
            ),
        ]

    def __str__(self) -> str:
        return "Journal settings"

    def clean(self) -> None:
        errors: dict[str, list[str]] = {}
        for name, named in (("fund_org_regex", True), ("account_regex", False)):
            problems = regex_errors(getattr(self, name) or "", named_groups=named)
            if problems:
                errors[name] = problems
        for name in ("debit_description", "credit_description", "reference_template"):
            problems = text_template_errors(getattr(self, name) or "")
            if problems:
                errors[name] = problems
        if (
            self.default_account
            and self.account_regex
            and not regex_errors(self.account_regex)
            and not compile_linear(self.account_regex).fullmatch(self.default_account)
        ):
            errors.setdefault("default_account", []).append(
                f"{self.default_account!r} does not match the account code regex"
            )
        if errors:
            raise ValidationError(errors)


class JournalFormat(models.Model):
    """An institution's journal layout: a header template and a row template (Django templates).

    Values arrive CSV-ready (quoted where needed, formula-safe); the rendered text is parsed as CSV
    and written again, so every cell is quoted properly and cells beginning with = + - @ are
    neutralised whatever the template does."""

    class Rows(models.TextChoices):
        ENTRIES = "entries", "Journal entries (debits per fund/org × source, credits per source)"
        LINES = "lines", "Statement lines (PI × project × source × service)"
        CHARGES = "charges", "Charges (one row per billed charge)"

    class Delimiter(models.TextChoices):
        COMMA = ",", "comma"
        SEMICOLON = ";", "semicolon"
        TAB = "\t", "tab"
        PIPE = "|", "pipe"

    name = models.SlugField(
        max_length=50,
        unique=True,
        help_text="Used on the command line: export-journal -f NAME. Not gl, summary or detail.",
    )
    description = models.CharField(max_length=200, blank=True, default="")
    rows = models.CharField("one row per", max_length=10, choices=Rows.choices, default=Rows.ENTRIES)
    delimiter = models.CharField(max_length=1, choices=Delimiter.choices, default=Delimiter.COMMA)
    header_template = models.TextField(
        blank=True,
        default="",
        help_text="Rendered once at the top (may be empty or several lines); may use {{ exported_at }}.",
    )
    row_template = models.TextField(
        help_text="Rendered once per row; a row that renders to nothing is left out "
        "(e.g. {% if entry.is_debit %}…{% endif %})."
    )
    is_active = models.BooleanField(verbose_name="active", default=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]
        constraints = [
            models.CheckConstraint(
                condition=~Q(name__in=["gl", "summary", "detail"]), name="journal_format_not_builtin"
            ),
            models.CheckConstraint(
                condition=Q(rows__in=["entries", "lines", "charges"]), name="journal_format_rows"
            ),
        ]

    def __str__(self) -> str:
        return self.name


def journal_export_path(instance: JournalExport, filename: str) -> str:
    return f"journals/{instance.period.period}/{filename}"


class JournalExport(models.Model):
    """One journal file as exported: kept, with its totals, for re-download and audit."""

    period = models.ForeignKey(
        "billing.BillingPeriod", on_delete=models.PROTECT, related_name="journal_exports"
    )
    format_name = models.CharField("format", max_length=50)
    journal_format = models.ForeignKey(
        JournalFormat,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="exports",
        help_text="The custom format used (empty for built-in formats).",
    )
    file = models.FileField(upload_to=journal_export_path, max_length=300)
    sha256 = models.CharField(verbose_name="SHA-256 checksum", max_length=64)
    rows_sha256 = models.CharField(
        verbose_name="rows checksum",
        max_length=64,
        help_text="sha256 of the rows below the header: equal for equal journals.",
    )
    size_bytes = models.PositiveBigIntegerField(verbose_name="size (bytes)", default=0)
    row_count = models.PositiveIntegerField(default=0, help_text="Rows below the header.")
    entry_count = models.PositiveIntegerField(default=0, help_text="Debit and credit entries.")
    debit_total = MoneyField(default=0)
    credit_total = MoneyField(default=0)
    currency = models.CharField(max_length=3, default="USD")
    statement_count = models.PositiveIntegerField(default=0)
    statements = models.JSONField(
        default=list, blank=True, help_text="The statement versions the journal was built from."
    )
    created_at = models.DateTimeField("exported at")
    actor = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    actor_name = models.CharField(verbose_name="exported by", max_length=150, blank=True, default="")

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["period", "created_at"], name="journal_export_period")]

    def __str__(self) -> str:
        return f"#{self.pk} {self.period_id and self.period.period} {self.format_name}"

    @property
    def filename(self) -> str:
        return (self.file.name or "").rsplit("/", 1)[-1]

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.pk,
            "period": self.period.period,
            "format": self.format_name,
            "file": self.file.name,
            "filename": self.filename,
            "rows": self.row_count,
            "entries": self.entry_count,
            "statements": self.statement_count,
            "currency": self.currency,
            "sha256": self.sha256,
            "rows_sha256": self.rows_sha256,
            "size_bytes": self.size_bytes,
            "exported_at": self.created_at,
            "actor": self.actor_name,
        }
