"""Who pays for each charge of a parsed file, worked out per attribution, column-wise.

A file has one attribution per distinct set of tag values; a million-row export with per-row
grant numbers has hundreds of thousands. The rules are applied to whole columns with pyarrow, and
Python only sees what is distinct: e-mail addresses, project codes, account mappings, flag keys.
The columns are those of RESOLVE_CHUNK attributions at a time, and the payers are kept with their
texts dictionary-encoded, so that memory does not grow with the file's attributions (at 1.7M
attributions resolving them whole took about 1 GB more than the parse left).

Order of the rules: tags that name a PI; else the owner of the tagged project; else the
sub-account's AccountMapping (a mapping for this source wins over one for every source); else
unattributed. A PI tag that is not a plain e-mail address ("n/a", "TBD", "x<victim@evil.example>",
chargeback.emails) names nobody and is flagged "invalid PI email". Tags that give
a payer field twice name nobody either, and no mapping applies: they are flagged "ambiguous tags"
for a reviewer. PIs and projects are created on first sight, a new project with the first
attribution (by id) that names it.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from billing.models import PI, AccountMapping, Project, Source
from chargeback.emails import is_plain_email

from .flagging import Flag, FlagContext, summarize
from .transform import ATTRIBUTION_FIELDS, Encoder, TagReader

# Columns of a Resolutions table, one row per attribution and then one per mapped (attribution, sub-account).
# The payer's text fields are the attribution fields of tags (transform.ATTRIBUTION_FIELDS).
RESOLUTION_COLUMNS = (
    "pi_id",
    "project_id",
    *ATTRIBUTION_FIELDS,
    "source",  # tags, project, mapping, ambiguous, none
    "flag_group",  # index into Resolutions.flag_groups
)
PROJECT_FIELDS = (
    "project_id",
    "pk",
    "pi_id",
    "pi__email",
    "fund_org",
    "cost_center",
    "reference_1",
    "reference_2",
)


@dataclass
class Resolutions:
    """The payer of every attribution of a file, as columns.

    Rows 0..n-1 belong to attribution ids 0..n-1. An attribution whose tags name neither a PI nor a
    known project is resolved per sub-account (account mappings): its charges use the row of their
    (attribution, sub-account) pair, after the first n.
    """

    table: pa.Table  # RESOLUTION_COLUMNS, text columns dictionary-encoded (see payers)
    needs_mapping: np.ndarray  # bool per attribution id
    pair_keys: pa.Array  # int64 (attribution id << 32 | sub-account text id), row n + i for key i
    flag_groups: list[tuple[list[Flag], str]]  # (flags, summary) per flag group

    def rows_of(
        self, attribution: pa.ChunkedArray | pa.Array, sub_account: pa.ChunkedArray | pa.Array
    ) -> np.ndarray:
        """The row of each charge, given its attribution ids and sub-account text ids."""
        ids = np.asarray(attribution.to_numpy(), dtype=np.int64)
        rows = ids.copy()
        mapped = self.needs_mapping[ids]
        if mapped.any():
            keys = (ids[mapped] << 32) | np.asarray(sub_account.to_numpy(), dtype=np.int64)[mapped]
            positions = pc.index_in(pa.array(keys), value_set=self.pair_keys).to_numpy(zero_copy_only=False)
            rows[mapped] = len(self.needs_mapping) + positions.astype(np.int64)
        return rows

    def payers(self, rows: np.ndarray) -> pa.Table:
        """The payer rows (RESOLUTION_COLUMNS, plain values) of these rows (from rows_of)."""
        return _decoded(self.table.take(pa.array(rows)))

    def pi_ids(self) -> set[int]:
        return set(pc.unique(self.table.column("pi_id").drop_null()).to_pylist())


def _lookup(values: pa.Array, keys: list[str] | pa.Array) -> pa.Array:
    """Position of each value in `keys`, null where absent."""
    return pc.index_in(values, value_set=keys if isinstance(keys, pa.Array) else pa.array(keys, pa.string()))


def _array(values: pa.Array | pa.ChunkedArray) -> pa.Array:
    return values.combine_chunks() if isinstance(values, pa.ChunkedArray) else values


def _joined(*columns: pa.Array | pa.ChunkedArray) -> pa.Array:
    """One string per row that differs whenever any column differs: values are escaped
    (\\x1e -> \\x1e\\x1e, \\x1f -> \\x1e\\x1f) so that the \\x1f between them is unambiguous."""
    escaped = [
        pc.replace_substring(pc.replace_substring(c, "\x1e", "\x1e\x1e"), "\x1f", "\x1e\x1f") for c in columns
    ]
    return pc.binary_join_element_wise(*escaped, "\x1f")


def _distinct_rows(*columns: pa.Array | pa.ChunkedArray) -> tuple[np.ndarray, np.ndarray]:
    """The group of each row (rows equal in every column share one) and the first row of each group.

    Each column is dictionary-encoded and the codes combined into one integer per row, which
    takes far less memory than joining the texts of millions of rows (a file can have millions
    of attributions); when the codes cannot fit one integer, the texts are joined after all.
    """
    codes = [pc.dictionary_encode(_array(column), null_encoding="encode") for column in columns]
    sizes = [max(len(encoded.dictionary), 1) for encoded in codes]
    if math.prod(sizes) < 2**62:
        key = np.zeros(len(codes[0]) if codes else 0, dtype=np.int64)
        for encoded, size in zip(codes, sizes, strict=True):
            key = key * size + encoded.indices.to_numpy(zero_copy_only=False).astype(np.int64)
    else:
        key = pc.dictionary_encode(_array(_joined(*columns))).indices.to_numpy(zero_copy_only=False)
    _, first_rows, groups = np.unique(key, return_index=True, return_inverse=True)
    return groups.reshape(-1), first_rows


def _or(value: pa.Array, fallback: pa.Array) -> pa.Array:
    """`value` where not empty, else the fallback (empty where that is null)."""
    return pc.if_else(pc.not_equal(value, ""), value, pc.fill_null(fallback, ""))


def resolve_attributions(
    charges: pa.Table, tag_reader: TagReader, texts: Encoder, source: Source, context: FlagContext
) -> Resolutions:
    """Resolve every attribution used by `charges` (creating PIs and projects met for the first time).

    The attributions are read RESOLVE_CHUNK at a time, in three passes (PIs, then new projects,
    then the payers), so that memory follows the chunk rather than the file.
    """
    n = tag_reader.attribution_count()
    used = np.zeros(n, dtype=bool)
    used[pc.unique(charges.column("attribution")).to_numpy()] = True
    chunks = _AttributionChunks(tag_reader, used)

    # PIs named by tags (valid addresses only), and the project codes named.
    plain: dict[str, bool] = {}
    code_set: set[str] = set()
    for chunk in chunks:
        for e in pc.unique(chunk.email.filter(chunk.used)).to_pylist():
            if e not in plain:
                plain[e] = is_plain_email(e)
        code_set.update(c for c in pc.unique(chunk.code.filter(chunk.used)).to_pylist() if c)
    emails = sorted(e for e, ok in plain.items() if ok)
    pis = dict(PI.objects.filter(email__in=emails).values_list("email", "pk"))
    missing_pis = [e for e in emails if e not in pis]
    if missing_pis:
        PI.objects.bulk_create([PI(email=e) for e in missing_pis], ignore_conflicts=True)
        pis.update(PI.objects.filter(email__in=missing_pis).values_list("email", "pk"))
    pi_emails = pa.array(list(pis), pa.string())
    pi_pks = pa.array(list(pis.values()), pa.int64())

    # Projects named by tags; a new one belongs to the PI of the first attribution naming it.
    codes = sorted(code_set)
    projects = {
        row[0]: row for row in Project.objects.filter(project_id__in=codes).values_list(*PROJECT_FIELDS)
    }
    known_codes = pa.array(list(projects), pa.string())
    new_projects: dict[str, Project] = {}
    for chunk in chunks:
        has_pi = pc.is_valid(pc.if_else(chunk.used, _lookup(chunk.email, pi_emails), _NULL_ROW))
        candidates = pc.and_(has_pi, pc.not_equal(chunk.code, ""))
        candidates = pc.and_(candidates, pc.invert(pc.is_in(chunk.code, value_set=known_codes)))
        candidate_rows = pc.indices_nonzero(candidates)
        candidate_codes = chunk.code.take(candidate_rows)
        unseen = [c for c in pc.unique(candidate_codes).to_pylist() if c not in new_projects]
        if not unseen:
            continue
        # index_in gives the first position of each code: the lowest attribution id naming it.
        firsts = candidate_rows.take(pc.index_in(pa.array(unseen, pa.string()), value_set=candidate_codes))
        for values in pa.table(
            {
                "pi_email": chunk.email.take(firsts),
                "project_code": chunk.code.take(firsts),
                "fund_org": chunk.fund_org.take(firsts),
                "cost_center": chunk.cost_center.take(firsts),
                "reference_1": chunk.ref1.take(firsts),
                "reference_2": chunk.ref2.take(firsts),
            }
        ).to_pylist():
            new_projects[values["project_code"]] = Project(
                project_id=values["project_code"],
                pi_id=pis[values["pi_email"]],
                fund_org=values["fund_org"],
                cost_center=values["cost_center"],
                reference_1=values["reference_1"],
                reference_2=values["reference_2"],
            )
    if new_projects:
        Project.objects.bulk_create(new_projects.values(), ignore_conflicts=True)
        projects.update(
            {
                row[0]: row
                for row in Project.objects.filter(project_id__in=list(new_projects)).values_list(
                    *PROJECT_FIELDS
                )
            }
        )
    payers = _Payers(pi_emails, pi_pks, list(projects.values()))

    # The payer of each attribution, and the flags of each distinct payer (flag groups).
    groups = _FlagGroups(context)
    tables, needs, invalid_emails = [], [], []
    for chunk in chunks:
        table, owner, invalid_email, needs_mapping = payers.resolve(chunk)
        tables.append(groups.grouped(table, owner, chunk.ambiguity, invalid_email))
        needs.append(needs_mapping)
        invalid_emails.append(invalid_email)
        del table, owner
    needs_all = np.concatenate(needs) if needs else np.zeros(0, dtype=bool)
    invalid_all = pa.concat_arrays(invalid_emails) if invalid_emails else pa.array([], pa.string())
    del chunks, needs, invalid_emails

    # Attributions resolved per sub-account: one row per distinct (attribution, sub-account) pair.
    attribution = charges.column("attribution")
    subset = charges.filter(pc.take(pa.array(needs_all), attribution))
    pairs = (
        pa.table(
            {
                "a": pc.cast(subset.column("attribution"), pa.int64()),
                "s": pc.cast(subset.column("sub_account_id"), pa.int64()),
            }
        )
        .group_by(["a", "s"])
        .aggregate([])
    )
    pair_ids, pair_subs = pairs.column("a").to_pylist(), pairs.column("s").to_pylist()
    resolved = _stored(tables)
    tagged = _decoded(resolved.take(pa.array(pair_ids, pa.int64())).drop_columns(["flag_group"]))
    pair_table, pair_owner = _mapped_rows(pair_ids, [texts.values[s] for s in pair_subs], tagged, source)
    pair_rows = groups.grouped(
        pair_table,
        pa.array(pair_owner, pa.string()),
        pa.array([""] * len(pair_owner), pa.string()),
        invalid_all.take(pa.array(pair_ids, pa.int64())),
    )
    table = _stored([resolved, pair_rows])
    pair_keys = pa.array((np.asarray(pair_ids, dtype=np.int64) << 32) | np.asarray(pair_subs, dtype=np.int64))
    return Resolutions(table=table, needs_mapping=needs_all, pair_keys=pair_keys, flag_groups=groups.flags)


# Attributions read at once (a file can have millions: a grant number per row).
RESOLVE_CHUNK = 500_000
_NULL_ROW = pa.scalar(None, pa.int32())


@dataclass
class _Chunk:
    """The fields of attribution ids start..start+len-1, and whether the charges use each."""

    start: int
    used: pa.Array  # bool
    email: pa.Array
    code: pa.Array
    fund_org: pa.Array
    cost_center: pa.Array
    ref1: pa.Array
    ref2: pa.Array
    ambiguity: pa.Array


class _AttributionChunks:
    """The file's attributions, RESOLVE_CHUNK at a time, read again on each iteration (a single
    chunk is kept: a small file reads its attributions once)."""

    def __init__(self, tag_reader: TagReader, used: np.ndarray) -> None:
        self.tag_reader, self.used = tag_reader, used
        self._only: _Chunk | None = None

    def __iter__(self) -> Iterator[_Chunk]:
        n = len(self.used)
        if n <= RESOLVE_CHUNK:
            if self._only is None:
                self._only = self._chunk(0, n)
            yield self._only
            return
        for start in range(0, n, RESOLVE_CHUNK):
            yield self._chunk(start, min(n, start + RESOLVE_CHUNK))

    def _chunk(self, start: int, stop: int) -> _Chunk:
        (email, code, fund_org, cost_center, ref1, ref2), ambiguity = self.tag_reader.attribution_parts(
            start, stop
        )
        used = pa.array(self.used[start:stop])
        return _Chunk(start, used, email, code, fund_org, cost_center, ref1, ref2, ambiguity)


class _Payers:
    """Who pays for the attributions of a chunk, once the file's PIs and projects exist."""

    def __init__(self, pi_emails: pa.Array, pi_pks: pa.Array, project_rows: list[tuple]) -> None:
        self.pi_emails, self.pi_pks = pi_emails, pi_pks
        self.codes = [row[0] for row in project_rows]
        self.project_columns = [
            pa.array([row[position] for row in project_rows], kind)
            for position, kind in (
                (1, pa.int64()),
                (2, pa.int64()),
                *((position, pa.string()) for position in range(3, 8)),
            )
        ]

    def resolve(self, chunk: _Chunk) -> tuple[pa.Table, pa.Array, pa.Array, np.ndarray]:
        """The chunk's payer rows (RESOLUTION_COLUMNS but flag_group), the owner of the project
        that pays (null unless a PI or project pays), the invalid PI address each names (or ""),
        and which attributions go to account mappings."""
        email, code, fund_org = chunk.email, chunk.code, chunk.fund_org
        cost_center, ref1, ref2 = chunk.cost_center, chunk.ref1, chunk.ref2
        used_mask = chunk.used
        ambiguous = pc.not_equal(chunk.ambiguity, "")
        pi_row = pc.if_else(used_mask, _lookup(email, self.pi_emails), _NULL_ROW)
        has_pi = pc.is_valid(pi_row)
        # A PI tag given but not a plain address: kept for the flag, never a PI.
        invalid_email = pc.if_else(pc.and_(pc.not_equal(email, ""), pc.invert(has_pi)), email, "")
        pi_pk = self.pi_pks.take(pi_row)
        project_row = pc.if_else(used_mask, _lookup(code, self.codes), _NULL_ROW)
        has_project = pc.is_valid(project_row)
        p_pk, p_pi_id, p_email, p_fund_org, p_cost_center, p_ref1, p_ref2 = (
            column.take(project_row) for column in self.project_columns
        )

        # Tags that name a PI win; else the tagged project's owner; the rest goes to account mappings.
        by_project = pc.and_(pc.invert(has_pi), has_project)
        needs_mapping = pc.and_(used_mask, pc.invert(pc.or_(pc.or_(has_pi, has_project), ambiguous)))
        null_id = pa.scalar(None, pa.int64())
        columns = {
            "pi_id": pc.if_else(has_pi, pi_pk, pc.if_else(by_project, p_pi_id, null_id)),
            "project_id": pc.if_else(pc.or_(has_pi, by_project), p_pk, null_id),
            "pi_email": pc.if_else(by_project, p_email, email),
            "project_code": code,
            "fund_org": _or(
                fund_org, pc.if_else(pc.or_(has_pi, by_project), p_fund_org, pa.scalar(None, pa.string()))
            ),
            "cost_center": pc.if_else(by_project, _or(cost_center, p_cost_center), cost_center),
            "reference_1": pc.if_else(by_project, _or(ref1, p_ref1), ref1),
            "reference_2": pc.if_else(by_project, _or(ref2, p_ref2), ref2),
            "source": pc.if_else(
                has_pi, "tags", pc.if_else(by_project, "project", pc.if_else(ambiguous, "ambiguous", "none"))
            ),
        }
        owner = pc.if_else(pc.or_(has_pi, by_project), p_email, pa.scalar(None, pa.string()))
        return (
            pa.table(columns),
            owner,
            invalid_email,
            np.asarray(needs_mapping.to_numpy(zero_copy_only=False), dtype=bool),
        )


