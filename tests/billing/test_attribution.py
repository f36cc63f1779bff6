"""Attribution worked out column-wise (billing/ingest/attribution.py): who pays for each charge
when tags, project owners, per-sub-account mappings and nobody meet in one file."""

from __future__ import annotations

import json

import pyarrow as pa
import pytest

from billing import services
from billing.ingest import attribution
from billing.ingest.attribution import _joined
from billing.models import PI, Charge, ChargeFlag, Import, Project
from tests.billing.test_ingest import charges_of, focus_row, ingest, tags, write_focus
from tests.factories import ProjectFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def aws(db):
    return services.source_create(slug="aws")


def test_one_attribution_on_two_sub_accounts_is_resolved_per_sub_account(aws, tmp_path):
    services.account_mapping_set(
        sub_account_id="111100001111", project_id="mapped-lab", pi_email="kim@uni.example", fund_org="NIH-3"
    )
    same_tags = tags(environment="prod")
    rows = [
        focus_row(ResourceId="r-mapped", SubAccountId="111100001111", Tags=same_tags),
        focus_row(ResourceId="r-unmapped", SubAccountId="999900009999", Tags=same_tags),
        focus_row(ResourceId="r-mapped-2", SubAccountId="111100001111", Tags=same_tags, BilledCost="1.25"),
    ]
    charges = {c.resource_id: c for c in charges_of(ingest(write_focus(tmp_path / "aws.csv", rows)))}

    for resource in ("r-mapped", "r-mapped-2"):
        charge = charges[resource]
        assert (charge.pi_email, charge.project_code, charge.fund_org, charge.attribution_source) == (
            "kim@uni.example",
            "mapped-lab",
            "NIH-3",
            "mapping",
        )
        assert (charge.review_state, charge.flag_summary) == ("ok", "")
    unmapped = charges["r-unmapped"]
    assert (unmapped.pi_id, unmapped.project_id, unmapped.attribution_source) == (None, None, "none")
    assert (unmapped.review_state, unmapped.flag_summary) == ("flagged", "unattributed")
    assert list(ChargeFlag.objects.values_list("charge__resource_id", "reason")) == [
        ("r-unmapped", "unattributed")
    ]


def test_a_new_project_belongs_to_the_first_pi_naming_it(aws, tmp_path):
    rows = [
        focus_row(
            ResourceId="r-1", Tags=tags(pi_email="ada@uni.example", project_id="shared", fund_org="NSF-1")
        ),
        focus_row(
            ResourceId="r-2", Tags=tags(pi_email="bo@uni.example", project_id="shared", fund_org="NSF-2")
        ),
        focus_row(ResourceId="r-3", Tags=tags(project_id="shared")),
    ]
    first, second, untagged_pi = charges_of(ingest(write_focus(tmp_path / "aws.csv", rows)))

    project = Project.objects.get(project_id="shared")
    assert (project.pi.email, project.fund_org) == ("ada@uni.example", "NSF-1")
    assert (first.pi, first.project, first.review_state) == (project.pi, project, "ok")
    # Tags naming another PI still bill that PI, flagged for the reviewer.
    assert (second.pi.email, second.project, second.fund_org) == ("bo@uni.example", project, "NSF-2")
    assert (second.review_state, second.flag_summary) == ("flagged", "project_pi_mismatch")
    # Tags naming only the project bill its owner, with the project's fund/org.
    assert (untagged_pi.pi, untagged_pi.fund_org, untagged_pi.attribution_source) == (
        project.pi,
        "NSF-1",
        "project",
    )
    assert set(PI.objects.values_list("email", flat=True)) == {"ada@uni.example", "bo@uni.example"}


def test_project_owner_fills_only_what_tags_leave_empty(aws, tmp_path):
    ProjectFactory(
        project_id="known",
        pi__email="lin@uni.example",
        fund_org="DOE-7",
        cost_center="CC-1",
        reference_1="REF-A",
        reference_2="REF-B",
    )
    rows = [focus_row(Tags=tags(project_id="known", cost_center="CC-9", request_id="REF-Z"))]
    (charge,) = charges_of(ingest(write_focus(tmp_path / "aws.csv", rows)))
    assert (charge.pi_email, charge.fund_org, charge.cost_center, charge.reference_1, charge.reference_2) == (
        "lin@uni.example",
        "DOE-7",
        "CC-9",
        "REF-A",
        "REF-Z",
    )


