"""The admin's charge search: what a term matches, and that the text search goes through its
trigram index (FTS5 on SQLite, pg_trgm's GIN index on PostgreSQL) — query plans asserted — and
that the index follows imports, superseding imports and corrections."""

from __future__ import annotations

from pathlib import Path

import pytest
from django.contrib.auth.models import User
from django.db import connection, transaction
from django.db.models import Q
from django.test import Client

from accounts import roles
from accounts.services import roles_ensure
from billing import charge_search, services
from billing.charge_search import charges_matching, text_match
from billing.models import Charge
from tests.billing.test_ingest import focus_row, ingest, write_focus
from tests.factories import ChargeFactory

pytestmark = pytest.mark.django_db

sqlite_only = pytest.mark.skipif("connection.vendor != 'sqlite'", reason="SQLite's FTS5 table")
postgres_only = pytest.mark.skipif("connection.vendor != 'postgresql'", reason="PostgreSQL's pg_trgm index")


def plan(queryset, seqscan: bool = False) -> str:
    """The database's plan of a queryset, as text; on PostgreSQL without sequential scans unless
    `seqscan` (a test table is small: size should not decide)."""
    sql, params = queryset.query.sql_with_params()
    with connection.cursor() as cursor:
        if connection.vendor == "sqlite":
            cursor.execute(f"EXPLAIN QUERY PLAN {sql}", params)
            return "\n".join(str(row[-1]) for row in cursor.fetchall())
        if not seqscan:
            cursor.execute("SET LOCAL enable_seqscan = off")
        try:
            cursor.execute(f"EXPLAIN {sql}", params)
            return "\n".join(row[0] for row in cursor.fetchall())
        finally:
            cursor.execute("SET LOCAL enable_seqscan = on")


def uses_text_index(text: str) -> bool:
    if connection.vendor == "sqlite":
        return "VIRTUAL TABLE INDEX" in text and charge_search.SQLITE_FTS_TABLE in text
    return charge_search.PG_TRIGRAM_INDEX in text


def assert_searched_through_the_index(queryset, term: str, *, sized: bool = False) -> None:
    """PostgreSQL: the search's query uses the trigram index. SQLite: the FTS5 lookup of the
    matching ids uses the FTS5 index, and the page then reads those ids by primary key.

    `sized`: the table is large and analyzed, so PostgreSQL may choose freely (sequential scans
    allowed). A table of a few rows is read whole once autovacuum has analyzed it, so there the
    plan is asked for without sequential scans."""
    if connection.vendor == "sqlite":
        with connection.cursor() as cursor:
            cursor.execute(
                f"EXPLAIN QUERY PLAN {charge_search.SQLITE_MATCH_SQL} ORDER BY rowid DESC LIMIT %s",
                [charge_search.fts_query(term), 10],
            )
            lookup = "\n".join(str(row[-1]) for row in cursor.fetchall())
        assert uses_text_index(lookup), lookup
        page = plan(queryset)
        assert "INTEGER PRIMARY KEY (rowid=?)" in page and "json_each" in page, page
        assert "SCAN billing_charge\n" not in page + "\n", page
    else:
        text = plan(queryset, seqscan=sized)
        assert uses_text_index(text), text


def found(term: str, queryset=None) -> set[int]:
    return set(charges_matching(queryset or Charge.objects.all(), term).values_list("id", flat=True))


def by_icontains(term: str) -> set[int]:
    """The reference semantics: a case-insensitive substring of any text column, row by row."""
    text = Q()
    for name in charge_search.TEXT_COLUMNS:
        text |= Q(**{f"{name}__icontains": term})
    return set(Charge.objects.filter(text).values_list("id", flat=True))


def factory_sequence(prefix: str):
    import factory

    return factory.Sequence(lambda n: f"{prefix}{n}")


