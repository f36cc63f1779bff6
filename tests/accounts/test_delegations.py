"""A PI's delegation grants portal access to those projects and nothing else: it never changes an
existing account's groups, staff status or active flag, never emails a disabled account, and the
emails it causes are limited per PI (OPENCHARGEBACK_DELEGATION_EMAILS_PER_DAY)."""

from __future__ import annotations

from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.urls import reverse

from accounts import roles, services
from accounts.models import Delegation
from accounts.portal import selectors
from accounts.portal import services as portal_services
from chargeback.errors import Refused
from tests.accounts.conftest import PASSWORD, client_for

pytestmark = pytest.mark.django_db
User = get_user_model()


def _grant(world: Any, email: str, captured: Any, *projects: Any) -> Any:
    with captured(execute=True):
        return client_for(world.user_a).post(
            reverse("portal:delegates"),
            {"email": email, "projects": [str(p.pk) for p in (projects or (world.a1,))]},
        )


def test_a_delegation_never_changes_an_existing_accounts_groups(
    world, mailoutbox, django_capture_on_commit_callbacks
):
    admin = User.objects.create_user(
        "boss@university.example", "boss@university.example", PASSWORD, is_staff=True
    )
    admin.groups.add(Group.objects.get(name=roles.BILLING_ADMIN))
    before = (set(admin.groups.values_list("name", flat=True)), admin.is_staff, admin.is_superuser)

    response = _grant(world, admin.email, django_capture_on_commit_callbacks)
    assert response.status_code == 302
    admin.refresh_from_db()
    assert (set(admin.groups.values_list("name", flat=True)), admin.is_staff, admin.is_superuser) == before
    assert roles.PI not in before[0]
    # It grants what it says: those projects in the portal.
    scope = selectors.portal_scope(admin)
    assert set(selectors.portal_statements(scope).values_list("project_code", flat=True)) == {"ada-genomics"}
    assert [m.to for m in mailoutbox] == [[admin.email]]  # told, not invited: it has a password


def test_a_disabled_account_is_neither_emailed_nor_enabled(
    world, mailoutbox, django_capture_on_commit_callbacks
):
    gone = User.objects.create_user("gone@university.example", "gone@university.example", PASSWORD)
    services.user_disable(user=gone)
    _grant(world, gone.email, django_capture_on_commit_callbacks)
    gone.refresh_from_db()
    assert not gone.is_active and not gone.groups.exists()
    assert Delegation.objects.filter(delegate=gone).exists()
    assert mailoutbox == []


def test_emails_a_pi_can_cause_are_limited(world, mailoutbox, django_capture_on_commit_callbacks, settings):
    settings.OPENCHARGEBACK_DELEGATION_EMAILS_PER_DAY = 3
    for n in range(3):
        assert (
            _grant(world, f"colleague{n}@university.example", django_capture_on_commit_callbacks).status_code
            == 302
        )
    assert len(mailoutbox) == 3
    refused = _grant(world, "colleague3@university.example", django_capture_on_commit_callbacks)
    assert refused.status_code == 200
    assert "3 times in the last 24 hours" in refused.content.decode()
    assert not User.objects.filter(username="colleague3@university.example").exists()
    # Revoking and granting again does not get round it.
    first = User.objects.get(username="colleague0@university.example")
    portal_services.delegations_revoke_user(pi=world.pi_a, delegate_id=first.pk)
    with pytest.raises(Refused, match="in the last 24 hours"):
        portal_services.delegation_grant(pi=world.pi_a, email=first.email, project_ids=[world.a1.pk])
    assert len(mailoutbox) == 3
    # Another PI has a limit of their own.
    with django_capture_on_commit_callbacks(execute=True):
        portal_services.delegation_grant(
            pi=world.pi_b, email="helper@university.example", project_ids=[world.b1.pk]
        )
    assert len(mailoutbox) == 4
