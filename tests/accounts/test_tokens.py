"""No account comes back through a link: disabling an account voids every invitation and reset
link it was sent (the tokens depend on the active flag and the invitation's state), enabling it
again does not revive them, and accepting a link never changes whether the account is active."""

from __future__ import annotations

from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.test import Client
from django.urls import reverse

from accounts import services
from accounts.models import Invitation
from billing.services import users as user_services
from billing.services.users import pi_users_ensure
from chargeback.errors import Refused
from tests.accounts.conftest import PASSWORD, client_for

# The invitation emails go to the test mailbox, with links on https://billing.example.edu.
from tests.accounts.test_accounts import NEW_PASSWORD, _link, _locmem_email  # noqa: F401
from tests.cli import run
from tests.factories import PIFactory

pytestmark = pytest.mark.django_db
User = get_user_model()


def _try_link(link: str) -> tuple[Client, Any]:
    """Open the link and submit a new password; returns the client and the last response."""
    client = Client()
    page = client.get(link, follow=True)
    if "set-password-form" not in page.content.decode():
        return client, page
    done = client.post(
        page.redirect_chain[-1][0], {"new_password1": NEW_PASSWORD, "new_password2": NEW_PASSWORD}
    )
    return client, done


def _invited_pi(mailoutbox: list) -> tuple[Any, str]:
    pi: Any = PIFactory(email="carol@university.example", name="Carol Chem")
    pi_users_ensure(pi_ids=[pi.pk])
    pi.refresh_from_db()
    assert run("users", "invite", pi.email).code == 0
    return pi.user, _link(mailoutbox[-1].body)


def _superuser() -> Any:
    return User.objects.create_superuser("root@university.example", "root@university.example", PASSWORD)


def _admin_set_active(admin: Any, user: Any, active: bool) -> None:
    """Tick or untick "active" on the admin's user form, as a superuser does."""
    user.refresh_from_db()
    data = {
        "username": user.username,
        "first_name": user.first_name,
        "last_name": user.last_name,
        "email": user.email,
        "date_joined_0": user.date_joined.strftime("%Y-%m-%d"),
        "date_joined_1": user.date_joined.strftime("%H:%M:%S"),
        "groups": [g.pk for g in user.groups.all()],
    }
    if active:
        data["is_active"] = "on"
    response = client_for(admin).post(reverse("admin:auth_user_change", args=[user.pk]), data)
    assert response.status_code == 302, response.content.decode()[:2000]
    user.refresh_from_db()
    assert user.is_active is active


def test_a_disabled_pi_cannot_use_a_pending_invitation(mailoutbox):
    user, link = _invited_pi(mailoutbox)
    root = _superuser()
    _admin_set_active(root, user, False)

    client, response = _try_link(link)
    assert "This link no longer works" in response.content.decode()
    user.refresh_from_db()
    assert not user.is_active and not user.has_usable_password()
    assert client.get(reverse("portal:home")).status_code == 302  # not signed in
    assert Invitation.objects.get(user=user).voided_at is not None

    # Enabling the account again does not bring the old link back.
    _admin_set_active(root, user, True)
    client, response = _try_link(link)
    assert "This link no longer works" in response.content.decode()
    user.refresh_from_db()
    assert not user.has_usable_password()
    # A new invitation works, and accepting it leaves the account as it was (active).
    assert run("users", "invite", user.email, "--resend").code == 0
    client, response = _try_link(_link(mailoutbox[-1].body))
    assert response.status_code == 302 and client.get(reverse("portal:home")).status_code == 200
    user.refresh_from_db()
    assert user.is_active and user.check_password(NEW_PASSWORD)


def test_a_disabled_staff_user_cannot_use_a_reset_link(world, mailoutbox):
    staff = User.objects.create_user(
        "rita@university.example", "rita@university.example", PASSWORD, is_staff=True
    )
    Client().post(reverse("portal:password_reset"), {"email": staff.email})
    link = _link(mailoutbox[-1].body.replace("http://testserver", "https://billing.example.edu"))
    assert run("users", "disable", staff.email).code == 0

    client, response = _try_link(link)
    assert "This link no longer works" in response.content.decode()
    staff.refresh_from_db()
    assert not staff.is_active and staff.check_password(PASSWORD)
    assert "_auth_user_id" not in client.session


