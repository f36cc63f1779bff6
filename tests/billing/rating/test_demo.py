"""The demo's rates and subsidies, and its sample usage files (fixtures/demo/usage/)."""

from __future__ import annotations

from decimal import Decimal

import pytest

from billing.rating import selectors, services
from billing.services import source_create
from chargeback.management.commands.demo import DEMO_RATES, DEMO_SOURCES, seed_rating

pytestmark = pytest.mark.django_db


@pytest.fixture
def seeded(db):
    for slug, name in DEMO_SOURCES:
        source_create(slug=slug, display_name=name)
    first = seed_rating()
    assert seed_rating() == {**first, "rates_added": 0, "subsidies_added": 0}  # idempotent
    return first


def test_the_demo_seeds_rates_that_price_its_sample_usage(seeded, demo_dir):
    assert seeded["rates_added"] == len(DEMO_RATES) and len(selectors.rates_in_effect(at="2026-11")) == len(
        DEMO_RATES
    )
    slurm = services.usage_rate(
        kind="slurm",
        path=demo_dir / "usage" / "sacct_2026-11.txt",
        period="2026-11",
        source="hpc",
        dry_run=True,
    )
    rows = {(r.usage.resource_id, r.unit): r for r in slurm.rows}
    # 64 CPUs × 24 h + 32 CPUs × the hour after midnight on Nov 1 = 1,568 core-hours at $0.0250, fully subsidised.
    standard = rows[("nguyen_lab/standard", "core-hour")]
    assert (standard.quantity, standard.list_cost, standard.billed) == (
        Decimal("1568"),
        Decimal("39.2"),
        Decimal("0"),
    )
    assert rows[("nguyen_lab/gpu", "gpu-hour")].quantity == Decimal("40")  # 4 GPUs × 10 h, typed and untyped
    assert rows[("rossi_lab/gpu", "gpu-hour")].quantity == Decimal("10")  # 2 typed GPUs × 5 h
    assert rows[("visitor_lab/standard", "core-hour")].project_code == ""  # not a mapped account
    storage = services.usage_rate(
        kind="storage",
        path=demo_dir / "usage" / "quota_2026-11.csv",
        period="2026-11",
        source="storage",
        dry_run=True,
    )
    assert storage.list_total == Decimal("1312.5") and storage.billed_total == Decimal("881.25")
