"""The draft stages one by one, from hand-built records: no database (pytest-django refuses any
query here, since nothing is marked django_db)."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

from billing.rating.selectors import ChargeExplanation, LineExplanation
from statements.drafts import stages
from statements.drafts.comparison import drafts_compare
from statements.drafts.records import (
    ChargeGroup,
    ChargeRow,
    DraftInputs,
    DraftLine,
    HeldBack,
    PeriodDrafts,
    PIRef,
    ProjectRef,
    ReviewStates,
    SourceRef,
    StatementDraft,
)
from tests.chargeback.test_layers import ROOT, imports_of

D = Decimal
STATES = ReviewStates(billable=frozenset({"ok", "approved"}), held_back="flagged", rejected="rejected")
SOURCES = {1: SourceRef(1, "aws", "AWS"), 2: SourceRef(2, "hpc", ""), 3: SourceRef(3, "azure", "Azure")}
ALICE = PIRef(10, "alice@uni.edu", "Alice", "Physics")
BOB = PIRef(11, "bob@uni.edu", "Bob", "Biology")
PROJECT = ProjectRef(5, "astro", "Astro survey", "F-PROJECT", "CC-PROJECT", "R1-PROJECT", "")

_ids = iter(range(1, 10**6))


def charge(
    billed: str = "1",
    *,
    list_cost: str | None = None,
    pi_id: int | None = 10,
    project: str = "astro",
    state: str = "ok",
    source: int = 1,
    service: str = "EC2",
    category: str = "Usage",
    resource: str = "i-1",
    name: str = "",
    quantity: str | None = "1",
    unit: str = "h",
    fund_org: str = "",
    cost_center: str = "",
    reference_1: str = "",
    reference_2: str = "",
    id: int | None = None,
) -> ChargeRow:
    return ChargeRow(
        pi_id=pi_id,
        project_code=project,
        review_state=state,
        source_id=source,
        service_name=service,
        charge_category=category,
        resource_id=resource,
        resource_name=name,
        quantity=None if quantity is None else D(quantity),
        unit=unit,
        list_cost=D(list_cost if list_cost is not None else billed),
        billed_cost=D(billed),
        fund_org=fund_org,
        cost_center=cost_center,
        reference_1=reference_1,
        reference_2=reference_2,
        id=id if id is not None else next(_ids),
    )


def group(*rows: ChargeRow, pi_id: int | None = 10, project: str = "astro") -> ChargeGroup:
    return ChargeGroup(pi_id, project, rows)


def inputs(*groups: ChargeGroup, **extra) -> DraftInputs:
    return DraftInputs(
        currency=extra.pop("currency", "USD"),
        states=STATES,
        pis={10: ALICE, 11: BOB},
        projects={"astro": PROJECT},
        sources=SOURCES,
        groups=groups,
        **extra,
    )


# --- the pure module ---------------------------------------------------------------------------


def test_the_stages_and_records_import_no_database_code():
    """Only the standard library, the money rules and each other: the stages can run anywhere."""
    for name in ("stages", "records", "comparison"):
        path = ROOT / "statements" / "drafts" / f"{name}.py"
        imported = imports_of(path.read_text(), f"statements.drafts.{name}", False, Path(ROOT))
        project = {
            m for m in imported if m.split(".")[0] in ("billing", "statements", "chargeback", "django")
        }
        assert project <= {"chargeback.money", "statements.drafts.records"}, (name, project)


# --- grouping and triage -----------------------------------------------------------------------


def test_line_kind_keeps_credits_and_adjustments_apart():
    assert [stages.line_kind(c) for c in ("Usage", "", " credit ", "ADJUSTMENT", "Purchase")] == [
        "",
        "",
        "Credit",
        "Adjustment",
        "",
    ]


def test_charge_groups_are_consecutive_rows_of_one_pi_and_project():
    rows = [charge(pi_id=None, project=""), charge(pi_id=10), charge(pi_id=10), charge(pi_id=11, project="x")]
    found = list(stages.charge_groups(rows))
    assert [(g.pi_id, g.project_code, len(g.charges)) for g in found] == [
        (None, "", 1),
        (10, "astro", 2),
        (11, "x", 1),
    ]
    assert found[1].charges == tuple(rows[1:3])


def test_triage_bills_ok_and_approved_holds_back_flagged_and_excludes_rejected():
    rows = [
        charge("1.10"),
        charge("2.20", state="approved"),
        charge("3.30", state="flagged"),
        charge("4.40", state="rejected"),
        charge("5.50", state="someday"),  # a state the statement does not know: left out
    ]
    triage = stages.charges_triage(group(*rows), STATES)
    assert triage.billable == rows[:2]
    assert (triage.held_count, triage.held_exact) == (1, D("3.30"))
    assert (triage.rejected_count, triage.rejected_exact) == (1, D("4.40"))
    assert (triage.unbillable_count, triage.unbillable_exact) == (0, D(0))


def test_triage_of_charges_without_a_pi_bills_nobody():
    rows = [
        charge("1", pi_id=None),
        charge("2", pi_id=None, state="approved"),
        charge("4", pi_id=None, state="flagged"),
    ]
    triage = stages.charges_triage(group(*rows, pi_id=None), STATES)
    assert triage.billable == []
    assert (triage.unbillable_count, triage.unbillable_exact) == (2, D("3"))
    assert (triage.held_count, triage.held_exact) == (1, D("4"))


# --- accounting --------------------------------------------------------------------------------


def test_most_common_ignores_empty_values_and_breaks_ties_by_the_smallest():
    assert stages.most_common({"B": 2, "A": 2, "": 5, "C": 1}) == "A"
    assert stages.most_common({"": 3}) == ""


def test_accounting_is_what_most_charges_carry_else_the_projects():
    rows = [
        charge(fund_org="F-1", reference_1="R-a"),
        charge(fund_org="F-2", reference_1="R-a"),
        charge(fund_org="F-2"),
        charge(fund_org=""),
    ]
    picked = stages.accounting_pick(rows, PROJECT)
    assert picked == stages.Accounting("F-2", "CC-PROJECT", "R-a", "")
    assert stages.accounting_pick([charge()], None) == stages.Accounting()


# --- lines -------------------------------------------------------------------------------------


def test_lines_gather_sums_exactly_per_source_service_and_kind():
    rows = [
        charge("0.0050000001", list_cost="0.01"),
        charge("0.0050000001", list_cost="0.01"),
        charge("-2", category="Credit"),
        charge("3", source=2, service="cpu"),
        charge("1", service="S3"),
    ]
    tallies = stages.lines_gather(rows)
    assert {key: (t.charge_count, t.list_exact, t.billed_exact) for key, t in tallies.items()} == {
        (1, "EC2", ""): (2, D("0.02"), D("0.0100000002")),
        (1, "EC2", "Credit"): (1, D("-2"), D("-2")),
        (2, "cpu", ""): (1, D("3"), D("3")),
        (1, "S3", ""): (1, D("1"), D("1")),
    }
    assert all(t.rating is None for t in tallies.values())


@dataclass
class _Rating:
    """A stand-in for billing.rating's LineExplanation: records what it was given."""

    added: list
    asked: list

    def add(self, item) -> None:
        self.added.append(item)

    def as_json(self, **amounts) -> dict:
        self.asked.append(amounts)
        return {"explained": len(self.added)}


