"""openchargeback users add EMAIL --role R [--role R ...] [--name N] [--invite] | list [--role R] |
invite EMAIL [EMAIL ...] | invite --all-pis [--resend] | disable EMAIL | enable EMAIL"""

from __future__ import annotations

from typing import Any

from django.core.management.base import CommandParser

from accounts import roles, selectors, services
from billing.selectors import users as user_selectors
from billing.services import users as user_services
from chargeback.commands import ReportingCommand, UsageError
from chargeback.errors import Refused

ROLE_HELP = ", ".join(roles.ROLE_SLUGS)


class Command(ReportingCommand):
    help = "Users and roles: add a user with roles, list users, invite PIs and users to the portal."

    def add_arguments(self, parser: CommandParser) -> None:
        actions = self.add_subcommands(parser)
        add = actions.add_parser("add", help="add a user (or roles to an existing one)")
        add.add_argument("email", metavar="EMAIL")
        add.add_argument(
            "--role", action="append", required=True, metavar="ROLE", help=f"{ROLE_HELP} (repeatable)"
        )
        add.add_argument("--name", default="", help="the person's name")
        add.add_argument("--invite", action="store_true", help="email a set-your-password link")
        listing = actions.add_parser("list", help="users with a role")
        listing.add_argument("--role", default=None, metavar="ROLE", help=f"only this role: {ROLE_HELP}")
        invite = actions.add_parser("invite", help="email set-your-password links")
        invite.add_argument("emails", nargs="*", metavar="EMAIL")
        invite.add_argument(
            "--all-pis", action="store_true", help="every PI whose account has no password yet"
        )
        invite.add_argument("--resend", action="store_true", help="also those invited before")
        disable = actions.add_parser("disable", help="disable an account and void the links it was sent")
        disable.add_argument("email", metavar="EMAIL")
        enable = actions.add_parser("enable", help="enable a disabled account (old links stay void)")
        enable.add_argument("email", metavar="EMAIL")

    def handle(self, *args: Any, **options: Any) -> None:
        action = options["action"]
        if action == "add":
            self._add(options)
        elif action == "list":
            self._list(options)
        elif action in ("disable", "enable"):
            self._set_active(options["email"], action == "enable")
        else:
            self._invite(options)

    def _set_active(self, email: str, active: bool) -> None:
        user = selectors.user_for_email(services.normalize_email(email))
        if user is None:
            raise Refused(f"no user with email {email}")
        voided = 0
        if active:
            services.user_enable(user=user)
        else:
            voided = services.user_disable(user=user)
        user.refresh_from_db()
        if self.is_json:
            self.emit(
                {"action": "enable" if active else "disable", "user": self._user_json(user), "voided": voided}
            )
            return
        self.line(f"{'Enabled' if active else 'Disabled'} {user.get_username()}")
        if voided:
            self.line(f"  {voided} pending invitation{'s' if voided != 1 else ''} voided")

    def _add(self, options: dict[str, Any]) -> None:
        outcome = user_services.user_add(
            email=options["email"], role_names=options["role"], name=options["name"], invite=options["invite"]
        )
        user = outcome.user
        if self.is_json:
            self.emit(
                {
                    "action": "add",
                    "user": self._user_json(user),
                    "created": outcome.created,
                    "roles_added": outcome.roles_added,
                    "pi_linked": outcome.pi_linked or None,
                    "invited": outcome.invitation is not None,
                }
            )
            return
        verb = "Created" if outcome.created else "Updated"
        roles_text = ", ".join(outcome.roles_added) or "no new role"
        self.line(f"{verb} user {user.get_username()}: {roles_text}")
        if outcome.pi_linked:
            self.line(f"  linked to PI {outcome.pi_linked}")
        if outcome.invitation is not None:
            self.line(f"  invitation emailed to {outcome.invitation.email}")
        elif not user.has_usable_password():
            self.line(f"  no password yet: `openchargeback users invite {user.email}` emails a link")

    def _list(self, options: dict[str, Any]) -> None:
        role = None
        if options["role"]:
            try:
                role = roles.role_from_slug(options["role"])
            except ValueError as exc:
                raise UsageError(str(exc)) from exc
        rows = user_selectors.users_list(role=role)
        if self.is_json:
            self.emit({"users": [self._row_json(r) for r in rows]})
            return
        if not rows:
            self.line("No users with a role yet; add one with `openchargeback users add EMAIL --role ROLE`.")
            return
        self.table(
            ["USER", "ROLES", "PI", "DELEGATED", "STATUS", "LAST LOGIN"],
            [
                [
                    r.user.get_username(),
                    ", ".join(roles.role_slug(n) for n in r.roles),
                    r.pi_email or "-",
                    r.delegated_projects or "-",
                    r.status,
                    r.user.last_login.strftime("%Y-%m-%d %H:%M") if r.user.last_login else "never",
                ]
                for r in rows
            ],
            right=[3],
        )

    def _invite(self, options: dict[str, Any]) -> None:
        if not options["emails"] and not options["all_pis"]:
            raise UsageError("give EMAIL ... or --all-pis")
        outcome = user_services.invitations_send(
            emails=options["emails"], all_pis=options["all_pis"], resend=options["resend"]
        )
        if self.is_json:
            self.emit(
                {
                    "action": "invite",
                    "sent": [i.email for i in outcome.sent],
                    "skipped": [{"email": e, "reason": why} for e, why in outcome.skipped],
                }
            )
            return
        for invitation in outcome.sent:
            self.line(f"Invited {invitation.email}")
        for email, why in outcome.skipped:
            self.line(f"Skipped {email}: {why}")
        if not outcome.sent and not outcome.skipped:
            self.line("Nobody to invite.")

    @staticmethod
    def _user_json(user: Any) -> dict[str, Any]:
        return {
            "username": user.get_username(),
            "email": user.email,
            "is_active": user.is_active,
            "is_staff": user.is_staff,
            "has_password": user.has_usable_password(),
            "roles": sorted(roles.role_slug(g.name) for g in user.groups.all()),
        }

    def _row_json(self, row: user_selectors.UserRow) -> dict[str, Any]:
        return {
            **self._user_json(row.user),
            "is_superuser": row.user.is_superuser,
            "pi_email": row.pi_email or None,
            "delegated_projects": row.delegated_projects,
            "status": row.status,
            "last_login": row.user.last_login,
            "invited_at": row.invited_at,
            "invitation_accepted_at": row.accepted_at,
        }