def test_control_characters_in_tag_values_do_not_shift_fields(aws, tmp_path):
    text = json.dumps({"pi_email": "ada@uni.example", "project_id": "p\x1fq", "fund_org": "NSF\x1e-1"})
    assert "\\u001f" in text  # escaped in the file, as JSON requires
    (charge,) = charges_of(ingest(write_focus(tmp_path / "aws.csv", [focus_row(Tags=text)])))
    assert (charge.pi_email, charge.project_code, charge.fund_org) == ("ada@uni.example", "pq", "NSF\x1e-1")


def test_joined_keys_differ_whenever_a_value_differs():
    left = [pa.array(["a\x1f", "a", "x\x1e", "x"]), pa.array(["b", "\x1fb", "\x1fy", "\x1e\x1fy"])]
    keys = _joined(*left).to_pylist()
    assert len(set(keys)) == 4


def test_attributions_resolved_a_chunk_at_a_time_resolve_as_all_at_once(aws, tmp_path, monkeypatch):
    """A file's millions of attributions are resolved RESOLVE_CHUNK at a time (memory follows the
    chunk): PIs, new projects (owned by the first PI naming them, even in a later chunk), account
    mappings, flags and payers come out exactly as when resolved at once."""
    services.account_mapping_set(
        sub_account_id="111100001111", project_id="mapped-lab", pi_email="kim@uni.example", fund_org="NIH-3"
    )
    # The same new project named from several chunks: the first attribution's PI owns it.
    rows = [
        focus_row(
            ResourceId="s-1", Tags=tags(pi_email="ada@uni.example", project_id="shared", fund_org="F-1")
        )
    ]
    rows += [
        focus_row(ResourceId=f"r-{i:02d}", Tags=tags(pi_email=f"pi{i % 3}@uni.example", fund_org=f"G{i}"))
        for i in range(12)
    ] + [
        focus_row(
            ResourceId="s-2", Tags=tags(pi_email="bo@uni.example", project_id="shared", fund_org="F-2")
        ),
        focus_row(ResourceId="s-3", Tags=tags(project_id="shared")),
        focus_row(ResourceId="m-1", SubAccountId="111100001111", Tags=tags(environment="prod")),
        focus_row(ResourceId="m-2", SubAccountId="999900009999", Tags=tags(environment="prod")),
        focus_row(ResourceId="x-1", Tags=tags(pi_email="n/a", project_id="shared")),
        focus_row(ResourceId="x-2", Tags='{"pi_email": "a@uni.example", "pi_email": "b@uni.example"}'),
    ]
    rows += [
        focus_row(ResourceId=f"r-{i:02d}", Tags=tags(pi_email="zed@uni.example", fund_org="late"))
        for i in range(3)
    ]
    path = write_focus(tmp_path / "aws.csv", rows)
    fields = ("resource_id", "pi__email", "project__project_id", "pi_email", "project_code", "fund_org")
    fields += ("attribution_source", "review_state", "flag_summary", "billed_cost", "tags")

    def run() -> tuple[list, list, list]:
        ingest(path, force=True)
        charges = sorted(Charge.objects.values_list(*fields), key=repr)
        flags = sorted(ChargeFlag.objects.values_list("charge__resource_id", "reason", "detail"))
        owners = sorted(Project.objects.values_list("project_id", "pi__email", "fund_org"))
        Charge.objects.all().delete()
        Import.objects.all().delete()
        Project.objects.exclude(project_id="mapped-lab").delete()
        return charges, flags, owners

    at_once = run()
    monkeypatch.setattr(attribution, "RESOLVE_CHUNK", 4)
    chunks = []
    real_chunk = attribution._AttributionChunks._chunk
    monkeypatch.setattr(
        attribution._AttributionChunks,
        "_chunk",
        lambda self, start, stop: chunks.append(stop - start) or real_chunk(self, start, stop),
    )
    in_chunks = run()

    assert len(chunks) > 3 * 4 and max(chunks) == 4  # really a chunk at a time, in three passes
    assert in_chunks == at_once
    owners = at_once[2]
    assert ("shared", "ada@uni.example", "F-1") in owners
    assert {c[0]: c[6] for c in at_once[0]}["m-1"] == "mapping"