def test_lines_gather_hands_each_explained_charge_to_its_lines_rating():
    made: list[_Rating] = []

    def factory() -> _Rating:
        made.append(_Rating([], []))
        return made[-1]

    rows = [charge("1", id=1), charge("2", id=2), charge("3", id=3, service="S3")]
    tallies = stages.lines_gather(rows, explanations={1: "one", 2: "two"}, line_rating=factory)
    assert len(made) == 1 and made[0].added == ["one", "two"]
    assert tallies[(1, "S3", "")].rating is None
    lines = stages.lines_round(tallies, SOURCES, "USD")
    assert [ln.rating for ln in lines] == [{"explained": 2}, {}]
    assert made[0].asked == [
        {"list_exact": D("3"), "billed_exact": D("3"), "discount": D("0.00"), "currency": "USD"}
    ]


def test_lines_round_once_per_line_half_up_and_in_order():
    rows = [
        # three charges of half a cent: the line is 1.5 cents, billed 2 cents (not 3, nor 0)
        *(charge("0.005", list_cost="0.01") for _ in range(3)),
        charge("-1.005", category="Credit"),
        charge("2.125", source=2, service="cpu"),
        charge("1.004", source=3, service="VM"),
        charge("0.994", source=1, service="Athena", category="Adjustment"),
    ]
    lines = stages.lines_round(stages.lines_gather(rows), SOURCES, "USD")
    assert [(ln.source_name, ln.service_name, ln.kind, ln.list_amount, ln.amount) for ln in lines] == [
        ("AWS", "Athena", "Adjustment", D("0.99"), D("0.99")),
        ("AWS", "EC2", "", D("0.03"), D("0.02")),
        ("AWS", "EC2", "Credit", D("-1.01"), D("-1.01")),
        ("Azure", "VM", "", D("1.00"), D("1.00")),
        ("hpc", "cpu", "", D("2.13"), D("2.13")),  # no display name: the slug
    ]
    usage = lines[1]
    assert (usage.charge_count, usage.billed_exact, usage.discount_amount) == (3, D("0.015"), D("0.01"))


