"""Forms of charge queries: the portal's query form and the reviewer's resolve form. Both are
laid out by django-crispy-forms with the project's own small template pack
(templates/ocb_crispy/), so the portal and the admin keep their own styles."""

from __future__ import annotations

from typing import Any

from crispy_forms.helper import FormHelper
from django import forms

from ..models import ChargeQuery
from .services import ANSWER_MAX, REASON_MAX, Resolution


def _helper(submit: str, *, css_class: str = "") -> FormHelper:
    helper = FormHelper()
    helper.form_tag = False  # the page's own <form> carries the CSRF token and the buttons
    helper.template = "ocb_crispy/form.html"
    helper.field_template = "ocb_crispy/field.html"
    helper.form_class = css_class
    helper.submit_label = submit
    return helper


class QueryRaiseForm(forms.Form):
    reason = forms.CharField(
        label="What is wrong with it?",
        max_length=REASON_MAX,
        widget=forms.Textarea(attrs={"rows": 5}),
        help_text="Say what you expected instead (for example: not our project, the VM was stopped on "
        "the 3rd, the discount is missing). The billing team answers here and by email.",
    )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.helper = _helper("Send query")

    def clean_reason(self) -> str:
        value = (self.cleaned_data.get("reason") or "").strip()
        if not value:
            raise forms.ValidationError("Say why you are querying this charge.")
        return value


class QueryResolveForm(forms.Form):
    resolution = forms.ChoiceField(
        label="Decision",
        choices=ChargeQuery.Resolution.choices,
        widget=forms.RadioSelect,
        help_text="Approve, reject and correct act on the queried charge (through the review queue's "
        "rules, in the review log); a credit adds a Credit line to the next statement version.",
    )
    answer = forms.CharField(
        label="Answer to the PI",
        max_length=ANSWER_MAX,
        widget=forms.Textarea(attrs={"rows": 5}),
        help_text="Shown in the portal and emailed to the PI (and to whoever asked) once.",
    )
    pi_email = forms.EmailField(label="Correct to PI email", required=False)
    project_id = forms.CharField(label="Correct to project id", required=False, max_length=200)
    fund_org = forms.CharField(label="Correct to fund/org", required=False, max_length=100)
    credit_amount = forms.DecimalField(
        label="Credit amount", required=False, min_value=0, decimal_places=2, max_digits=14
    )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.helper = _helper("Resolve", css_class="aligned")

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        kind = data.get("resolution")
        if kind == ChargeQuery.Resolution.CORRECTED and not data.get("pi_email"):
            self.add_error("pi_email", "A correction needs the PI who should pay.")
        if kind == ChargeQuery.Resolution.CREDITED and not data.get("credit_amount"):
            self.add_error("credit_amount", "A credit needs an amount.")
        return data

    def decision(self) -> Resolution:
        data = self.cleaned_data
        return Resolution(
            resolution=data["resolution"],
            answer=data["answer"],
            pi_email=data.get("pi_email") or "",
            project_id=(data.get("project_id") or "").strip(),
            fund_org=(data.get("fund_org") or "").strip(),
            credit_amount=data.get("credit_amount"),
        )
