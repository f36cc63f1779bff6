"""Journal descriptions are cut to the configured length at a word boundary, never mid-word."""

from __future__ import annotations

import pytest

from journals import services
from journals.entries import cut_at_word, format_text

from .conftest import parse

pytestmark = pytest.mark.django_db

TEMPLATE = "{source} {period} Research Computing Charges"


@pytest.mark.parametrize(
    ("text", "limit", "expected"),
    [
        ("AWS 2025-01 Research Computing Charges", 35, "AWS 2025-01 Research Computing"),
        ("AWS 2025-01 Research Computing Charges", 38, "AWS 2025-01 Research Computing Charges"),
        ("AWS 2025-01 Research Computing Charges", 30, "AWS 2025-01 Research Computing"),  # ends on a word
        ("AWS 2025-01 Research Computing Charges", 29, "AWS 2025-01 Research"),
        ("AWS 2025-01 Research Computing Charges", 3, "AWS"),
        ("AWS 2025-01 Research Computing Charges", 2, "AW"),  # one word longer than the limit: no boundary
        ("", 5, ""),
        ("short", 5, "short"),
    ],
)
def test_cut_at_word(text, limit, expected):
    assert cut_at_word(text, limit) == expected
    assert len(cut_at_word(text, limit)) <= limit


def test_every_cut_ends_on_a_whole_word():
    text = "Azure 2025-01 Research Computing Charges for grix.mottershaw +3"
    words = text.split()
    for limit in range(len(words[0]), len(text) + 1):
        cut = cut_at_word(text, limit)
        assert cut.split() == words[: len(cut.split())], (limit, cut)


def test_format_text_fills_one_line_and_cuts_at_a_word():
    values = {"source": "Azure", "period": "2025-01"}
    assert format_text(TEMPLATE, values, 35) == "Azure 2025-01 Research Computing"
    assert format_text("{source}\t{period}\nx", values) == "Azure 2025-01 x"


def test_exported_descriptions_keep_whole_words(journal_month):
    export = services.journal_export(period="2025-01", format="gl")
    with export.file.open("rb") as handle:
        rows = parse(handle.read().decode())
    descriptions = [row[8] for row in rows[1:]]
    assert descriptions and all(len(d) <= 35 for d in descriptions)
    for description in descriptions:
        assert not description.endswith(("Char", "Comput", "Resear")), description
