"""Admin: users with their roles and portal status, and the invitation action (an invitation greets
a PI by name, so this screen sits in billing, above identity)."""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.contrib.auth import get_user_model
from django.contrib.auth.admin import UserAdmin
from django.db.models import QuerySet
from django.http import HttpRequest

from accounts import services
from chargeback.errors import Refused

from ..services import users as user_services

User = get_user_model()


if admin.site.is_registered(User):
    admin.site.unregister(User)


@admin.register(User)
class PortalUserAdmin(UserAdmin):
    """Django's user admin, with roles and portal status in the list and the invitation action.
    Permissions (is_superuser, groups) stay editable by users who may change users only.
    Unticking "active" disables the account through the service (its links are voided too)."""

    list_display = ("username", "email", "roles", "is_active", "is_staff", "last_login")
    list_filter = ("groups", "is_staff", "is_active", "is_superuser")
    actions = ["send_invitation", "disable_accounts"]

    def save_model(self, request: HttpRequest, obj: Any, form: Any, change: bool) -> None:
        active = obj.is_active
        toggled = change and "is_active" in form.changed_data
        if toggled:
            obj.is_active = not active  # the service makes the change (and voids links)
        super().save_model(request, obj, form, change)
        if toggled and not active:
            services.user_disable(user=obj, actor=request.user)
        elif toggled:
            services.user_enable(user=obj, actor=request.user)
        obj.refresh_from_db(fields=["is_active"])

    @admin.action(description="Disable the selected accounts (and void their links)", permissions=["change"])
    def disable_accounts(self, request: HttpRequest, queryset: QuerySet) -> None:
        users = list(queryset.exclude(pk=request.user.pk).order_by("username"))
        for user in users:
            services.user_disable(user=user, actor=request.user)
        self.message_user(
            request,
            f"{len(users)} account{'s' if len(users) != 1 else ''} disabled"
            + (
                "; your own account was left as it is" if queryset.filter(pk=request.user.pk).exists() else ""
            ),
            messages.SUCCESS,
        )

    def get_queryset(self, request: HttpRequest) -> QuerySet:
        return super().get_queryset(request).prefetch_related("groups")

    @admin.display(description="roles")
    def roles(self, user: Any) -> str:
        return ", ".join(sorted(g.name for g in user.groups.all())) or "-"

    def has_invite_permission(self, request: HttpRequest) -> bool:
        return bool(request.user.has_perm("accounts.add_invitation"))

    @admin.action(description="Email a set-your-password link (portal invitation)", permissions=["invite"])
    def send_invitation(self, request: HttpRequest, queryset: QuerySet) -> None:
        sent = skipped = 0
        for user in queryset.order_by("username"):
            if user.has_usable_password():
                skipped += 1
                continue
            try:
                user_services.invitation_send(user=user, actor=request.user)
            except Refused as exc:
                self.message_user(request, f"{user}: {exc}", messages.ERROR)
                continue
            sent += 1
        self.message_user(
            request,
            f"{sent} invitation{'s' if sent != 1 else ''} sent"
            + (f"; {skipped} skipped (they have a password already)" if skipped else ""),
            messages.SUCCESS if sent else messages.WARNING,
        )
