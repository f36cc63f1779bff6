"""Passwords: the rules of `web.password_requirements` (config.yaml) as a Django validator, and the
bcrypt hashes of `web.users` working as passwords."""

from __future__ import annotations

from typing import Any

from django.contrib.auth.hashers import BCryptPasswordHasher
from django.core.exceptions import ValidationError

SPECIAL_CHARACTERS = "!@#$%^&*()_+-=[]{}|;:,.<>?"
CLASSES = {
    "uppercase": ("an upper-case letter", str.isupper),
    "lowercase": ("a lower-case letter", str.islower),
    "digits": ("a digit", str.isdigit),
    "special": (f"one of {SPECIAL_CHARACTERS}", SPECIAL_CHARACTERS.__contains__),
}


class CharacterClassValidator:
    """A password must contain a character of each class asked for (the original's
    require_uppercase, require_lowercase, require_numbers, require_special_chars)."""

    def __init__(
        self, uppercase: bool = False, lowercase: bool = False, digits: bool = False, special: bool = False
    ) -> None:
        self.required = [
            name for name, on in zip(CLASSES, (uppercase, lowercase, digits, special), strict=True) if on
        ]

    def validate(self, password: str, user: Any = None) -> None:
        missing = [CLASSES[name][0] for name in self.required if not any(map(CLASSES[name][1], password))]
        if missing:
            raise ValidationError(
                f"This password must contain {', '.join(missing)}.", code="password_character_classes"
            )

    def get_help_text(self) -> str:
        return f"Your password must contain {', '.join(CLASSES[name][0] for name in self.required)}."


class OriginalBCryptPasswordHasher(BCryptPasswordHasher):
    """The original OpenChargeback's bcrypt hashes (`$2b$12$...`, stored as `bcrypt$$2b$12$...`).

    bcrypt reads at most 72 bytes and bcrypt >= 5 refuses longer passwords with an error: such a
    password is simply not this one (never a server error at sign-in)."""

    def verify(self, password: str, encoded: str) -> bool:
        if len(password.encode()) > 72:
            return False
        return super().verify(password, encoded)
