"""Rates and subsidies: adding, editing, looking up (services, selectors and the CLI)."""

from __future__ import annotations

from decimal import Decimal

import pytest

from billing.models import Source
from billing.rating import selectors, services
from billing.rating.models import Rate, Subsidy
from billing.rating.subsidies import SubsidyLedger
from chargeback.errors import Refused
from tests.cli import run
from tests.factories import SourceFactory

pytestmark = pytest.mark.django_db


def test_rate_add_creates_the_source_on_first_sight_and_keeps_exact_values():
    rate, created = services.rate_add(
        source="HPC", unit="core-hour", price="0.0200", effective_from="2025-07", free_quantity="100.5"
    )
    assert created and Source.objects.get(slug="hpc") == rate.source
    rate.refresh_from_db()
    assert rate.price == Decimal("0.0200") and rate.free_quantity == Decimal("100.5") and rate.tier == ""
    _, created_again = services.rate_add(
        source="hpc", unit="gpu-hour", price="1.5", tier="gpu", effective_from="2025-07"
    )
    assert not created_again


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"unit": "node-hour"}, "unknown unit 'node-hour'"),
        ({"price": "-1"}, "must be at least 0"),
        ({"price": "0.00001"}, "at most 4 decimal places"),
        ({"price": "abc"}, "not a number"),
        ({"price": "1e20"}, "too large"),
        ({"effective_from": "2025-13"}, "use YYYY-MM"),
        ({"free_quantity": "0.0000001"}, "at most 6 decimal places"),
    ],
)
def test_rate_add_refuses_bad_input_and_writes_nothing(values, message):
    arguments = {"source": "hpc", "unit": "core-hour", "price": "0.02", "effective_from": "2025-07", **values}
    with pytest.raises(Refused, match=message):
        services.rate_add(**arguments)
    assert not Rate.objects.exists()


def test_a_second_rate_for_the_same_month_is_refused():
    services.rate_add(source="hpc", unit="core-hour", price="0.02", effective_from="2025-07")
    with pytest.raises(Refused, match="already has a core-hour rate from 2025-07"):
        services.rate_add(source="hpc", unit="core-hour", price="0.03", effective_from="2025-07")
    assert Rate.objects.count() == 1


def test_the_rate_in_effect_is_the_newest_from_its_month_and_a_tier_falls_back_to_no_tier():
    hpc = SourceFactory(slug="hpc")
    services.rate_add(source="hpc", unit="core-hour", price="0.02", effective_from="2025-01")
    services.rate_add(source="hpc", unit="core-hour", price="0.03", effective_from="2025-07")
    services.rate_add(source="hpc", unit="core-hour", price="0.01", tier="gpu", effective_from="2025-03")
    june, july = selectors.rate_table(hpc, "2025-06"), selectors.rate_table(hpc, "2025-07")
    assert selectors.rate_for(june, "core-hour", "cpu").price == Decimal("0.02")
    assert selectors.rate_for(july, "core-hour", "cpu").price == Decimal("0.03")
    assert selectors.rate_for(july, "core-hour", "gpu").price == Decimal("0.01")
    assert selectors.rate_for(selectors.rate_table(hpc, "2025-02"), "core-hour", "gpu").price == Decimal(
        "0.02"
    )
    assert selectors.rate_for(july, "gpu-hour", "gpu") is None
    assert selectors.rate_table(hpc, "2024-12") == {}


def test_rate_update_changes_price_only_and_an_unused_rate_can_be_deleted():
    rate, _ = services.rate_add(source="hpc", unit="core-hour", price="0.02", effective_from="2025-01")
    updated = services.rate_update(rate_id=rate.pk, price="0.025", note="board decision")
    assert updated.price == Decimal("0.025") and updated.note == "board decision"
    with pytest.raises(Refused, match="cannot change effective_from"):
        services.rate_update(rate_id=rate.pk, effective_from="2025-02")
    services.rate_delete(rate_id=rate.pk)
    assert not Rate.objects.exists()


def test_rates_cli_add_and_list(settings):
    result = run("rates", "add", "hpc", "core-hour", "0.02", "--from", "2025-07", "--free", "100")
    assert result.code == 0, result.err
    assert "New source 'hpc'" in result.out and "$0.0200 from 2025-07, first 100 free" in result.out
    assert run("rates", "add", "hpc", "gpu-hour", "1.5", "--tier", "gpu", "--from", "2025-07").code == 0
    assert run("rates", "add", "hpc", "core-hour", "0.025", "--from", "2026-01").code == 0
    listed = run("rates", "list", "hpc", "--at", "2025-09", "--format", "json").json()
    assert [(r["unit"], r["tier"], r["price"]) for r in listed["rates"]] == [
        ("core-hour", "", "0.0200"),
        ("gpu-hour", "gpu", "1.5000"),
    ]
    everything = run("rates", "list").out
    assert "$0.0250" in everything and "$0.0200" in everything and "IN EFFECT" in everything
    refused = run("rates", "add", "hpc", "core-hour", "0.00001")
    assert refused.code == 1 and "at most 4 decimal places" in refused.err
    assert run("rates", "add", "hpc", "furlong-hour", "1").code == 2


