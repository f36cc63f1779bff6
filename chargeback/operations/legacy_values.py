"""The original's config.yaml, key by key: what each setting becomes here (tags, flag rules, currency,
journal fields, sources), the outcome types of an import, and the helpers that turn values around."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from chargeback.errors import Refused

# The original's defaults for tag keys a config file leaves out.
ORIGINAL_TAG_DEFAULTS = {
    "pi_email": "pi_email",
    "project_id": "project",
    "fund_org": "fund_org",
    "cost_center": "cost_center",
}
TAG_FIELDS = {
    "pi_email": "tag_pi_email",
    "project_id": "tag_project_id",
    "fund_org": "tag_fund_org",
    "cost_center": "tag_cost_center",
    "reference_1": "tag_reference_1",
    "reference_2": "tag_reference_2",
}
# The original matched flag patterns against these charge fields.
FLAG_PATTERN_FIELDS = ["service_name", "resource_id", "resource_name"]
FLAG_RULE_PREFIX = "config.yaml: "
CURRENCY_SYMBOLS = {
    "$": "USD",
    "US$": "USD",
    "€": "EUR",
    "£": "GBP",
    "¥": "JPY",
    "₹": "INR",
    "₩": "KRW",
    "CA$": "CAD",
    "A$": "AUD",
    "NZ$": "NZD",
    "R$": "BRL",
    "S$": "SGD",
    "HK$": "HKD",
    "CHF": "CHF",
}
# The original's journal keys -> fields of journals.JournalSettings ("template" has no direct
# equivalent: a custom JournalFormat is the way to change the layout).
JOURNAL_FIELDS = {
    "fund_org_regex": "fund_org_regex",
    "account_code_regex": "account_regex",
    "default_account": "default_account",
    "debit_description": "debit_description",
    "credit_description": "credit_description",
    "template": "",
}

# Read from the file itself when it is given with -c; an env file (import-config) cannot say them.
FROM_THE_FILE = {
    "dev_mode": "emails to files in output.email_dir; give the file with -c config.yaml (an env file: leave EMAIL_URL unset)",
    "database": "database.path is used with -c config.yaml; import-config copies no data: re-import the FOCUS files",
    "output": "output.pdf_dir, journal_dir and email_dir are used with -c config.yaml",
}
NOT_USED = {"sources": "API credentials of the original are unused: costs arrive as FOCUS files"}
SOURCE_KEYS = {"name", "pattern", "fund_org", "account_code"}


@dataclass
class Item:
    key: str
    status: str  # applied | unchanged | environment | from_file | not_supported | not_needed | unknown
    detail: str = ""


@dataclass
class EnvSetting:
    name: str
    value: str | None  # None: a secret, not printed
    source: str
    note: str = ""


@dataclass
class ConfigImportOutcome:
    path: Path
    dry_run: bool
    items: list[Item] = field(default_factory=list)
    environment: list[EnvSetting] = field(default_factory=list)

    def by_status(self, status: str) -> list[Item]:
        return [i for i in self.items if i.status == status]

    @property
    def unknown_keys(self) -> list[str]:
        return [i.key for i in self.by_status("unknown")]


class _DryRun(Exception):
    pass


def _env_reference(value: Any) -> str | None:
    match = re.fullmatch(r"\s*\$\{([^}]+)\}\s*", str(value)) if isinstance(value, str) else None
    return match.group(1) if match else None


def currency_code(value: Any, override: str | None = None) -> tuple[str, str]:
    """ISO code for a currency symbol or code, and a note when the symbol is ambiguous."""
    if override:
        code = override.strip().upper()
        if not re.fullmatch(r"[A-Z]{3}", code):
            raise Refused(f"--currency {override!r}: expected an ISO 4217 code such as USD")
        return code, f"--currency {code}"
    text = str(value).strip()
    if re.fullmatch(r"[A-Za-z]{3}", text):
        return text.upper(), ""
    if text in CURRENCY_SYMBOLS:
        code = CURRENCY_SYMBOLS[text]
        note = f"{text!r} read as {code}" + (
            "; use --currency (e.g. CAD, AUD) for another dollar" if text == "$" else ""
        )
        return code, note
    raise Refused(f"currency {text!r}: unknown symbol; give the ISO 4217 code with --currency")


def fund_org_regex(patterns: list[str]) -> str:
    """One regex equivalent to the original's test: `re.match(p, value, re.IGNORECASE)` for any p.

    Our check is a full match, so a pattern not anchored at the end gets `.*`.
    """
    parts = []
    for raw in patterns:
        pattern = raw[4:] if raw.startswith("(?i)") else raw
        anchored_end = pattern.endswith("$") and not pattern.endswith("\\$")
        parts.append(f"(?:{pattern})" if anchored_end else f"(?:{pattern}).*")
    return "(?i)" + ("|".join(parts) if len(parts) == 1 else "(?:" + "|".join(parts) + ")")


def source_slug(name: str, pattern: str) -> str:
    for candidate in (pattern, name):
        slug = re.sub(r"[^a-z0-9_-]+", "_", (candidate or "").strip().lower()).strip("_-")
        if slug and "*" not in candidate and "?" not in candidate:
            return slug
    return ""


def source_glob(pattern: str, slug: str) -> str:
    """The original matched its pattern anywhere in the file name (longest first)."""
    pattern = (pattern or slug).strip().lower()
    return pattern if any(c in pattern for c in "*?[") else f"*{pattern}*"


def env_line(name: str, value: str | None) -> str:
    """NAME=value for an env file (django-environ and Docker Compose read it alike)."""
    if value is None:
        return f"{name}=<secret: not printed>"
    if re.fullmatch(r"[A-Za-z0-9_./:@+,<>-]*", value):
        return f"{name}={value}"
    if "'" not in value:
        return f"{name}='{value}'"
    return name + '="' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
