"""The charge search of the admin, answered through indexes on a million-charge period.

What the reviewer types matches as follows (the search box's help text says the same):

- `#123` is charge 123 only; a bare `123` is charge 123 or any charge whose text contains "123".
- A term found (case-insensitive substring) in a PI's email or name, or in a project's id, name,
  fund/org or references, lists the charges of those PIs and projects (through the period/PI/
  project index). The charges' own text is not searched then.
- Any other term is a case-insensitive substring of one of the charge's resource id, resource
  name, sub-account id, fund/org, reference 1 or reference 2, found through a trigram index:
  - PostgreSQL: pg_trgm's GIN index `charge_text_trgm` over the six columns joined by a unit
    separator (U+001F, removed from the term, so a match never spans two columns), ILIKE;
  - SQLite: the FTS5 table `billing_charge_search` (trigram tokenizer, content in the charge
    table, kept by triggers, or by `bulk_writing` around an import's writes) lists the charges
    holding the term's trigrams; at most LIST_LIMIT of them are read by primary key and their
    text compared (`icontains`). A term held by more charges than that is common enough that
    comparing rows newest first fills a page quickly.
  Terms shorter than three characters have no trigram: they are compared row by row (still
  correct; the listing stops at the first page of matches, so only a rare short term is slow).
  Case folding: SQLite's LIKE folds ASCII letters only (as Django's icontains always did there),
  PostgreSQL's ILIKE those of the database locale.

The indexes are created by migration billing 0011 (charge_text_search_index); every write keeps
them current (the GIN index; the triggers). The import's writer wraps its inserts in
`bulk_writing`, and the deletion of superseded imports its delete: on SQLite that indexes the
rows in one statement instead of row by row (about ten times cheaper).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager

from django.db import DatabaseError, connection, transaction
from django.db.models import BooleanField, Q, QuerySet
from django.db.models.expressions import RawSQL

from chargeback.admin_hardening import typed_id

from .models import PI, Charge, Project

# The charge columns the text search looks in (the order of the index's columns).
TEXT_COLUMNS = ("resource_id", "resource_name", "sub_account_id", "fund_org", "reference_1", "reference_2")
SQLITE_FTS_TABLE = "billing_charge_search"
SQLITE_TRIGGERS = (f"{SQLITE_FTS_TABLE}_insert", f"{SQLITE_FTS_TABLE}_delete", f"{SQLITE_FTS_TABLE}_update")
SQLITE_MATCH_SQL = "SELECT rowid FROM billing_charge_search WHERE billing_charge_search MATCH %s"
SQLITE_IDS_SQL = "SELECT value FROM json_each(%s)"
# SQLite: a term matching at most this many charges is looked up by their ids (found by the FTS5
# table first); a more common one is compared row by row, newest first, which finds a page soon.
LIST_LIMIT = 50_000
# SQLite: the terms FTS5 gathers in memory before writing them to the index (_sqlite_larger_fts_flushes).
SQLITE_FTS_HASH_BYTES = 16 * 1024 * 1024
TAIL_TRIGRAMS = 5
PG_TRIGRAM_INDEX = "charge_text_trgm"
# The indexed expression of migration 0008, column by column (qualified: the admin's query joins
# other tables), so that PostgreSQL matches it to the index.
UNIT_SEPARATOR = "\x1f"
PG_MATCH_SQL = "(" + " || E'\\x1f' || ".join(f'"billing_charge"."{c}"' for c in TEXT_COLUMNS) + ") ILIKE %s"
TRIGRAM = 3
# PostgreSQL: a term longer than this is looked up in the index by its last characters
# (TAIL_TRIGRAMS trigrams) when the statistics expect at most PG_RARE charges to hold them; more,
# and the whole term's trigrams narrow the index's answer better than they cost.
TAIL_CHARS = TAIL_TRIGRAMS + TRIGRAM - 1
PG_RARE = 5_000
PG_TAIL_SQL = f"SELECT id FROM billing_charge WHERE {PG_MATCH_SQL}"  # noqa: S608 - fixed SQL
# The whole term compared on the candidates only: an expression the trigram index does not answer
# (the same text with '' appended), else PostgreSQL would ask the index for every trigram again.
PG_COMPARE_SQL = PG_MATCH_SQL.replace(") ILIKE %s", " || '') ILIKE %s")
# A term naming more PIs or projects than this is not a name: its charges are listed by text.
OWNER_LIMIT = 500


def charges_matching(queryset: QuerySet[Charge], term: str) -> QuerySet[Charge]:
    """`queryset` narrowed to the charges the admin search term names (see the module's doc)."""
    term = (term or "").strip()
    if not term:
        return queryset
    charge_id = typed_id(term)
    if charge_id is not None:
        by_id = Q(id=charge_id)
        if term.startswith("#"):
            return queryset.filter(by_id)
    elif term.startswith("#") and term[1:].strip().isdigit():
        return queryset.none()  # an id no charge can have (too long, or not ASCII digits)
    else:
        by_id = Q(pk__in=[])
    pi_ids = list(
        PI.objects.filter(Q(email__icontains=term) | Q(name__icontains=term)).values_list("id", flat=True)[
            :OWNER_LIMIT
        ]
    )
    project_ids = list(
        Project.objects.filter(
            Q(project_id__icontains=term)
            | Q(name__icontains=term)
            | Q(fund_org__icontains=term)
            | Q(reference_1__icontains=term)
            | Q(reference_2__icontains=term)
        ).values_list("id", flat=True)[:OWNER_LIMIT]
    )
    if pi_ids or project_ids:
        return queryset.filter(by_id | Q(pi_id__in=pi_ids) | Q(project_id__in=project_ids))
    return queryset.filter(by_id | text_match(term))


def text_match(term: str) -> Q:
    """Charges whose text columns contain `term` (case-insensitive), through the trigram index."""
    if connection.vendor == "sqlite" and len(term) >= TRIGRAM:
        # The term's last trigrams first: identifiers differ at their ends, and every common
        # trigram more costs FTS5 a walk through a long list. All of them if that is not enough.
        ids = sqlite_candidate_ids(term, LIST_LIMIT + 1, last=TAIL_TRIGRAMS)
        if len(ids) > LIST_LIMIT and len(term) - TRIGRAM + 1 > TAIL_TRIGRAMS:
            ids = sqlite_candidate_ids(term, LIST_LIMIT + 1)
        if len(ids) <= LIST_LIMIT:
            # The FTS5 table says which charges hold every trigram; their text says which match.
            return Q(id__in=RawSQL(SQLITE_IDS_SQL, [json.dumps(ids)])) & _icontains_any(term)  # noqa: S611 - fixed SQL
        # A common term (one charge in twenty or more of a million-charge period): comparing
        # rows newest first finds a page of matches sooner than listing every match would.
    if connection.vendor == "postgresql":
        text = term.replace(UNIT_SEPARATOR, "")
        if len(text) > TAIL_CHARS and pg_rare(text[-TAIL_CHARS:]):
            # The index asked for the term's last characters only (every common trigram more costs
            # GIN a walk through a long list: a whole resource id took 160 ms of a page); the few
            # charges holding them are compared with the whole term.
            return _pg_text(PG_MATCH_SQL, text[-TAIL_CHARS:]) & _pg_text(PG_COMPARE_SQL, text)
        return _pg_text(PG_MATCH_SQL, text)
    # Short terms on SQLite (FTS5 has no trigram for them), and any other database: row by row.
    return _icontains_any(term)


def _pg_pattern(text: str) -> str:
    return "%" + connection.ops.prep_for_like_query(text) + "%"


def _pg_text(sql: str, text: str) -> Q:
    """`sql` (PG_MATCH_SQL or PG_COMPARE_SQL: fixed SQL) with `text` as its ILIKE pattern."""
    return Q(RawSQL(sql, [_pg_pattern(text)], output_field=BooleanField()))  # noqa: S611 - fixed SQL


def pg_rare(tail: str) -> bool:
    """Whether PostgreSQL expects at most PG_RARE charges to hold `tail` (its statistics of the
    indexed text; one plan, nothing read)."""
    with connection.cursor() as cursor:
        cursor.execute(f"EXPLAIN (FORMAT JSON) {PG_TAIL_SQL}", [_pg_pattern(tail)])
        plan = cursor.fetchone()[0]
    rows = (json.loads(plan) if isinstance(plan, str) else plan)[0]["Plan"]["Plan Rows"]
    return rows <= PG_RARE


def _icontains_any(term: str) -> Q:
    text = Q()
    for name in TEXT_COLUMNS:
        text |= Q(**{f"{name}__icontains": term})
    return text


def fts_query(term: str, last: int | None = None) -> str:
    """An FTS5 query for the charges holding every trigram of `term` (or its `last` ones), each
    quoted as a string (the table keeps no positions: the candidates' text is checked after)."""
    grams = [term[i : i + TRIGRAM] for i in range(len(term) - TRIGRAM + 1)]
    chosen = dict.fromkeys(grams[-last:] if last else grams)
    return " AND ".join('"' + gram.replace('"', '""') + '"' for gram in chosen)


def sqlite_candidate_ids(term: str, limit: int, last: int | None = None) -> list[int]:
    """Up to `limit` ids of charges holding the trigrams of `term` (a superset of the matches),
    newest first: FTS5 walks its lists lazily, so a common term stops early."""
    with connection.cursor() as cursor:
        cursor.execute(SQLITE_MATCH_SQL + " ORDER BY rowid DESC LIMIT %s", [fts_query(term, last), limit])
        return [row[0] for row in cursor.fetchall()]


@contextmanager
def _gin_pending_list(conn) -> Iterator[None]:
    """PostgreSQL: the block's new index entries wait in the GIN index's pending list, merged in
    one sorted pass at the end (about a third of the cost of inserting them one by one)."""
    with conn.cursor() as cursor:
        cursor.execute("SET LOCAL gin_pending_list_limit = '2GB'")
        try:
            yield
            cursor.execute("SELECT gin_clean_pending_list(%s::regclass)", [PG_TRIGRAM_INDEX])
        finally:
            cursor.execute("SET LOCAL gin_pending_list_limit TO DEFAULT")


@contextmanager
def bulk_writing(*, deleting: QuerySet[Charge] | None = None) -> Iterator[None]:
    """Around a bulk insert or delete of charges, inside its transaction.

    SQLite: the per-row triggers stand aside and the index follows in one statement each — the
    charges about to be deleted (`deleting`) leave it first; the charges inserted in the block
    join it at the end. Without the block every write is still indexed, by the triggers, about
    ten times slower. PostgreSQL: the GIN index takes the new entries in one pass at the end."""
    if connection.vendor == "postgresql":
        with _gin_pending_list(connection):
            yield
        return
    if connection.vendor != "sqlite":
        yield
        return
    table, cols = SQLITE_FTS_TABLE, ", ".join(TEXT_COLUMNS)
    with connection.cursor() as cursor:
        cursor.execute("SELECT COALESCE(MAX(id), 0) FROM billing_charge")
        last_before = cursor.fetchone()[0]
        cursor.execute(f"INSERT INTO {table}_pause (id) VALUES (NULL)")  # noqa: S608 - fixed name
        pause_id = cursor.lastrowid
        try:
            if deleting is not None:
                ids_sql, ids_params = deleting.order_by().values("id").query.sql_with_params()
                cursor.execute(
                    f"INSERT INTO {table}({table}, rowid, {cols}) SELECT 'delete', id, {cols} "  # noqa: S608 - fixed names
                    f"FROM billing_charge WHERE id IN ({ids_sql})",
                    ids_params,
                )
            yield
            _sqlite_larger_fts_flushes(cursor)
            # Ids only grow (AUTOINCREMENT): the rows above the old maximum are this block's.
            cursor.execute(
                f"INSERT INTO {table}(rowid, {cols}) SELECT id, {cols} FROM billing_charge WHERE id > %s",  # noqa: S608
                [last_before],
            )
        finally:
            cursor.execute(f"DELETE FROM {table}_pause WHERE id = %s", [pause_id])  # noqa: S608 - fixed name


def _sqlite_larger_fts_flushes(cursor) -> None:
    """FTS5 writes the terms it collects to a new segment of the index each SQLITE_FTS_HASH_BYTES
    (1 MB by default): larger flushes make a bulk insert's segments fewer and the insert 15 %
    cheaper (2.3 s instead of 2.7 s at 490k charges). The option (`hashsize`, kept in the table's
    configuration) is FTS5's own though not in its documentation: a SQLite refusing it changes
    nothing."""
    try:
        with transaction.atomic():
            cursor.execute(
                f"INSERT INTO {SQLITE_FTS_TABLE}({SQLITE_FTS_TABLE}, rank) VALUES ('hashsize', %s)",  # noqa: S608 - fixed name
                [SQLITE_FTS_HASH_BYTES],
            )
    except DatabaseError:
        pass


def sqlite_triggers_missing() -> list[str]:
    """Triggers keeping the SQLite search table current that the schema lacks (a table rebuilt
    by a later migration loses them)."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT name FROM sqlite_master WHERE type = 'trigger' AND tbl_name = 'billing_charge'"
        )
        present = {row[0] for row in cursor.fetchall()}
    return [name for name in SQLITE_TRIGGERS if name not in present]
