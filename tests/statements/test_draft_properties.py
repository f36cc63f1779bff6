"""Properties of the draft stages for any period of charges — any mix of PIs (or none), projects,
sources whose names differ only in case, services, credits and adjustments, review states,
exact amounts of either sign, quantities and units, rated or subsidised charges — checked on
the pure stages, without a database:

- a statement's totals are the sums of its lines, to the cent, and each line is its charges'
  exact sum rounded once;
- every billable charge lands on exactly one line of exactly one statement, and every charge
  is billed, held back, rejected or counted as billable by nobody;
- list − discount = billed, per line and per statement, and a rated line's discount by name
  adds up to its discount;
- the drafts do not depend on the order the charges are read in;
- comparing drafts with the versions in force puts each in exactly one place.
"""

from __future__ import annotations

import random
from collections import Counter, defaultdict
from decimal import Decimal

from hypothesis import given, settings
from hypothesis import strategies as st

from billing.rating.selectors import ChargeExplanation, LineExplanation
from chargeback.money import ZERO, round_currency
from statements.drafts import stages
from statements.drafts.comparison import drafts_compare
from statements.drafts.records import (
    ChargeGroup,
    ChargeRow,
    DraftInputs,
    PeriodDrafts,
    PIRef,
    ProjectRef,
    SourceRef,
)

from .test_draft_stages import STATES

# Display names that tie once lowercased, and one source without a display name.
SOURCES = {
    1: SourceRef(1, "aws", "Cloud"),
    2: SourceRef(2, "gcp", "cloud"),
    3: SourceRef(3, "hpc", ""),
    4: SourceRef(4, "storage", "Storage"),
}
PIS = {10: PIRef(10, "b@uni.edu", "B"), 11: PIRef(11, "a@uni.edu", "A"), 12: PIRef(12, "c@uni.edu")}
PROJECTS = {"p1": ProjectRef(1, "p1", "One", "F-P1"), "p2": ProjectRef(2, "p2", "Two")}
PROPERTY_SETTINGS = settings(max_examples=150, deadline=None, database=None)

# Up to ±10,000 with the 10 decimal places costs are stored with.
exact_money = st.integers(min_value=-(10**14), max_value=10**14).map(lambda n: Decimal(n).scaleb(-10))


def charge_rows(pis: list, projects: list, sources: list, services: list) -> st.SearchStrategy[tuple]:
    return st.tuples(
        st.sampled_from(pis),
        st.sampled_from(projects),
        st.sampled_from(["ok", "ok", "approved", "flagged", "rejected"]),
        st.sampled_from(sources),
        st.sampled_from(services),
        st.sampled_from(["Usage", "Usage", "Credit", "adjustment", "Purchase"]),
        st.sampled_from(["r1", "r2", "r3"]),
        st.one_of(st.none(), st.decimals(min_value=0, max_value=1000, places=3)),
        st.sampled_from(["h", "GB"]),
        exact_money,
        exact_money,
        st.sampled_from(["", "F-1", "F-2"]),
    )


explanations = st.builds(
    ChargeExplanation,
    unit=st.just("core-hour"),
    unit_price=st.one_of(st.none(), st.decimals(min_value=0, max_value=2, places=4)),
    quantity=st.decimals(min_value=0, max_value=10**6, places=2),
    reductions=st.lists(
        st.tuples(st.sampled_from(["Free allowance", "Startup", "Dean"]), exact_money.map(abs)), max_size=3
    ),
)


def with_explanations(rows: list[tuple]) -> st.SearchStrategy[tuple]:
    """The rows, and explanations (rating, subsidies) for some of them by index."""
    indexes = st.integers(0, max(len(rows) - 1, 0))
    return st.tuples(st.just(rows), st.dictionaries(indexes, explanations, max_size=len(rows)))


# Any period; and crowded ones (one PI, one project, names that tie) where lines collide.
wide = charge_rows([10, 11, 12, None], ["p1", "p2", "", "p3"], sorted(SOURCES), ["EC2", "ec2", "S3", "cpu"])
crowded = charge_rows([10, None], ["p1"], [1, 2, 3], ["EC2", "ec2"])
periods = st.one_of(st.lists(wide, max_size=40), st.lists(crowded, max_size=20)).flatmap(with_explanations)


def make_charges(raw: list[tuple]) -> list[ChargeRow]:
    return [
        ChargeRow(
            pi_id=pi,
            project_code=project,
            review_state=state,
            source_id=source,
            service_name=service,
            charge_category=category,
            resource_id=resource,
            resource_name="",
            quantity=quantity,
            unit=unit,
            list_cost=list_cost,
            billed_cost=billed,
            fund_org=fund,
            cost_center="",
            reference_1="",
            reference_2="",
            id=n,
        )
        for n, (
            pi,
            project,
            state,
            source,
            service,
            category,
            resource,
            quantity,
            unit,
            list_cost,
            billed,
            fund,
        ) in enumerate(raw)
    ]


def make_groups(charges: list[ChargeRow]) -> list[ChargeGroup]:
    by_key: dict[tuple[int | None, str], list[ChargeRow]] = defaultdict(list)
    for row in charges:
        by_key[(row.pi_id, row.project_code)].append(row)
    return [ChargeGroup(pi_id, code, tuple(rows)) for (pi_id, code), rows in by_key.items()]


def compute(groups: list[ChargeGroup], explained: dict[int, ChargeExplanation]) -> PeriodDrafts:
    return stages.drafts_compute(
        DraftInputs(
            currency="USD",
            states=STATES,
            pis=PIS,
            projects=PROJECTS,
            sources=SOURCES,
            groups=groups,
            explanations=explained,
            line_rating=LineExplanation,
        )
    )


