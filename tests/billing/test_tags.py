"""Attribution from Tags (billing/ingest/tags.py): a key given twice names nobody and is flagged
"ambiguous tags", and the fast path (RE2 over plain objects) and the JSON path (json.loads) give
the same attribution for every input, which a property test checks against json.loads itself."""

from __future__ import annotations

import json
import re
from typing import Any

import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from billing import services
from billing.models import ChargeFlag, FlagReason, ReviewLog
from tests.billing.test_ingest import charges_of, focus_row, ingest, write_focus

ATTRIBUTION_FIELDS = ("pi_email", "project_code", "fund_org", "cost_center", "reference_1", "reference_2")
FIELD_SEPARATOR = "\x1f"
KEYS = {
    "pi_email": "pi_email",
    "project_code": "project_id",
    "fund_org": "fund_org",
    "cost_center": "cost_center",
    "reference_1": "grant_number",
    "reference_2": "request_id",
}
PREFIXES = ["user:", "tag:"]


@pytest.fixture
def aws(db):
    return services.source_create(slug="aws")


AMBIGUOUS_TAGS = {
    # The first value wins in a regex, the last in json.loads: neither may.
    "plain": '{"pi_email": "a@uni.example", "project_id": "p1", "pi_email": "b@uni.example", "fund_org": "F-1"}',
    # A backslash elsewhere sends the value through json.loads.
    "escaped": '{"pi_email": "a@uni.example", "note": "caf\\u00e9", "project_id": "p1", '
    '"pi_email": "b@uni.example", "fund_org": "F-1"}',
    # The same key with a provider prefix and in another case is the same key.
    "prefixed": '{"user:PI_Email": "a@uni.example", "project_id": "p1", "pi_email": "b@uni.example"}',
    "brace-less": '"pi_email": "a@uni.example", "project_id": "p1", "pi_email": "b@uni.example"',
}


@pytest.mark.parametrize("case", list(AMBIGUOUS_TAGS))
def test_a_repeated_attribution_key_names_nobody_and_is_flagged(aws, tmp_path, case):
    # A mapping of the sub-account would attribute an untagged row; an ambiguous one stays nobody's.
    services.account_mapping_set(
        sub_account_id="111122223333", project_id="mapped", pi_email="kim@uni.example", fund_org="NIH-3"
    )
    rows = [focus_row(Tags=AMBIGUOUS_TAGS[case])]
    (charge,) = charges_of(ingest(write_focus(tmp_path / "aws_2025-01.csv", rows)))
    assert (charge.pi_id, charge.project_id, charge.pi_email, charge.project_code) == (None, None, "", "")
    assert (charge.attribution_source, charge.review_state) == ("ambiguous", "flagged")
    assert charge.flag_summary == "ambiguous_tags"
    flags = list(ChargeFlag.objects.filter(charge=charge).values_list("reason", "detail"))
    assert flags == [(FlagReason.AMBIGUOUS_TAGS, "pi_email appears twice")]
    # What the reviewer sees is the file's Tags as they were.
    assert "b@uni.example" in json.dumps(charge.tags)


def test_ambiguous_until_a_reviewer_corrects_it(aws, tmp_path):
    rows = [focus_row(Tags=AMBIGUOUS_TAGS["plain"])]
    (charge,) = charges_of(ingest(write_focus(tmp_path / "aws_2025-01.csv", rows)))
    services.period_reevaluate_flags(period="2025-01")
    charge.refresh_from_db()
    assert charge.review_state == "flagged"
    assert list(ChargeFlag.objects.filter(charge=charge).values_list("detail", flat=True)) == [
        "pi_email appears twice"
    ]
    services.charge_correct_attribution(
        charge_id=charge.pk, pi_email="b@uni.example", project_id="p1", fund_org="F-1", note="asked the lab"
    )
    charge.refresh_from_db()
    assert (charge.pi_email, charge.project_code, charge.review_state) == ("b@uni.example", "p1", "ok")
    assert ReviewLog.objects.filter(charge=charge, action=ReviewLog.Action.CORRECT).exists()


