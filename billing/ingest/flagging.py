"""Why a charge needs a reviewer: attribution gaps, bad fund/orgs, and admin-defined rules.

Every reason is recorded, not only the first. The same code flags charges during ingest,
after a reviewer corrects attribution, and when a period is re-evaluated after a rule change.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from billing.models import BillingSettings, FlagReason, FlagRule


@dataclass(frozen=True)
class Flag:
    reason: str
    detail: str = ""
    rule_id: int | None = None


@dataclass(frozen=True)
class CompiledRule:
    id: int
    name: str
    regex: re.Pattern[str]
    fields: tuple[str, ...]
    must_match: bool
    source_id: int | None

    def applies(self, values: Mapping[str, str], source_id: int) -> Flag | None:
        if self.source_id is not None and self.source_id != source_id:
            return None
        for name in self.fields:
            value = values.get(name) or ""
            found = self.regex.search(value) is not None
            if found != self.must_match:
                verb = "does not match" if self.must_match else "matches"
                return Flag(
                    FlagReason.RULE, f"{self.name}: {name} {value!r} {verb} {self.regex.pattern}", self.id
                )
        return None


def compile_rule(rule: FlagRule) -> CompiledRule:
    return CompiledRule(
        id=rule.pk,
        name=rule.name,
        regex=re.compile(rule.pattern),
        fields=tuple(rule.fields or ["fund_org"]),
        must_match=rule.mode == FlagRule.Mode.FLAG_UNLESS_MATCH,
        source_id=rule.source_id,
    )


@dataclass(frozen=True)
class FlagContext:
    fund_org_regex: re.Pattern[str] | None
    rules: tuple[CompiledRule, ...]

    @classmethod
    def load(cls, settings: BillingSettings) -> FlagContext:
        regex = re.compile(settings.fund_org_regex) if settings.fund_org_regex else None
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
    ) -> list[Flag]:
        """Flags that depend only on who pays. Tags that name a payer field twice name nobody."""
        if ambiguity:
            return [Flag(FlagReason.AMBIGUOUS_TAGS, ambiguity)]
        if not has_pi:
            return [Flag(FlagReason.UNATTRIBUTED, "no PI in tags and no account mapping")]
        flags = []
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
        flags = []
        for rule in self.rules:
            flag = rule.applies(values, source_id)
            if flag:
                flags.append(flag)
        return flags


def summarize(flags: list[Flag]) -> str:
    """Short text of all reasons for list displays (full detail is in ChargeFlag rows)."""
    labels = []
    for flag in flags:
        label = f"rule:{flag.detail.split(':', 1)[0]}" if flag.reason == FlagReason.RULE else str(flag.reason)
        if label not in labels:
            labels.append(label)
    return ", ".join(labels)[:500]