def test_disabled_by_any_means_the_link_is_dead(mailoutbox):
    """The token depends on the active flag itself: even an account switched off without the
    service (a shell, a script) cannot use its links."""
    user, link = _invited_pi(mailoutbox)
    User.objects.filter(pk=user.pk).update(is_active=False)
    _, response = _try_link(link)
    assert "This link no longer works" in response.content.decode()
    user.refresh_from_db()
    assert not user.is_active


def test_accepting_never_changes_is_active():
    disabled = User.objects.create_user("ex@university.example", "ex@university.example", is_active=False)
    Invitation.objects.create(user=disabled, email=disabled.email, sent_at=disabled.date_joined)
    with pytest.raises(Refused, match="disabled"):
        services.invitation_accept(user=disabled, password=NEW_PASSWORD)
    disabled.refresh_from_db()
    assert not disabled.is_active and not disabled.has_usable_password()


def test_disabled_accounts_get_no_invitation(mailoutbox):
    user, _ = _invited_pi(mailoutbox)
    outcome = run("users", "disable", user.email, "--format", "json")
    assert outcome.code == 0 and outcome.json()["voided"] == 1
    sent = len(mailoutbox)
    again = run("users", "invite", "--all-pis", "--resend", "--format", "json").json()
    assert again["sent"] == [] and again["skipped"] == [{"email": user.email, "reason": "account disabled"}]
    refused = run("users", "invite", user.email, "--resend")
    assert refused.code == 0 and "account disabled" in refused.out
    assert len(mailoutbox) == sent
    # Adding a role does not enable it either.
    added = run("users", "add", user.email, "--role", "viewer")
    assert added.code == 1 and "disabled" in added.err
    user.refresh_from_db()
    assert not user.is_active and not user.is_staff


def test_sso_never_enables_a_disabled_account(mailoutbox, settings):
    user, _ = _invited_pi(mailoutbox)
    services.user_disable(user=user)
    assert user_services.sso_user_for_email(email=user.email) is None
    user.refresh_from_db()
    assert not user.is_active


def test_users_list_status(mailoutbox):
    user, _ = _invited_pi(mailoutbox)
    PIFactory(email="dave@university.example")
    pi_users_ensure()
    statuses = {u["username"]: u["status"] for u in run("users", "list", "--format", "json").json()["users"]}
    assert statuses == {user.username: "invited", "dave@university.example": "no password yet"}
    run("users", "disable", user.email)
    statuses = {u["username"]: u["status"] for u in run("users", "list", "--format", "json").json()["users"]}
    assert statuses[user.username] == "disabled"


@pytest.mark.django_db(transaction=True)
def test_upgrade_activates_accounts_never_set_up_only():
    """Before, imports created PI users inactive until they accepted an invitation; `is_active`
    now means "not disabled", so those never set up become active, and disabled ones stay so."""
    from django.db import connection
    from django.db.migrations.executor import MigrationExecutor

    before, after = (
        [("accounts", "0003_role_groups")],
        [("accounts", "0004_invitation_voided_accounts_active")],
    )
    executor = MigrationExecutor(connection)
    try:
        executor.migrate(before)
        executor.loader.build_graph()
        old = executor.loader.project_state(before).apps
        OldUser = old.get_model("auth", "User")
        never = OldUser.objects.create(username="new@u.example", password="!unusable", is_active=False)
        disabled = OldUser.objects.create(username="gone@u.example", password="pbkdf2$x", is_active=False)
        accepted = OldUser.objects.create(username="was@u.example", password="!unusable", is_active=False)
        old.get_model("accounts", "Invitation").objects.create(
            user=accepted,
            email="was@u.example",
            sent_at=accepted.date_joined,
            accepted_at=accepted.date_joined,
        )
        executor = MigrationExecutor(connection)
        executor.migrate(after)
        active = dict(
            User.objects.filter(pk__in=[never.pk, disabled.pk, accepted.pk]).values_list(
                "username", "is_active"
            )
        )
        assert active == {"new@u.example": True, "gone@u.example": False, "was@u.example": False}
    finally:
        executor = MigrationExecutor(connection)
        executor.loader.build_graph()
        executor.migrate(executor.loader.graph.leaf_nodes())
