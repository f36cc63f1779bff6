"""The installation's billing settings (a singleton)."""

from __future__ import annotations

import re
from typing import Any

from django.db import transaction

from chargeback.errors import Refused
from chargeback.regex import regex_problem
from chargeback.settings_rows import settings_row_for_update

from .. import selectors
from ..branding import branding_changes_clean


@transaction.atomic
def billing_settings_update(**changes: Any) -> Any:
    """Change the installation's billing settings; a bad currency code or regex is refused."""
    from ..models import BillingSettings

    obj = settings_row_for_update(BillingSettings, selectors.billing_settings_get().pk, changes, "setting")
    if "currency_code" in changes:
        code = (changes["currency_code"] or "").strip().upper()
        if not re.fullmatch(r"[A-Z]{3}", code):
            raise Refused(
                f"invalid currency code {changes['currency_code']!r}: use an ISO 4217 code such as USD"
            )
        changes["currency_code"] = code
    if changes.get("fund_org_regex"):
        problem = regex_problem(changes["fund_org_regex"])
        if problem:
            raise Refused(f"fund/org regex {changes['fund_org_regex']!r}: {problem}")
    for key in ("tag_pi_email", "tag_project_id"):
        if key in changes and not (changes[key] or "").strip():
            raise Refused(f"the {key.removeprefix('tag_').replace('_', ' ')} tag key cannot be empty")
    changes = branding_changes_clean(changes)  # logo, accent colour, email templates
    for name, value in changes.items():
        if name.startswith("email_") and name.endswith("_template"):
            setattr(obj, name, value)  # templates keep their whitespace
            continue
        setattr(obj, name, value.strip() if isinstance(value, str) else value)
    obj.save()
    return obj