class _FlagGroups:
    """Flags that depend only on who pays, computed once per distinct combination of the file."""

    def __init__(self, context: FlagContext) -> None:
        self.context = context
        self.flags: list[tuple[list[Flag], str]] = []  # (flags, summary) per flag group
        self._ids: dict[tuple, int] = {}

    def grouped(
        self, table: pa.Table, owner: pa.Array, ambiguity: pa.Array, invalid_email: pa.Array
    ) -> pa.Table:
        """The payer rows with their flag_group column, stored compactly (see _stored)."""
        has_payer = pc.is_valid(table.column("pi_id"))
        rows, first_rows = _distinct_rows(
            pc.if_else(has_payer, "1", "0"),
            table.column("project_code"),
            table.column("fund_org"),
            pc.fill_null(owner, ""),
            table.column("pi_email"),
            ambiguity,
            invalid_email,
        )
        at = pa.array(first_rows, pa.int64())
        sample = table.select(["pi_id", "project_code", "fund_org", "pi_email"]).take(at).to_pydict()
        owners, ambiguities = owner.take(at).to_pylist(), ambiguity.take(at).to_pylist()
        invalid_emails = invalid_email.take(at).to_pylist()
        ids = np.zeros(len(first_rows), dtype=np.int32)
        for i in range(len(first_rows)):
            has_pi = sample["pi_id"][i] is not None
            key = (
                has_pi,
                sample["project_code"][i],
                sample["fund_org"][i],
                owners[i] or "",
                sample["pi_email"][i],
                ambiguities[i],
                invalid_emails[i],
            )
            ident = self._ids.get(key)
            if ident is None:
                flags = self.context.attribution_flags(
                    has_pi=has_pi,
                    project_code=sample["project_code"][i],
                    fund_org=sample["fund_org"][i],
                    project_owner_email=owners[i],
                    pi_email=sample["pi_email"][i],
                    ambiguity=ambiguities[i],
                    invalid_pi_email=invalid_emails[i],
                )
                ident = self._ids[key] = len(self.flags)
                self.flags.append((flags, summarize(flags)))
            ids[i] = ident
        table = table.append_column("flag_group", pa.array(ids[rows]))
        return _stored([table])


