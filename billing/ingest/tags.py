"""Attribution from the Tags column: which PI, project, fund/org and references a row names.

Tags is a JSON object (Azure's brace-less form `"k": "v", ...` accepted). The configured keys
are matched case-insensitively, with or without one provider prefix (AWS's `user:`), by the same
RE2 pattern on both paths below, so the two always agree:

- the fast path: plain objects (no escapes, nothing nested) are checked as JSON all at once by
  pyarrow's reader, then read column-wise in C++: split at their quotes when the reader took them
  all (a string followed by a colon is a key; only the distinct key names meet the pattern), or
  by one RE2 search per key when it refused some (json.loads then finds which);
- the JSON path: anything else is parsed by `json.loads`, one distinct value at a time.

A key given twice (`{"pi_email": "a@x", ..., "pi_email": "b@x"}`) would name two payers (the
first by a regex, the last by JSON), so such a row names nobody: its attribution carries the
ambiguity ("pi_email appears twice"), it is flagged, and a reviewer corrects it.

Values: strings as written, numbers and true/false as their JSON text, null (and "null",
"none", empty) as nothing; a nested object or array names nothing.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pajson

ATTRIBUTION_FIELDS = ("pi_email", "project_code", "fund_org", "cost_center", "reference_1", "reference_2")
# An attribution is kept as one string: its fields, then why the tags name nobody (empty unless
# ambiguous), joined by this separator. JSON text cannot hold it unescaped, and decoded values
# have it removed.
FIELD_SEPARATOR = "\x1f"
NO_ATTRIBUTION = FIELD_SEPARATOR * len(ATTRIBUTION_FIELDS)
# A plain object: braces around text without escapes, nested objects or arrays.
_PLAIN = r"^[ \t\r\n]*\{[^\\{}\[\]]*\}[ \t\r\n]*$"
_JSON_SPACE = " \t\r\n"
_COLON_FIRST = r"^[ \t\r\n]*:"  # JSON space, then a colon
# What may follow a string's closing quote in JSON (a key starting so could match across strings).
_AFTER_QUOTE = set(" \t\r\n\f\v,:}]")


class _Pairs(list):
    """A JSON object as the list of its (key, value) pairs, duplicates kept."""


def _value_text(value: object) -> str | None:
    """A JSON value as the fast path reads it: strings as they are, numbers (parsed as text) too,
    true/false in lower case, null and nested values as nothing."""
    if isinstance(value, str):
        return value
    if value is True:
        return "true"
    if value is False:
        return "false"
    return None


def _unicode(text: str) -> str:
    """JSON escapes may decode to lone surrogates, which UTF-8 (and pyarrow) cannot hold."""
    return text.encode("utf-8", "surrogatepass").decode("utf-8", "replace")


def parse_tags(text: str) -> list[tuple[str, str | None]]:
    """The (key, value) pairs of one Tags value, in order, duplicates kept; ValueError if malformed."""
    stripped = text.strip(_JSON_SPACE)
    if not stripped:
        return []
    options: dict = {"object_pairs_hook": _Pairs, "parse_int": str, "parse_float": str, "parse_constant": str}
    try:
        value = json.loads(stripped, **options)
    except ValueError:
        # Some Azure exports drop the outer braces: "k": "v", "k2": "v2"
        if stripped.startswith("{"):
            raise
        value = json.loads("{" + stripped + "}", **options)
    if not isinstance(value, _Pairs):
        raise ValueError("Tags is not a JSON object")
    pairs = []
    for key, raw in value:
        value_text = _value_text(raw)
        pairs.append((_unicode(key), None if value_text is None else _unicode(value_text)))
    return pairs


class AttributionIndex:
    """Distinct attribution strings and their ids (0 is NO_ATTRIBUTION), held in Arrow and numpy.

    A file can name millions of attributions (a grant number per row); as Python strings in a
    dict they took ~200 bytes each. Here each costs its text plus 16 bytes: the strings live in
    Arrow arrays, found again through a sorted array of their (per-process) hashes, and a hash
    found is always confirmed by comparing the strings. Should two ever share a hash, the index
    falls back to a dict of every string (exact, only larger).
    """

    def __init__(self) -> None:
        self._chunks: list[pa.Array] = [pa.array([NO_ATTRIBUTION], pa.string())]
        self._all: pa.Array | None = None  # the chunks as one array, when last asked for
        self._count = 1
        self._hashes = np.array([hash(NO_ATTRIBUTION)], dtype=np.int64)  # sorted
        self._ids = np.zeros(1, dtype=np.int64)  # the id of each sorted hash
        self._exact: dict[str, int] | None = None  # after a hash collision only
        self._frozen = False

    def __len__(self) -> int:
        return self._count

    def values(self) -> pa.Array:
        if self._all is None or len(self._all) != self._count:
            self._all = pa.concat_arrays(self._chunks)
            self._chunks = [self._all]
        return self._all

    def freeze(self) -> None:
        """No more lookups: keep only the strings."""
        self.values()
        self._hashes = self._ids = np.zeros(0, dtype=np.int64)
        self._exact = None
        self._frozen = True

    def ids_of(self, strings: pa.Array) -> np.ndarray:
        """The id of each of these distinct strings, new ones numbered in their order."""
        assert not self._frozen, "attributions are read before the index is frozen"
        texts = strings.to_pylist()
        if self._exact is not None:
            return self._exact_ids(texts, strings)
        hashes = np.fromiter((hash(t) for t in texts), dtype=np.int64, count=len(texts))
        positions = np.minimum(np.searchsorted(self._hashes, hashes), len(self._hashes) - 1)
        found = self._hashes[positions] == hashes
        ids = np.where(found, self._ids[positions], -1)
        new = ~found
        new_hashes = hashes[new]
        if found.any():
            # Taken from the chunks as they are: joining them would copy every string each batch.
            known = pa.chunked_array(self._chunks, pa.string()).take(pa.array(ids[found]))
            if not pc.all(pc.equal(strings.filter(pa.array(found)), known)).as_py():
                return self._exact_ids(texts, strings)
        # A new string with a known string's hash shows above as found with another text; two new
        # strings with one hash show here.
        order = np.argsort(new_hashes, kind="stable")
        new_sorted = new_hashes[order]
        if np.any(new_sorted[1:] == new_sorted[:-1]):
            return self._exact_ids(texts, strings)
        if new.any():
            ids[new] = np.arange(self._count, self._count + int(new.sum()), dtype=np.int64)
            self._chunks.append(strings.filter(pa.array(new)).cast(pa.string()))
            self._count += int(new.sum())
            # Merged into the sorted hashes (no hash is in both: the new ones were not found).
            at = np.searchsorted(self._hashes, new_sorted)
            self._hashes = np.insert(self._hashes, at, new_sorted)
            self._ids = np.insert(self._ids, at, ids[new][order])
        return ids

    def _exact_ids(self, texts: list[str], strings: pa.Array) -> np.ndarray:
        """The dict-based lookup, for good once hashes have collided."""
        if self._exact is None:
            self._exact = {text: ident for ident, text in enumerate(self.values().to_pylist())}
            self._hashes = self._ids = np.zeros(0, dtype=np.int64)
        out = np.empty(len(texts), dtype=np.int64)
        for position, text in enumerate(texts):
            ident = self._exact.get(text)
            if ident is None:
                ident = self._exact[text] = self._count
                self._chunks.append(pa.array([text], pa.string()))
                self._count += 1
            out[position] = ident
        return out


@dataclass
class TagReader:
    """Reads attribution out of Tags values (configured keys, provider prefixes tolerated)."""

    keys: dict[str, str]  # attribution field -> tag key (lower case)
    prefixes: list[str]
    # Per batch: its distinct Tags values and, per row, which one (None: one value per row).
    tag_batches: list[tuple[pa.Array, pa.Array | None]] = field(default_factory=list)
    _index: AttributionIndex = field(default_factory=lambda: AttributionIndex())

    # --- reading attribution ----------------------------------------------------------------

    def _key_pattern(self, name: str) -> str | None:
        """RE2 pattern of a field's tag key: the key, any case, after at most one prefix."""
        key = self.keys[name]
        if not key:
            return None
        prefixes = "|".join(re.escape(p) for p in self.prefixes)
        return f"(?i:(?:{prefixes})?{re.escape(key)})"

    def attribution_ids(self, texts: pa.Array) -> tuple[np.ndarray, list[tuple[int, str]]]:
        """Attribution ids of distinct Tags values, and the (position, problem) of malformed ones
        (their id is 0: no attribution)."""
        n = len(texts)
        plain = pc.fill_null(pc.match_substring_regex(texts, _PLAIN), False)
        plain_flags = plain.to_numpy(zero_copy_only=False)
        # When pyarrow's reader takes every plain object, they are well-formed JSON and are read by
        # splitting at their quotes; otherwise by a regex per key, which finds the same pairs in
        # well-formed objects and still reads those json.loads takes but pyarrow does not.
        valid = _valid_json_objects(texts.filter(plain))
        if valid and self._splittable():
            values, counts = self._pairs_by_quotes(texts)
        else:
            values, counts = self._pairs_by_regex(texts)
        problems: list[tuple[int, str]] = []
        if not plain_flags.all():
            self._read_json(texts, plain_flags, values, counts, problems)
        if not valid:
            # pyarrow's reader refused the plain objects together: find which, one at a time.
            for position in np.nonzero(plain_flags)[0].tolist():
                text = texts[position].as_py()
                try:
                    json.loads(text)
                except ValueError as exc:
                    problems.append((position, f"Tags is not valid JSON ({exc})"))

        ambiguity = self._ambiguity(counts, n)
        ambiguous = pc.not_equal(ambiguity, "")
        columns = [
            pc.if_else(ambiguous, "", _normalise(value, lower=index == 0))
            for index, value in enumerate(values)
        ]
        joined = pc.binary_join_element_wise(*columns, ambiguity, FIELD_SEPARATOR)
        encoded = pc.dictionary_encode(joined)
        id_of_joined = self._index.ids_of(encoded.dictionary).astype(np.int32)
        ids = id_of_joined[encoded.indices.to_numpy(zero_copy_only=False)]
        for position, _ in problems:
            ids[position] = 0
        return ids, problems

    def _pairs_by_regex(self, texts: pa.Array) -> tuple[list[pa.Array], list[np.ndarray]]:
        """Per field, the value of its key's first occurrence in each text (null: none) and how many
        times the key occurs, by one RE2 search per field."""
        n = len(texts)
        values, counts = [], []
        for name in ATTRIBUTION_FIELDS:
            pattern = self._key_pattern(name)
            if pattern is None:
                values.append(pa.nulls(n, pa.string()))
                counts.append(np.zeros(n, dtype=np.int64))
                continue
            token = pc.struct_field(
                pc.extract_regex(texts, rf'"{pattern}"\s*:\s*(?P<v>"[^"]*"|[^",}}\s]+)'), "v"
            )
            quoted = pc.starts_with(token, '"')
            # A string without its quotes; a number or true/false as written; null names nobody.
            values.append(
                pc.if_else(
                    quoted,
                    pc.utf8_slice_codeunits(token, 1, -1),
                    pc.if_else(pc.equal(token, "null"), pa.scalar(None, pa.string()), token),
                )
            )
            counts.append(np.asarray(pc.is_valid(token).to_numpy(zero_copy_only=False), dtype=np.int64))
        self._count_repeated_keys(texts, counts)
        return values, counts

    def _splittable(self) -> bool:
        """Whether a configured key can only be found as a whole key of an object: it holds no quote
        or backslash and starts with none of the characters that may follow a closing quote."""
        keys = [key for key in self.keys.values() if key]
        for word in (*keys, *self.prefixes):
            if '"' in word or "\\" in word:
                return False
        return not any(word[:1] in _AFTER_QUOTE for word in (*keys, *self.prefixes) if word)

    def _pairs_by_quotes(self, texts: pa.Array) -> tuple[list[pa.Array], list[np.ndarray]]:
        """What _pairs_by_regex gives, for texts whose plain objects are well-formed JSON: split at
        the quotes (a plain object has no escaped ones), strings and what lies between them
        alternate, and a string followed by a colon is a key. No regex runs over the texts.

        Only the plain objects' results count (the JSON path replaces the others)."""
        n = len(texts)
        parts = pc.split_pattern(pc.fill_null(texts, ""), '"')
        tokens = pc.list_flatten(parts)
        offsets = np.asarray(parts.offsets.to_numpy(zero_copy_only=False), dtype=np.int64)
        offsets -= offsets[0]
        at = _before_colons(tokens)
        owners = np.searchsorted(offsets, at, side="right") - 1
        # A key is a string (odd place in its text's tokens) whose next token is in the same text.
        is_key = ((at - offsets[owners]) % 2 == 1) & (at + 1 < offsets[owners + 1])
        at, key_owner = at[is_key], owners[is_key]
        keys = tokens.take(pa.array(at, pa.int64()))
        # After the colon: nothing but space before a string (the next token), else a literal.
        following = pc.utf8_ltrim(tokens.take(pa.array(at + 1, pa.int64())), _JSON_SPACE)
        after = pc.utf8_ltrim(pc.utf8_slice_codeunits(following, 1), _JSON_SPACE)
        literal = pc.utf8_rtrim(after, _JSON_SPACE + ",}")
        string = tokens.take(pa.array(np.minimum(at + 2, max(len(tokens) - 1, 0)), pa.int64()))
        found = pc.if_else(
            pc.equal(after, ""),
            string,
            pc.if_else(pc.equal(literal, "null"), pa.scalar(None, pa.string()), literal),
        )
        distinct_keys = pc.dictionary_encode(keys)
        key_index = np.asarray(distinct_keys.indices.to_numpy(zero_copy_only=False), dtype=np.int64)
        values, counts, matches = [], [], []
        for name in ATTRIBUTION_FIELDS:
            pattern = self._key_pattern(name)
            if pattern is None:
                values.append(pa.nulls(n, pa.string()))
                counts.append(np.zeros(n, dtype=np.int64))
                matches.append(np.zeros(len(at), dtype=bool))
                continue
            matched_key = pc.match_substring_regex(distinct_keys.dictionary, f"^{pattern}$")
            matched = np.asarray(matched_key.to_numpy(zero_copy_only=False), dtype=bool)[key_index]
            where = np.nonzero(matched)[0]
            owners, first = np.unique(key_owner[where], return_index=True)
            pick = np.full(n, -1, dtype=np.int64)
            pick[owners] = where[first]
            values.append(found.take(pa.array(pick, pa.int64(), mask=pick < 0)))
            counts.append(np.bincount(key_owner[where], minlength=n).astype(np.int64))
            matches.append(matched)
        # As the regexes count: a key occurrence may serve several fields (two fields on one key);
        # a field's occurrences are counted one by one only where the keys outnumber the fields found.
        keys_found = np.bincount(key_owner[np.any(matches, axis=0)], minlength=n)
        found_fields = np.sum([np.minimum(c, 1) for c in counts], axis=0)
        exact = keys_found > found_fields
        counts = [np.where(exact, c, np.minimum(c, 1)) for c in counts]
        return values, counts

    def _count_repeated_keys(self, texts: pa.Array, counts: list[np.ndarray]) -> None:
        """Exact key counts where some key may appear twice. One pass counts every attribution key
        of each text; only texts with more keys than the fields found (rare) are counted per field."""
        patterns = [p for p in (self._key_pattern(name) for name in ATTRIBUTION_FIELDS) if p]
        if not patterns:
            return
        keys = np.array(pc.count_substring_regex(texts, rf'"(?:{"|".join(patterns)})"\s*:'), dtype=np.int64)
        suspect = np.nonzero(keys > np.sum(counts, axis=0))[0]
        if not len(suspect):
            return
        subset = texts.take(pa.array(suspect, pa.int64()))
        for index, name in enumerate(ATTRIBUTION_FIELDS):
            pattern = self._key_pattern(name)
            if pattern is not None:
                counts[index][suspect] = np.array(pc.count_substring_regex(subset, rf'"{pattern}"\s*:'))

    def _read_json(
        self,
        texts: pa.Array,
        plain_flags: np.ndarray,
        values: list[pa.Array],
        counts: list[np.ndarray],
        problems: list[tuple[int, str]],
    ) -> None:
        """The JSON path: parse each value that is not a plain object, then match its keys with the
        fast path's patterns; replaces those positions in `values` and `counts`."""
        positions = np.nonzero(~plain_flags)[0]
        owners: list[int] = []  # index into `positions` of each pair
        keys: list[str] = []
        raw: list[str | None] = []
        parsed_ok = np.ones(len(positions), dtype=bool)
        for index, text in enumerate(texts.take(pa.array(positions)).to_pylist()):
            try:
                pairs = parse_tags(text or "")
            except (ValueError, RecursionError) as exc:
                problems.append((int(positions[index]), f"Tags is not valid JSON ({exc})"))
                parsed_ok[index] = False
                continue
            owners += [index] * len(pairs)
            keys += [key for key, _ in pairs]
            raw += [value for _, value in pairs]
        owner = np.asarray(owners, dtype=np.int64)
        key_array = pa.array(keys, pa.string())
        value_array = pa.array(raw, pa.string())
        mask = pa.array(~plain_flags)
        for index, name in enumerate(ATTRIBUTION_FIELDS):
            pattern = self._key_pattern(name)
            if pattern is None:
                continue
            matched = np.nonzero(
                pc.fill_null(pc.match_substring_regex(key_array, f"^{pattern}$"), False).to_numpy(
                    zero_copy_only=False
                )
            )[0]
            count = np.bincount(owner[matched], minlength=len(positions))
            last = np.full(len(positions), -1, dtype=np.int64)
            np.maximum.at(last, owner[matched], matched)
            taken = value_array.take(pa.array(np.where(last >= 0, last, 0))) if len(raw) else None
            found = (
                pc.if_else(pa.array(last >= 0), taken, pa.scalar(None, pa.string()))
                if taken is not None
                else pa.nulls(len(positions), pa.string())
            )
            values[index] = pc.replace_with_mask(values[index], mask, found)
            counts[index][positions] = np.where(parsed_ok, count, 0)

    def _ambiguity(self, counts: list[np.ndarray], n: int) -> pa.Array:
        """Per text, which keys appear more than once ("pi_email appears twice"), or "" (ambiguous
        texts are rare: they are described one by one)."""
        out = np.full(n, "", dtype=object)
        stacked = np.vstack(counts) if counts else np.zeros((0, n), dtype=np.int64)
        for row in np.nonzero((stacked > 1).any(axis=0))[0].tolist():
            out[row] = "; ".join(
                f"{self.keys[name]} appears {'twice' if count == 2 else f'{count} times'}"
                for name, count in zip(ATTRIBUTION_FIELDS, stacked[:, row].tolist(), strict=True)
                if count > 1
            )
        return pa.array(out, pa.string())

    def attribution_count(self) -> int:
        return len(self._index)

    def attribution_parts(self, start: int, stop: int) -> tuple[list[pa.Array], pa.Array]:
        """Attributions start..stop-1 as one string column per ATTRIBUTION_FIELDS entry, and per
        attribution why its tags name nobody ("pi_email appears twice") or "" (a file's millions of
        attributions are resolved a slice at a time)."""
        parts = pc.split_pattern(self._index.values().slice(start, stop - start), FIELD_SEPARATOR)
        return [pc.list_element(parts, i) for i in range(len(ATTRIBUTION_FIELDS))], pc.list_element(
            parts, len(ATTRIBUTION_FIELDS)
        )

    @property
    def attributions(self) -> list[str]:
        """The distinct attributions (see FIELD_SEPARATOR); an attribution id indexes this list."""
        return self._index.values().to_pylist()

    def freeze(self) -> None:
        """Once the file is read: the attributions become one array, their lookup index goes."""
        self._index.freeze()

    # --- keeping the Tags text of charges ---------------------------------------------------

    def keep_texts(self, encoded: pa.DictionaryArray) -> pa.Array:
        """Ids of a batch's Tags values without a Python pass over them: the batch's distinct values
        and row indices are kept, and an id is (batch number << 32) + row number in the batch, so the
        highest id of a charge is its last row, however the file was split into batches."""
        batch = len(self.tag_batches)
        self.tag_batches.append((encoded.dictionary, encoded.indices))
        rows = np.arange(len(encoded), dtype=np.int64) + (batch << 32)
        return pa.array(rows)

    def _values(self, batch: int, rows: np.ndarray) -> pa.Array:
        values, indices = self.tag_batches[batch]
        positions = pa.array(rows) if indices is None else indices.take(pa.array(rows))
        return values.take(positions)

    def compact(self, tag_ids: pa.ChunkedArray | pa.Array) -> pa.Array:
        """Keep only the Tags values `tag_ids` still refer to (the ids of the charges summed so far),
        so that memory follows charges, not rows, when tags differ row by row (a timestamp tag).
        Returns the new ids, in the same order as the old ones, so the highest is still the latest."""
        unique, new_ids = np.unique(np.asarray(tag_ids.to_numpy()), return_inverse=True)
        batches, rows = unique >> 32, unique & 0xFFFFFFFF
        pieces = [
            # large_string: the values kept may together exceed a string array's 2 GB of offsets.
            pc.cast(self._values(int(b), rows[batches == b]), pa.large_string())
            for b in np.unique(batches)
        ]
        self.tag_batches = [(pa.concat_arrays(pieces) if pieces else pa.array([], pa.large_string()), None)]
        return pa.array(new_ids.astype(np.int64))

    def stored_texts_of(self, tag_ids: pa.ChunkedArray | pa.Array) -> pa.Array:
        """Tags values of many ids as stored JSON text ('{}' when empty, Azure's missing braces
        restored), in the order of the ids."""
        return stored_json(pc.cast(self.raw_texts(tag_ids), pa.string()))

    def raw_texts(self, tag_ids: pa.ChunkedArray | pa.Array) -> pa.Array:
        """The Tags values of many ids as read (large strings), in the order of the ids."""
        ids = np.asarray(tag_ids.to_numpy())
        if len(ids) == 0:
            return pa.array([], pa.large_string())
        batches, positions = ids >> 32, ids & 0xFFFFFFFF
        order = np.argsort(batches, kind="stable")
        pieces = [
            pc.cast(self._values(int(batch), positions[order][batches[order] == batch]), pa.large_string())
            for batch in np.unique(batches)
        ]
        # Back from batch order to the order of the ids.
        return pa.concat_arrays(pieces).take(pa.array(np.argsort(order, kind="stable")))

    def forget_texts(self) -> None:
        """Let go of the Tags values of every batch read so far (their charges hold their text:
        spill.py); ids keep counting batches from where they were."""
        empty = pa.array([], pa.large_string())
        self.tag_batches = [(empty, None) for _ in self.tag_batches]


