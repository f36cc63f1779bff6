"""`generate` and `send`: text and JSON output, dry run, refusals (exit code 1)."""

from __future__ import annotations

import io
import json

import pytest
from django.core.management import call_command

from billing import services as billing_services
from chargeback.commands import CommandRefused
from statements.models import Delivery, Statement

from .conftest import REFERENCE_PIS

pytestmark = pytest.mark.django_db


def run(*args: str) -> tuple[str, str]:
    out, err = io.StringIO(), io.StringIO()
    call_command(*args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


def test_generate_text_lists_statements_and_leaves_the_period_open(reference_month):
    out, _err = run("generate", "-p", "2025-01")
    assert out.startswith("10 statements of 2025-01: 10 new, 0 revised, 0 unchanged")
    assert reference_month.__class__.objects.get(pk=reference_month.pk).status == "open"
    assert "2025-01-0009 v1" in out and "$2,307.75" in out
    assert "Total due $20,227.00" in out
    assert "Rendered 10 PDFs of 10." in out
    assert Statement.objects.filter(pdf="").count() == 0


def test_generate_dry_run_json_writes_nothing(reference_month):
    out, _err = run("generate", "-p", "2025-01", "--dry-run", "--format", "json")
    doc = json.loads(out)
    assert doc["dry_run"] is True and "closed_period" not in doc
    assert doc["counts"] == {"statements": 10, "new": 10, "revised": 0, "unchanged": 0, "withdrawn": 0}
    assert doc["totals"]["billed"] == {"amount": "20227.00", "cents": 2022700}
    genomics = next(s for s in doc["statements"] if s["project_id"] == "genomics-sequencing")
    assert genomics["list"]["cents"] == 272000 and genomics["discount"]["cents"] == 41225
    assert genomics["billed"]["cents"] == 230775 and genomics["pdf"] is None
    assert not Statement.objects.exists()
    assert reference_month.__class__.objects.get(pk=reference_month.pk).status == "open"


def test_generate_send_json(reference_month, smtp_server):
    out, _err = run("generate", "-p", "2025-01", "--send", "--format", "json")
    doc = json.loads(out)
    assert doc["run"]["rendered"] == 10
    assert sorted(d["recipient"] for d in doc["run"]["emails"]["sent"]) == REFERENCE_PIS
    assert doc["queue"]["queued"] == 7
    assert all(s["pdf"].endswith(".pdf") for s in doc["statements"])
    assert len(smtp_server.messages) == 7
    # Again: unchanged, nothing to render or send.
    out, _err = run("generate", "-p", "2025-01", "--send", "--format", "json")
    doc = json.loads(out)
    assert doc["counts"]["unchanged"] == 10 and doc["run"]["rendered"] == 0
    assert doc["queue"]["queued"] == 0 and len(doc["queue"]["already_sent"]) == 7
    assert len(smtp_server.messages) == 7


def test_send_command_and_resend_failed(generated, smtp_server, settings):
    settings.EMAIL_PORT = 1  # refused
    with pytest.raises(CommandRefused) as refused:
        run("send", "-p", "2025-01", "--pi", "tarn.voxley@example.edu")
    assert refused.value.returncode == 1
    assert Delivery.objects.get().state == "failed"
    settings.EMAIL_PORT = smtp_server.port
    out, err = run("send", "-p", "2025-01", "--pi", "tarn.voxley@example.edu")
    assert "failed earlier" in err and smtp_server.messages == []
    out, _err = run(
        "send", "-p", "2025-01", "--pi", "tarn.voxley@example.edu", "--resend-failed", "--format", "json"
    )
    doc = json.loads(out)
    assert doc["requeued"] == 1
    (sent,) = doc["run"]["emails"]["sent"]
    assert sent["recipient"] == "tarn.voxley@example.edu" and sent["attempts"] == 2
    assert sent["statements"] == ["2025-01-0008 v1"]
    assert len(smtp_server.messages) == 1


def test_refusals_exit_1_with_json_error(reference_month):
    with pytest.raises(CommandRefused, match="out of date for 10 PI × projects"):
        run("send", "-p", "2025-01")  # nothing issued yet: generate first
    run("generate", "-p", "2025-01")
    billing_services.period_close(period="2025-01")
    billing_services.period_finalize(period="2025-01")
    out = io.StringIO()
    with pytest.raises(CommandRefused) as refused:
        call_command("generate", "-p", "2025-01", "--format", "json", stdout=out, stderr=io.StringIO())
    assert refused.value.returncode == 1
    assert "finalized" in json.loads(out.getvalue())["error"]
    with pytest.raises(CommandRefused, match="invalid period"):
        run("generate", "-p", "2025-13")
    with pytest.raises(CommandRefused, match="does not exist"):
        run("generate", "-p", "2024-12")


def test_generate_reports_held_back(reference_month):
    billing_services.flag_rule_save(name="hold", pattern="^exoplanet", fields=["project_code"])
    billing_services.period_reevaluate_flags(period="2025-01")
    out, _err = run("generate", "-p", "2025-01")
    assert "Held back:" in out and "await review" in out
    out, _err = run("generate", "-p", "2025-01", "--format", "json")
    doc = json.loads(out)
    assert doc["held_back"]["charges"] > 0
    assert doc["held_back"]["without_statement"][0]["project_id"] == "exoplanet-survey"