@pytest.fixture
def charges(db):
    rows = [
        ChargeFactory(
            resource_id="arn:aws:ec2:us-east-1:111122223333:instance/i-0abc123def", resource_name="gpu-node-7"
        ),
        ChargeFactory(resource_id="arn:aws:s3:::lab-bucket-Genomics", resource_name="Genomics raw data"),
        ChargeFactory(
            resource_id="/subscriptions/42/vm-Alpha", sub_account_id="sub-9981", reference_2="WO-77331"
        ),
        ChargeFactory(resource_id="hpc-job-5512", fund_org="CHEM-4411-X", reference_1="Grant ABC/7"),
        ChargeFactory(resource_id='odd "quoted" id', resource_name="100% done_ok"),
    ]
    return rows


@pytest.mark.parametrize(
    "term",
    [
        "i-0abc123def",  # the tail of an ARN
        "I-0ABC123DEF",  # case does not matter
        "genomics",  # resource id and name
        "instance/i-0abc",
        "sub-9981",  # sub-account
        "wo-77331",  # reference 2
        "chem-4411",  # fund/org on the charge
        "Grant ABC/7",  # reference 1, with a space and a slash
        '"quoted"',  # double quotes are the term's own characters, not FTS syntax
        "100% done",  # LIKE wildcards are literal
        "done_ok",
        "vm",  # two characters: no trigram, compared row by row
        "no such thing",
    ],
)
def test_text_search_is_a_case_insensitive_substring_of_the_text_columns(charges, term):
    expected = by_icontains(term)
    assert found(term) == expected
    if term not in ("no such thing",):
        assert expected, term  # the examples do match something


def test_pi_and_project_terms_list_their_charges_and_ids_are_charges(charges):
    first = charges[0]
    assert found(first.pi.email.upper()) == {first.pk}
    assert found(first.project.project_id) == {first.pk}
    assert found(f"#{first.pk}") == {first.pk}
    assert found(f"#{10**30}") == set()
    assert found("   ") == {c.pk for c in charges}


def fill(template: Charge, count: int) -> None:
    """`count` more charges like `template` (resource ids filler-1, ...), written by the database
    itself, then statistics: the planners choose by table size."""
    columns = [str(f.column) for f in Charge._meta.concrete_fields if f.column not in ("id", "resource_id")]
    listed = ", ".join(columns)
    with connection.cursor() as cursor:
        cursor.execute(
            f"WITH RECURSIVE seq(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM seq WHERE n < %s) "
            f"INSERT INTO billing_charge ({listed}, resource_id) "
            f"SELECT {listed}, 'filler-' || seq.n FROM billing_charge, seq WHERE billing_charge.id = %s",
            [count, template.pk],
        )
        cursor.execute("ANALYZE billing_charge")


def test_the_text_search_uses_its_index(charges):
    if connection.vendor == "postgresql":
        queryset = Charge.objects.filter(text_match("i-0abc123def"))
        text = plan(queryset)
        assert uses_text_index(text), text
    # As the admin asks it, on a period of 20,000 charges: the period, newest first, one page.
    period = charges[0].period
    Charge.objects.filter(pk__in=[c.pk for c in charges]).update(period=period)
    fill(charges[1], 20_000)
    page = charges_matching(Charge.objects.filter(period=period), "i-0abc123def").order_by("-id")[:101]
    assert_searched_through_the_index(page, "i-0abc123def", sized=True)
    assert [c.pk for c in page] == [charges[0].pk]
    assert len(found("filler-1999")) == 11  # filler-1999 and filler-19990 to filler-19999
    integrity_ok()


def test_a_short_term_is_compared_row_by_row(charges):
    # FTS5 has no trigram for "vm": it would match nothing, so such terms compare rows instead.
    assert found("vm") == by_icontains("vm")


