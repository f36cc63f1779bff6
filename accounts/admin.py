"""Admin: invitations and delegations (read-only: PIs manage delegations in the portal). The user
admin (roles, portal status, the invitation action) is billing.admin.users: invitations greet PIs."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.contrib.auth import get_user_model
from django.http import HttpRequest

from .models import Delegation, Invitation

User = get_user_model()


class ReadOnlyAdmin(admin.ModelAdmin):
    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(Invitation)
class InvitationAdmin(ReadOnlyAdmin):
    list_display = ("email", "sent_at", "accepted_at", "actor_name")
    search_fields = ("email", "user__username")
    date_hierarchy = "sent_at"


@admin.register(Delegation)
class DelegationAdmin(ReadOnlyAdmin):
    list_display = ("pi", "project", "delegate", "created_at", "actor_name")
    list_select_related = ("pi", "project", "delegate")
    search_fields = ("pi__email", "project__project_id", "delegate__username", "delegate__email")
