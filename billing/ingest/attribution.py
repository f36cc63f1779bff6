"""Who pays for each charge of a parsed file, worked out per attribution, column-wise.

A file has one attribution per distinct set of tag values; a million-row export with per-row
grant numbers has hundreds of thousands. The rules are applied to whole columns with pyarrow, and
Python only sees what is distinct: e-mail addresses, project codes, account mappings, flag keys.

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

    table: pa.Table  # RESOLUTION_COLUMNS
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

    def pi_ids(self) -> set[int]:
        return set(pc.unique(self.table.column("pi_id").drop_null()).to_pylist())


def _lookup(values: pa.Array, keys: list[str]) -> pa.Array:
    """Position of each value in `keys`, null where absent."""
    return pc.index_in(values, value_set=pa.array(keys, pa.string()))


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
    """Resolve every attribution used by `charges` (creating PIs and projects met for the first time)."""
    email, code, fund_org, cost_center, ref1, ref2 = tag_reader.attribution_columns()
    ambiguity = tag_reader.ambiguity_column()
    ambiguous = pc.not_equal(ambiguity, "")
    n = len(email)
    used = np.zeros(n, dtype=bool)
    used[pc.unique(charges.column("attribution")).to_numpy()] = True
    used_mask = pa.array(used)

    # PIs named by tags (valid addresses only).
    emails = sorted(e for e in pc.unique(email.filter(used_mask)).to_pylist() if is_plain_email(e))
    pis = dict(PI.objects.filter(email__in=emails).values_list("email", "pk"))
    missing_pis = [e for e in emails if e not in pis]
    if missing_pis:
        PI.objects.bulk_create([PI(email=e) for e in missing_pis], ignore_conflicts=True)
        pis.update(PI.objects.filter(email__in=missing_pis).values_list("email", "pk"))
    pi_emails = list(pis)
    pi_row = pc.if_else(used_mask, _lookup(email, pi_emails), pa.scalar(None, pa.int32()))
    has_pi = pc.is_valid(pi_row)
    # A PI tag given but not a plain address: kept for the flag, never a PI.
    invalid_email = pc.if_else(pc.and_(pc.not_equal(email, ""), pc.invert(has_pi)), email, "")
    pi_pk = pa.array(list(pis.values()), pa.int64()).take(pi_row)

    # Projects named by tags; a new one belongs to the PI of the first attribution naming it.
    codes = [c for c in pc.unique(code.filter(used_mask)).to_pylist() if c]
    projects = {
        row[0]: row for row in Project.objects.filter(project_id__in=codes).values_list(*PROJECT_FIELDS)
    }
    candidates = pc.and_(has_pi, pc.not_equal(code, ""))
    candidates = pc.and_(
        candidates, pc.invert(pc.is_in(code, value_set=pa.array(list(projects), pa.string())))
    )
    candidate_rows = pc.indices_nonzero(candidates)
    candidate_codes = code.take(candidate_rows)
    # index_in gives the first position of each code: the lowest attribution id naming it.
    firsts = candidate_rows.take(pc.index_in(pc.unique(candidate_codes), value_set=candidate_codes))
    new_projects = {
        values["project_code"]: Project(
            project_id=values["project_code"],
            pi_id=pis[values["pi_email"]],
            fund_org=values["fund_org"],
            cost_center=values["cost_center"],
            reference_1=values["reference_1"],
            reference_2=values["reference_2"],
        )
        for values in pa.table(
            {
                "pi_email": email.take(firsts),
                "project_code": code.take(firsts),
                "fund_org": fund_org.take(firsts),
                "cost_center": cost_center.take(firsts),
                "reference_1": ref1.take(firsts),
                "reference_2": ref2.take(firsts),
            }
        ).to_pylist()
    }
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
    project_rows = list(projects.values())
    project_row = pc.if_else(used_mask, _lookup(code, list(projects)), pa.scalar(None, pa.int32()))
    has_project = pc.is_valid(project_row)

    def project_column(position: int, kind: pa.DataType) -> pa.Array:
        return pa.array([row[position] for row in project_rows], kind).take(project_row)

    p_pk, p_pi_id = project_column(1, pa.int64()), project_column(2, pa.int64())
    p_email, p_fund_org = project_column(3, pa.string()), project_column(4, pa.string())
    p_cost_center, p_ref1, p_ref2 = (project_column(i, pa.string()) for i in (5, 6, 7))

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
    table = pa.table(columns)

    # Attributions resolved per sub-account: one row per distinct (attribution, sub-account) pair.
    needs = needs_mapping.to_numpy(zero_copy_only=False)
    attribution = charges.column("attribution")
    subset = charges.filter(pc.take(pa.array(needs), attribution))
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
    pair_table, pair_owner = _mapped_rows(pair_ids, [texts.values[s] for s in pair_subs], table, source)
    table = pa.concat_tables([table, pair_table]).combine_chunks()
    owner = pa.concat_arrays([owner, pa.array(pair_owner, pa.string())])
    ambiguity = pa.concat_arrays([ambiguity, pa.array([""] * len(pair_owner), pa.string())])
    invalid_email = pa.concat_arrays([invalid_email, invalid_email.take(pa.array(pair_ids, pa.int64()))])

    # Flags that depend only on who pays: computed once per distinct combination.
    has_payer = pc.is_valid(table.column("pi_id"))
    groups, first_rows = _distinct_rows(
        pc.if_else(has_payer, "1", "0"),
        table.column("project_code"),
        table.column("fund_org"),
        pc.fill_null(owner, ""),
        table.column("pi_email"),
        ambiguity,
        invalid_email,
    )
    sample = table.take(pa.array(first_rows)).to_pydict()
    owners = owner.take(pa.array(first_rows)).to_pylist()
    ambiguities = ambiguity.take(pa.array(first_rows)).to_pylist()
    invalid_emails = invalid_email.take(pa.array(first_rows)).to_pylist()
    flag_groups = []
    for i in range(len(first_rows)):
        flags = context.attribution_flags(
            has_pi=sample["pi_id"][i] is not None,
            project_code=sample["project_code"][i],
            fund_org=sample["fund_org"][i],
            project_owner_email=owners[i],
            pi_email=sample["pi_email"][i],
            ambiguity=ambiguities[i],
            invalid_pi_email=invalid_emails[i],
        )
        flag_groups.append((flags, summarize(flags)))
    table = table.append_column("flag_group", pa.array(groups.astype(np.int32)))
    pair_keys = pa.array((np.asarray(pair_ids, dtype=np.int64) << 32) | np.asarray(pair_subs, dtype=np.int64))
    return Resolutions(table=table, needs_mapping=needs, pair_keys=pair_keys, flag_groups=flag_groups)


def _mapped_rows(
    attribution_ids: list[int], subs: list[str], table: pa.Table, source: Source
) -> tuple[pa.Table, list[str | None]]:
    """Rows for (attribution, sub-account) pairs: the sub-account's mapping, else unattributed."""
    mappings: dict[str, AccountMapping] = {}
    for candidate in AccountMapping.objects.filter(sub_account_id__in=set(subs)).select_related(
        "project__pi"
    ):
        # A mapping for this source wins over one for every source.
        if candidate.source_id in (None, source.pk) and (
            candidate.source_id == source.pk or candidate.sub_account_id not in mappings
        ):
            mappings[candidate.sub_account_id] = candidate
    tagged = table.take(pa.array(attribution_ids, pa.int64())).to_pydict() if attribution_ids else None
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
