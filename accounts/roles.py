"""Roles of the admin as Django groups, and the permission checks the billing admin uses.

- Billing admin: everything in billing (periods, settings, sources, rules, review, imports).
- Reviewer: reads everything; reviews charges, corrects attribution, edits flag rules, imports.
- Viewer: reads everything, changes nothing.

Users need `is_staff` to enter the admin. `roles_ensure()` (accounts.services) creates the groups.
"""

from __future__ import annotations

from typing import Any

BILLING_ADMIN = "Billing admin"
REVIEWER = "Reviewer"
VIEWER = "Viewer"

BILLING_MODELS = (
    "billingsettings",
    "source",
    "billingperiod",
    "periodtransition",
    "pi",
    "project",
    "accountmapping",
    "import",
    "charge",
    "chargeflag",
    "flagrule",
    "reviewlog",
)
VIEW_PERMISSIONS = tuple(f"billing.view_{model}" for model in BILLING_MODELS)
REVIEW_PERMISSIONS = (
    "billing.change_charge",
    "billing.add_flagrule",
    "billing.change_flagrule",
    "billing.add_import",
)
ROLE_PERMISSIONS: dict[str, tuple[str, ...]] = {
    VIEWER: VIEW_PERMISSIONS,
    REVIEWER: VIEW_PERMISSIONS + REVIEW_PERMISSIONS,
    BILLING_ADMIN: VIEW_PERMISSIONS
    + REVIEW_PERMISSIONS
    + (
        "billing.change_billingperiod",
        "billing.add_billingperiod",
        "billing.change_billingsettings",
        "billing.add_source",
        "billing.change_source",
        "billing.change_pi",
        "billing.add_project",
        "billing.change_project",
        "billing.add_accountmapping",
        "billing.change_accountmapping",
        "billing.delete_accountmapping",
        "billing.delete_flagrule",
    ),
}


def can_review(user: Any) -> bool:
    """Approve, reject, correct attribution, re-evaluate flags."""
    return bool(user.has_perm("billing.change_charge"))


def can_import(user: Any) -> bool:
    return bool(user.has_perm("billing.add_import"))


def can_manage_periods(user: Any) -> bool:
    """Open, close, reopen and finalize periods."""
    return bool(user.has_perm("billing.change_billingperiod"))


def can_edit_rules(user: Any) -> bool:
    return bool(user.has_perm("billing.change_flagrule"))
