"""Users as billing knows them: the user list with each user's PI (the `users list` command)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.contrib.auth import get_user_model
from django.db.models import Count, Q

from accounts.models import Delegation, Invitation

from ..models import PI


@dataclass
class UserRow:
    user: Any
    roles: list[str]
    pi_email: str
    delegated_projects: int
    invited_at: Any
    accepted_at: Any

    @property
    def status(self) -> str:
        if not self.user.is_active:
            return "disabled"
        if not self.user.has_usable_password():
            return "invited" if self.invited_at else "no password yet"
        return "active"


def users_list(*, role: str | None = None) -> list[UserRow]:
    """Every user with a role, or the users of one role (group name), by user name."""
    User = get_user_model()
    qs = User.objects.prefetch_related("groups").order_by("username")
    qs = qs.filter(groups__name=role) if role else qs.filter(Q(groups__isnull=False) | Q(is_superuser=True))
    users = list(qs.distinct())
    ids = [u.pk for u in users]
    pis = dict(PI.objects.filter(user_id__in=ids).values_list("user_id", "email"))
    delegated = dict(
        Delegation.objects.filter(delegate_id__in=ids)
        .values_list("delegate_id")
        .annotate(n=Count("id"))
        .order_by()
        .values_list("delegate_id", "n")
    )
    invitations: dict[int, Invitation] = {}
    for sent in Invitation.objects.filter(user_id__in=ids).order_by("sent_at", "id"):
        invitations[sent.user_id] = sent  # the latest wins
    rows = []
    for user in users:
        invitation = invitations.get(user.pk)
        rows.append(
            UserRow(
                user=user,
                roles=sorted(g.name for g in user.groups.all())
                + (["superuser"] if user.is_superuser else []),
                pi_email=pis.get(user.pk, ""),
                delegated_projects=delegated.get(user.pk, 0),
                invited_at=invitation.sent_at if invitation else None,
                accepted_at=invitation.accepted_at if invitation else None,
            )
        )
    return rows