def billable(row: ChargeRow) -> bool:
    return row.review_state in STATES.billable and row.pi_id is not None


@PROPERTY_SETTINGS
@given(period=periods)
def test_totals_are_the_sums_of_the_lines_each_rounded_once(period):
    raw, explained = period
    result = compute(make_groups(make_charges(raw)), explained)
    cent = Decimal("0.01")
    for draft in result.drafts.values():
        assert draft.billed_total == sum((ln.amount for ln in draft.lines), ZERO)
        assert draft.list_total == sum((ln.list_amount for ln in draft.lines), ZERO)
        assert draft.billed_total == draft.billed_total.quantize(cent)
        for line in draft.lines:
            assert line.amount == round_currency(line.billed_exact, "USD")
            assert line.list_amount == round_currency(line.list_exact, "USD")
        # The cent rule: the statement is off its exact sum by at most half a cent a line.
        exact = sum((ln.billed_exact for ln in draft.lines), ZERO)
        assert abs(draft.billed_total - exact) <= Decimal("0.005") * len(draft.lines)


@PROPERTY_SETTINGS
@given(period=periods)
def test_every_billable_charge_lands_on_exactly_one_line(period):
    raw, explained = period
    charges = make_charges(raw)
    result = compute(make_groups(charges), explained)
    expected: Counter = Counter()
    sums: dict[tuple, Decimal] = defaultdict(lambda: ZERO)
    for row in filter(billable, charges):
        key = (
            row.pi_id,
            row.project_code,
            row.source_id,
            row.service_name,
            stages.line_kind(row.charge_category),
        )
        expected[key] += 1
        sums[key] += row.billed_cost
    found: Counter = Counter()
    for (pi_id, code), draft in result.drafts.items():
        assert draft.charge_count == sum(ln.charge_count for ln in draft.lines)
        for line in draft.lines:
            key = (pi_id, code, line.source_id, line.service_name, line.kind)
            assert key not in found, "two lines for one source × service × kind"
            found[key] = line.charge_count
            assert line.billed_exact == sums[key]
    assert found == expected
    # Nothing is lost: each charge is billed, held back, rejected, or billable by nobody.
    assert sum(
        d.charge_count for d in result.drafts.values()
    ) + result.held_back_count + result.rejected_count + result.unbillable_count == len(charges)
    assert result.unbillable_count == sum(
        1 for row in charges if row.pi_id is None and row.review_state in STATES.billable
    )


@PROPERTY_SETTINGS
@given(period=periods)
def test_list_minus_discount_is_billed_and_named_discounts_add_up(period):
    raw, explained = period
    result = compute(make_groups(make_charges(raw)), explained)
    for draft in result.drafts.values():
        assert draft.list_total - draft.discount_total == draft.billed_total
        assert draft.discount_total == sum((ln.discount_amount for ln in draft.lines), ZERO)
        for line in draft.lines:
            assert line.list_amount - line.discount_amount == line.amount
            if line.rating:
                named = sum((Decimal(r["amount"]) for r in line.rating["reductions"]), ZERO)
                assert named == line.discount_amount


def _snapshot(result: PeriodDrafts) -> tuple:
    return (
        [(key, draft) for key, draft in result.drafts.items()],
        result.held_back_elsewhere,
        result.held_back_count,
        result.held_back_billed,
        result.rejected_count,
        result.rejected_billed,
        result.unbillable_count,
        result.unbillable_billed,
    )


@PROPERTY_SETTINGS
@given(period=periods, seed=st.integers(0, 2**32 - 1))
def test_the_drafts_do_not_depend_on_the_order_of_the_charges(period, seed):
    raw, explained = period
    charges = make_charges(raw)
    shuffled = list(charges)
    random.Random(seed).shuffle(shuffled)
    groups = make_groups(shuffled)
    random.Random(seed + 1).shuffle(groups)
    first, second = compute(make_groups(charges), explained), compute(groups, explained)
    assert _snapshot(first) == _snapshot(second)
    assert [d.content_hash for d in first.drafts.values()] == [d.content_hash for d in second.drafts.values()]
    # ... and the drafts come in order of PI email, then project.
    assert list(first.drafts) == sorted(first.drafts, key=lambda key: (PIS[key[0]].email, key[1]))


@PROPERTY_SETTINGS
@given(
    period=periods,
    fates=st.lists(st.sampled_from(["same", "other", "missing"]), max_size=40),
    withdrawn=st.integers(0, 3),
)
def test_each_draft_is_new_changed_or_unchanged_exactly_once(period, fates, withdrawn):
    raw, explained = period
    drafts = compute(make_groups(make_charges(raw)), explained).drafts
    current = {}
    for n, key in enumerate(drafts):
        fate = fates[n] if n < len(fates) else "missing"
        if fate != "missing":
            digest = drafts[key].content_hash if fate == "same" else "0" * 64
            current[key] = _Version(digest, "USD", n)
    for i in range(withdrawn):
        current[(99, f"old{i}")] = _Version("x", "USD", 100 - i)
    comparison = drafts_compare(drafts, current)
    placed = [d.key for d in comparison.new] + [d.key for d, _ in comparison.changed + comparison.unchanged]
    assert sorted(placed) == sorted(drafts)
    assert [d.key for d in comparison.new] == [key for key in drafts if key not in current]
    assert all(v.content_hash == d.content_hash for d, v in comparison.unchanged)
    assert all(v.content_hash != d.content_hash for d, v in comparison.changed)
    assert [v.sequence for v in comparison.withdrawn] == sorted(100 - i for i in range(withdrawn))


class _Version:
    def __init__(self, content_hash: str, currency: str, sequence: int) -> None:
        self.content_hash, self.currency, self.sequence = content_hash, currency, sequence
