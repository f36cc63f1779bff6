"""Writes of the PI portal: delegations (a PI shares projects with a colleague) and the audit of
what portal users download."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.core.mail import EmailMultiAlternatives
from django.db import transaction
from django.template.loader import render_to_string
from django.utils import timezone

from accounts import selectors
from accounts.models import Delegation, DelegationEmail, Invitation
from accounts.portal import selectors as portal_selectors
from accounts.services import _actor_name, _new_user, normalize_email
from billing import selectors as billing_selectors
from billing.models import PI, Project
from billing.services.users import _pi_group, invitation_send
from chargeback.errors import Refused
from chargeback.logging import audit

logger = logging.getLogger("accounts.services")  # the name the logs have always shown


# --- delegations ----------------------------------------------------------------------------


@transaction.atomic
def delegation_grant(
    *, pi: PI, email: str, project_ids: Iterable[int], actor: Any = None
) -> list[Delegation]:
    """The PI lets the colleague with this email see the given projects (their own projects only).

    A colleague without an account gets one (no password, group PI) and an invitation; one with an
    account is told by email, and its groups, staff status and active flag are left exactly as they
    are: a delegation grants portal access to those projects, nothing else. A disabled account is
    not emailed. Each PI may cause OPENCHARGEBACK_DELEGATION_EMAILS_PER_DAY such emails a day.
    """
    email = normalize_email(email)
    if email == pi.email.lower():
        raise Refused("you cannot delegate to yourself")
    ids = sorted(set(project_ids))
    if not ids:
        raise Refused("choose at least one project")
    own = {p.pk: p for p in portal_selectors.pi_projects(pi).filter(pk__in=ids)}
    unknown = [i for i in ids if i not in own]
    if unknown:
        raise Refused("you can only delegate your own projects")
    label = _actor_name(actor)
    user = selectors.user_for_email(email)
    created = user is None
    if user is None:
        user = _new_user(email)
        user.groups.add(_pi_group())
    made = []
    for project in own.values():
        delegation, new = Delegation.objects.get_or_create(
            pi=pi, project=project, delegate=user, defaults={"actor_name": label}
        )
        if new:
            made.append(delegation)
            audit(
                "delegation_granted",
                actor=label,
                pi=pi.email,
                project=project.project_id,
                delegate=user.get_username(),
            )
    if made and user.is_active:
        needs_invite = not user.has_usable_password() and not settings.OIDC_ENABLED
        invite = created or (
            needs_invite and not Invitation.objects.filter(user=user, accepted_at__isnull=True).exists()
        )
        _count_delegation_email(
            pi, user, DelegationEmail.Kind.INVITATION if invite else DelegationEmail.Kind.NOTICE
        )
        if invite:
            transaction.on_commit(lambda: invitation_send(user=user, actor=actor, actor_name=label))
        else:
            transaction.on_commit(lambda: _notify_delegate(user, pi, [d.project for d in made]))
    return made


def _count_delegation_email(pi: PI, user: Any, kind: str) -> None:
    """Record an email a delegation causes; refused (and the delegation with it) past the PI's
    daily limit, so a PI's sharing form cannot be used to mail anyone without end."""
    limit = settings.OPENCHARGEBACK_DELEGATION_EMAILS_PER_DAY
    since = timezone.now() - timedelta(days=1)
    if DelegationEmail.objects.select_for_update().filter(pi=pi, sent_at__gte=since).count() >= limit:
        raise Refused(
            f"you have shared projects by email {limit} times in the last 24 hours; try again tomorrow, "
            "or ask the billing team"
        )
    DelegationEmail.objects.create(pi=pi, delegate=user, kind=kind, sent_at=timezone.now())


def _notify_delegate(user: Any, pi: PI, projects: list[Project]) -> None:
    org = billing_selectors.billing_settings_get()
    context = {
        "organization": org.organization_name,
        "pi_name": pi.display_name,
        "projects": [p.project_id for p in projects],
        "portal_url": selectors.absolute_url("/portal/"),
    }
    message = EmailMultiAlternatives(
        subject=f"{org.organization_name}: {pi.display_name} shared billing information with you",
        body=render_to_string("portal/email/delegated.txt", context),
        from_email=settings.DEFAULT_FROM_EMAIL,
        to=[user.email],
    )
    message.send()


@transaction.atomic
def delegation_revoke(*, pi: PI, delegation_id: int, actor: Any = None) -> Delegation:
    """The PI withdraws one delegation of theirs (Refused for anybody else's)."""
    delegation = (
        Delegation.objects.select_related("project", "delegate").filter(pk=delegation_id, pi=pi).first()
    )
    if delegation is None:
        raise Refused("no such delegation")
    label = _actor_name(actor)
    audit(
        "delegation_revoked",
        actor=label,
        pi=pi.email,
        project=delegation.project.project_id,
        delegate=delegation.delegate.get_username(),
    )
    delegation.delete()
    return delegation


@transaction.atomic
def delegations_revoke_user(*, pi: PI, delegate_id: int, actor: Any = None) -> int:
    """The PI withdraws every delegation to one colleague."""
    count = 0
    for delegation in Delegation.objects.filter(pi=pi, delegate_id=delegate_id):
        delegation_revoke(pi=pi, delegation_id=delegation.pk, actor=actor)
        count += 1
    if not count:
        raise Refused("no such delegate")
    return count


# --- downloads ------------------------------------------------------------------------------


def statement_pdf_downloaded(*, statement: Any, user: Any, via: str = "portal") -> None:
    """Record a download of a statement PDF (audit log and auditlog's access entry)."""
    from auditlog.signals import accessed

    accessed.send(sender=type(statement), instance=statement)
    audit(
        "statement_downloaded",
        actor=user.get_username(),
        via=via,
        statement=statement.label,
        statement_id=statement.pk,
        period=statement.period.period,
        pi=statement.pi_email,
        project=statement.project_code,
    )


def statement_pdf_missing(*, statement: Any, user: Any) -> None:
    """A portal user asked for a PDF that is not rendered: recorded for the billing team (a warning
    in the log), who render it; the portal renders nothing itself."""
    audit(
        "statement_pdf_missing",
        actor=user.get_username(),
        statement=statement.label,
        statement_id=statement.pk,
        render_error=statement.render_error or "",
    )
    logger.warning("statement %s has no PDF; %s asked for it in the portal", statement.label, user)


def charges_csv_downloaded(
    *, user: Any, period: str, project_code: str, pi_emails: list[str], rows: int
) -> None:
    audit(
        "charges_downloaded",
        actor=user.get_username(),
        via="portal",
        period=period,
        project=project_code,
        pi=pi_emails,
        rows=rows,
    )
