"""`openchargeback import-config`: the original OpenChargeback's config.yaml, moved into the settings."""

from __future__ import annotations

import io
import json
import re
from pathlib import Path

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from billing.ingest.flagging import FlagContext
from billing.models import BillingSettings, FlagRule, Source
from billing.selectors import billing_settings_get, source_for_filename
from chargeback.errors import Refused
from chargeback.operations.legacy_config import config_import
from chargeback.operations.legacy_values import env_line, fund_org_regex
from journals.selectors import journal_settings_get

pytestmark = pytest.mark.django_db

# The layout of the original's config.example.yaml, with values a site would have set.
ORIGINAL = r"""
dev_mode: false
currency: "€"
database:
  path: ./instance/billing.db
smtp:
  host: smtp.example.edu
  port: 587
  use_tls: true
  username: ${SMTP_USER}
  password: ${SMTP_PASSWORD}
email:
  from_address: hpc-billing@example.edu
  from_name: Research Computing Billing
  subject_template: "Research Computing Charges - {billing_period}"
tag_mapping:
  pi_email: "owner_email"
  project_id: "project"
  fund_org: "fund_org"
  cost_center: "cost_center"
  account_code: "account_code"
  reference_1: "grant_number"
  reference_2: ""
output:
  pdf_dir: ./instance/output/pdfs
  journal_dir: ./instance/output/journals
logging:
  level: WARN
  format: splunk
  file: ./instance/logs/openchargeback.log
web:
  enabled: true
  host: 127.0.0.1
  port: 8000
  secret_key: ${WEB_SECRET_KEY}
  session_lifetime_hours: 8
  users:
    admin:
      email: admin@example.edu
      display_name: "Admin User"
      password_hash: "$2b$12$Fxu99zxFh4plt3a2FDyEnuFyg2Co/osXmQGGYw.HFl0/Id6V.Uvey"
      role: admin
  password_requirements:
    min_length: 8
review:
  flag_patterns:
    - ".*gpu.*"
    - "training"
  fund_org_patterns:
    - "^\\d{6}-\\d{4}$"
    - "^DEPT-"
imports:
  known_sources:
  - name: AWS
    pattern: aws
    fund_org: IT-CLOUD-AWS
    account_code: "54100"
  - name: Azure Local
    pattern: azure-local
    fund_org: IT-AZ-LOCAL
    account_code: "54100"
  - name: Azure
    pattern: azure
    fund_org: IT-CLOUD-AZURE
    account_code: "54100"
  - name: IT Storage
    pattern: it_storage
  - name: Storage
    pattern: storage
journal:
  fund_org_regex: "^(?P<orgn>[^-]+)-(?P<fund>.+)$"
  account_code_regex: "^\\d{5}$"
  template: journal_gl.csv
  default_account: "54000"
  debit_description: "{source} {period} Research Computing Charges"
  credit_description: "{source} {period} Research Computing Charges"
reporting:
  weekly: true
"""


@pytest.fixture
def config(tmp_path) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(ORIGINAL)
    return path


def _snapshot() -> tuple:
    row = BillingSettings.objects.filter(pk=1).values().first()
    settings = {k: v for k, v in row.items() if k != "updated_at"} if row else None
    return (
        settings,
        sorted(Source.objects.values_list("slug", "display_name", "filename_pattern", "fund_org", "account")),
        sorted(FlagRule.objects.values_list("name", "pattern", "fields", "mode")),
    )


def test_import_applies_what_fits(config):
    outcome = config_import(path=config)
    settings = billing_settings_get()
    assert settings.currency_code == "EUR"
    assert settings.tag_pi_email == "owner_email"
    assert settings.tag_project_id == "project"
    assert settings.tag_reference_1 == "grant_number"
    assert settings.tag_reference_2 == "request_id"  # empty there: unused, kept as is
    sources = {s.slug: s for s in Source.objects.all()}
    assert set(sources) == {"aws", "azure-local", "azure", "it_storage", "storage"}
    assert (sources["aws"].display_name, sources["aws"].fund_org, sources["aws"].account) == (
        "AWS",
        "IT-CLOUD-AWS",
        "54100",
    )
    assert sources["it_storage"].fund_org == "" and sources["it_storage"].display_name == "IT Storage"
    # The original matched its pattern anywhere in the file name, the longest pattern first.
    assert source_for_filename("aws_2025-01.csv").slug == "aws"
    assert source_for_filename("it_storage_2025-01.csv").slug == "it_storage"
    assert source_for_filename("storage_report_2025-01.csv").slug == "storage"
    assert source_for_filename("azure-local_2025-01.csv").slug == "azure-local"
    assert source_for_filename("billing-azure-2025-01.csv").slug == "azure"
    assert outcome.unknown_keys == ["reporting"]
    statuses = {i.key: i.status for i in outcome.items}
    assert statuses["journal.fund_org_regex"] == "applied"
    assert statuses["journal.template"] == "unchanged"  # journal_gl.csv: the gl layout
    journal = journal_settings_get()
    assert journal.fund_org_regex == "^(?P<orgn>[^-]+)-(?P<fund>.+)$"
    assert journal.account_regex == "^\\d{5}$"
    assert journal.default_account == "54000"
    assert journal.debit_description == "{source} {period} Research Computing Charges"
    assert statuses["web.users.admin"] == "applied"  # created, its bcrypt hash working as its password
    assert statuses["database"] == "from_file"  # used when the file is given with -c
    assert settings.organization_name == "Research Computing Billing"  # email.from_name
    from django.contrib.auth import authenticate, get_user_model

    admin = get_user_model().objects.get(email="admin@example.edu")
    assert (admin.username, admin.is_staff, admin.is_superuser, admin.password[:11]) == (
        "admin@example.edu",
        True,
        True,
        "bcrypt$$2b$",
    )
    assert authenticate(username="admin@example.edu", password="admin123") == admin
    admin.refresh_from_db()
    assert admin.password.startswith("pbkdf2_sha256$")  # upgraded at the first sign-in


