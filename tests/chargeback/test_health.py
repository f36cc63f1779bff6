"""/healthz: 200 {"status": "ok"} or 503 {"status": "unavailable"}, and not a word more."""

from __future__ import annotations

import os
import socket

import pytest
from django.db import connections
from django.test import Client
from django.urls import reverse

pytestmark = pytest.mark.django_db


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_ok(client: Client, settings):
    settings.CELERY_BROKER_URL = ""
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.content == b'{"status": "ok"}'
    assert response["Content-Type"] == "application/json"
    assert response["Cache-Control"] == "no-store"
    assert reverse("healthz") == "/healthz"


def test_head_and_trailing_slash(client: Client, settings):
    settings.CELERY_BROKER_URL = ""
    assert client.head("/healthz").status_code == 200
    assert client.get("/healthz/").status_code == 200


def test_answers_whatever_the_host_and_https_settings(client: Client, settings):
    """Load balancers probe by IP address over plain HTTP."""
    settings.CELERY_BROKER_URL = ""
    settings.ALLOWED_HOSTS = ["billing.example.edu"]
    settings.SECURE_SSL_REDIRECT = True
    response = client.get("/healthz", HTTP_HOST="10.0.0.7:8000")
    assert response.status_code == 200
    # Other pages still obey ALLOWED_HOSTS.
    assert client.get("/admin/login/", HTTP_HOST="10.0.0.7:8000").status_code == 400


def test_no_session_cookie_and_no_other_headers_of_note(client: Client, settings):
    settings.CELERY_BROKER_URL = ""
    response = client.get("/healthz")
    assert not response.cookies
    assert "Server" not in response
    assert "X-Powered-By" not in response


def test_database_down_is_503_without_details(client: Client, settings, monkeypatch):
    settings.CELERY_BROKER_URL = ""

    def broken_cursor(*args, **kwargs):
        raise RuntimeError("could not connect to server: secret-host.internal:5432 password=hunter2")

    monkeypatch.setattr(connections["default"], "cursor", broken_cursor)
    response = client.get("/healthz")
    assert response.status_code == 503
    assert response.content == b'{"status": "unavailable"}'


def test_broker_down_is_503(client: Client, settings):
    settings.CELERY_BROKER_URL = f"redis://127.0.0.1:{_free_port()}/0"
    response = client.get("/healthz")
    assert response.status_code == 503
    assert response.content == b'{"status": "unavailable"}'


@pytest.mark.skipif(
    not os.environ.get("OPENCHARGEBACK_TEST_REDIS_URL"), reason="needs OPENCHARGEBACK_TEST_REDIS_URL"
)
def test_broker_up_is_ok(client: Client, settings):
    settings.CELERY_BROKER_URL = os.environ["OPENCHARGEBACK_TEST_REDIS_URL"]
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.content == b'{"status": "ok"}'


def test_other_methods_are_refused(client: Client, settings):
    settings.CELERY_BROKER_URL = ""
    response = client.post("/healthz")
    assert response.status_code == 405
    assert response["Allow"] == "GET, HEAD"
