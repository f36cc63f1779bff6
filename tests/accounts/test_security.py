"""Login security: lockout after 5 failures (django-axes), audited logins/logouts/failures,
security headers and the Content Security Policy, `check --deploy` with production settings,
single sign-on mapping the email claim."""

from __future__ import annotations

import logging
import os
import secrets
import subprocess
import sys
from pathlib import Path

import pytest
from django.test import Client
from django.urls import reverse

from tests.accounts.conftest import PASSWORD, client_for

pytestmark = pytest.mark.django_db
ROOT = Path(__file__).resolve().parents[2]


def _events(caplog, name: str) -> list[logging.LogRecord]:
    return [r for r in caplog.records if getattr(r, "event", "") == name]


def _login(client: Client, username: str, password: str):
    return client.post(reverse("portal:login"), {"username": username, "password": password})


def test_login_logout_are_audited(world, caplog):
    client = Client()
    with caplog.at_level(logging.INFO, logger="openchargeback.audit"):
        response = _login(client, "ADA@university.example ", PASSWORD)  # case and spaces do not matter
        assert response.status_code == 302 and response["Location"] == reverse("portal:home")
        assert client.get(reverse("portal:home")).status_code == 200
        assert client.post(reverse("portal:logout")).status_code == 302
    login = _events(caplog, "login")
    assert len(login) == 1 and login[0].actor == "ada@university.example" and login[0].method == "password"
    assert login[0].ip == "127.0.0.1"
    assert _events(caplog, "logout")[0].actor == "ada@university.example"
    assert client.get(reverse("portal:home")).status_code == 302  # signed out


def test_lockout_after_five_failed_logins(world, caplog):
    client = Client()
    with caplog.at_level(logging.INFO, logger="openchargeback.audit"):
        for attempt in range(5):
            response = _login(client, world.user_a.username, f"wrong {attempt}")
            assert response.status_code in (200, 429), response.status_code
        # The right password no longer helps: the account is locked.
        locked = _login(client, world.user_a.username, PASSWORD)
    assert locked.status_code == 429
    assert "Too many failed sign-ins" in locked.content.decode()
    assert "_auth_user_id" not in client.session
    assert len(_events(caplog, "login_failed")) >= 5
    assert {r.actor for r in _events(caplog, "login_failed")} == {"ada@university.example"}
    assert _events(caplog, "login_locked_out")
    assert not _events(caplog, "login")
    # Other case, same account: still locked (user names compared in lower case).
    assert _login(Client(), "Ada@University.example", PASSWORD).status_code == 429
    # Another user (another browser) is not affected.
    assert _login(Client(HTTP_USER_AGENT="other"), world.user_b.username, PASSWORD).status_code == 302

    from axes.models import AccessAttempt

    assert AccessAttempt.objects.filter(
        username="ada@university.example", failures_since_start__gte=5
    ).exists()


def test_four_failures_then_success_resets(world):
    client = Client()
    for attempt in range(4):
        _login(client, world.user_a.username, f"wrong {attempt}")
    assert _login(client, world.user_a.username, PASSWORD).status_code == 302
    client.post(reverse("portal:logout"))
    for attempt in range(4):
        _login(client, world.user_a.username, f"again {attempt}")
    assert _login(client, world.user_a.username, PASSWORD).status_code == 302


def test_admin_login_is_protected_too(world):
    from django.contrib.auth import get_user_model

    get_user_model().objects.create_user(
        "staff@university.example", "staff@university.example", PASSWORD, is_staff=True
    )
    client = Client()
    for attempt in range(5):
        client.post(
            reverse("admin:login"), {"username": "staff@university.example", "password": f"no {attempt}"}
        )
    response = client.post(
        reverse("admin:login"), {"username": "staff@university.example", "password": PASSWORD}
    )
    assert response.status_code == 429


def test_test_client_login_still_works(world):
    """authenticate() without a request (shell, test client) is not a web sign-in: allowed."""
    client = Client()
    assert client.login(username=world.user_a.username, password=PASSWORD)
    assert client.get(reverse("portal:home")).status_code == 200


def test_inactive_pi_cannot_sign_in(world):
    world.user_b.is_active = False
    world.user_b.save()
    response = _login(Client(), world.user_b.username, PASSWORD)
    assert response.status_code == 200 and "_auth_user_id" not in response.wsgi_request.session


