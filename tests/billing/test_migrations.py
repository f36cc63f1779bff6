"""Billing migrations that do more than change the schema."""

from __future__ import annotations

import importlib
from types import SimpleNamespace

import pytest
from django.db import connection

from tests.factories import ChargeFactory

pytestmark = pytest.mark.django_db

period_state_billed = importlib.import_module("billing.migrations.0012_charge_period_state_billed_index")


def _measured_indexes() -> set[str]:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'sqlite_stat1'")
        if cursor.fetchone() is None:
            return set()
        cursor.execute("SELECT idx FROM sqlite_stat1 WHERE tbl = 'billing_charge'")
        return {row[0] for row in cursor.fetchall()}


@pytest.mark.skipif("connection.vendor != 'sqlite'", reason="SQLite's ANALYZE figures")
def test_the_new_index_is_measured_only_where_the_charge_table_was():
    ChargeFactory()
    new = period_state_billed.NEW_INDEX
    period_state_billed.analyze_the_new_index(None, SimpleNamespace(connection=connection))
    assert new not in _measured_indexes()  # never measured: the planner's defaults stay consistent

    with connection.cursor() as cursor:
        cursor.execute("ANALYZE billing_charge")
        cursor.execute("DELETE FROM sqlite_stat1 WHERE idx = %s", [new])
    assert new not in _measured_indexes() and _measured_indexes()
    period_state_billed.analyze_the_new_index(None, SimpleNamespace(connection=connection))
    assert new in _measured_indexes()