def test_lines_round_to_the_currencys_minor_unit():
    lines = stages.lines_round(stages.lines_gather([charge("1234.5"), charge("0.4")]), SOURCES, "JPY")
    assert [ln.amount for ln in lines] == [D("1235")]


def test_lines_round_orders_names_differing_in_case_the_same_whatever_the_input_order():
    sources = {1: SourceRef(1, "a", "Cloud"), 2: SourceRef(2, "b", "cloud")}
    rows = [charge(source=2, service="ec2"), charge(source=1, service="EC2"), charge(source=1, service="ec2")]
    orders = {
        tuple(
            (ln.source_id, ln.service_name)
            for ln in stages.lines_round(stages.lines_gather(r), sources, "USD")
        )
        for r in (rows, rows[::-1])
    }
    assert orders == {((1, "EC2"), (1, "ec2"), (2, "ec2"))}


def test_rated_lines_split_their_discount_by_name_to_the_cent():
    explanation = ChargeExplanation(
        unit="core-hour", unit_price=D("0.02"), quantity=D("100"), reductions=[("Startup", D("1.505"))]
    )
    rows = [charge("0.495", list_cost="2", id=1, source=2, service="cpu")]
    tallies = stages.lines_gather(rows, explanations={1: explanation}, line_rating=LineExplanation)
    (line,) = stages.lines_round(tallies, SOURCES, "USD")
    assert (line.list_amount, line.discount_amount, line.amount) == (D("2.00"), D("1.50"), D("0.50"))
    assert line.rating["reductions"] == [{"name": "Startup", "amount": "1.50"}]
    assert line.rating["usage"][0]["text"] == "100 core-hours @ $0.0200"


# --- details -----------------------------------------------------------------------------------


def test_details_sum_per_resource_and_drop_the_quantity_when_units_disagree():
    rows = [
        charge("1.5", resource="i-1", quantity="2", unit="h", name="web"),
        charge("2.25", resource="i-1", quantity="3.50", unit="h", name="web"),
        charge("1", resource="i-2", quantity="1", unit="h"),
        charge("1", resource="i-2", quantity="1", unit="GB"),
        charge("1", resource="i-3", quantity=None),
        charge("-1", resource="i-1", category="Credit", name="web"),
        charge("4", source=2, service="cpu", resource="job", quantity="10", unit="core-hour"),
    ]
    assert stages.details_gather(rows, SOURCES) == [
        ["hpc", "cpu", "", "job", "", "10", "core-hour", "4", "4", 1],  # '' sorts first (no display name)
        ["AWS", "EC2", "", "i-1", "web", "5.5", "h", "3.75", "3.75", 2],
        ["AWS", "EC2", "", "i-2", "", None, "", "2", "2", 2],
        ["AWS", "EC2", "", "i-3", "", None, "", "1", "1", 1],
        ["AWS", "EC2", "Credit", "i-1", "web", "1", "h", "-1", "-1", 1],
    ]


# --- the draft ---------------------------------------------------------------------------------


def _draft(*rows: ChargeRow, **overrides) -> StatementDraft:
    triage = stages.charges_triage(group(*rows), STATES)
    fields = {
        "pi": ALICE,
        "project_code": "astro",
        "project": PROJECT,
        "currency": "USD",
        "triage": triage,
        "accounting": stages.accounting_pick(triage.billable, PROJECT),
        "lines": stages.lines_round(stages.lines_gather(triage.billable), SOURCES, "USD"),
        "details": stages.details_gather(triage.billable, SOURCES),
        **overrides,
    }
    return stages.draft_assemble(**fields)


def test_the_draft_totals_are_the_sums_of_its_rounded_lines():
    # Two lines of 0.005 each: billed 0.01 + 0.01 = 0.02, although the charges sum to 0.01.
    draft = _draft(
        charge("0.005", list_cost="0.015"), charge("0.005", service="S3"), charge("9", state="flagged")
    )
    assert [ln.amount for ln in draft.lines] == [D("0.01"), D("0.01")]
    assert (draft.list_total, draft.billed_total, draft.discount_total) == (D("0.03"), D("0.02"), D("0.01"))
    assert (draft.charge_count, draft.held_back_count, draft.held_back_amount) == (2, 1, D("9.00"))
    assert (draft.pi_email, draft.project_id, draft.project_name, draft.fund_org) == (
        "alice@uni.edu",
        5,
        "Astro survey",
        "F-PROJECT",
    )
    assert draft.key == (10, "astro") and len(draft.content_hash) == 64