# --- headers --------------------------------------------------------------------------------


def test_portal_security_headers_and_csp(world):
    response = client_for(world.user_a).get(reverse("portal:home"))
    csp = response["Content-Security-Policy"]
    directives = dict(part.strip().split(" ", 1) for part in csp.split(";") if part.strip())
    assert directives["default-src"] == "'self'"
    assert directives["script-src"] == "'self'" and directives["style-src"] == "'self'"
    assert directives["frame-ancestors"] == "'none'" and directives["object-src"] == "'none'"
    assert "unsafe-inline" not in csp
    assert response["X-Frame-Options"] == "DENY"
    assert response["X-Content-Type-Options"] == "nosniff"
    assert response["Referrer-Policy"] == "same-origin"
    assert response["Cross-Origin-Opener-Policy"] == "same-origin"
    login = Client().get(reverse("portal:login"))
    assert "unsafe-inline" not in login["Content-Security-Policy"]


def test_admin_csp_allows_its_inline_scripts_and_styles(world):
    from django.contrib.auth import get_user_model

    admin = get_user_model().objects.create_superuser("root", "root@university.example", PASSWORD)
    client = client_for(admin)
    for url in (
        reverse("admin:index"),
        reverse("admin:billing_charge_changelist"),
        reverse("admin:statements_statement_changelist"),
    ):
        response = client.get(url)
        assert response.status_code == 200, url
        csp = response["Content-Security-Policy"]
        assert "script-src 'self' 'unsafe-inline'" in csp and "style-src 'self' 'unsafe-inline'" in csp
        assert "frame-ancestors 'none'" in csp and "nonce-" not in csp


# --- check --deploy -------------------------------------------------------------------------


def _deploy_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("OPENCHARGEBACK_CONFIG", "DATABASE_URL")}
    env.update(
        {
            "DEBUG": "false",
            "SECRET_KEY": secrets.token_urlsafe(50),
            "ALLOWED_HOSTS": "billing.example.edu",
            "CSRF_TRUSTED_ORIGINS": "https://billing.example.edu",
            "TRUST_X_FORWARDED_PROTO": "true",
            "OPENCHARGEBACK_BASE_URL": "https://billing.example.edu",
            "OPENCHARGEBACK_DATA_DIR": str(tmp_path / "data"),
            "DJANGO_SETTINGS_MODULE": "chargeback.settings",
            **extra,
        }
    )
    return env


def test_check_deploy_is_clean_with_production_settings(tmp_path):
    result = subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=ROOT,
        env=_deploy_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "System check identified no issues" in result.stdout