def test_flag_patterns_behave_as_in_the_original(config):
    config_import(path=config)
    rules = FlagRule.objects.order_by("name")
    assert [r.name for r in rules] == ["config.yaml: .*gpu.*", "config.yaml: training"]
    assert all(r.fields == ["service_name", "resource_id", "resource_name"] for r in rules)
    context = FlagContext.load(billing_settings_get())

    def flagged(**values: str) -> bool:
        return bool(context.rule_flags(values, source_id=0))

    # Case-insensitive search in service name, resource id or resource name; not elsewhere.
    assert flagged(service_name="Amazon EC2 GPU Instances")
    assert flagged(resource_name="ML-Training-run-7")
    assert not flagged(service_name="Amazon S3", resource_id="bucket-1")
    assert not flagged(service_name="S3", pi_email="gpu@example.edu")


@pytest.mark.parametrize(
    ("fund_org", "valid"),
    [
        ("123456-7890", True),
        ("DEPT-PHYSICS", True),  # "^DEPT-" is a prefix match in the original
        ("dept-physics", True),  # case-insensitive
        ("123456-78901", False),  # "$" anchors
        ("X-123456-7890", False),
        ("12345-7890", False),
    ],
)
def test_fund_org_patterns_behave_as_in_the_original(config, fund_org, valid):
    config_import(path=config)
    regex = billing_settings_get().fund_org_regex
    original = any(re.match(p, fund_org, re.IGNORECASE) for p in (r"^\d{6}-\d{4}$", "^DEPT-"))
    assert original is valid
    assert (re.fullmatch(regex, fund_org) is not None) is valid


def test_fund_org_regex_single_pattern():
    assert fund_org_regex([r"^\d{6}-\d{4}$"]) == r"(?i)(?:^\d{6}-\d{4}$)"
    assert re.fullmatch(fund_org_regex(["ABC"]), "abcdef")


def test_dry_run_writes_nothing(config):
    before = _snapshot()
    outcome = config_import(path=config, dry_run=True)
    assert outcome.dry_run
    assert outcome.by_status("applied")  # it says what would change
    assert _snapshot() == before


def test_second_run_changes_nothing(config):
    config_import(path=config)
    after_first = _snapshot()
    outcome = config_import(path=config)
    assert not outcome.by_status("applied")
    assert _snapshot() == after_first


def test_existing_source_keeps_values_the_file_leaves_empty(config):
    Source.objects.create(
        slug="storage", display_name="Old", filename_pattern="storage_*", fund_org="KEEP", account="1"
    )
    config_import(path=config)
    storage = Source.objects.get(slug="storage")
    assert (storage.display_name, storage.fund_org, storage.account) == ("Storage", "KEEP", "1")
    assert storage.filename_pattern == "*storage*"


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ('review:\n  flag_patterns: ["(unclosed"]\n', "invalid regular expression"),
        ('review:\n  fund_org_patterns: ["[a-"]\n', "invalid regular expression"),
        ('currency: "¤"\n', "unknown symbol"),
        ("imports:\n  known_sources:\n  - pattern: x\n", "needs a name"),
        (
            "imports:\n  known_sources:\n  - {name: AWS, pattern: aws}\n  - {name: Aws2, pattern: aws}\n",
            "appears twice",
        ),
        ('tag_mapping:\n  pi_email: "' + "x" * 101 + '"\n', "at most 100"),
        ("logging:\n  format: xml\n", "neither splunk nor json"),
        ("- just\n- a list\n", "mapping of settings"),
        ("a: [unclosed\n", "not valid YAML"),
    ],
)
def test_a_bad_value_refuses_the_whole_file(config, bad, message):
    """Everything else in the file is fine; one bad value and nothing is written."""
    config.write_text(ORIGINAL + "\n" + bad if not bad.startswith(("- ", "a: [")) else bad)
    before = _snapshot()
    with pytest.raises(Refused, match=message):
        config_import(path=config)
    assert _snapshot() == before