@sqlite_only
def test_a_common_term_is_compared_row_by_row_newest_first(charges, monkeypatch):
    # More matches than LIST_LIMIT: reading rows newest first finds a page sooner than listing ids.
    monkeypatch.setattr(charge_search, "LIST_LIMIT", 2)
    assert len(by_icontains("arn:aws")) == 2
    ChargeFactory.create_batch(3, resource_id=factory_sequence("arn:aws:lambda:fn-"))
    assert found("arn:aws") == by_icontains("arn:aws") and len(found("arn:aws")) == 5
    page = plan(charges_matching(Charge.objects.all(), "arn:aws").order_by("-id")[:101])
    assert "json_each" not in page and charge_search.SQLITE_FTS_TABLE not in page, page
    assert found("i-0abc123def") == {charges[0].pk}  # a rare term still goes by ids


@postgres_only
def test_a_long_term_asks_the_index_for_its_last_characters_only(charges, monkeypatch):
    # Every common trigram of a whole resource id costs GIN a long list: the index is asked for
    # the tail (TAIL_CHARS characters) when that is rare, and the few rows found are compared
    # with the whole term.
    term = charges[0].resource_id
    tail = term[-charge_search.TAIL_CHARS :]
    text = plan(Charge.objects.filter(text_match(term)))
    index_lines = [line for line in text.splitlines() if "Index Cond" in line]
    assert index_lines and all(f"'%{tail}%'" in line and term not in line for line in index_lines), text
    assert f"'%{term}%'" in text, text  # compared on the rows the index found
    assert found(term) == by_icontains(term) == {charges[0].pk}
    assert found(term.upper()) == {charges[0].pk}
    assert found("x" + term) == set()  # the tail alone is not a match

    # A tail that many charges hold: the whole term's trigrams narrow the index's answer.
    monkeypatch.setattr(charge_search, "PG_RARE", 0)
    text = plan(Charge.objects.filter(text_match(term)))
    assert any("Index Cond" in line and f"'%{term}%'" in line for line in text.splitlines()), text
    assert found(term) == {charges[0].pk}


@sqlite_only
def test_sqlite_triggers_are_in_place_after_every_migration():
    # A later migration that rebuilds billing_charge (as Django does for many ALTERs on SQLite)
    # drops these triggers; it must create them again.
    assert charge_search.sqlite_triggers_missing() == []


def integrity_ok() -> None:
    if connection.vendor == "sqlite":
        table = charge_search.SQLITE_FTS_TABLE
        with connection.cursor() as cursor:
            # Raises (SQLITE_CORRUPT_VTAB) when the index and the charge table disagree.
            cursor.execute(f"INSERT INTO {table}({table}, rank) VALUES ('integrity-check', 1)")


def test_an_import_then_a_search_finds_the_new_rows_through_the_index(tmp_path: Path):
    services.source_create(slug="aws")
    first = write_focus(
        tmp_path / "aws_2025-01.csv",
        [
            focus_row(ResourceId=f"arn:aws:ec2:::instance/i-first{n:04d}", ResourceName=f"first-{n}")
            for n in range(30)
        ],
    )
    ingest(first)
    term = "i-first0017"
    queryset = charges_matching(Charge.objects.all(), term)
    assert_searched_through_the_index(queryset, term)
    assert [c.resource_name for c in queryset] == ["first-17"]
    integrity_ok()

    # The same file name again supersedes the first import: its charges leave the index.
    second = write_focus(
        tmp_path / "aws_2025-01.csv",
        [
            focus_row(ResourceId=f"arn:aws:ec2:::instance/i-second{n:04d}", ResourceName=f"second-{n}")
            for n in range(30)
        ],
    )
    ingest(second)
    assert found(term) == set()
    assert [c.resource_name for c in charges_matching(Charge.objects.all(), "I-SECOND0029")] == ["second-29"]
    assert len(found("instance/i-second")) == 30
    integrity_ok()


