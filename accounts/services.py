"""Writes of the accounts app: roles, users, portal accounts of PIs, invitations, delegations, and
the audit records of portal downloads.

Users are named by their email address (username = the address in lower case). A PI gets a portal
user when an import first sees the PI (`pi_users_ensure`, called by billing's import): active but
without a password (nobody can sign in as it yet), in the "PI" group. `invitations_send` emails a
set-your-password link (accounts.tokens); accepting it (`invitation_accept`) sets the password.

`is_active` means one thing: the account may be used. Only an administrator changes it
(`user_disable`, `user_enable`); no link, invitation or single sign-on ever turns it back on, and
disabling voids every outstanding invitation and reset link.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group, Permission
from django.contrib.auth.password_validation import validate_password
from django.core.exceptions import ValidationError
from django.core.mail import EmailMultiAlternatives
from django.db import transaction
from django.template.loader import render_to_string
from django.utils import timezone

from billing import selectors as billing_selectors
from billing.models import PI
from chargeback.actors import actor_label
from chargeback.emails import is_plain_email
from chargeback.errors import Refused
from chargeback.logging import audit

from . import roles, selectors
from .models import Delegation, Invitation, UserPreference

logger = logging.getLogger(__name__)


def _actor_name(actor: Any = None, actor_name: str = "") -> str:
    return actor_label(actor, actor_name)


@transaction.atomic
def preference_period_set(*, user: Any, period: str) -> UserPreference:
    """Remember the period a user chose on the dashboard (it must exist)."""
    period_obj = billing_selectors.period_get(period)
    preference, _ = UserPreference.objects.update_or_create(user=user, defaults={"period": period_obj.period})
    return preference


# --- roles ----------------------------------------------------------------------------------


def roles_ensure(
    *, using: str = "default", strict: bool = True, create_permissions: bool = False
) -> dict[str, Any]:
    """Create or update the role groups with exactly the permissions of `accounts.roles`; returns
    the groups by name. `create_permissions` first creates missing permission rows (as migrate
    does); without `strict` a permission that does not exist is skipped with a warning."""
    from django.apps import apps

    with transaction.atomic(using=using):
        if create_permissions:
            from django.contrib.auth.management import create_permissions as create

            for app_config in apps.get_app_configs():
                create(app_config, verbosity=0, using=using)
        groups, missing = roles.sync_groups(
            Group.objects.db_manager(using).model, Permission.objects.db_manager(using).model, strict=strict
        )
    if missing:
        logger.warning("role permissions not found (skipped): %s", ", ".join(missing))
    return groups


# --- users ----------------------------------------------------------------------------------


def normalize_email(email: str) -> str:
    email = (email or "").strip().lower()
    if not is_plain_email(email):
        raise Refused(f"invalid email address {email!r}")
    if len(email) > 150:
        raise Refused(f"email address too long for a user name (150 characters at most): {email}")
    return email


def _new_user(email: str, *, name: str = "") -> Any:
    """A new account without a password: active (not disabled), yet nobody can sign in as it until
    a password is set through an invitation or single sign-on vouches for the address."""
    User = get_user_model()
    first, _, last = (name or "").strip().partition(" ")
    user = User(username=email, email=email, is_active=True, first_name=first[:150], last_name=last[:150])
    user.set_unusable_password()
    user.save()
    return user


@dataclass
class UserOutcome:
    user: Any
    created: bool = False
    roles_added: list[str] = field(default_factory=list)
    pi_linked: str = ""
    invitation: Invitation | None = None


@transaction.atomic
def user_add(
    *,
    email: str,
    role_names: Iterable[str],
    name: str = "",
    invite: bool = False,
    actor: Any = None,
    actor_name: str = "",
) -> UserOutcome:
    """Create a user (or find the one with this email) and give it roles ('reviewer', 'pi', ...).

    Staff roles make the user staff (it signs in once it has a password: `invite`). The PI role
    links the user to the PI of that email (which must exist: PIs appear on import or through an
    account mapping). A disabled account is refused: enabling it is a decision of its own.
    """
    email = normalize_email(email)
    try:
        names = [roles.role_from_slug(r) for r in role_names]
    except ValueError as exc:
        raise Refused(str(exc)) from exc
    if not names:
        raise Refused("give at least one --role")
    pi = None
    if roles.PI in names:
        pi = PI.objects.select_for_update().filter(email=email).first()
        if pi is None:
            raise Refused(
                f"no PI with email {email}; PIs appear on import or with `openchargeback accounts map`"
            )
    staff = any(n in roles.STAFF_ROLES for n in names)
    user = selectors.user_for_email(email)
    created = user is None
    if user is None:
        user = _new_user(email, name=name or (pi.name if pi else ""))
    elif not user.is_active:
        raise Refused(f"the account {user.get_username()} is disabled; enable it first (`users enable`)")
    groups = roles_ensure()
    added = [n for n in names if not user.groups.filter(name=n).exists()]
    user.groups.add(*(groups[n] for n in names))
    if staff and not user.is_staff:
        user.is_staff = True
        user.save(update_fields=["is_staff"])
    outcome = UserOutcome(user=user, created=created, roles_added=added)
    if pi is not None:
        if pi.user_id and pi.user_id != user.pk:
            raise Refused(f"PI {email} is already linked to user {pi.user}")
        if pi.user_id is None:
            pi.user = user
            pi.save(update_fields=["user"])
            outcome.pi_linked = pi.email
    label = _actor_name(actor, actor_name)
    audit("user_added", actor=label, user=user.get_username(), roles=names, new_user=created)
    if invite:
        outcome.invitation = invitation_send(user=user, actor=actor, actor_name=label)
    return outcome


# Roles of the original's web.users (config.yaml) -> the roles here; an admin is also a superuser
# (it managed the original's users, which is the auth admin here).
CONFIG_ROLES = {"admin": roles.BILLING_ADMIN, "reviewer": roles.REVIEWER, "viewer": roles.VIEWER}


@transaction.atomic
def config_user_ensure(*, entry: dict[str, Any], restore: bool = False) -> tuple[Any, bool]:
    """A user of `web.users` in config.yaml, in the database, active with its role; returns (user,
    created). A missing user is created with the file's bcrypt hash as its password (it works as
    one; the next sign-in replaces it by a PBKDF2 hash). An existing user keeps its password (the
    database overrides the file), and with `restore` (a recovery user who signed in with the file's
    password) is made usable again whatever was changed."""
    User = get_user_model()
    email = normalize_email(entry["email"])
    user = selectors.user_for_email(email)
    created = user is None
    if user is None:
        first, _, last = (entry.get("display_name") or "").partition(" ")
        user = User(username=email, email=email, first_name=first[:150], last_name=last[:150])
        user.password = "bcrypt$" + entry["password_hash"]
    role = CONFIG_ROLES[entry.get("role") or "viewer"]
    user.is_active = user.is_staff = True
    if entry.get("role") == "admin":
        user.is_superuser = True
    user.save()
    user.groups.add(roles_ensure()[role])
    if created or restore:
        audit(
            "config_user_restored" if restore and not created else "config_user_created",
            actor="config.yaml",
            user=email,
            role=role,
            recovery=bool(entry.get("recovery")),
        )
    return user, created


def _pi_group() -> Group:
    group = Group.objects.filter(name=roles.PI).first()
    return group if group is not None else roles_ensure(strict=False)[roles.PI]


def pi_users_ensure(*, pi_ids: Iterable[int] | None = None) -> int:
    """Give every PI (or the given ones) that has no user a portal user (no password yet) in the PI group;
    a user that already has the PI's email is linked instead. Returns how many PIs were linked.
    Called by billing's import for the PIs of the file, inside its transaction."""
    pis = PI.objects.filter(user__isnull=True)
    if pi_ids is not None:
        ids = list(pi_ids)
        if not ids:
            return 0
        pis = pis.filter(pk__in=ids)
    todo = list(pis.order_by("pk"))
    if not todo:
        return 0
    User = get_user_model()
    with transaction.atomic():
        emails = [pi.email.strip().lower() for pi in todo]
        existing: dict[str, Any] = {u.username.lower(): u for u in User.objects.filter(username__in=emails)}
        taken = set(PI.objects.filter(user__isnull=False).values_list("user_id", flat=True))
        group = _pi_group()
        linked = []
        for pi, email in zip(todo, emails, strict=True):
            user: Any = existing.get(email) or selectors.user_for_email(email)
            if user is None:
                if len(email) > 150 or not is_plain_email(email):
                    logger.warning("PI %s gets no portal user: not a usable user name", pi.email)
                    continue
                user = _new_user(email, name=pi.name)
            elif user.pk in taken:
                logger.warning("PI %s not linked: user %s belongs to another PI", pi.email, user)
                continue
            user.groups.add(group)
            taken.add(user.pk)
            pi.user = user
            linked.append(pi)
        PI.objects.bulk_update(linked, ["user"])
    return len(linked)