def test_subsidy_add_normalises_and_refuses_bad_input():
    SourceFactory(slug="hpc")
    subsidy = services.subsidy_add(
        name=" New Faculty Startup ",
        percent="75",
        pis=["Ada@Uni.edu", "ada@uni.edu"],
        projects=["p2", "p1"],
        cap="5000",
        source="hpc",
        effective_from="2025-07",
    )
    assert (
        subsidy.name == "New Faculty Startup"
        and subsidy.pis == ["ada@uni.edu"]
        and subsidy.projects == ["p1", "p2"]
    )
    assert subsidy.cap == Decimal("5000")
    for values, message in [
        ({"percent": "0"}, "must be more than 0"),
        ({"percent": "100.01"}, "at most 100"),
        ({"percent": "12.345"}, "at most 2 decimal places"),
        ({"pis": ["not-an-email"]}, "invalid PI email"),
        ({"effective_until": "2025-06"}, "would end"),
        ({"source": "nosuch"}, "nosuch"),
        ({"name": "New Faculty Startup"}, "already exists"),
    ]:
        with pytest.raises(Refused, match=message):
            services.subsidy_add(**{"name": "Other", "percent": "10", "effective_from": "2025-07", **values})
    assert Subsidy.objects.count() == 1


def test_subsidies_in_effect_follow_their_months_and_order():
    hpc = SourceFactory(slug="hpc")
    aws = SourceFactory(slug="aws")
    services.subsidy_add(name="B", percent="10", effective_from="2025-01", position=20)
    services.subsidy_add(name="A", percent="10", effective_from="2025-01", position=20, source="hpc")
    services.subsidy_add(
        name="First", percent="10", effective_from="2025-03", effective_until="2025-04", position=1
    )
    assert [s.name for s in selectors.subsidies_in_effect(period="2025-03", source=hpc)] == [
        "First",
        "A",
        "B",
    ]
    assert [s.name for s in selectors.subsidies_in_effect(period="2025-05", source=hpc)] == ["A", "B"]
    assert [s.name for s in selectors.subsidies_in_effect(period="2025-03", source=aws)] == ["First", "B"]


def test_the_ledger_applies_in_order_to_what_is_left_and_stops_at_the_cap():
    first = services.subsidy_add(name="Dept", percent="50", effective_from="2025-01", position=1)
    second = services.subsidy_add(
        name="Startup", percent="75", effective_from="2025-01", position=2, cap="100"
    )
    ledger = SubsidyLedger([first, second], {(second.pk, "p1"): Decimal("90")})
    applied = ledger.apply(billed=Decimal("100"), project_code="p1", pi_email="a@x.edu")
    # 50 % of 100, then 75 % of the 50 left = 37.50, but only 10 of the cap remain.
    assert [(a.subsidy.name, a.amount) for a in applied] == [
        ("Dept", Decimal("50")),
        ("Startup", Decimal("10")),
    ]
    assert ledger.apply(billed=Decimal("10"), project_code="p1", pi_email="a@x.edu")[1:] == []
    assert ledger.apply(billed=Decimal("10"), project_code="", pi_email="a@x.edu") == []  # no project
    assert ledger.apply(billed=Decimal("-5"), project_code="p1", pi_email="a@x.edu") == []  # a credit


def test_subsidies_cli_add_and_list():
    result = run(
        "subsidies",
        "add",
        "New Faculty Startup",
        "--percent",
        "75",
        "--pi",
        "a@uni.edu",
        "b@uni.edu",
        "--project",
        "p1",
        "--cap",
        "5000",
        "--from",
        "2025-07",
        "--until",
        "2026-06",
    )
    assert result.code == 0, result.err
    assert "75 % off (every source; projects p1; PIs a@uni.edu, b@uni.edu), 2025-07 – 2026-06" in result.out
    listed = run("subsidies", "list", "--format", "json").json()["subsidies"][0]
    assert listed["cap"] == {"amount": "5000.0000000000", "cents": 500000} and listed["pis"] == [
        "a@uni.edu",
        "b@uni.edu",
    ]
    assert run("subsidies", "list", "--at", "2026-07", "--format", "json").json()["subsidies"] == []
    refused = run("subsidies", "add", "X", "--percent", "150")
    assert refused.code == 1 and "at most 100" in refused.err
