"""Users as billing knows them: the portal accounts of PIs, the users a PI role links to a PI,
invitations that greet a PI by name in the organization's words, single sign-on by a PI's email,
and the period a user last chose on the dashboard.

A PI gets a portal user when an import first sees the PI (`pi_users_ensure`, called by the import):
active but without a password (nobody can sign in as it yet), in the "PI" group. `invitations_send`
emails a set-your-password link (accounts.tokens); accepting it (`accounts.services.invitation_accept`)
sets the password. Identity alone (roles, enabling and disabling accounts, passwords) stays in
accounts.services, which knows nothing of PIs.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.core.mail import EmailMultiAlternatives
from django.db import transaction
from django.template.loader import render_to_string
from django.utils import timezone

from accounts import roles
from accounts import selectors as account_selectors
from accounts.models import Delegation, Invitation, UserPreference
from accounts.services import _actor_name, _new_user, normalize_email, roles_ensure
from chargeback.emails import is_plain_email
from chargeback.errors import Refused
from chargeback.logging import audit

from ..models import PI
from ..selectors.billing_settings import billing_settings_get
from ..selectors.periods import period_get

logger = logging.getLogger("accounts.services")  # the name the logs have always shown


@transaction.atomic
def preference_period_set(*, user: Any, period: str) -> UserPreference:
    """Remember the period a user chose on the dashboard (it must exist)."""
    period_obj = period_get(period)
    preference, _ = UserPreference.objects.update_or_create(user=user, defaults={"period": period_obj.period})
    return preference


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
    user = account_selectors.user_for_email(email)
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
            user: Any = existing.get(email) or account_selectors.user_for_email(email)
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
    org = billing_settings_get()
    pi = PI.objects.filter(user=user).first()
    days = max(1, settings.PASSWORD_RESET_TIMEOUT // 86400)
    return {
        "organization": org.organization_name,
        "contact_email": org.contact_email,
        "name": (pi.name if pi and pi.name else user.get_full_name()) or user.email,
        "email": user.email,
        "link": link,
        "days": days,
        "portal_url": account_selectors.absolute_url("/portal/"),
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
    link = account_selectors.set_password_url(user)
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
        user = account_selectors.user_for_email(email)
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
    user = account_selectors.user_for_email(email)
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