def test_a_changed_charge_is_found_by_its_new_text_only(charges):
    charge = charges[3]
    Charge.objects.filter(pk=charge.pk).update(fund_org="BIO-9000-NEW")
    assert found("bio-9000-new") == {charge.pk}
    assert found("chem-4411") == set()
    Charge.objects.filter(pk=charge.pk).update(review_state="approved")  # not a searched column
    assert found("bio-9000-new") == {charge.pk}
    charge.refresh_from_db()
    charge.resource_name = "renamed-by-save"
    charge.save()
    assert found("renamed-by-save") == {charge.pk}
    integrity_ok()


@postgres_only
def test_postgres_has_the_trigram_extension_and_index():
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1 FROM pg_extension WHERE extname = 'pg_trgm'")
        assert cursor.fetchone()
        cursor.execute(
            "SELECT indexdef FROM pg_indexes WHERE indexname = %s", [charge_search.PG_TRIGRAM_INDEX]
        )
        (definition,) = cursor.fetchone()
    assert "gin" in definition and "gin_trgm_ops" in definition


def test_the_admin_search_box_finds_a_resource(charges):
    reviewer = User.objects.create_user("rita", "rita@university.example", "pw", is_staff=True)
    reviewer.groups.add(roles_ensure()[roles.REVIEWER])
    client = Client()
    client.force_login(reviewer)
    response = client.get("/admin/billing/charge/", {"q": "i-0abc123"})
    assert response.status_code == 200
    assert [c.pk for c in response.context["cl"].result_list] == [charges[0].pk]


def test_trigrams_in_the_wrong_order_are_not_a_match(charges):
    # "qabc" and "bcd" hold every trigram of "abcd" in some order, but not "abcd" itself.
    trap = ChargeFactory(resource_id="xqabc-bcdx", resource_name="plain")
    if connection.vendor == "sqlite":
        assert trap.pk in charge_search.sqlite_candidate_ids("abcd", 100)  # a candidate ...
    assert found("abcd") == set()  # ... that the text check turns away
    assert found("qabc-bcd") == {trap.pk}


def test_the_fts_query_quotes_every_chosen_trigram():
    assert charge_search.fts_query("abc") == '"abc"'
    assert charge_search.fts_query("abcdab") == '"abc" AND "bcd" AND "cda" AND "dab"'
    assert charge_search.fts_query("aaaa") == '"aaa"'
    assert charge_search.fts_query("abcdab", last=2) == '"cda" AND "dab"'
    assert charge_search.fts_query('a"bc d') == '"a""b" AND """bc" AND "bc " AND "c d"'


@sqlite_only
def test_bulk_writing_leaves_the_triggers_on_even_when_the_write_fails(charges):
    table = charge_search.SQLITE_FTS_TABLE
    with pytest.raises(RuntimeError), transaction.atomic(), charge_search.bulk_writing():
        ChargeFactory(resource_id="never-written-0001")
        raise RuntimeError("the import failed")
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT COUNT(*) FROM {table}_pause")
        assert cursor.fetchone()[0] == 0
    assert found("never-written") == set()
    # A charge written by the ORM later goes through the trigger again.
    later = ChargeFactory(resource_id="orm-written-0002")
    assert found("orm-written-0002") == {later.pk}
    integrity_ok()


@sqlite_only
def test_a_bulk_write_collects_more_terms_before_writing_them(charges):
    """A bulk write raises FTS5's in-memory collection of terms to SQLITE_FTS_HASH_BYTES before it
    indexes its rows (fewer, larger segments); the index stays whole and finds the new rows."""
    table = charge_search.SQLITE_FTS_TABLE
    with transaction.atomic(), charge_search.bulk_writing():
        written = [ChargeFactory(resource_id=f"bulk-written-{n:04d}") for n in range(5)]
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT v FROM {table}_config WHERE k = 'hashsize'")
        assert cursor.fetchone()[0] == charge_search.SQLITE_FTS_HASH_BYTES
    assert found("bulk-written-0003") == {written[3].pk}
    assert found("bulk-written") == {charge.pk for charge in written}
    integrity_ok()