def test_production_settings_values(tmp_path):
    code = (
        "import django, json; django.setup(); from django.conf import settings as s; "
        "print(json.dumps([s.SESSION_COOKIE_SECURE, s.CSRF_COOKIE_SECURE, s.SECURE_SSL_REDIRECT, "
        "s.SECURE_HSTS_SECONDS, s.SESSION_COOKIE_NAME, s.SECURE_PROXY_SSL_HEADER[0]]))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env=_deploy_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    import json

    assert json.loads(result.stdout) == [
        True,
        True,
        True,
        31536000,
        "__Host-sessionid",
        "HTTP_X_FORWARDED_PROTO",
    ]


def test_deploy_check_flags_the_development_setup(tmp_path):
    """Without HTTPS settings the same check fails: the clean run above is not vacuous."""
    env = _deploy_env(tmp_path, TRUST_X_FORWARDED_PROTO="false")
    result = subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode != 0
    assert "security.W012" in result.stderr + result.stdout  # SESSION_COOKIE_SECURE


# --- single sign-on -------------------------------------------------------------------------


@pytest.fixture
def oidc(settings):
    settings.OIDC_RP_CLIENT_ID = "openchargeback"
    settings.OIDC_RP_CLIENT_SECRET = "secret"
    settings.OIDC_OP_TOKEN_ENDPOINT = "https://idp.example.edu/token"
    settings.OIDC_OP_USER_ENDPOINT = "https://idp.example.edu/userinfo"
    settings.OIDC_OP_JWKS_ENDPOINT = "https://idp.example.edu/jwks"
    settings.OIDC_RP_SIGN_ALGO = "RS256"
    from billing.sso import PortalOIDCBackend

    return PortalOIDCBackend()


def test_sso_maps_the_email_claim_to_the_pi(world, oidc):
    from billing.services.users import pi_users_ensure
    from tests.factories import PIFactory

    assert list(oidc.filter_users_by_claims({"email": "ADA@university.example"})) == [world.user_a]
    # A PI without a user yet: the user is created; the IdP vouches for the address.
    carol = PIFactory(email="carol@university.example")
    users = list(oidc.filter_users_by_claims({"email": "carol@university.example", "email_verified": True}))
    carol.refresh_from_db()
    assert users == [carol.user] and carol.user.is_active
    # A PI user created by an import (no password yet) signs in the same way.
    dave = PIFactory(email="dave@university.example")
    pi_users_ensure(pi_ids=[dave.pk])
    dave.refresh_from_db()
    assert not dave.user.has_usable_password()
    assert list(oidc.filter_users_by_claims({"email": "dave@university.example"})) == [dave.user]
    # Nobody else: no account for strangers, none for unverified addresses.
    assert not oidc.filter_users_by_claims({"email": "stranger@elsewhere.example"}).exists()
    assert not oidc.verify_claims({"email": "ada@university.example", "email_verified": False})
    assert oidc.create_user({"email": "stranger@elsewhere.example"}) is None
    # A disabled account stays disabled.
    world.user_b.is_active = False
    world.user_b.save()
    assert not oidc.filter_users_by_claims({"email": world.user_b.email}).exists()


def test_sso_is_off_by_default(settings):
    assert settings.OIDC_ENABLED is False
    assert "billing.sso.PortalOIDCBackend" not in settings.AUTHENTICATION_BACKENDS
    html = Client().get(reverse("portal:login")).content.decode()
    assert "Sign in with" not in html


def test_sso_settings_when_enabled(tmp_path):
    code = (
        "import django; django.setup(); from django.conf import settings as s; from django.urls import reverse; "
        "print(s.AUTHENTICATION_BACKENDS[-1], reverse('oidc_authentication_init'), s.OIDC_RP_CLIENT_ID)"
    )
    env = _deploy_env(
        tmp_path,
        OIDC_ENABLED="true",
        OIDC_RP_CLIENT_ID="ocb",
        OIDC_RP_CLIENT_SECRET="s3cret",
        OIDC_OP_AUTHORIZATION_ENDPOINT="https://idp.example.edu/auth",
        OIDC_OP_TOKEN_ENDPOINT="https://idp.example.edu/token",
        OIDC_OP_USER_ENDPOINT="https://idp.example.edu/userinfo",
        OIDC_OP_JWKS_ENDPOINT="https://idp.example.edu/jwks",
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["billing.sso.PortalOIDCBackend", "/oidc/authenticate/", "ocb"]


def test_client_ip_behind_the_proxy(settings, rf):
    from accounts.security import client_ip

    request = rf.get("/", HTTP_X_FORWARDED_FOR="6.6.6.6, 10.1.2.3", REMOTE_ADDR="127.0.0.1")
    settings.OPENCHARGEBACK_CLIENT_IP_FROM_PROXY = False
    assert client_ip(request) == "127.0.0.1"
    settings.OPENCHARGEBACK_CLIENT_IP_FROM_PROXY = True
    assert client_ip(request) == "10.1.2.3"  # the proxy's entry, not the client's claim
    assert client_ip(rf.get("/", REMOTE_ADDR="127.0.0.2")) == "127.0.0.2"


# --- CSRF -----------------------------------------------------------------------------------


def test_writes_without_a_csrf_token_are_refused(world):
    """Every form that writes (portal and admin) needs Django's CSRF token."""
    from django.contrib.auth import get_user_model

    from accounts.models import Delegation

    portal = Client(enforce_csrf_checks=True)
    portal.force_login(world.user_a)
    response = portal.post(
        reverse("portal:delegates"), {"email": "x@university.example", "projects": [str(world.a1.pk)]}
    )
    assert response.status_code == 403
    assert not Delegation.objects.filter(delegate__username="x@university.example").exists()
    admin_user = get_user_model().objects.create_superuser("root", "root@university.example", PASSWORD)
    admin = Client(enforce_csrf_checks=True)
    admin.force_login(admin_user)
    assert admin.post(reverse("admin:billing_import_upload"), {}).status_code == 403
    assert admin.post(reverse("admin:billing_charge_decide"), {"action": "approve"}).status_code == 403
