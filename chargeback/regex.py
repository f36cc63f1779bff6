"""Regular expressions people type (flag rules, the fund/org pattern, the journal's regexes), run
in linear time by RE2, the engine inside pyarrow's compute functions (the project already reads
Tags with it).

Python's `re` backtracks: a reviewer's rule `^(a+)+$` doubles its time with every character of a
resource id and would stall each import. RE2 guarantees time linear in the text, and lacks the
syntax that needs backtracking: lookarounds, backreferences, possessive and atomic groups.
Patterns are checked when they are saved, and the message says which construct RE2 lacks.

A call on one value costs a few microseconds (the compiled pattern is cached by pyarrow's
kernel state per call); code that tests many values uses the `*_many` methods, one vectorised
call per column.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import cached_property, lru_cache

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

_LACKS = (
    ("(?=", "lookahead (?=…)"),
    ("(?!", "negative lookahead (?!…)"),
    ("(?<=", "lookbehind (?<=…)"),
    ("(?<!", "negative lookbehind (?<!…)"),
    ("(?>", "atomic groups (?>…)"),
    ("*+", "possessive quantifiers (*+, ++, ?+)"),
    ("++", "possessive quantifiers (*+, ++, ?+)"),
    ("?+", "possessive quantifiers (*+, ++, ?+)"),
    ("\\Z", "\\Z (use \\z or $)"),
)


class RegexError(ValueError):
    """The pattern is not valid, or uses syntax the linear-time engine lacks."""


def _explain(pattern: str, detail: str) -> str:
    detail = detail.removeprefix("Invalid regular expression: ")
    for text, construct in _LACKS:
        if text in pattern:
            return (
                f"{construct} is not supported: patterns run on RE2, a linear-time engine that cannot "
                f"backtrack; rewrite the pattern without it ({detail})"
            )
    if "invalid escape sequence: \\" in detail and detail[-1:].isdigit():
        return (
            f"backreferences such as {detail.rsplit(': ', 1)[-1]} are not supported: patterns run on RE2, "
            "a linear-time engine that cannot backtrack; rewrite the pattern without them"
        )
    return f"invalid regular expression: {detail}"


class LinearRegex:
    """A pattern checked by RE2 at construction (RegexError when it cannot run)."""

    def __init__(self, pattern: str) -> None:
        self.pattern = pattern
        self._search = pc.MatchSubstringOptions(pattern)
        self._full = pc.MatchSubstringOptions(f"^(?:{pattern})$")
        for options in (self._search, self._full):  # the pattern itself first: its message is the user's
            try:
                pc.match_substring_regex(pa.array([""], pa.string()), options=options)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
                raise RegexError(_explain(pattern, str(exc))) from None

    def __repr__(self) -> str:
        return f"LinearRegex({self.pattern!r})"

    def search(self, text: str) -> bool:
        return bool(self.search_many([text])[0])

    def fullmatch(self, text: str) -> bool:
        return bool(self.fullmatch_many([text])[0])

    def search_many(self, texts: Sequence[str | None] | pa.Array) -> np.ndarray:
        """Per value, whether the pattern occurs in it (None counts as "")."""
        return self._many(texts, self._search)

    def fullmatch_many(self, texts: Sequence[str | None] | pa.Array) -> np.ndarray:
        """Per value, whether the whole value matches."""
        return self._many(texts, self._full)

    @staticmethod
    def _many(texts: Sequence[str | None] | pa.Array, options: pc.MatchSubstringOptions) -> np.ndarray:
        array = texts if isinstance(texts, pa.Array | pa.ChunkedArray) else pa.array(list(texts), pa.string())
        matched = pc.match_substring_regex(pc.fill_null(array, ""), options=options)
        return np.asarray(matched.to_numpy(zero_copy_only=False), dtype=bool)

    @cached_property
    def _groups(self) -> tuple[tuple[str, ...], bool]:
        try:
            found = pc.extract_regex(pa.array([""], pa.string()), self.pattern)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            return (), True  # RE2 through pyarrow extracts named groups only
        return tuple(found.type.field(i).name for i in range(found.type.num_fields)), False

    @property
    def group_names(self) -> tuple[str, ...]:
        """The named groups of the pattern, in order (none when it also has unnamed ones)."""
        return self._groups[0]

    @property
    def has_unnamed_groups(self) -> bool:
        """Capturing groups without a name, (…): fields are read from named groups only."""
        return self._groups[1]

    def fullmatch_groups(self, text: str) -> dict[str, str] | None:
        """The named groups of a whole-value match ("" for a group that took no part), or None."""
        if not self.fullmatch(text):
            return None
        if not self.group_names:
            return {}
        found = pc.extract_regex(pa.array([text], pa.string()), f"^(?:{self.pattern})$")
        value = found[0].as_py()
        return {name: value.get(name) or "" for name in self.group_names} if value else None


@lru_cache(maxsize=256)
def compile_linear(pattern: str) -> LinearRegex:
    """The pattern, checked once (patterns are re-read from settings and rules on every import)."""
    return LinearRegex(pattern)


def regex_problem(pattern: str) -> str | None:
    """Why the pattern cannot be saved, or None (an empty pattern is fine)."""
    if not pattern:
        return None
    try:
        compile_linear(pattern)
    except RegexError as exc:
        return str(exc)
    return None
