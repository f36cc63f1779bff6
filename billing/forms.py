"""Forms of the billing admin. They validate input; the services enforce the rules."""

from __future__ import annotations

import re
from typing import Any

from django import forms

from chargeback.errors import Refused
from chargeback.regex import regex_problem

from . import branding
from .models import PERIOD_REGEX, AccountMapping, BillingPeriod, BillingSettings, FlagRule, Source
from .selectors import source_slug


def _clean_period(value: str) -> str:
    value = (value or "").strip()
    if value and not re.fullmatch(PERIOD_REGEX, value):
        raise forms.ValidationError("Use YYYY-MM, for example 2025-01.")
    return value


class ReviewDecisionForm(forms.Form):
    """The note of an approve/reject decision; required to reject."""

    note = forms.CharField(
        required=False,
        widget=forms.Textarea(attrs={"rows": 3, "cols": 60}),
        help_text="Recorded with every decision in the review log.",
    )

    def __init__(self, *args: Any, action: str, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.action = action
        if action == "reject":
            self.fields["note"].required = True
            self.fields["note"].error_messages["required"] = "A note is required to reject charges."
            self.fields["note"].help_text = "Required: why these charges must not be billed."

    def clean_note(self) -> str:
        note = (self.cleaned_data.get("note") or "").strip()
        if self.action == "reject" and not note:
            raise forms.ValidationError("A note is required to reject charges.")
        return note


class CorrectAttributionForm(forms.Form):
    pi_email = forms.EmailField(label="PI email")
    project_id = forms.CharField(
        label="Project id", max_length=200, required=False, help_text="A new project is created under the PI."
    )
    fund_org = forms.CharField(
        label="Fund/org", max_length=100, required=False, help_text="Empty: the project's fund/org."
    )
    note = forms.CharField(required=False, widget=forms.Textarea(attrs={"rows": 2, "cols": 60}))


class PeriodOpenForm(forms.ModelForm):
    """The admin's 'add period' form: a new period opens through the period_open service."""

    class Meta:
        model = BillingPeriod
        fields = ["period"]
        widgets = {"period": forms.TextInput(attrs={"placeholder": "YYYY-MM", "size": 8})}

    def clean_period(self) -> str:
        value = _clean_period(self.cleaned_data.get("period", ""))
        if not value:
            raise forms.ValidationError("Enter a period as YYYY-MM.")
        return value


class PeriodCloseForm(forms.Form):
    note = forms.CharField(required=False, widget=forms.Textarea(attrs={"rows": 2, "cols": 60}))


class PeriodReopenForm(forms.Form):
    reason = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 3, "cols": 60}),
        help_text="Required: recorded in the period's history.",
        error_messages={"required": "A reason is required to reopen a period."},
    )

    def clean_reason(self) -> str:
        reason = (self.cleaned_data.get("reason") or "").strip()
        if not reason:
            raise forms.ValidationError("A reason is required to reopen a period.")
        return reason


class PeriodFinalizeForm(forms.Form):
    confirm = forms.BooleanField(
        label="I understand that finalizing is irreversible: the period's charges, decisions and "
        "statements can never change again.",
    )
    note = forms.CharField(required=False, widget=forms.Textarea(attrs={"rows": 2, "cols": 60}))


class FlagRuleForm(forms.ModelForm):
    fields = forms.MultipleChoiceField(  # type: ignore[assignment]
        choices=FlagRule.FIELD_CHOICES,
        widget=forms.CheckboxSelectMultiple,
        help_text="The charge fields the pattern is tested against (any one of them triggers the rule).",
    )
    test_period = forms.ModelChoiceField(
        queryset=BillingPeriod.objects.order_by("-period"),
        required=False,
        to_field_name="period",
        label="Test against period",
        help_text="“Test” shows what this rule would flag among the period's charges, without saving.",
    )

    class Meta:
        model = FlagRule
        fields = ["name", "description", "pattern", "fields", "mode", "source", "is_active"]
        widgets = {
            "pattern": forms.TextInput(attrs={"size": 60, "class": "vTextField ocb-mono"}),
            "description": forms.Textarea(attrs={"rows": 2, "cols": 60}),
        }
        help_texts = {
            "pattern": "A Python regular expression, searched anywhere in the value (use ^…$ to anchor).",
        }

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if not self.is_bound and not self.initial.get("fields"):
            self.initial["fields"] = ["fund_org"]

    def clean_pattern(self) -> str:
        return _usable_regex(self.cleaned_data.get("pattern", ""))