def test_two_different_keys_twice_are_both_named(aws, tmp_path):
    text = '{"pi_email": "a@x.example", "project_id": "p", "project_id": "q", "pi_email": "a@x.example", "pi_email": "c@x.example"}'
    (charge,) = charges_of(ingest(write_focus(tmp_path / "aws_2025-01.csv", [focus_row(Tags=text)])))
    assert list(ChargeFlag.objects.filter(charge=charge).values_list("detail", flat=True)) == [
        "pi_email appears 3 times; project_id appears twice"
    ]


# --- both paths agree with json.loads ------------------------------------------------------------


class _Pairs(list):
    pass


def _expected(text: str) -> str | None:
    """The attribution json.loads gives (the rules of the module docstring), or None if malformed."""
    options: dict[str, Any] = {
        "object_pairs_hook": _Pairs,
        "parse_int": str,
        "parse_float": str,
        "parse_constant": str,
    }
    stripped = text.strip(" \t\r\n")
    try:
        value = json.loads(stripped, **options) if stripped else _Pairs()
    except ValueError:
        if stripped.startswith("{"):
            return None
        try:
            value = json.loads("{" + stripped + "}", **options)
        except ValueError:
            return None
    if not isinstance(value, _Pairs):
        return None
    found: dict[str, list] = {name: [] for name in ATTRIBUTION_FIELDS}
    for key, raw in value:
        for name, configured in KEYS.items():
            if re.fullmatch(f"(?:user:|tag:)?{re.escape(configured)}", key, re.IGNORECASE):
                found[name].append(raw)
    repeated = [(KEYS[name], len(v)) for name, v in found.items() if len(v) > 1]
    if repeated:
        words = [f"{key} appears {'twice' if n == 2 else f'{n} times'}" for key, n in repeated]
        return FIELD_SEPARATOR * len(ATTRIBUTION_FIELDS) + "; ".join(words)
    fields = []
    for name in ATTRIBUTION_FIELDS:
        raw = found[name][-1] if found[name] else None
        text_value = {True: "true", False: "false"}.get(raw, raw) if isinstance(raw, bool) else raw
        if not isinstance(text_value, str):
            text_value = ""
        text_value = text_value.replace(FIELD_SEPARATOR, "").strip()
        if text_value.lower() in ("null", "none"):
            text_value = ""
        fields.append(text_value.lower() if name == "pi_email" else text_value)
    return FIELD_SEPARATOR.join([*fields, ""])


KEY_NAMES = st.sampled_from(
    [
        *KEYS.values(),
        "PI_Email",
        "user:pi_email",
        "TAG:Project_ID",
        "user:user:pi_email",
        "pi_emails",
        " pi_email",
        "environment",
        "owner",
        "pi\\u005femail",  # an escaped key: json.loads decodes it to pi_email
    ]
)
# Printable text whose case and whitespace Python and pyarrow treat alike.
TEXT = st.text(alphabet=st.sampled_from(list('abcXYZ019 @.-_:,{}[]"\\é\t')), max_size=12)
NUMBERS = st.sampled_from(["0", "-1", "12345", "1.50", "1e3", "-0.0", "2E-7"])
SCALARS = st.one_of(
    TEXT.map(json.dumps),
    TEXT.map(lambda t: json.dumps(t, ensure_ascii=False)),
    NUMBERS,
    st.sampled_from(["true", "false", "null", '"null"', '"None"', '" Ada@Uni.Example "']),
)
VALUES = st.one_of(
    SCALARS,
    st.lists(SCALARS, max_size=2).map(lambda v: "[" + ", ".join(v) + "]"),
    st.lists(st.tuples(KEY_NAMES, SCALARS), max_size=2).map(
        lambda pairs: "{" + ", ".join(f'"{k}": {v}' for k, v in pairs) + "}"
    ),
)


