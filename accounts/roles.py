"""Roles as Django groups: the single source of their permission sets, and the permission checks
the admin screens use.

- Billing admin: everything in billing, statements and journals (periods, settings, sources, rules,
  review, imports, sending, journal formats and exports), portal invitations, login lockouts.
- Reviewer: reads everything; reviews charges, corrects attribution, edits flag rules, imports,
  sends and resends statements.
- Viewer: reads everything, changes nothing.
- PI: no admin permission at all; portal only (own statements and charges, and the projects other
  PIs delegated to them). Delegates of a PI are portal users too and join this group.

Users need `is_staff` to enter the admin (the staff roles set it). The groups are created by the
data migration accounts/0003 and kept equal to `ROLE_PERMISSIONS` after every `migrate`
(`accounts.services.roles_ensure()`): permissions given to these groups by hand are reset, so a
site's own variations belong in groups of their own.
"""

from __future__ import annotations

from typing import Any

BILLING_ADMIN = "Billing admin"
REVIEWER = "Reviewer"
VIEWER = "Viewer"
PI = "PI"

# Role names on the command line (`openchargeback users add EMAIL --role reviewer`).
ROLE_SLUGS: dict[str, str] = {
    "billing-admin": BILLING_ADMIN,
    "reviewer": REVIEWER,
    "viewer": VIEWER,
    "pi": PI,
}
STAFF_ROLES = frozenset({BILLING_ADMIN, REVIEWER, VIEWER})

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
    "rate",
    "subsidy",
    "usagefile",
    "rerate",
    "chargerating",
    "chargesubsidy",
)
STATEMENT_MODELS = ("statement", "statementline", "delivery", "chargequery")
JOURNAL_MODELS = ("journalsettings", "journalformat", "journalexport")
VIEW_PERMISSIONS = (
    tuple(f"billing.view_{model}" for model in BILLING_MODELS)
    + tuple(f"statements.view_{model}" for model in STATEMENT_MODELS)
    + tuple(f"journals.view_{model}" for model in JOURNAL_MODELS)
)
REVIEW_PERMISSIONS = (
    "billing.change_charge",
    "billing.add_flagrule",
    "billing.change_flagrule",
    "billing.add_import",
    "statements.send_statements",  # send and resend
    "statements.change_chargequery",  # answer and resolve PIs' charge queries
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
        # Rated usage: rates and subsidies, and re-rating an open period.
        "billing.add_rate",
        "billing.change_rate",
        "billing.delete_rate",
        "billing.add_subsidy",
        "billing.change_subsidy",
        "billing.add_rerate",
        "journals.change_journalsettings",
        "journals.add_journalformat",
        "journals.change_journalformat",
        "journals.delete_journalformat",
        "journals.add_journalexport",
        # The statement runs started from the admin (preview, issue, send): theirs to follow.
        "statements.view_statementrun",
        # Portal accounts: see users, invite them, see invitations and delegations.
        "auth.view_user",
        "accounts.view_invitation",
        "accounts.add_invitation",
        "accounts.view_delegation",
        # Login lockouts (django-axes): see them, and unlock by deleting the attempt.
        "axes.view_accessattempt",
        "axes.delete_accessattempt",
        "axes.view_accesslog",
        "axes.view_accessfailurelog",
    ),
    PI: (),
}


def role_from_slug(value: str) -> str:
    """'billing-admin' (or 'Billing admin', 'billing_admin') → the group name; ValueError otherwise."""
    key = (value or "").strip().lower().replace("_", "-").replace(" ", "-")
    if key in ROLE_SLUGS:
        return ROLE_SLUGS[key]
    raise ValueError(f"unknown role {value!r}: choose one of {', '.join(ROLE_SLUGS)}")


def role_slug(name: str) -> str:
    return next((slug for slug, role in ROLE_SLUGS.items() if role == name), name)


def sync_groups(
    group_model: Any, permission_model: Any, *, strict: bool = True
) -> tuple[dict[str, Any], list[str]]:
    """Create or update the role groups with exactly their permissions. Works with the real models
    and with a migration's historical ones. Returns (groups by name, permissions not found); with
    `strict` a missing permission raises LookupError instead."""
    wanted = {code for codes in ROLE_PERMISSIONS.values() for code in codes}
    found: dict[str, Any] = {}
    apps_needed = {code.split(".", 1)[0] for code in wanted}
    for permission in permission_model.objects.filter(content_type__app_label__in=apps_needed).select_related(
        "content_type"
    ):
        found[f"{permission.content_type.app_label}.{permission.codename}"] = permission
    missing = sorted(wanted - set(found))
    if missing and strict:
        raise LookupError(f"permissions not found: {', '.join(missing)}")
    groups = {}
    for name, codes in ROLE_PERMISSIONS.items():
        group, _ = group_model.objects.get_or_create(name=name)
        group.permissions.set([found[code] for code in codes if code in found])
        groups[name] = group
    return groups, missing


def can_review(user: Any) -> bool:
    """Approve, reject, correct attribution, re-evaluate flags."""
    return bool(user.has_perm("billing.change_charge"))


def can_import(user: Any) -> bool:
    return bool(user.has_perm("billing.add_import"))


def can_manage_periods(user: Any) -> bool:
    """Open, close, reopen and finalize periods."""
    return bool(user.has_perm("billing.change_billingperiod"))


def can_change_statements(user: Any) -> bool:
    """Send, resend and render statements (rendering a PDF is a write): reviewers and billing
    admins. Viewers and PIs only read what exists."""
    return bool(user.has_perm("statements.send_statements"))


def can_answer_queries(user: Any) -> bool:
    """Answer and resolve PIs' charge queries (reviewers and billing admins)."""
    return bool(user.has_perm("statements.change_chargequery"))


def is_billing_admin(user: Any) -> bool:
    """Billing admins (and superusers): the settings and the system page."""
    return bool(user.has_perm("billing.change_billingsettings"))