def _before_colons(tokens: pa.Array) -> np.ndarray:
    """Positions of the tokens followed by one that starts with a colon (after JSON space). The
    colon is looked for by a regex only in the few tokens that start with space."""
    colon = np.asarray(pc.starts_with(tokens, ":").to_numpy(zero_copy_only=False), dtype=bool)
    spaced = pc.starts_with(tokens, " ")
    for space in "\t\r\n":
        spaced = pc.or_(spaced, pc.starts_with(tokens, space))
    where = np.nonzero(np.asarray(spaced.to_numpy(zero_copy_only=False), dtype=bool))[0]
    if len(where):
        matched = pc.match_substring_regex(tokens.take(pa.array(where, pa.int64())), _COLON_FIRST)
        colon[where] = np.asarray(matched.to_numpy(zero_copy_only=False), dtype=bool)
    at = np.nonzero(colon)[0] - 1
    return at[at >= 0]


def stored_json(text: pa.Array) -> pa.Array:
    """Tags values as stored: trimmed, '{}' when empty, Azure's missing braces restored."""
    text = pc.utf8_trim_whitespace(text)
    text = pc.if_else(pc.equal(text, ""), "{}", text)
    bare = pc.invert(pc.starts_with(text, "{"))
    return pc.if_else(bare, pc.binary_join_element_wise("{", text, "}", ""), text)


