"""Why a charge needs a reviewer: attribution gaps, bad fund/orgs, and admin-defined rules.

Every reason is recorded, not only the first. The same code flags charges during ingest,
after a reviewer corrects attribution, and when a period is re-evaluated after a rule change.
Patterns run on RE2 (chargeback.regex): linear time, whatever a reviewer types; many charges are
tested at once with `rule_flags_many`, one vectorised call per rule and field.
"""

from __future__ import annotations

import re  # a fixed pattern of ours (user-typed patterns run on RE2: chargeback/regex.py)
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from billing.models import BillingSettings, FlagReason, FlagRule
from chargeback.errors import Refused
from chargeback.regex import LinearRegex, RegexError, compile_linear


@dataclass(frozen=True)
class Flag:
    reason: str
    detail: str = ""
    rule_id: int | None = None


@dataclass(frozen=True)
class CompiledRule:
    id: int
    name: str
    regex: LinearRegex
    fields: tuple[str, ...]
    must_match: bool
    source_id: int | None

    def applies(self, values: Mapping[str, str], source_id: int) -> Flag | None:
        return self.applies_many({name: [values.get(name) or ""] for name in self.fields}, [source_id])[0]

    def applies_many(
        self, columns: Mapping[str, Sequence[str | None]], source_ids: Sequence[int]
    ) -> list[Flag | None]:
        """The flag of each charge (None: not flagged), given its values column by column."""
        n = len(source_ids)
        result: list[Flag | None] = [None] * n
        applicable = np.ones(n, dtype=bool)
        if self.source_id is not None:
            applicable = np.asarray(source_ids) == self.source_id
        undecided = applicable.copy()
        verb = "does not match" if self.must_match else "matches"
        for name in self.fields:
            if not undecided.any():
                break
            values = columns.get(name) or [""] * n
            hits = (self.regex.search_many(values) != self.must_match) & undecided
            for i in np.nonzero(hits)[0].tolist():
                value = values[i] or ""
                result[i] = Flag(
                    FlagReason.RULE, f"{self.name}: {name} {value!r} {verb} {self.regex.pattern}", self.id
                )
            undecided &= ~hits
        return result


def compile_rule(rule: FlagRule) -> CompiledRule:
    try:
        regex = compile_linear(rule.pattern)
    except RegexError as exc:
        raise Refused(f"flag rule {rule.name!r} cannot run: {exc}; edit it in the admin") from None
    return CompiledRule(
        id=rule.pk,
        name=rule.name,
        regex=regex,
        fields=tuple(rule.fields or ["fund_org"]),
        must_match=rule.mode == FlagRule.Mode.FLAG_UNLESS_MATCH,
        source_id=rule.source_id,
    )


@dataclass(frozen=True)
class FlagContext:
    fund_org_regex: LinearRegex | None
    rules: tuple[CompiledRule, ...]

    @classmethod
    def load(cls, settings: BillingSettings) -> FlagContext:
        regex = None
        if settings.fund_org_regex:
            try:
                regex = compile_linear(settings.fund_org_regex)
            except RegexError as exc:
                raise Refused(f"the fund/org regex of the billing settings cannot run: {exc}") from None
        rules = tuple(compile_rule(rule) for rule in FlagRule.objects.filter(is_active=True).order_by("name"))
        return cls(fund_org_regex=regex, rules=rules)

    def attribution_flags(
        self,
        *,
        has_pi: bool,
        project_code: str,
        fund_org: str,
        project_owner_email: str | None,
        pi_email: str,
        ambiguity: str = "",
        invalid_pi_email: str = "",
    ) -> list[Flag]:
        """Flags that depend only on who pays. Tags that name a payer field twice name nobody; a PI
        email that is not a plain address names nobody either (the payer may still come from the
        project or a mapping) and is flagged."""
        if ambiguity:
            return [Flag(FlagReason.AMBIGUOUS_TAGS, ambiguity)]
        flags = []
        if invalid_pi_email:
            flags.append(
                Flag(
                    FlagReason.INVALID_PI_EMAIL, f"{invalid_pi_email!r} is not a plain address (local@domain)"
                )
            )
        if not has_pi:
            return [*flags, Flag(FlagReason.UNATTRIBUTED, "no PI in tags and no account mapping")]
        if not project_code:
            flags.append(Flag(FlagReason.MISSING_PROJECT, "no project id"))
        if not fund_org:
            flags.append(Flag(FlagReason.MISSING_FUND_ORG, "no fund/org"))
        elif self.fund_org_regex and not self.fund_org_regex.fullmatch(fund_org):
            flags.append(
                Flag(
                    FlagReason.INVALID_FUND_ORG, f"{fund_org!r} does not match {self.fund_org_regex.pattern}"
                )
            )
        if project_owner_email and project_owner_email != pi_email:
            flags.append(
                Flag(
                    FlagReason.PROJECT_PI_MISMATCH,
                    f"project {project_code} belongs to {project_owner_email}, tagged {pi_email}",
                )
            )
        return flags

    def rule_flags(self, values: Mapping[str, str], source_id: int) -> list[Flag]:
        return self.rule_flags_many({name: [value] for name, value in values.items()}, [source_id])[0]

    def rule_flags_many(
        self, columns: Mapping[str, Sequence[str | None]], source_ids: Sequence[int]
    ) -> list[list[Flag]]:
        """The rule flags of many charges at once (every rule, in name order)."""
        flags: list[list[Flag]] = [[] for _ in source_ids]
        for rule in self.rules:
            for i, flag in enumerate(rule.applies_many(columns, source_ids)):
                if flag is not None:
                    flags[i].append(flag)
        return flags


def summarize(flags: list[Flag]) -> str:
    """Short text of all reasons for list displays (full detail is in ChargeFlag rows)."""
    labels = []
    for flag in flags:
        if flag.reason == FlagReason.RULE:
            label = f"rule:{flag.detail.split(':', 1)[0]}"
        elif flag.reason == FlagReason.PERIOD_MISMATCH:  # which month the rows said
            month = re.search(r"[0-9]{4}-[0-9]{2}", flag.detail)
            label = f"{flag.reason}:{month.group(0) if month else ''}"
        else:
            label = str(flag.reason)
        if label not in labels:
            labels.append(label)
    return ", ".join(labels)[:500]
