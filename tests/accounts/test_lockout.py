"""Login lockout by user name and by client address: rotating the user agent (or spraying many
user names) from one address no longer escapes it (accounts.security.LockoutHandler)."""

from __future__ import annotations

import pytest
from django.test import Client
from django.urls import reverse

from tests.accounts.conftest import PASSWORD

pytestmark = pytest.mark.django_db


def _login(username: str, password: str, *, agent: str, address: str = "203.0.113.7") -> int:
    client = Client(HTTP_USER_AGENT=agent, REMOTE_ADDR=address)
    return client.post(reverse("portal:login"), {"username": username, "password": password}).status_code


def test_rotating_the_user_agent_does_not_reset_the_user_name_lockout(world):
    for attempt in range(5):
        _login(world.user_a.username, f"wrong {attempt}", agent=f"agent {attempt}")
    assert _login(world.user_a.username, PASSWORD, agent="a fresh agent") == 429
    assert _login(world.user_a.username, PASSWORD, agent="another", address="198.51.100.1") == 429


def test_one_address_spraying_names_with_rotating_agents_is_locked(world, settings):
    settings.OPENCHARGEBACK_LOGIN_ADDRESS_FAILURE_LIMIT = 20
    for attempt in range(19):
        status = _login(f"guess{attempt}@university.example", "Winter2025!", agent=f"agent {attempt}")
        assert status == 200, attempt  # each name and agent is new: only the address adds up
    assert _login("guess19@university.example", "Winter2025!", agent="agent 19") == 429
    # Locked: even a right password from that address, with yet another agent.
    assert _login(world.user_b.username, PASSWORD, agent="agent 20") == 429
    # Another address is not affected, nor are the user names tried.
    assert _login(world.user_b.username, PASSWORD, agent="agent 21", address="198.51.100.1") == 302


def test_colleagues_behind_one_address_mistyping_do_not_lock_each_other_out(world):
    for attempt in range(4):
        _login(world.user_a.username, f"typo {attempt}", agent="firefox")
    for attempt in range(4):
        _login(world.user_b.username, f"typo {attempt}", agent="safari")
    assert _login(world.user_a.username, PASSWORD, agent="firefox") == 302
    assert _login(world.user_b.username, PASSWORD, agent="safari") == 302
