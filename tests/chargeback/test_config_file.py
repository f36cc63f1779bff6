"""The original's config.yaml read directly (`-c config.yaml`): every key's effect, warnings for what
cannot be honoured, the database settings applied when the file changes, and web.users signing in."""

from __future__ import annotations

import json
import logging
import logging.config
from pathlib import Path

import pytest
from django.contrib.auth import authenticate, get_user_model
from django.contrib.auth.password_validation import validate_password
from django.core.exceptions import ValidationError
from django.test import override_settings

from billing.models import BillingSettings, FlagRule, Source
from billing.selectors import billing_settings_get
from chargeback.config_file import ConfigError, read_config
from chargeback.logging import build_logging
from chargeback.operations.legacy_config import config_apply
from journals.selectors import journal_settings_get
from tests.chargeback.test_cli import Cli

from .test_import_config import ORIGINAL

ADMIN123 = "$2b$12$Fxu99zxFh4plt3a2FDyEnuFyg2Co/osXmQGGYw.HFl0/Id6V.Uvey"  # the original's example: admin123


def write(tmp_path: Path, text: str, name: str = "config.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


# --- reading: what each key becomes -------------------------------------------------------------------


def test_every_group_of_the_original_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SMTP_USER", "billing-bot")
    monkeypatch.setenv("SMTP_PASSWORD", "s3cret")
    monkeypatch.delenv("WEB_SECRET_KEY", raising=False)
    config = read_config(write(tmp_path, ORIGINAL))
    s = config.settings
    here = tmp_path.resolve()
    assert s["DATABASE_PATH"] == here / "instance" / "billing.db"
    assert s["OPENCHARGEBACK_DATA_DIR"] == here / "instance"
    assert (s["EMAIL_BACKEND"], s["EMAIL_HOST"], s["EMAIL_PORT"]) == (
        "django.core.mail.backends.smtp.EmailBackend",
        "smtp.example.edu",
        587,
    )
    assert (s["EMAIL_USE_TLS"], s["EMAIL_USE_SSL"], s["EMAIL_HOST_USER"], s["EMAIL_HOST_PASSWORD"]) == (
        True,
        False,
        "billing-bot",
        "s3cret",
    )
    assert s["DEFAULT_FROM_EMAIL"] == '"Research Computing Billing" <hpc-billing@example.edu>'
    assert s["OPENCHARGEBACK_STATEMENT_EMAIL_SUBJECT"] == "Research Computing Charges - {{ period }}"
    assert s["OPENCHARGEBACK_PDF_DIR"] == here / "instance" / "output" / "pdfs"
    assert s["OPENCHARGEBACK_JOURNAL_DIR"] == here / "instance" / "output" / "journals"
    assert s["EMAIL_FILE_PATH"] == here / "instance" / "output" / "emails"  # the original's default
    assert (s["LOG_LEVEL"], s["LOG_FORMAT"], s["LOG_FILE"]) == (
        "WARNING",
        "kv",
        here / "instance" / "logs" / "openchargeback.log",
    )
    assert (s["OPENCHARGEBACK_WEB_ENABLED"], s["OPENCHARGEBACK_WEB_HOST"], s["OPENCHARGEBACK_WEB_PORT"]) == (
        True,
        "127.0.0.1",
        8000,
    )
    assert "SECRET_KEY" not in s  # ${WEB_SECRET_KEY} unset: the default applies, and a warning says so
    assert s["SESSION_COOKIE_AGE"] == 8 * 3600
    assert s["AUTH_PASSWORD_VALIDATORS"][0]["OPTIONS"] == {"min_length": 8}
    (admin,) = config.users
    assert (admin.name, admin.email, admin.role, admin.recovery) == (
        "admin",
        "admin@example.edu",
        "admin",
        False,
    )
    assert s["OPENCHARGEBACK_CONFIG_USERS"] == [vars(admin)]
    assert config.warnings == [
        "web.secret_key: ${WEB_SECRET_KEY} is not set in the environment",
        "reporting: not a setting OpenChargeback knows; ignored",
    ]
    assert (
        config.raw["smtp"]["username"] == "${SMTP_USER}" and config.data["smtp"]["username"] == "billing-bot"
    )


def test_email_choices(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    dev = read_config(write(tmp_path, "dev_mode: true\nsmtp:\n  host: smtp.example.edu\n")).settings
    assert dev["EMAIL_BACKEND"] == "django.core.mail.backends.filebased.EmailBackend"
    assert dev["EMAIL_FILE_PATH"] == tmp_path.resolve() / "instance" / "output" / "emails"
    ssl = read_config(write(tmp_path, "smtp:\n  host: mail\n  port: 465\n  use_tls: true\n")).settings
    assert (ssl["EMAIL_USE_TLS"], ssl["EMAIL_USE_SSL"]) == (False, True)
    plain = read_config(write(tmp_path, "smtp:\n  host: mail\n  port: 25\n  use_tls: false\n")).settings
    assert (plain["EMAIL_USE_TLS"], plain["EMAIL_USE_SSL"], plain["EMAIL_PORT"]) == (False, False, 25)
    nowhere = read_config(write(tmp_path, "currency: EUR\n"))
    assert nowhere.settings["EMAIL_BACKEND"].endswith("filebased.EmailBackend")
    assert nowhere.warnings == [
        f"dev_mode is false but there is no smtp.host: emails are written as files in "
        f"{tmp_path.resolve() / 'instance' / 'output' / 'emails'}"
    ]


def test_what_cannot_be_honoured_is_named(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    text = """\
dev_mode: true
sources:
  aws:
    api_key: ${AWS_KEY}
journal:
  template: banner.csv
web:
  colour: blue
  users:
    ops:
      email: ops@example.edu
      password_hash: "HASH"
      shoe_size: 44
  password_requirements:
    min_length: 10
    require_emoji: true
""".replace("HASH", ADMIN123)
    warnings = read_config(write(tmp_path, text)).warnings
    assert warnings == [
        "sources.aws.api_key: ${AWS_KEY} is not set in the environment",
        "sources: API credentials are not used: costs arrive as FOCUS files (ingest, the admin's upload, "
        "collection points)",
        "web.colour: not a setting OpenChargeback knows; ignored",
        "web.users.ops.shoe_size: not a setting of a user; ignored",
        "web.password_requirements.require_emoji: not a password rule OpenChargeback knows; ignored",
        "journal.template: 'banner.csv' is not used: layouts are journal formats here (edit one in the admin, "
        "then export-journal -f NAME); the original's journal_gl.csv is the gl layout",
    ]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[1, 2]", "expected a mapping of settings at the top level"),
        ("smtp: {host: x, port: abc}", "smtp.port: expected a whole number, found 'abc'"),
        ("logging: {format: xml}", "logging.format: 'xml' is neither splunk nor json"),
        ("logging: {level: LOUD}", "logging.level: 'LOUD' is not DEBUG, INFO, WARN(ING) or ERROR"),
        ("dev_mode: maybe", "dev_mode: expected true or false, found 'maybe'"),
        (
            "web: {users: {a: {email: a@x.edu, password_hash: admin123}}}",
            "password_hash: expected a bcrypt hash",
        ),
        (
            f'web: {{users: {{a: {{email: a@x.edu, password_hash: "{ADMIN123}", role: god}}}}}}',
            "'god' is not admin",
        ),
        ("web: {users: {a: {password_hash: x}}}", "web.users.a.email: an email address is required"),
        ("output: {pdf_dir: 12}", "output.pdf_dir: expected a path"),
        ("smtp: [1]", "smtp: expected a mapping of settings, found list"),
        ("key: [unclosed", "is not valid YAML"),
    ],
)
def test_values_that_cannot_be_used_name_their_key(tmp_path, text, message):
    with pytest.raises(
        ConfigError, match=message.replace("(", r"\(").replace(")", r"\)").replace("$", r"\$")
    ):
        read_config(write(tmp_path, text))


def test_password_requirements_as_validators(tmp_path):
    text = (
        "web:\n  password_requirements:\n    min_length: 10\n    require_uppercase: true\n"
        "    require_numbers: true\n    require_special_chars: true\n"
    )
    validators = read_config(write(tmp_path, text)).settings["AUTH_PASSWORD_VALIDATORS"]
    with override_settings(AUTH_PASSWORD_VALIDATORS=validators):
        with pytest.raises(ValidationError) as short:
            validate_password("Ab1!")
        assert "at least 10 characters" in " ".join(short.value.messages)
        with pytest.raises(ValidationError) as classes:
            validate_password("abcdefghijkl")
        assert classes.value.messages[-1] == (
            "This password must contain an upper-case letter, a digit, one of !@#$%^&*()_+-=[]{}|;:,.<>?."
        )
        validate_password("Grant-Ledger-2025!")  # every class, long enough


def test_logging_file_and_switch(tmp_path):
    log_file = tmp_path / "logs" / "oc.log"
    config = build_logging("kv", "INFO", log_file=str(log_file))
    assert config["root"]["handlers"] == ["console", "file"]
    logging.config.dictConfig(config)
    try:
        logging.getLogger("billing.test").info("hello", extra={"n": 1})
        for handler in logging.getLogger().handlers:
            handler.flush()
        assert "level=INFO logger=billing.test msg=hello n=1" in log_file.read_text()
    finally:
        from django.conf import settings

        logging.config.dictConfig(settings.LOGGING)
    off = read_config(write(tmp_path, "logging:\n  enabled: false\n  level: DEBUG\n  file: x.log\n")).settings
    assert off["LOG_LEVEL"] == "CRITICAL" and "LOG_FILE" not in off


# --- the settings of a process started with -c config.yaml ---------------------------------------------


SHOW_SETTINGS = (
    "import json; from django.conf import settings as s; print(json.dumps({"
    "'db': str(s.DATABASES['default']['NAME']), 'data': str(s.DATA_DIR), 'email': s.EMAIL_BACKEND, "
    "'host': getattr(s, 'EMAIL_HOST', ''), 'port': getattr(s, 'EMAIL_PORT', 0), 'sender': s.DEFAULT_FROM_EMAIL, "
    "'secret': s.SECRET_KEY, 'session': s.SESSION_COOKIE_AGE, 'pdfs': s.OPENCHARGEBACK_PDF_DIR, "
    "'journals': str(s.OPENCHARGEBACK_JOURNAL_DIR), 'level': s.LOGGING['root']['level'], "
    "'web': [s.OPENCHARGEBACK_WEB_HOST, s.OPENCHARGEBACK_WEB_PORT], "
    "'min_length': s.AUTH_PASSWORD_VALIDATORS[0].get('OPTIONS'), 'subject': s.OPENCHARGEBACK_STATEMENT_EMAIL_SUBJECT}))"
)


def test_a_process_takes_its_settings_from_the_file(tmp_path):
    cli = Cli(tmp_path, database=False)
    cli.env.pop("OPENCHARGEBACK_DATA_DIR")
    cli.env.update(SMTP_USER="u", SMTP_PASSWORD="p", WEB_SECRET_KEY="k" * 50)
    config = write(tmp_path, ORIGINAL.replace("WARN\n", "ERROR\n"))
    result = cli("--config", config, "shell", "-v", "0", "-c", SHOW_SETTINGS)
    assert result.code == 0, result.err
    shown = json.loads(result.out)
    here = tmp_path.resolve()
    assert shown == {
        "db": str(here / "instance" / "billing.db"),
        "data": str(here / "instance"),
        "email": "django.core.mail.backends.smtp.EmailBackend",
        "host": "smtp.example.edu",
        "port": 587,
        "sender": '"Research Computing Billing" <hpc-billing@example.edu>',
        "secret": "k" * 50,
        "session": 8 * 3600,
        "pdfs": str(here / "instance" / "output" / "pdfs"),
        "journals": str(here / "instance" / "output" / "journals"),
        "level": "ERROR",
        "web": ["127.0.0.1", 8000],
        "min_length": {"min_length": 8},
        "subject": "Research Computing Charges - {{ period }}",
    }
    # An environment variable set explicitly wins over the file.
    env = {"DATABASE_URL": f"sqlite:///{tmp_path / 'other.sqlite3'}", "SECRET_KEY": "from-env" * 6}
    overridden = json.loads(cli("--config", config, "shell", "-v", "0", "-c", SHOW_SETTINGS, env=env).out)
    assert (overridden["db"], overridden["secret"]) == (str(tmp_path / "other.sqlite3"), "from-env" * 6)
    # Without -c, ./instance/config.yaml is read when present, as the original does.
    (tmp_path / "instance").mkdir(exist_ok=True)
    (tmp_path / "instance" / "config.yaml").write_text(
        "currency: EUR\ndatabase:\n  path: ./instance/default.db\n"
    )
    default = json.loads(cli("shell", "-v", "0", "-c", SHOW_SETTINGS).out)
    assert default["db"] == str(here / "instance" / "default.db")


def test_a_bad_file_is_one_line_and_exit_1(tmp_path):
    cli = Cli(tmp_path)
    bad = write(tmp_path, "smtp:\n  host: x\n  port: many\n")
    result = cli("periods", "list", "-c", bad)
    assert result.code == 1
    assert result.err == "openchargeback: error: smtp.port: expected a whole number, found 'many'\n"
    missing = cli("periods", "list", "-c", tmp_path / "nope.yaml")
    assert missing.code == 1 and missing.err.startswith("openchargeback: error: config file ")
    assert "not found" in missing.err and "Traceback" not in missing.err


# --- the database settings: applied when the file is new or changed -----------------------------------------


def test_applied_when_new_or_changed_and_the_command_says_what(tmp_path):
    cli = Cli(tmp_path, database=False)
    cli.env.pop("OPENCHARGEBACK_DATA_DIR")
    cli.env.update(SMTP_USER="", SMTP_PASSWORD="", WEB_SECRET_KEY="")
    config = write(tmp_path, ORIGINAL)
    first = cli("sources", "list", "-c", config)
    assert first.code == 0, first.err
    lines = first.err.splitlines()
    assert (
        lines[0]
        == "openchargeback: warning: config.yaml: reporting: not a setting OpenChargeback knows; ignored"
    )
    assert lines[1] == (
        f"openchargeback: created the database {tmp_path.resolve() / 'instance' / 'billing.db'} "
        f"(data folder {tmp_path.resolve() / 'instance'})"
    )
    assert (
        f"openchargeback: applied {config.resolve()} (new or changed since it was last applied): 16 changes"
        in lines
    )
    assert "  currency: currency_code: 'USD' → 'EUR' ('€' read as EUR)" in lines
    assert "  imports.known_sources[0]: source aws created (*aws*)" in lines
    assert "  web.users.admin: user admin@example.edu created (admin), its bcrypt hash as password" in lines
    assert [s.split()[0] for s in first.out.splitlines()[2:]] == [
        "aws",
        "azure",
        "azure-local",
        "it_storage",
        "storage",
    ]

    again = cli("sources", "list", "-c", config)
    assert "applied" not in again.err  # unchanged file: nothing to apply

    changed = write(tmp_path, ORIGINAL.replace('currency: "€"', 'currency: "£"'))
    third = cli("sources", "list", "-c", changed)
    assert "  currency: currency_code: 'EUR' → 'GBP' ('£' read as GBP)" in third.err.splitlines()
    assert "1 change\n" in third.err


@pytest.mark.django_db
def test_an_edit_lasts_until_the_file_changes_and_the_admin_says_so(tmp_path, admin_client):
    path = write(tmp_path, ORIGINAL)
    config = read_config(path)
    outcome = config_apply(config=config)
    assert outcome is not None and billing_settings_get().currency_code == "EUR"
    settings = BillingSettings.objects.get()
    assert settings.config_path == str(path.resolve()) and settings.config_sha256 == config.sha256
    assert settings.config_managed == [
        "currency",
        "email.from_name",
        "tag_mapping",
        "review",
        "imports.known_sources",
        "journal",
        "web.users",
    ]
    assert journal_settings_get().default_account == "54000"
    assert FlagRule.objects.count() == 2 and Source.objects.count() == 5

    page = admin_client.get("/admin/billing/billingsettings/1/change/").content.decode()
    assert f"Managed by {path.resolve()} (applied " in page
    assert (
        "UTC): currency, email.from_name, tag_mapping, review. An edit here lasts until the file changes"
        in page
    )
    assert (
        "UTC): imports.known_sources. An edit" in admin_client.get("/admin/billing/source/").content.decode()
    )
    journal_page = admin_client.get("/admin/journals/journalsettings/1/change/").content.decode()
    assert "UTC): journal, tag_mapping. An edit" in journal_page

    BillingSettings.objects.update(currency_code="CHF")  # an edit in the admin
    assert config_apply(config=read_config(path)) is None  # the file did not change: the edit stays
    assert billing_settings_get().currency_code == "CHF"
    path.write_text(ORIGINAL + "\n# a comment changes the file\n")
    assert config_apply(config=read_config(path)) is not None
    assert billing_settings_get().currency_code == "EUR"


@pytest.mark.django_db
def test_a_value_that_cannot_be_used_applies_nothing(tmp_path):
    path = write(tmp_path, ORIGINAL.replace('- "training"', '- "(unclosed"'))
    from chargeback.errors import Refused

    with pytest.raises(Refused, match="invalid regular expression"):
        config_apply(config=read_config(path))
    assert not Source.objects.exists() and not get_user_model().objects.exists()
    assert BillingSettings.objects.get().config_sha256 == ""


# --- web.users: bcrypt hashes as passwords, recovery users -------------------------------------------------------


def users(**recovery: bool) -> list[dict]:
    return [
        {
            "name": name,
            "email": f"{name}@example.edu",
            "display_name": name.title(),
            "password_hash": ADMIN123,
            "role": "admin" if name == "admin" else "reviewer",
            "recovery": flag,
        }
        for name, flag in recovery.items()
    ]


def sign_in(client, username: str, password: str) -> bool:
    response = client.post("/admin/login/?next=/admin/", {"username": username, "password": password})
    return response.status_code == 302 and response["Location"] == "/admin/"


@pytest.mark.django_db
def test_bootstrap_users_sign_in_with_their_bcrypt_hash(client, settings):
    from accounts.services import config_user_ensure

    settings.OPENCHARGEBACK_CONFIG_USERS = users(admin=False, rita=False)
    for entry in settings.OPENCHARGEBACK_CONFIG_USERS:
        config_user_ensure(entry=entry)
    admin = get_user_model().objects.get(email="admin@example.edu")
    assert (admin.is_superuser, admin.is_staff, [g.name for g in admin.groups.all()]) == (
        True,
        True,
        ["Billing admin"],
    )
    rita = get_user_model().objects.get(email="rita@example.edu")
    assert (rita.is_superuser, [g.name for g in rita.groups.all()]) == (False, ["Reviewer"])

    assert sign_in(client, "admin", "admin123")  # by its name in the file
    client.logout()
    assert sign_in(client, "rita@example.edu", "admin123")  # by its email
    client.logout()
    assert not sign_in(client, "admin", "wrong")
    # A bootstrap user belongs to the database once created: a password changed there is the password.
    admin.refresh_from_db()
    assert admin.password.startswith("pbkdf2_sha256$")  # the bcrypt hash was upgraded at sign-in
    admin.set_password("a new Passphrase 2025")
    admin.save()
    assert not sign_in(client, "admin", "admin123")
    assert sign_in(client, "admin", "a new Passphrase 2025")


@pytest.mark.django_db
def test_a_recovery_user_can_always_sign_in(client, settings):
    settings.OPENCHARGEBACK_CONFIG_USERS = users(admin=True)
    # Not even in the database yet: created at its first sign-in.
    assert sign_in(client, "admin", "admin123")
    client.logout()
    admin = get_user_model().objects.get(email="admin@example.edu")
    admin.set_password("changed by someone else 42")
    admin.is_active = admin.is_staff = False
    admin.save()
    admin.groups.clear()
    assert sign_in(client, "admin", "admin123")  # the file's password, whatever the database says
    admin.refresh_from_db()
    assert (admin.is_active, admin.is_staff, [g.name for g in admin.groups.all()]) == (
        True,
        True,
        ["Billing admin"],
    )
    client.logout()
    assert not sign_in(client, "admin", "not it")
    assert (
        authenticate(username="admin", password="x" * 100) is None
    )  # longer than bcrypt reads: never an error


@pytest.mark.django_db
def test_lockouts_apply_to_recovery_users_too(client, settings):
    settings.OPENCHARGEBACK_CONFIG_USERS = users(admin=True)
    for _ in range(settings.AXES_FAILURE_LIMIT):
        sign_in(client, "admin", "guess")
    response = client.post("/admin/login/?next=/admin/", {"username": "admin", "password": "admin123"})
    assert response.status_code == 429 or "locked" in response.content.decode().lower()


@pytest.fixture
def admin_client(client, admin_user):
    client.force_login(admin_user)
    return client