@st.composite
def tag_texts(draw) -> str:
    pairs = draw(st.lists(st.tuples(KEY_NAMES, VALUES), max_size=6))
    space = draw(st.sampled_from(["", " ", "\n", "\t "]))
    body = f",{space}".join(f'"{k}"{space}:{space}{v}' for k, v in pairs)
    form = draw(st.sampled_from(["object", "object", "object", "brace-less", "padded", "broken"]))
    if form == "brace-less":
        return body
    if form == "padded":
        return f" \n{{{body}}}\t"
    if form == "broken":
        return "{" + body + draw(st.sampled_from(["", ",}", "]", '"}']))
    return "{" + body + "}"


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(tag_texts(), min_size=1, max_size=8, unique=True))
def test_fast_path_and_json_loads_agree(texts):
    from billing.ingest import tags

    assert (tags.ATTRIBUTION_FIELDS, tags.FIELD_SEPARATOR) == (ATTRIBUTION_FIELDS, FIELD_SEPARATOR)
    reader = tags.TagReader(keys=dict(KEYS), prefixes=PREFIXES)
    ids, problems = reader.attribution_ids(pa.array(texts, pa.string()))
    bad = {position for position, _ in problems}
    for position, text in enumerate(texts):
        expected = _expected(text)
        if expected is None:
            assert position in bad, text
            continue
        assert position not in bad, (text, problems)
        assert reader.attributions[ids[position]] == expected, text


# Plain objects: no backslash, nothing nested (what the fast path reads).
PLAIN_TEXT = st.text(alphabet=st.sampled_from(list("abcXYZ019 @.-_:,é")), max_size=12).map(
    lambda t: json.dumps(t, ensure_ascii=False)
)
PLAIN_SCALARS = st.one_of(
    PLAIN_TEXT, NUMBERS, st.sampled_from(["true", "false", "null", '"null"', '" Ada@Uni.Example "'])
)


@st.composite
def plain_tag_texts(draw) -> str:
    pairs = draw(st.lists(st.tuples(KEY_NAMES.filter(lambda k: "\\" not in k), PLAIN_SCALARS), max_size=6))
    space = draw(st.sampled_from(["", " ", "\n", "\t "]))
    body = f",{space}".join(f'"{k}"{space}:{space}{v}' for k, v in pairs)
    return draw(st.sampled_from(["", " ", "\n "])) + "{" + space + body + space + "}"


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(plain_tag_texts(), min_size=1, max_size=8))
def test_splitting_at_quotes_reads_what_the_regexes_read(texts):
    """Well-formed plain objects are read by splitting them at their quotes; the regexes (still used
    when pyarrow's reader refuses a batch) find the same values and the same key counts."""
    import pyarrow.compute as pc

    from billing.ingest import tags

    reader = tags.TagReader(keys=dict(KEYS), prefixes=PREFIXES)
    array = pa.array(texts, pa.string())
    assert pc.all(pc.match_substring_regex(array, tags._PLAIN)).as_py(), texts
    for text in texts:
        json.loads(text)  # well-formed (pyarrow's reader also refuses repeated keys: more than needed)
    assert reader._splittable()
    by_quotes, by_regex = reader._pairs_by_quotes(array), reader._pairs_by_regex(array)
    assert [v.to_pylist() for v in by_quotes[0]] == [v.to_pylist() for v in by_regex[0]], texts
    assert [c.tolist() for c in by_quotes[1]] == [c.tolist() for c in by_regex[1]], texts


def test_two_fields_on_one_key_count_as_the_regexes_do():
    """Two fields configured with one tag key: each finds it, and it appearing twice (one occurrence
    per field found) is not counted as ambiguous, as the regexes count."""
    from billing.ingest import tags

    keys = dict(KEYS, reference_1="project_id")
    array = pa.array(
        ['{"project_id": "p1", "x": 1}', '{"project_id": "p1", "project_id": "p2"}'], pa.string()
    )
    reader = tags.TagReader(keys=keys, prefixes=PREFIXES)
    by_quotes, by_regex = reader._pairs_by_quotes(array), reader._pairs_by_regex(array)
    assert [v.to_pylist() for v in by_quotes[0]] == [v.to_pylist() for v in by_regex[0]]
    assert [c.tolist() for c in by_quotes[1]] == [c.tolist() for c in by_regex[1]]


