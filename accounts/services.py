"""Writes of the accounts app: roles, users and their accounts (enabled, disabled, passwords set
through a link).

Users are named by their email address (username = the address in lower case). A PI gets a portal
user when an import first sees the PI; everything that knows PIs (their portal accounts,
invitations naming the PI, single sign-on by a PI's email) is in billing.services.users, above
this layer. Accepting an invitation (`invitation_accept`) sets the password.

`is_active` means one thing: the account may be used. Only an administrator changes it
(`user_disable`, `user_enable`); no link, invitation or single sign-on ever turns it back on, and
disabling voids every outstanding invitation and reset link.
"""

from __future__ import annotations

import logging
from typing import Any

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group, Permission
from django.contrib.auth.password_validation import validate_password
from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from chargeback.actors import actor_label
from chargeback.emails import is_plain_email
from chargeback.errors import Refused
from chargeback.logging import audit

from . import roles, selectors
from .models import Invitation

logger = logging.getLogger(__name__)


def _actor_name(actor: Any = None, actor_name: str = "") -> str:
    return actor_label(actor, actor_name)


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
