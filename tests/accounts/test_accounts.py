"""Roles (groups created by migration, honoured by the admin), PI users created on import, the
`openchargeback users` command, invitations (set-your-password links) and the portal link of
statement emails."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group, Permission
from django.test import Client
from django.urls import reverse

from accounts import roles
from accounts.models import Invitation
from accounts.services import roles_ensure
from billing import services as billing_services
from billing.models import PI
from billing.services.users import pi_users_ensure
from tests.accounts.conftest import PASSWORD, client_for
from tests.cli import run
from tests.factories import PIFactory

pytestmark = pytest.mark.django_db
User = get_user_model()
NEW_PASSWORD = "violet kettle mountain 77"


@pytest.fixture(autouse=True)
def _locmem_email(settings):
    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
    settings.OPENCHARGEBACK_BASE_URL = "https://billing.example.edu"


def _link(body: str) -> str:
    match = re.search(r"https://billing\.example\.edu(/portal/password/set/[^/\s]+/[^/\s]+/)", body)
    assert match, body
    return match.group(1)


# --- roles ----------------------------------------------------------------------------------


def test_migration_created_the_role_groups():
    """The groups exist without anybody calling roles_ensure (data migration + post_migrate)."""
    for name, codes in roles.ROLE_PERMISSIONS.items():
        group = Group.objects.get(name=name)
        have = {
            f"{p.content_type.app_label}.{p.codename}"
            for p in group.permissions.select_related("content_type")
        }
        assert have == set(codes), name
    assert not Group.objects.get(name=roles.PI).permissions.exists()


def test_every_role_permission_exists_and_roles_nest():
    roles_ensure(strict=True)  # raises if a code names no permission
    viewer, reviewer, admin = (
        set(roles.ROLE_PERMISSIONS[r]) for r in (roles.VIEWER, roles.REVIEWER, roles.BILLING_ADMIN)
    )
    assert viewer < reviewer < admin
    assert all(code.split(".")[1].startswith("view_") for code in viewer)
    assert "statements.send_statements" in reviewer and "journals.add_journalexport" not in reviewer
    assert "journals.add_journalexport" in admin and "auth.change_user" not in admin


def test_roles_ensure_restores_the_sets():
    group = Group.objects.get(name=roles.VIEWER)
    group.permissions.add(Permission.objects.get(codename="delete_flagrule"))
    roles_ensure()
    assert not group.permissions.filter(codename="delete_flagrule").exists()


def test_role_slugs():
    assert roles.role_from_slug("billing-admin") == roles.BILLING_ADMIN
    assert roles.role_from_slug("Billing admin") == roles.BILLING_ADMIN
    assert roles.role_from_slug("PI") == roles.PI
    with pytest.raises(ValueError, match="unknown role"):
        roles.role_from_slug("owner")


def _staff(role: str) -> Any:
    user = User.objects.create_user(
        f"{role.lower().replace(' ', '-')}@university.example", password=PASSWORD, is_staff=True
    )
    user.groups.add(Group.objects.get(name=role))
    return user


def test_admin_screens_honour_roles(world):
    viewer, reviewer, admin = _staff(roles.VIEWER), _staff(roles.REVIEWER), _staff(roles.BILLING_ADMIN)
    statements = reverse("admin:statements_statement_changelist")
    journals = reverse("admin:journals_journalexport_changelist")
    for user in (viewer, reviewer, admin):
        client = client_for(user)
        assert client.get(reverse("admin:index")).status_code == 200
        assert client.get(statements).status_code == 200
        assert client.get(journals).status_code == 200
    # Sending is the reviewer's and the billing admin's; the viewer does not even see the action.
    assert "send_selected" not in client_for(viewer).get(statements).content.decode()
    assert "send_selected" in client_for(reviewer).get(statements).content.decode()
    assert User.objects.get(pk=reviewer.pk).has_perm("statements.send_statements")
    assert not User.objects.get(pk=viewer.pk).has_perm("statements.send_statements")
    # Users: the billing admin may see them and invite, nobody but superusers may change them.
    users = reverse("admin:auth_user_changelist")
    assert client_for(admin).get(users).status_code == 200
    assert client_for(reviewer).get(users).status_code == 403
    assert client_for(admin).get(reverse("admin:auth_user_change", args=[viewer.pk])).status_code == 200
    assert (
        client_for(admin)
        .post(reverse("admin:auth_user_change", args=[viewer.pk]), {"is_superuser": "on"})
        .status_code
        == 403
    )


def test_pi_has_no_admin(world):
    response = client_for(world.user_a).get(reverse("admin:index"))
    assert response.status_code == 302 and "/admin/login/" in response["Location"]


def test_admin_invitation_action(world, mailoutbox):
    admin = _staff(roles.BILLING_ADMIN)
    pi = PIFactory(email="carol@university.example", name="Carol Chem")
    pi_users_ensure(pi_ids=[pi.pk])
    pi.refresh_from_db()
    response = client_for(admin).post(
        reverse("admin:auth_user_changelist"),
        {"action": "send_invitation", "_selected_action": [pi.user_id, world.user_a.pk]},
    )
    assert response.status_code == 302
    assert [m.to for m in mailoutbox] == [["carol@university.example"]]  # Ada has a password already
    assert Invitation.objects.get(user=pi.user).actor_name == admin.username


# --- PI users from imports ------------------------------------------------------------------


HEADER = "BillingPeriodStart,BillingPeriodEnd,ChargeCategory,ListCost,BilledCost,ResourceId,ServiceName,Tags"


def _focus(path: Path, *emails: str) -> Path:
    rows = [
        f'2025-02-01,2025-02-28,Usage,10.00,8.50,i-{n},Amazon EC2,"{{""pi_email"": ""{email}"", ""project_id"": ""p-{n}"", ""fund_org"": ""F-1""}}"'
        for n, email in enumerate(emails)
    ]
    path.write_text("\n".join([HEADER, *rows]) + "\n", encoding="utf-8")
    return path


def test_a_pi_seen_on_import_gets_a_user_without_password(tmp_path):
    billing_services.source_create(slug="aws")
    existing = User.objects.create_user(
        "grace@university.example", "grace@university.example", PASSWORD, is_staff=True
    )
    billing_services.import_file(
        path=_focus(tmp_path / "aws_2025-02.csv", "Ada@University.example", "grace@university.example"),
        source="aws",
        period="2025-02",
    )
    ada = PI.objects.get(email="ada@university.example")
    assert ada.user is not None and ada.user.username == "ada@university.example"
    # Active (not disabled), but nobody can sign in as it before a password is set.
    assert ada.user.is_active and not ada.user.has_usable_password()
    assert ada.user.groups.filter(name=roles.PI).exists()
    # A user with the PI's email already: linked, left as it was.
    grace = PI.objects.get(email="grace@university.example")
    assert (
        grace.user == existing and grace.user.is_active and grace.user.groups.filter(name=roles.PI).exists()
    )


def test_a_dry_run_creates_no_user(tmp_path):
    billing_services.source_create(slug="aws")
    billing_services.import_file(
        path=_focus(tmp_path / "aws_2025-02.csv", "ada@university.example"), source="aws", dry_run=True
    )
    assert not User.objects.filter(username="ada@university.example").exists()


def test_reference_month_pis_all_get_users(reference_month):
    assert PI.objects.count() and not PI.objects.filter(user__isnull=True).exists()
    pi_users = User.objects.filter(groups__name=roles.PI)
    assert pi_users.count() == PI.objects.count()
    assert not any(u.has_usable_password() for u in pi_users)


# --- users command --------------------------------------------------------------------------


def test_users_add_list_json():
    result = run(
        "users",
        "add",
        "Rita@University.example",
        "--role",
        "reviewer",
        "--name",
        "Rita Review",
        "--format",
        "json",
    )
    assert result.code == 0, result.err
    doc = result.json()
    assert doc["created"] and doc["user"]["username"] == "rita@university.example"
    assert (
        doc["user"]["is_staff"] and doc["user"]["roles"] == ["reviewer"] and not doc["user"]["has_password"]
    )
    again = run("users", "add", "rita@university.example", "--role", "viewer", "--format", "json").json()
    assert not again["created"] and again["roles_added"] == ["Viewer"]
    listed = run("users", "list", "--format", "json").json()["users"]
    assert [u["username"] for u in listed] == ["rita@university.example"]
    assert listed[0]["roles"] == ["reviewer", "viewer"]
    text = run("users", "list", "--role", "reviewer")
    assert "rita@university.example" in text.out and "reviewer, viewer" in text.out


def test_users_add_pi_links_the_pi(mailoutbox):
    PIFactory(email="ada@university.example", name="Ada Lovelace")
    result = run("users", "add", "ada@university.example", "--role", "pi", "--invite")
    assert result.code == 0, result.err
    assert "linked to PI ada@university.example" in result.out and "invitation emailed" in result.out
    pi = PI.objects.get(email="ada@university.example")
    assert pi.user is not None and not pi.user.has_usable_password() and not pi.user.is_staff
    assert pi.user.first_name == "Ada" and pi.user.last_name == "Lovelace"
    assert len(mailoutbox) == 1


def test_users_add_refusals_and_usage():
    unknown_pi = run("users", "add", "nobody@university.example", "--role", "pi")
    assert unknown_pi.code == 1 and "no PI with email" in unknown_pi.err
    bad_role = run("users", "add", "x@university.example", "--role", "owner")
    assert bad_role.code == 1 and "unknown role" in bad_role.err
    bad_email = run("users", "add", "not-an-email", "--role", "viewer", "--format", "json")
    assert bad_email.code == 1 and "invalid email" in bad_email.json()["error"]
    assert run("users", "add", "x@university.example").code == 2  # --role is required
    assert run("users", "invite").code == 2
    assert run("users", "list", "--role", "owner").code == 2
    assert not User.objects.exists()


def test_users_invite_all_pis(mailoutbox):
    ada = PIFactory(email="ada@university.example")
    PIFactory(email="bob@university.example")
    pi_users_ensure(pi_ids=[ada.pk])  # Bob gets his user when invited
    result = run("users", "invite", "--all-pis", "--format", "json")
    assert result.code == 0, result.err
    assert result.json()["sent"] == ["ada@university.example", "bob@university.example"]
    assert sorted(m.to[0] for m in mailoutbox) == ["ada@university.example", "bob@university.example"]
    again = run("users", "invite", "--all-pis", "--format", "json").json()
    assert again["sent"] == [] and {s["reason"] for s in again["skipped"]} == {
        "invited before (use --resend)"
    }
    assert run("users", "invite", "bob@university.example", "--resend", "--format", "json").json()[
        "sent"
    ] == ["bob@university.example"]
    unknown = run("users", "invite", "nobody@elsewhere.example")
    assert unknown.code == 1 and "no user and no PI" in unknown.err


# --- invitations ----------------------------------------------------------------------------


def test_invitation_link_sets_password_activates_and_signs_in(mailoutbox, caplog):
    import logging

    PIFactory(email="ada@university.example", name="Ada Lovelace")
    run("users", "invite", "ada@university.example")
    message = mailoutbox[0]
    assert message.subject.endswith("your billing portal account")
    assert "Dear Ada Lovelace" in message.body and "https://billing.example.edu/portal/" in message.body
    assert message.alternatives and "Choose your password" in message.alternatives[0][0]
    link = _link(message.body)
    client = Client()
    page = client.get(link, follow=True)
    assert page.status_code == 200 and "Choose your password" in page.content.decode()
    form_url = page.redirect_chain[-1][0]
    # Django's validators apply: a short or common password is refused.
    weak = client.post(form_url, {"new_password1": "password", "new_password2": "password"})
    assert weak.status_code == 200 and "too short" in weak.content.decode()
    with caplog.at_level(logging.INFO, logger="openchargeback.audit"):
        done = client.post(form_url, {"new_password1": NEW_PASSWORD, "new_password2": NEW_PASSWORD})
    assert done.status_code == 302 and done["Location"] == reverse("portal:home")
    user = User.objects.get(username="ada@university.example")
    assert user.is_active and user.check_password(NEW_PASSWORD)
    assert Invitation.objects.get(user=user).accepted_at is not None
    assert client.get(reverse("portal:home")).status_code == 200  # signed in
    assert any(getattr(r, "event", "") == "password_set" for r in caplog.records)
    # The link works once.
    reused = Client().get(link, follow=True)
    assert "This link no longer works" in reused.content.decode()


def test_disabled_account_cannot_be_reactivated_by_a_link(mailoutbox):
    user = User.objects.create_user("ex@university.example", "ex@university.example", is_active=False)
    user.set_unusable_password()
    user.save()
    from accounts.selectors import set_password_url

    link = (
        set_password_url(user).replace("http://localhost:8000", "").replace("https://billing.example.edu", "")
    )
    client = Client()
    page = client.get(link, follow=True)
    response = client.post(
        page.redirect_chain[-1][0], {"new_password1": NEW_PASSWORD, "new_password2": NEW_PASSWORD}
    )
    assert response.status_code == 200 and "disabled" in response.content.decode()
    user.refresh_from_db()
    assert not user.is_active


def test_password_reset_for_active_users(world, mailoutbox):
    response = Client().post(reverse("portal:password_reset"), {"email": world.user_a.email})
    assert response.status_code == 302
    assert len(mailoutbox) == 1 and "/portal/password/set/" in mailoutbox[0].body
    # Unknown addresses get the same answer and no email.
    Client().post(reverse("portal:password_reset"), {"email": "nobody@elsewhere.example"})
    assert len(mailoutbox) == 1


def test_statement_email_carries_the_portal_link(world):
    from statements.models import Delivery, Statement
    from statements.services import delivery_context, delivery_message

    statements = [s for s in world.statements_a if s.is_current and s.period.period == "2025-01"]
    delivery = Delivery(period=statements[0].period, pi=world.pi_a, recipient=world.pi_a.email)
    context = delivery_context(
        delivery, statements, __import__("billing.selectors").selectors.billing_settings_get()
    )
    assert context["portal_url"] == "https://billing.example.edu/portal/periods/2025-01/"
    message = delivery_message(delivery, statements, "<id@example>")
    assert "https://billing.example.edu/portal/periods/2025-01/" in message.body
    assert 'href="https://billing.example.edu/portal/periods/2025-01/"' in message.alternatives[0][0]
    assert Statement.objects.exists()
