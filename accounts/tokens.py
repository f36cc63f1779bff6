"""The tokens of set-password links (invitations and password resets).

Django's password-reset token already stops working once the password or the last sign-in
changes. These tokens also depend on whether the account is active and on how many of its
invitations were voided, so disabling an account kills every link it was sent, and enabling it
again does not bring an old link back (disabling voids its pending invitations).
"""

from __future__ import annotations

from typing import Any

from django.contrib.auth.tokens import PasswordResetTokenGenerator


class AccountLinkTokenGenerator(PasswordResetTokenGenerator):
    key_salt = "openchargeback.accounts.tokens.AccountLinkTokenGenerator"

    def _make_hash_value(self, user: Any, timestamp: int) -> str:
        from .models import Invitation

        voided = Invitation.objects.filter(user_id=user.pk, voided_at__isnull=False).count()
        return f"{super()._make_hash_value(user, timestamp)}|active={user.is_active}|voided={voided}"


account_link_tokens = AccountLinkTokenGenerator()