def test_currency_override_and_dollar(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text('currency: "$"\n')
    outcome = config_import(path=path)
    assert billing_settings_get().currency_code == "USD"
    assert "read as USD" in outcome.items[-1].detail or any("read as USD" in i.detail for i in outcome.items)
    config_import(path=path, currency="cad")
    assert billing_settings_get().currency_code == "CAD"
    path.write_text("currency: GBP\n")
    config_import(path=path)
    assert billing_settings_get().currency_code == "GBP"


def test_tag_keys_left_out_take_the_original_defaults(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("tag_mapping:\n  pi_email: owner\n")
    config_import(path=path)
    settings = billing_settings_get()
    assert settings.tag_pi_email == "owner"
    assert settings.tag_project_id == "project"  # the original's default was "project"


def test_environment_settings_never_print_secrets(config):
    outcome = config_import(path=config)
    env = {e.name: e for e in outcome.environment}
    assert env["DEFAULT_FROM_EMAIL"].value == '"Research Computing Billing" <hpc-billing@example.edu>'
    assert env["OPENCHARGEBACK_STATEMENT_EMAIL_SUBJECT"].value == "Research Computing Charges - {{ period }}"
    assert env["EMAIL_URL"].value == "smtp+tls://<user>:<password>@smtp.example.edu:587"
    assert "SMTP_PASSWORD" in env["EMAIL_URL"].note
    assert env["LOG_FORMAT"].value == "kv"
    assert env["LOG_LEVEL"].value == "WARNING"
    assert env["SECRET_KEY"].value is None
    assert env_line("SECRET_KEY", None) == "SECRET_KEY=<secret: not printed>"


def test_env_lines_read_back(tmp_path, monkeypatch):
    """What the command prints for the env file reads back as the same value."""
    import os

    import environ

    values = {
        "OC_TEST_A": '"Research Computing Billing" <hpc-billing@example.edu>',
        "OC_TEST_B": "Charges - {{ period }}",
        "OC_TEST_C": "it's",
        "OC_TEST_D": "plain-value",
    }
    env_file = tmp_path / "x.env"
    env_file.write_text("\n".join(env_line(k, v) for k, v in values.items()) + "\n")
    for key in values:
        monkeypatch.delenv(key, raising=False)
    environ.Env.read_env(str(env_file), overwrite=True)
    parsed = {key: os.environ[key] for key in values}
    for key in values:
        monkeypatch.delenv(key)
    assert parsed == values


def test_command_text_and_json(config):
    out = io.StringIO()
    call_command("import-config", str(config), "--dry-run", stdout=out)
    text = out.getvalue()
    assert text.startswith("Dry run: nothing written.")
    assert "Unknown keys (ignored):\n  reporting" in text
    assert "DEFAULT_FROM_EMAIL='\"Research Computing Billing\" <hpc-billing@example.edu>'" in text
    assert "SECRET_KEY=<secret: not printed>" in text
    assert "hunter2" not in text
    assert not Source.objects.exists()

    out = io.StringIO()
    call_command("import-config", str(config), "--format", "json", stdout=out)
    doc = json.loads(out.getvalue())
    assert doc["dry_run"] is False
    assert doc["unknown_keys"] == ["reporting"]
    assert {"name": "SECRET_KEY", "value": None, "secret": True, "from": "web.secret_key"}.items() <= next(
        e for e in doc["environment"] if e["name"] == "SECRET_KEY"
    ).items()
    assert Source.objects.count() == 5


def test_command_strict_refuses_unknown_keys(config):
    with pytest.raises(CommandError) as excinfo:
        call_command("import-config", str(config), "--strict", stdout=io.StringIO(), stderr=io.StringIO())
    assert excinfo.value.returncode == 1
    assert not Source.objects.exists()


def test_command_refusal_exit_code(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text('review:\n  flag_patterns: ["(x"]\n')
    err = io.StringIO()
    with pytest.raises(CommandError) as excinfo:
        call_command("import-config", str(path), stdout=io.StringIO(), stderr=err)
    assert excinfo.value.returncode == 1
    assert "invalid regular expression" in err.getvalue()
    missing = io.StringIO()
    with pytest.raises(CommandError):
        call_command("import-config", str(tmp_path / "nope.yaml"), stdout=io.StringIO(), stderr=missing)
    assert "not found" in missing.getvalue()


def test_settings_changes_go_through_the_service_and_are_audited(config):
    from auditlog.models import LogEntry

    config_import(path=config)
    settings = billing_settings_get()
    entry = LogEntry.objects.get_for_object(settings).order_by("pk").last()
    assert entry is not None and entry.changes_dict["currency_code"][1] == "EUR"
