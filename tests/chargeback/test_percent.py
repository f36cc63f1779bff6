"""The one discount-percentage rule (chargeback.percent), as statements, the portal and the admin show it."""

from __future__ import annotations

from decimal import Decimal

import pytest

from chargeback.percent import discount_percent, discount_percent_text, format_percent


@pytest.mark.parametrize(
    ("list_total", "discount", "shown"),
    [
        ("2720.00", "412.25", "15 %"),  # 15.156… % → whole percent
        ("200.00", "25.00", "13 %"),  # 12.5 % → half-up (half-even would say 12 %)
        ("1000.00", "4.50", "0.5 %"),  # 0.45 % → one decimal below 1 %, half-up
        ("100.00", "0.00", "0 %"),
        ("100.00", "100.00", "100 %"),
        ("100.00", "-5.00", "-5 %"),  # a surcharge
        ("0.00", "0.00", ""),  # nothing listed: no percentage
    ],
)
def test_discount_percent_text(list_total, discount, shown):
    assert discount_percent_text(Decimal(list_total), Decimal(discount)) == shown


def test_parts_of_the_rule():
    assert discount_percent(Decimal("200"), Decimal("25")) == Decimal("12.5")
    assert discount_percent(Decimal("0"), Decimal("1")) is None
    assert format_percent(None) == ""
    assert discount_percent_text(None, Decimal("1")) == "" and discount_percent_text(Decimal("1"), None) == ""