def test_the_content_hash_changes_with_what_the_statement_says_and_only_then():
    base = _draft(charge("1", id=1), charge("2", id=2))
    assert _draft(charge("2", id=7), charge("1", id=8)).content_hash == base.content_hash
    assert _draft(charge("1"), charge("2.0000000001")).content_hash != base.content_hash
    assert _draft(charge("1"), charge("2"), pi=BOB).content_hash != base.content_hash
    assert _draft(charge("1"), charge("2"), charge("1", state="flagged")).content_hash != base.content_hash
    # An empty rating is no rating: statements issued before rating existed keep their hash.
    lines = [DraftLine(**{**vars(ln), "rating": {}}) for ln in base.lines]
    assert stages.content_hash(StatementDraft(**{**vars(base), "lines": lines})) == base.content_hash
    rated = [DraftLine(**{**vars(ln), "rating": {"usage": []}}) for ln in base.lines]
    assert stages.content_hash(StatementDraft(**{**vars(base), "lines": rated})) != base.content_hash


def test_group_draft_of_a_group_with_nothing_billable_is_what_it_holds_back():
    triage, held = stages.group_draft(
        group(charge("3", state="flagged"), charge("1", state="rejected")), inputs()
    )
    assert held == HeldBack("alice@uni.edu", "astro", 1, D("3"))
    assert triage.rejected_count == 1
    _triage, nobody = stages.group_draft(
        group(charge("3", state="flagged", pi_id=None), pi_id=None), inputs()
    )
    assert nobody == HeldBack("", "astro", 1, D("3"))
    assert stages.group_draft(group(charge(state="rejected")), inputs())[1] is None


# --- the period --------------------------------------------------------------------------------


def test_drafts_compute_orders_by_pi_and_project_and_tallies_the_period():
    groups = [
        group(charge("2", pi_id=11, project="zeta"), pi_id=11, project="zeta"),
        group(
            charge("5", pi_id=None, project=""),
            charge("6", pi_id=None, project="", state="rejected"),
            pi_id=None,
            project="",
        ),
        group(charge("1", project="astro"), charge("7", state="flagged")),
        group(charge("8", pi_id=11, project="beta", state="flagged"), pi_id=11, project="beta"),
    ]
    result = stages.drafts_compute(inputs(*groups), period="2025-01")
    assert isinstance(result, PeriodDrafts) and result.period == "2025-01"
    assert list(result.drafts) == [(10, "astro"), (11, "zeta")]
    assert [(h.pi_email, h.project_code, h.count, h.billed) for h in result.held_back_elsewhere] == [
        ("bob@uni.edu", "beta", 1, D("8"))
    ]
    assert (result.held_back_count, result.held_back_billed) == (2, D("15"))
    assert (result.rejected_count, result.rejected_billed) == (1, D("6"))
    assert (result.unbillable_count, result.unbillable_billed) == (1, D("5"))
    assert result.drafts[(10, "astro")].held_back_count == 1


def test_drafts_compute_explains_rated_charges_with_the_inputs_line_rating():
    explanation = ChargeExplanation(unit="core-hour", unit_price=D("0.5"), quantity=D("4"))
    result = stages.drafts_compute(
        inputs(group(charge("2", id=99)), explanations={99: explanation}, line_rating=LineExplanation)
    )
    (line,) = result.drafts[(10, "astro")].lines
    assert line.rating == {
        "usage": [{"quantity": "4", "unit": "core-hour", "price": "0.5", "text": "4 core-hours @ $0.5000"}],
        "reductions": [],
    }


@dataclass(frozen=True)
class _Version:
    content_hash: str
    currency: str
    sequence: int


def test_drafts_compare_sorts_drafts_into_new_changed_unchanged_and_withdrawn():
    drafts = stages.drafts_compute(
        inputs(
            group(charge("1")),
            group(charge("2", pi_id=11, project="a"), pi_id=11, project="a"),
            group(charge("3", pi_id=11, project="b"), pi_id=11, project="b"),
            group(charge("4", pi_id=11, project="c"), pi_id=11, project="c"),
        )
    ).drafts
    same = _Version(drafts[(11, "a")].content_hash, "USD", 2)
    other_currency = _Version(drafts[(11, "b")].content_hash, "EUR", 3)
    changed = _Version("0" * 64, "USD", 1)
    gone_late, gone_early = _Version("x", "USD", 9), _Version("y", "USD", 4)
    comparison = drafts_compare(
        drafts,
        {
            (11, "a"): same,
            (11, "b"): other_currency,
            (11, "c"): changed,
            (12, "old"): gone_late,
            (13, "old"): gone_early,
        },
    )
    assert [d.key for d in comparison.new] == [(10, "astro")]
    assert comparison.unchanged == [(drafts[(11, "a")], same)]
    assert comparison.changed == [(drafts[(11, "b")], other_currency), (drafts[(11, "c")], changed)]
    assert comparison.withdrawn == [gone_early, gone_late]