def _normalise(value: pa.Array, *, lower: bool) -> pa.Array:
    """A tag value as attribution uses it: trimmed, without the field separator, "null"/"none"
    as nothing, e-mail addresses in lower case."""
    value = pc.utf8_trim_whitespace(pc.replace_substring(pc.fill_null(value, ""), FIELD_SEPARATOR, ""))
    value = pc.if_else(pc.match_substring_regex(value, "^(?i:null|none)$"), "", value)
    return pc.utf8_lower(value) if lower else value


_SYNTAX_ONLY = pajson.ParseOptions(explicit_schema=pa.schema([]), unexpected_field_behavior="ignore")


def _valid_json_objects(texts: pa.Array) -> bool:
    """True when every text (one plain JSON object each, no newlines inside) parses as JSON.

    The texts go to pyarrow's reader as one buffer, one per line, without a pass in Python; it checks
    their syntax but builds no columns (so a key repeated, or of two types, is no refusal)."""
    if len(texts) == 0:
        return True
    lines = pc.binary_join_element_wise(texts, "\n", "")  # each text and its newline, end to end
    data = lines.buffers()[2]
    end = int(np.frombuffer(lines.buffers()[1], dtype=np.int32)[lines.offset + len(lines)])
    longest = int(pc.max(pc.binary_length(texts)).as_py() or 0)
    try:
        pajson.read_json(
            pa.BufferReader(data.slice(0, end) if data is not None else pa.py_buffer(b"")),
            read_options=pajson.ReadOptions(block_size=max(1 << 20, 2 * longest + 2)),
            parse_options=_SYNTAX_ONLY,
        )
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError):
        return False
    return True
