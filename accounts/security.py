"""Login security: the lockout backend and handler (django-axes), the Content Security Policy middleware
(django-csp) with the admin's allowance, and the OpenID Connect backend (mozilla-django-oidc)."""

from __future__ import annotations

from typing import Any

from axes.attempts import get_cool_off_threshold
from axes.backends import AxesStandaloneBackend
from axes.conf import settings as axes_settings
from axes.handlers.database import AxesDatabaseHandler
from axes.helpers import get_client_username
from axes.models import AccessAttempt
from axes.signals import user_locked_out
from csp.constants import UNSAFE_INLINE
from csp.middleware import CSPMiddleware, PolicyParts
from django.conf import settings
from django.contrib.auth.backends import ModelBackend
from django.db.models import Sum
from django.http import HttpRequest, HttpResponseBase


class ConfigUserBackend(ModelBackend):
    """The users of `web.users` in config.yaml (settings.OPENCHARGEBACK_CONFIG_USERS).

    - They sign in by their name in the file (`admin`) as well as by their email (the first
      backend takes the email, against the database's password).
    - A `recovery: true` user is checked against the file's bcrypt hash whatever the database says
      (password changed, account deactivated or deleted): the way back in when locked out of the
      database's users. Its account is restored, active, with its role. Lockouts still apply: the
      first backend refuses a locked-out name before this one is asked.
    """

    def authenticate(  # type: ignore[override]
        self,
        request: HttpRequest | None,
        username: str | None = None,
        password: str | None = None,
        **kwargs: Any,
    ) -> Any:
        name = (username or "").strip().lower()
        entry = next(
            (u for u in settings.OPENCHARGEBACK_CONFIG_USERS if name in (u["name"], u["email"])), None
        )
        if entry is None or not password:
            return None
        if entry["recovery"]:
            if not _bcrypt_matches(password, entry["password_hash"]):
                return None
            from accounts.services import config_user_ensure

            return config_user_ensure(entry=entry, restore=True)[0]
        if name == entry["email"]:
            return None  # the email: the first backend has answered for the database's password
        return ModelBackend.authenticate(self, request, username=entry["email"], password=password)


def _bcrypt_matches(password: str, password_hash: str) -> bool:
    import bcrypt

    data = password.encode()
    if len(data) > 72:  # bcrypt reads 72 bytes at most (and bcrypt >= 5 refuses more)
        return False
    try:
        return bcrypt.checkpw(data, password_hash.encode())
    except ValueError:
        return False


class LockoutModelBackend(AxesStandaloneBackend, ModelBackend):
    """Django's ModelBackend behind django-axes' lockout check, in one backend: a user name (or
    browser) locked out after AXES_FAILURE_LIMIT failures is refused before the password is
    checked. One backend, so that `User.objects.with_perm()` keeps working without naming one.

    Every sign-in through the web passes the request (Django's and the admin's login forms do);
    an authentication without one (a shell, the test client's `login()`) is not a web sign-in and
    skips the lockout check instead of failing."""

    def authenticate(  # type: ignore[override]
        self,
        request: HttpRequest | None,
        username: str | None = None,
        password: str | None = None,
        **kwargs: Any,
    ) -> Any:
        if request is not None:
            # Raises AxesBackendPermissionDenied (a PermissionDenied) when locked out.
            AxesStandaloneBackend.authenticate(self, request, username=username, password=password, **kwargs)
        kwargs.pop("response_context", None)
        return ModelBackend.authenticate(self, request, username=username, password=password, **kwargs)


class LockoutHandler(AxesDatabaseHandler):
    """django-axes' database handler, locking by user name and by client address.

    A user name is locked after AXES_FAILURE_LIMIT failures (axes' own lockout parameter). A client
    address is locked after OPENCHARGEBACK_LOGIN_ADDRESS_FAILURE_LIMIT failures within the cool-off
    time, whatever the user names and user agents it tried: rotating the user agent, or spraying
    one password over many user names, no longer escapes the lockout. The address limit is higher
    than the user name's so that colleagues behind one NAT address mistyping their own passwords
    do not lock each other out."""

    def address_failures(self, request: HttpRequest) -> int:
        address = getattr(request, "axes_ip_address", "") or ""
        if not address:
            return 0
        attempts = AccessAttempt.objects.filter(ip_address=address)
        if axes_settings.AXES_COOLOFF_TIME is not None:
            attempts = attempts.filter(attempt_time__gte=get_cool_off_threshold(request))
        return int(attempts.aggregate(total=Sum("failures_since_start"))["total"] or 0)

    def address_locked(self, request: HttpRequest) -> bool:
        return self.address_failures(request) >= settings.OPENCHARGEBACK_LOGIN_ADDRESS_FAILURE_LIMIT

    def is_locked(self, request: HttpRequest, credentials: dict | None = None) -> bool:
        return super().is_locked(request, credentials) or self.address_locked(request)

    def user_login_failed(self, sender: Any, credentials: dict, request: Any = None, **kwargs: Any) -> None:
        super().user_login_failed(sender, credentials, request, **kwargs)
        if request is None or getattr(request, "axes_locked_out", False) or not self.address_locked(request):
            return
        request.axes_locked_out = True  # the middleware answers with the lockout page
        request.axes_credentials = credentials
        user_locked_out.send(
            "axes",
            request=request,
            username=get_client_username(request, credentials),
            ip_address=request.axes_ip_address,
        )


def client_ip(request: HttpRequest) -> str:
    """The client's address for lockouts and the audit log: REMOTE_ADDR, or behind the trusted
    reverse proxy (TRUST_X_FORWARDED_PROTO) the right-most X-Forwarded-For entry, the one the proxy
    added (entries to its left come from the client and prove nothing)."""
    meta = getattr(request, "META", {})
    if getattr(settings, "OPENCHARGEBACK_CLIENT_IP_FROM_PROXY", False):
        forwarded = [part.strip() for part in meta.get("HTTP_X_FORWARDED_FOR", "").split(",") if part.strip()]
        if forwarded:
            return forwarded[-1]
    return str(meta.get("REMOTE_ADDR", ""))


def axes_username(request: HttpRequest, credentials: dict[str, Any] | None) -> str:
    """The user name axes counts failures under: as typed, trimmed and in lower case (user names
    are email addresses), so 'PI@x.edu' and 'pi@x.edu' share one counter."""
    value = ""
    if credentials:
        value = credentials.get("username") or ""
    if not value and request is not None:
        value = request.POST.get("username", "")
    return str(value).strip().lower()


class ContentSecurityPolicyMiddleware(CSPMiddleware):
    """django-csp's middleware. The policy of settings.CONTENT_SECURITY_POLICY holds everywhere; the
    Django admin (whose own and our admin templates use inline handlers and style attributes) gets
    'unsafe-inline' for scripts and styles, and nothing else."""

    def get_policy_parts(
        self, request: HttpRequest, response: HttpResponseBase, report_only: bool = False
    ) -> PolicyParts:
        parts = super().get_policy_parts(request, response, report_only)
        if not report_only and parts.update is None and parts.replace is None:
            prefixes = tuple(getattr(settings, "OPENCHARGEBACK_CSP_INLINE_PREFIXES", ()))
            if prefixes and request.path_info.startswith(prefixes):
                parts.update = {"script-src": [UNSAFE_INLINE], "style-src": [UNSAFE_INLINE]}
        return parts
