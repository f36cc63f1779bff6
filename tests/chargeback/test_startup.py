"""First run as a newcomer meets it: the database created on first use (one line saying where),
a database that is not set up or not ours explained in one line, never a traceback; the admin
styled without collectstatic; the help that opens with this project's commands."""

from __future__ import annotations

import os
import sqlite3
import uuid

import pytest
from django.test import override_settings

from tests.chargeback.test_cli import Cli
from tests.conftest import REFERENCE_DIR, ROOT


def test_the_first_command_creates_the_database_and_says_where(tmp_path):
    cli = Cli(tmp_path, database=False)  # the embedded default: SQLite in the data folder
    data = tmp_path / "data"
    first = cli("periods", "list")
    assert first.code == 0, first.err
    assert first.err == (
        f"openchargeback: created the database {data / 'openchargeback.sqlite3'} (data folder {data})\n"
    )
    assert "No periods yet" in first.out
    again = cli("periods", "list", "--format", "json")
    assert again.code == 0 and again.err == "" and again.json() == {"periods": []}


def test_a_database_that_is_not_ours_is_refused_in_one_line(tmp_path):
    other = tmp_path / "billing.db"  # e.g. the original OpenChargeback's own database
    with sqlite3.connect(other) as db:
        db.execute("CREATE TABLE charges (id INTEGER PRIMARY KEY, billed_cost REAL)")
    cli = Cli(tmp_path, database=False)
    result = cli("periods", "list", env={"DATABASE_URL": f"sqlite:///{other}"})
    assert result.code == 1
    assert result.err.startswith(f"openchargeback: error: {other} is not an OpenChargeback database")
    assert "point database.path at a new file" in result.err and result.err.count("\n") == 1
    with sqlite3.connect(other) as db:  # untouched
        assert [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")] == ["charges"]


def test_an_unmigrated_database_says_to_migrate(tmp_path):
    cli = Cli(tmp_path)
    assert cli("migrate", "--verbosity", "0").code == 0
    newest = sorted(p.stem for p in (ROOT / "billing" / "migrations").glob("0*.py"))
    # as an older version left it: one billing migration behind
    assert cli("migrate", "billing", newest[-2], "--verbosity", "0").code == 0
    aws = REFERENCE_DIR / "aws_2025-01.csv"
    result = cli("ingest", aws, "-s", "aws")  # reads the billing settings, which lack newer columns
    assert result.code == 1
    assert result.err.startswith("openchargeback: error: the database ")
    assert result.err.endswith(
        "needs 1 migration (an upgrade of OpenChargeback): run `openchargeback migrate`\n"
    )
    assert result.err.count("\n") == 1
    assert "Traceback" not in result.err
    assert cli("migrate", "--verbosity", "0").code == 0
    assert cli("ingest", aws, "-s", "aws").code == 0


@pytest.mark.postgres
def test_an_empty_postgresql_database_says_to_migrate(tmp_path):
    url = os.environ.get("DATABASE_URL", "")
    if not url.startswith("postgres"):
        pytest.skip("needs DATABASE_URL=postgres://...")
    import psycopg

    base, _, _name = url.rpartition("/")
    name = f"oc_unmigrated_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(f"{base}/postgres", autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        cli = Cli(tmp_path, database=False)
        result = cli("periods", "list", env={"DATABASE_URL": f"{base}/{name}"})
        assert result.code == 1
        assert result.err.startswith(f"openchargeback: error: the database {name} on ")
        assert result.err.endswith("is not set up: run `openchargeback migrate`\n")
    finally:
        with psycopg.connect(f"{base}/postgres", autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}"')


def test_an_unreachable_database_is_one_line(tmp_path):
    cli = Cli(tmp_path, database=False)
    result = cli("periods", "list", env={"DATABASE_URL": "postgres://nobody@127.0.0.1:9/none"})
    assert result.code == 1
    assert result.err.startswith("openchargeback: error: cannot open the database none on 127.0.0.1:9: ")
    assert result.err.count("\n") == 1


@pytest.mark.django_db
@override_settings(DEBUG=False)
def test_the_admin_is_styled_without_collectstatic(client, settings, tmp_path):
    """A fresh clone never ran collectstatic: whitenoise serves the apps' static files itself."""
    settings.STATIC_ROOT = tmp_path / "static-never-collected"
    settings.STATIC_ROOT.mkdir()
    for path in ("/static/admin/css/base.css", "/static/openchargeback/admin.css"):
        response = client.get(path)
        assert response.status_code == 200, path
        assert response["Content-Type"].startswith("text/css")
        assert b"".join(response.streaming_content)


def test_help_opens_with_this_projects_commands(tmp_path):
    cli = Cli(tmp_path, database=False)
    for args in ([], ["help"], ["--help"]):
        result = cli(*args)
        assert result.code == 0, args
        text = result.out
        assert text.startswith("usage: openchargeback COMMAND [options] [-c config.yaml]\n")
        assert (
            text.index("The monthly workflow:")
            < text.index("Commands:")
            < text.index("Django's own commands")
        )
        assert "  ingest          Import FOCUS billing files" in text
        assert "  [core] check, " in text and "migrate" in text.split("Django's own commands")[1]
    assert not (tmp_path / "data" / "openchargeback.sqlite3").exists()  # the help needs no database
    command = cli("help", "ingest")
    assert command.code == 0 and "--replace" in command.out
