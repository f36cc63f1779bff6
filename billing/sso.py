"""Single sign-on (OpenID Connect, optional): the identity provider's verified email claim signs
in as the user with that address, or as the portal user of the PI with that address. It sits in
billing because it knows PIs; accounts.security keeps the password and lockout backends."""

from __future__ import annotations

from typing import Any

from django.conf import settings

from .services.users import sso_user_for_email

try:  # optional: only importable with mozilla-django-oidc installed
    from mozilla_django_oidc.auth import OIDCAuthenticationBackend
except ImportError:  # pragma: no cover
    OIDCAuthenticationBackend = object  # type: ignore[misc,assignment]


class PortalOIDCBackend(OIDCAuthenticationBackend):  # type: ignore[misc,valid-type]
    """Single sign-on: the identity provider's email claim (OIDC_EMAIL_CLAIM) names the user, or
    the PI whose portal account it signs in to. Nobody else gets an account through SSO."""

    def _claim_email(self, claims: dict[str, Any]) -> str:
        value = claims.get(settings.OIDC_EMAIL_CLAIM) or ""
        return str(value).strip().lower()

    def verify_claims(self, claims: dict[str, Any]) -> bool:
        if claims.get("email_verified") is False:
            return False
        return bool(self._claim_email(claims))

    def filter_users_by_claims(self, claims: dict[str, Any]) -> Any:
        from django.contrib.auth import get_user_model

        User = get_user_model()
        user = sso_user_for_email(email=self._claim_email(claims))
        if user is None or not user.is_active:
            return User.objects.none()
        return User.objects.filter(pk=user.pk)

    def create_user(self, claims: dict[str, Any]) -> Any:
        return None  # filter_users_by_claims finds every account SSO may sign in to

    def get_or_create_user(self, access_token: str, id_token: str, payload: dict[str, Any]) -> Any:
        user = super().get_or_create_user(access_token, id_token, payload)
        return user if user is not None and user.is_active else None