# --- invitations ----------------------------------------------------------------------------


def _invitation_context(user: Any, link: str) -> dict[str, Any]:
    org = billing_selectors.billing_settings_get()
    pi = PI.objects.filter(user=user).first()
    days = max(1, settings.PASSWORD_RESET_TIMEOUT // 86400)
    return {
        "organization": org.organization_name,
        "contact_email": org.contact_email,
        "name": (pi.name if pi and pi.name else user.get_full_name()) or user.email,
        "email": user.email,
        "link": link,
        "days": days,
        "portal_url": selectors.absolute_url("/portal/"),
        "is_pi": pi is not None,
        "delegated_by": sorted(
            {d.pi.display_name for d in Delegation.objects.filter(delegate=user).select_related("pi")}
        ),
        "sso": settings.OIDC_ENABLED,
        "sso_name": settings.OIDC_PROVIDER_NAME,
    }


def invitation_send(*, user: Any, actor: Any = None, actor_name: str = "") -> Invitation:
    """Email a set-your-password link to the user and record it. Refused for a user without an
    email address and for a disabled account. The link stays valid for PASSWORD_RESET_TIMEOUT,
    until the password is set or the account is disabled."""
    if not user.email:
        raise Refused(f"user {user.get_username()} has no email address")
    if not is_plain_email(user.email):
        raise Refused(
            f"user {user.get_username()}: {user.email!r} is not a plain email address; nothing sent"
        )
    if not user.is_active:
        raise Refused(f"the account {user.get_username()} is disabled; enable it first (`users enable`)")
    link = selectors.set_password_url(user)
    context = _invitation_context(user, link)
    subject = f"{context['organization']}: your billing portal account"
    message = EmailMultiAlternatives(
        subject=subject,
        body=render_to_string("portal/email/invitation.txt", context),
        from_email=settings.DEFAULT_FROM_EMAIL,
        to=[user.email],
        reply_to=[context["contact_email"]] if context["contact_email"] else None,
    )
    message.attach_alternative(render_to_string("portal/email/invitation.html", context), "text/html")
    message.send()
    label = _actor_name(actor, actor_name)
    invitation = Invitation.objects.create(
        user=user,
        email=user.email,
        sent_at=timezone.now(),
        actor=actor if getattr(actor, "is_authenticated", False) else None,
        actor_name=label,
    )
    audit("invitation_sent", actor=label, user=user.get_username(), email=user.email)
    return invitation


@dataclass
class InviteOutcome:
    sent: list[Invitation] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (email, why)


def invitations_send(
    *,
    emails: Iterable[str] = (),
    all_pis: bool = False,
    resend: bool = False,
    actor: Any = None,
    actor_name: str = "",
) -> InviteOutcome:
    """Invite users by email, or every PI whose account has no password yet (`all_pis`).

    A PI without a user gets one first. Users that already have a password are skipped (they use
    "forgot password"), and so are users invited before unless `resend`. An unknown email that is
    neither a user nor a PI is refused before anything is sent.
    """
    outcome = InviteOutcome()
    label = _actor_name(actor, actor_name)
    targets: list[Any] = []
    wanted = [normalize_email(e) for e in emails]
    if all_pis:
        pi_users_ensure()
        wanted += list(
            PI.objects.filter(user__isnull=False).order_by("email").values_list("email", flat=True)
        )
    seen = set()
    for email in wanted:
        if email in seen:
            continue
        seen.add(email)
        user = selectors.user_for_email(email)
        if user is None and PI.objects.filter(email=email).exists():
            pi = PI.objects.get(email=email)
            pi_users_ensure(pi_ids=[pi.pk])
            pi.refresh_from_db()
            user = pi.user
        if user is None:
            raise Refused(f"no user and no PI with email {email}; add one with `openchargeback users add`")
        targets.append(user)
    for user in targets:
        if not user.is_active:
            outcome.skipped.append((user.email, "account disabled"))
            continue
        if user.has_usable_password():
            outcome.skipped.append((user.email, "already has a password"))
            continue
        if not resend and Invitation.objects.filter(user=user).exists():
            outcome.skipped.append((user.email, "invited before (use --resend)"))
            continue
        outcome.sent.append(invitation_send(user=user, actor=actor, actor_name=label))
    return outcome


@transaction.atomic
def invitation_accept(*, user: Any, password: str) -> Any:
    """Set the password of a user who followed a valid set-password link (an invitation or a
    password reset). Never changes whether the account is active: a disabled account is refused."""
    User = get_user_model()
    user = User.objects.select_for_update().get(pk=user.pk)
    if not user.is_active:
        raise Refused("this account is disabled; ask the billing team")
    try:
        validate_password(password, user)
    except ValidationError as exc:
        raise Refused(" ".join(exc.messages)) from exc
    user.set_password(password)
    user.save(update_fields=["password"])
    Invitation.objects.filter(user=user, accepted_at__isnull=True, voided_at__isnull=True).update(
        accepted_at=timezone.now()
    )
    audit("password_set", actor=user.get_username())
    return user


@transaction.atomic
def user_disable(*, user: Any, actor: Any = None, actor_name: str = "") -> int:
    """Disable an account: it can no longer sign in (its sessions end with it), and every pending
    invitation is voided, so no link it was sent works again, even once it is enabled. Returns
    how many invitations were voided."""
    User = get_user_model()
    user = User.objects.select_for_update().get(pk=user.pk)
    if user.is_active:
        user.is_active = False
        user.save(update_fields=["is_active"])
    voided = Invitation.objects.filter(user=user, accepted_at__isnull=True, voided_at__isnull=True).update(
        voided_at=timezone.now()
    )
    audit("account_disabled", actor=_actor_name(actor, actor_name), user=user.get_username(), voided=voided)
    return voided


@transaction.atomic
def user_enable(*, user: Any, actor: Any = None, actor_name: str = "") -> Any:
    """Enable a disabled account again. Links sent before it was disabled stay void: send a new
    invitation if it has no password."""
    User = get_user_model()
    user = User.objects.select_for_update().get(pk=user.pk)
    if not user.is_active:
        user.is_active = True
        user.save(update_fields=["is_active"])
        audit("account_enabled", actor=_actor_name(actor, actor_name), user=user.get_username())
    return user


# --- single sign-on -------------------------------------------------------------------------


@transaction.atomic
def sso_user_for_email(*, email: str) -> Any | None:
    """The user an identity provider's verified email claim signs in as: the user with that email,
    else the portal user of the PI with that email (created if needed). None when nobody matches or
    the account is disabled (the sign-in is refused: OIDC creates no other accounts and never
    enables one)."""
    try:
        email = normalize_email(email)
    except Refused:
        return None
    user = selectors.user_for_email(email)
    if user is None:
        pi = PI.objects.filter(email=email).first()
        if pi is None:
            return None
        pi_users_ensure(pi_ids=[pi.pk])
        pi.refresh_from_db()
        user = pi.user
        if user is None:
            return None
    if not user.is_active:
        return None
    return user