def _stored(tables: list[pa.Table]) -> pa.Table:
    """Payer rows as one table whose text columns are dictionary-encoded: a file's millions of
    attributions repeat a few hundred PIs and projects, held once each instead of once per row."""
    encoded = []
    for table in tables:
        columns = [
            pc.dictionary_encode(column) if pa.types.is_string(column.type) else column
            for column in table.columns
        ]
        encoded.append(pa.table(columns, names=table.column_names))
    return pa.concat_tables(encoded).unify_dictionaries().combine_chunks()


def _decoded(table: pa.Table) -> pa.Table:
    """The table with its dictionary-encoded columns as plain values."""
    columns = [
        column.cast(column.type.value_type) if pa.types.is_dictionary(column.type) else column
        for column in table.columns
    ]
    return pa.table(columns, names=table.column_names)


def _mapped_rows(
    attribution_ids: list[int], subs: list[str], table: pa.Table, source: Source
) -> tuple[pa.Table, list[str | None]]:
    """Rows for (attribution, sub-account) pairs: the sub-account's mapping, else unattributed.
    `table` holds the payer row of each pair's attribution, in the order of the pairs."""
    mappings: dict[str, AccountMapping] = {}
    for candidate in AccountMapping.objects.filter(sub_account_id__in=set(subs)).select_related(
        "project__pi"
    ):
        # A mapping for this source wins over one for every source.
        if candidate.source_id in (None, source.pk) and (
            candidate.source_id == source.pk or candidate.sub_account_id not in mappings
        ):
            mappings[candidate.sub_account_id] = candidate
    tagged = table.to_pydict() if attribution_ids else None
    rows: dict[str, list] = {name: [] for name in table.column_names}
    owners: list[str | None] = []
    for i, sub in enumerate(subs):
        mapping = mappings.get(sub)
        if mapping is None:
            # Unattributed: what the tags said is kept for the reviewer.
            assert tagged is not None
            for name in table.column_names:
                rows[name].append(tagged[name][i])
            rows["source"][-1] = "none"
            owners.append(None)
            continue
        project = mapping.project
        values = {
            "pi_id": project.pi_id,
            "project_id": project.pk,
            "pi_email": project.pi.email,
            "project_code": project.project_id,
            "fund_org": mapping.fund_org or project.fund_org,
            "cost_center": project.cost_center,
            "reference_1": project.reference_1,
            "reference_2": project.reference_2,
            "source": "mapping",
        }
        for name in table.column_names:
            rows[name].append(values[name])
        owners.append(project.pi.email)
    return pa.table(rows, schema=table.schema), owners
