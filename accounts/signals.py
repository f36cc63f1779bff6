"""Audit events of signing in and out: `login`, `logout`, `login_failed`, `login_locked_out`
(chargeback.logging.audit, one structured line each on the audit logger)."""

from __future__ import annotations

from typing import Any

from django.contrib.auth.signals import user_logged_in, user_logged_out, user_login_failed

from chargeback.logging import audit


def _client(request: Any) -> dict[str, Any]:
    if request is None:
        return {}
    from .security import client_ip

    meta = getattr(request, "META", {})
    return {
        "ip": client_ip(request),
        "path": getattr(request, "path", ""),
        "user_agent": meta.get("HTTP_USER_AGENT", "")[:200],
    }


def _logged_in(sender: Any, request: Any, user: Any, **kwargs: Any) -> None:
    backend = getattr(user, "backend", "") or ""
    audit(
        "login",
        actor=user.get_username(),
        method="sso" if "OIDC" in backend else "password",
        **_client(request),
    )


def _logged_out(sender: Any, request: Any, user: Any, **kwargs: Any) -> None:
    audit("logout", actor=user.get_username() if user is not None else "", **_client(request))


def _login_failed(sender: Any, credentials: dict[str, Any], request: Any = None, **kwargs: Any) -> None:
    username = str(credentials.get("username") or "").strip().lower()
    audit("login_failed", actor=username, **_client(request))


def _locked_out(
    sender: Any,
    request: Any = None,
    username: str | None = None,
    ip_address: str | None = None,
    **kwargs: Any,
) -> None:
    audit(
        "login_locked_out",
        actor=(username or "").lower(),
        ip=ip_address or "",
        path=getattr(request, "path", ""),
    )


def connect() -> None:
    from axes.signals import user_locked_out

    user_logged_in.connect(_logged_in, dispatch_uid="accounts.audit_login")
    user_logged_out.connect(_logged_out, dispatch_uid="accounts.audit_logout")
    user_login_failed.connect(_login_failed, dispatch_uid="accounts.audit_login_failed")
    user_locked_out.connect(_locked_out, dispatch_uid="accounts.audit_locked_out")