class BillingSettingsForm(forms.ModelForm):
    class Meta:
        model = BillingSettings
        exclude: list[str] = []
        widgets = {
            "accent_color": forms.TextInput(attrs={"type": "color"}),
            "organization_address": forms.Textarea(attrs={"rows": 3, "cols": 50}),
            "payment_instructions": forms.Textarea(attrs={"rows": 3, "cols": 70}),
            "email_subject_template": forms.Textarea(attrs={"rows": 2, "cols": 90, "class": "ocb-mono"}),
            "email_text_template": forms.Textarea(attrs={"rows": 14, "cols": 90, "class": "ocb-mono"}),
            "email_html_template": forms.Textarea(attrs={"rows": 14, "cols": 90, "class": "ocb-mono"}),
        }

    def clean_logo(self) -> Any:
        upload = self.cleaned_data.get("logo")
        if upload and "logo" in self.changed_data and hasattr(upload, "content_type"):
            upload.seek(0)
            data = upload.read(branding.logo_max_bytes() + 1)
            upload.seek(0)
            try:
                branding.logo_inspect(data, name=upload.name or "logo")
            except Refused as exc:
                raise forms.ValidationError(str(exc)) from None
        return upload

    def clean_accent_color(self) -> str:
        try:
            return branding.accent_colour_clean(self.cleaned_data.get("accent_color") or "")
        except Refused as exc:
            raise forms.ValidationError(str(exc)) from None

    def _clean_template(self, name: str) -> str:
        source = self.cleaned_data.get(name) or ""
        problem = branding.email_template_problem(source)
        if problem:
            raise forms.ValidationError(problem[0].upper() + problem[1:])
        return source

    def clean_email_subject_template(self) -> str:
        return self._clean_template("email_subject_template")

    def clean_email_text_template(self) -> str:
        return self._clean_template("email_text_template")

    def clean_email_html_template(self) -> str:
        return self._clean_template("email_html_template")

    def clean_currency_code(self) -> str:
        code = (self.cleaned_data.get("currency_code") or "").strip().upper()
        if not re.fullmatch(r"[A-Z]{3}", code):
            raise forms.ValidationError("Use a three-letter ISO 4217 code, such as USD or EUR.")
        return code

    def clean_fund_org_regex(self) -> str:
        return _usable_regex(self.cleaned_data.get("fund_org_regex") or "")


class SourceForm(forms.ModelForm):
    class Meta:
        model = Source
        fields = ["slug", "display_name", "filename_pattern", "fund_org", "account"]


class AccountMappingForm(forms.ModelForm):
    project_code = forms.CharField(
        label="Project id", max_length=200, help_text="Created under the PI when new."
    )
    pi_email = forms.EmailField(label="PI email")

    class Meta:
        model = AccountMapping
        fields = ["sub_account_id", "source", "project_code", "pi_email", "fund_org", "note"]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.instance.pk:
            self.initial.setdefault("project_code", self.instance.project.project_id)
            self.initial.setdefault("pi_email", self.instance.project.pi.email)

    def validate_unique(self) -> None:
        """The service updates the mapping of an existing sub-account instead of refusing it."""


class UploadForm(forms.Form):
    """The upload page's per-file settings (the files themselves come from request.FILES)."""

    source = forms.CharField(
        required=False,
        max_length=50,
        help_text="Empty: guessed from the file name. A name not known yet creates that source.",
    )
    period = forms.CharField(
        required=False, max_length=7, help_text="Empty: guessed from the file name or its rows."
    )
    replace = forms.BooleanField(
        required=False,
        help_text="Supersede every earlier import of the source and period. Without it a file adds to "
        "them, and the same file name again supersedes its earlier import.",
    )

    def clean_source(self) -> str:
        name = self.cleaned_data.get("source", "")
        if not name.strip():
            return ""
        try:
            return source_slug(name)
        except Refused as exc:
            raise forms.ValidationError(str(exc)) from None

    def clean_period(self) -> str:
        return _clean_period(self.cleaned_data.get("period", ""))


class ReevaluateForm(forms.Form):
    period = forms.ModelChoiceField(
        queryset=BillingPeriod.objects.exclude(status=BillingPeriod.Status.FINALIZED).order_by("-period"),
        to_field_name="period",
        empty_label=None,
    )


def _usable_regex(pattern: str) -> str:
    """The pattern, or a form error saying why it cannot be saved (chargeback.regex)."""
    problem = regex_problem(pattern)
    if problem:
        raise forms.ValidationError(problem[0].upper() + problem[1:] + ".")
    return pattern
