from __future__ import annotations

import pytest

from billing.models import PI
from billing.selectors import billing_settings_get
from chargeback.actors import actor_fields, actor_label
from tests.factories import UserFactory


@pytest.mark.django_db
def test_actor_label():
    assert actor_label(UserFactory(username="kim")) == "kim"
    assert actor_label(None, "web:upload") == "web:upload"
    assert actor_label().startswith("cli")
    assert PI.objects.count() == 0
    assert billing_settings_get().currency_code == "USD"


@pytest.mark.django_db
def test_actor_fields_keep_only_a_signed_in_user():
    user = UserFactory(username="kim")
    assert actor_fields(user, "ignored") == {"actor": user, "actor_name": "kim"}
    assert actor_fields(None, "cli:root") == {"actor": None, "actor_name": "cli:root"}