@pytest.mark.parametrize(
    ("key", "prefixes", "splittable"),
    [("pi_email", ["user:"], True), (":pi", [], False), ("pi", [" user:"], False), ('pi"x', [], False)],
)
def test_keys_that_could_match_across_strings_are_read_by_the_regexes(key, prefixes, splittable):
    from billing.ingest import tags

    reader = tags.TagReader(keys=dict(KEYS, pi_email=key), prefixes=prefixes)
    assert reader._splittable() is splittable


def test_a_batch_pyarrow_refuses_is_read_by_the_regexes_with_the_same_attribution():
    """A number too large for a double refuses pyarrow's reader for the whole batch (json.loads takes
    it): the regexes read the batch, and attribute as the quotes do."""
    from billing.ingest import tags

    texts = [
        '{"pi_email": "a@x.example", "n": 1e999}',
        '{"pi_email": "b@x.example", "pi_email": "c@x.example"}',
    ]
    assert not tags._valid_json_objects(pa.array(texts, pa.string()))
    reader = tags.TagReader(keys=dict(KEYS), prefixes=PREFIXES)
    ids, problems = reader.attribution_ids(pa.array(texts, pa.string()))
    assert problems == []
    parts = [reader.attributions[i].split(FIELD_SEPARATOR) for i in ids]
    assert [(p[0], p[-1]) for p in parts] == [("a@x.example", ""), ("", "pi_email appears twice")]
    # A repeated key, or a key of two types across objects, is no refusal: the quotes read those.
    assert tags._valid_json_objects(pa.array([texts[1], '{"n": 1}', '{"n": "one"}'], pa.string()))
    by_quotes = tags.TagReader(keys=dict(KEYS), prefixes=PREFIXES)
    (alone,), _ = by_quotes.attribution_ids(pa.array([texts[1]], pa.string()))
    assert by_quotes.attributions[alone] == reader.attributions[ids[1]]


def test_attribution_ids_are_exact_even_when_hashes_collide(monkeypatch):
    """The attribution index finds strings by hash but confirms each: with every hash equal it
    falls back to exact lookups, and gives the same ids as without collisions."""
    texts = [
        json.dumps({"pi_email": f"pi{i % 7}@uni.example", "grant_number": f"G{i % 11}"}) for i in range(200)
    ]

    from billing.ingest import tags

    def make_reader() -> tags.TagReader:
        return tags.TagReader(keys=dict(KEYS), prefixes=PREFIXES)

    def ids_of_batches(reader: tags.TagReader) -> list[list[int]]:
        return [
            reader.attribution_ids(pa.array(sorted(set(texts[start : start + 50])), pa.string()))[0].tolist()
            for start in range(0, len(texts), 50)
        ]

    plain = make_reader()
    expected = ids_of_batches(plain)
    monkeypatch.setattr(tags, "hash", lambda text: 42, raising=False)
    colliding = make_reader()
    assert ids_of_batches(colliding) == expected
    assert colliding.attributions == plain.attributions
    assert len(set(plain.attributions)) == len(plain.attributions) == 1 + 7 * 11


def test_the_attribution_index_numbers_strings_in_order_of_first_sight_across_batches():
    """Known strings keep their id in later batches, new ones are numbered after the last: as a
    dict would number them (batches overlap, and each holds distinct strings)."""
    import random

    from billing.ingest import tags

    rng = random.Random(7)
    index, reference = tags.AttributionIndex(), {tags.NO_ATTRIBUTION: 0}
    for _ in range(30):
        batch = list(dict.fromkeys(f"a{rng.randrange(400)}" for _ in range(rng.randrange(1, 60))))
        ids = index.ids_of(pa.array(batch, pa.string())).tolist()
        assert ids == [reference.setdefault(text, len(reference)) for text in batch]
    assert index.values().to_pylist() == list(reference)
