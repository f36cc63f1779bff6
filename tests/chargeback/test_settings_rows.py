"""The settings rows are changed through one door: unknown or uneditable fields are refused and
nothing is written, on both settings rows."""

from __future__ import annotations

import pytest

from billing import selectors as billing_selectors
from billing import services as billing_services
from chargeback.errors import Refused
from journals import selectors as journal_selectors
from journals import services as journal_services

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize("field", ["no_such_field", "id", "updated_at"])
def test_billing_settings_refuse_a_field_they_do_not_edit(field):
    before = billing_selectors.billing_settings_get().currency_code
    with pytest.raises(Refused, match=f"unknown setting\\(s\\): {field}"):
        billing_services.billing_settings_update(currency_code="EUR", **{field: 1})
    assert billing_selectors.billing_settings_get().currency_code == before


@pytest.mark.parametrize("field", ["no_such_field", "id", "updated_at"])
def test_journal_settings_refuse_a_field_they_do_not_edit(field):
    before = journal_selectors.journal_settings_get().default_account
    with pytest.raises(Refused, match=f"unknown journal setting\\(s\\): {field}"):
        journal_services.journal_settings_update(default_account="4000", **{field: 1})
    assert journal_selectors.journal_settings_get().default_account == before


def test_a_known_change_is_saved():
    billing_services.billing_settings_update(currency_code="eur")
    journal_services.journal_settings_update(default_account=" 4000 ")
    assert billing_selectors.billing_settings_get().currency_code == "EUR"
    assert journal_selectors.journal_settings_get().default_account == "4000"
