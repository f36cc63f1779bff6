"""Import the `config.yaml` of the original OpenChargeback (the FastAPI/SQLite version).

What moves where:

| config.yaml | here |
|---|---|
| `currency` (a symbol such as `$`, or an ISO code) | BillingSettings.currency_code (`$` reads as USD; `--currency` to choose) |
| `tag_mapping.pi_email / project_id / fund_org / cost_center / reference_1 / reference_2` | BillingSettings tag keys (keys left out take the original's defaults, e.g. `project`) |
| `review.flag_patterns` | one FlagRule each: flag when service name, resource id or resource name contains a match, case-insensitive (as the original) |
| `review.fund_org_patterns` | BillingSettings.fund_org_regex: a fund/org must start with a match of one of them, case-insensitive (as the original) |
| `imports.known_sources[]` (`name`, `pattern`, `fund_org`, `account_code`) | Sources: slug from the pattern, glob `*pattern*`, credit fund/org and GL account |
| `email.from_address` + `from_name`, `email.subject_template`, `smtp.*`, `logging.level/format`, `web.secret_key` | environment settings, printed for the env file (secrets are never printed) |
| `journal.fund_org_regex / account_code_regex / default_account / debit_description / credit_description`, `tag_mapping.account_code` | journals.JournalSettings (`fund_org_regex`, `account_regex`, `default_account`, `debit_description`, `credit_description`, `account_tag`) |
| `journal.template`, `web.session_lifetime_hours`, `web.password_requirements` | not supported: reported, nothing stored (a layout is a JournalFormat here) |
| `dev_mode`, `database`, `output`, `logging.file/enabled`, `web.enabled/host/port/users`, `sources` | not needed here: reported |

Anything else is reported as unknown. All changes happen in one transaction; a value that
cannot be used (a bad regex, an unknown currency symbol, a field too long) refuses the whole
file and nothing is written.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

from django.db import transaction

from chargeback.errors import Refused
from chargeback.logging import audit
from chargeback.regex import regex_problem

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

NOT_NEEDED = {
    "dev_mode": "development switch: here emails go to files whenever EMAIL_URL is unset",
    "database": "the original's database is not copied by import-config; data comes from re-importing FOCUS files",
    "output": "PDFs, journals and development emails are kept under OPENCHARGEBACK_DATA_DIR",
    "sources": "API credentials of the original are unused: costs arrive as FOCUS files",
}
SECTION_KEYS = {
    "smtp": {"host", "port", "use_tls", "username", "password"},
    "email": {"from_address", "from_name", "subject_template"},
    "tag_mapping": {*TAG_FIELDS, "account_code"},
    "logging": {"enabled", "level", "format", "file"},
    "web": {
        "enabled",
        "host",
        "port",
        "secret_key",
        "session_lifetime_hours",
        "users",
        "password_requirements",
    },
    "review": {"flag_patterns", "fund_org_patterns"},
    "imports": {"known_sources"},
    "journal": set(JOURNAL_FIELDS),
}
SOURCE_KEYS = {"name", "pattern", "fund_org", "account_code"}
TOP_LEVEL = {"currency", *NOT_NEEDED, *SECTION_KEYS}


@dataclass
class Item:
    key: str
    status: str  # applied | unchanged | environment | not_supported | not_needed | unknown
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


def load_yaml(path: Path) -> dict[str, Any]:
    import yaml

    if not path.is_file():
        raise Refused(f"config file {path} not found")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise Refused(f"{path} is not valid YAML: {exc}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise Refused(f"{path}: expected a mapping of settings at the top level")
    return data


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


def _subject_template(text: str) -> str:
    """`{billing_period}` style (Python format) to a Django template."""
    names = {"billing_period": "period"}
    return re.sub(r"\{(\w+)\}", lambda m: "{{ " + names.get(m.group(1), m.group(1)) + " }}", text)


class _Importer:
    def __init__(self, data: dict[str, Any], outcome: ConfigImportOutcome, currency: str | None) -> None:
        self.data, self.outcome, self.currency_override = data, outcome, currency
        self.errors: list[str] = []

    # --- reporting --------------------------------------------------------------------------

    def item(self, key: str, status: str, detail: str = "") -> None:
        self.outcome.items.append(Item(key, status, detail))

    def env(self, name: str, value: str | None, source: str, note: str = "") -> None:
        self.outcome.environment.append(EnvSetting(name, value, source, note))
        self.item(
            source,
            "environment",
            f"set {name} in the environment / env file" + (f" ({note})" if note else ""),
        )

    def unknown(self, prefix: str, section: Any, known: set[str]) -> dict[str, Any]:
        if section is None:
            return {}
        if not isinstance(section, dict):
            self.errors.append(f"{prefix}: expected a mapping, found {type(section).__name__}")
            return {}
        for key in section:
            if key not in known:
                self.item(
                    f"{prefix}.{key}" if prefix else str(key), "unknown", "not a setting of OpenChargeback"
                )
        return section

    # --- the sections -----------------------------------------------------------------------

    def run(self) -> None:
        from billing.selectors import billing_settings_get
        from journals.selectors import journal_settings_get

        self.settings = billing_settings_get()
        self.settings_changes: dict[str, tuple[Any, Any]] = {}
        self.journal_settings = journal_settings_get()
        self.journal_changes: dict[str, str] = {}
        root = self.unknown("", self.data, TOP_LEVEL)
        for key in ("dev_mode", "database", "output", "sources"):
            if key in root:
                self.item(key, "not_needed", NOT_NEEDED[key])
        if "currency" in root:
            self._currency(root["currency"])
        elif self.currency_override:
            self._currency("")
        self._tags(self.unknown("tag_mapping", root.get("tag_mapping"), SECTION_KEYS["tag_mapping"]))
        review = self.unknown("review", root.get("review"), SECTION_KEYS["review"])
        self._fund_org_patterns(review.get("fund_org_patterns"))
        self._flag_patterns(review.get("flag_patterns"))
        imports = self.unknown("imports", root.get("imports"), SECTION_KEYS["imports"])
        self._sources(imports.get("known_sources"))
        self._journal(self.unknown("journal", root.get("journal"), SECTION_KEYS["journal"]))
        self._email(
            self.unknown("email", root.get("email"), SECTION_KEYS["email"]),
            self.unknown("smtp", root.get("smtp"), SECTION_KEYS["smtp"]),
        )
        self._logging(self.unknown("logging", root.get("logging"), SECTION_KEYS["logging"]))
        self._web(self.unknown("web", root.get("web"), SECTION_KEYS["web"]))
        if self.errors:
            raise Refused(
                f"{self.outcome.path}: {len(self.errors)} problem(s); nothing was imported:\n  "
                + "\n  ".join(self.errors)
            )
        if self.settings_changes:
            for name, (_, new) in self.settings_changes.items():
                setattr(self.settings, name, new)
            self.settings.full_clean()
            self.settings.save()
        if self.journal_changes:
            from journals.services import journal_settings_update

            journal_settings_update(**self.journal_changes)

    def _set(self, key: str, field_name: str, value: Any, note: str = "") -> None:
        model_field = self.settings._meta.get_field(field_name)
        max_length = getattr(model_field, "max_length", None)
        if isinstance(value, str) and max_length and len(value) > max_length:
            self.errors.append(f"{key}: {len(value)} characters, at most {max_length} fit")
            return
        old = getattr(self.settings, field_name)
        if old == value:
            self.item(key, "unchanged", f"{field_name} = {value!r}" + (f" ({note})" if note else ""))
            return
        self.settings_changes[field_name] = (old, value)
        self.item(key, "applied", f"{field_name}: {old!r} → {value!r}" + (f" ({note})" if note else ""))

    def _currency(self, value: Any) -> None:
        try:
            code, note = currency_code(value, self.currency_override)
        except Refused as exc:
            self.errors.append(str(exc))
            return
        self._set("currency", "currency_code", code, note)

    def _tags(self, tags: dict[str, Any]) -> None:
        for key, field_name in TAG_FIELDS.items():
            if key in tags:
                value = tags[key]
                if not isinstance(value, str):
                    self.errors.append(f"tag_mapping.{key}: expected text, found {value!r}")
                elif not value.strip():
                    self.item(
                        f"tag_mapping.{key}", "unchanged", "empty in config.yaml (unused there); kept as is"
                    )
                else:
                    self._set(f"tag_mapping.{key}", field_name, value.strip())
            elif key in ORIGINAL_TAG_DEFAULTS:
                # The original used its own default for a key the file leaves out.
                self._set(
                    f"tag_mapping.{key}", field_name, ORIGINAL_TAG_DEFAULTS[key], "the original's default"
                )
        if "account_code" in tags:
            value = tags["account_code"]
            if isinstance(value, str) and value.strip():
                self._set_journal("tag_mapping.account_code", "account_tag", value.strip())

    def _patterns(self, key: str, value: Any) -> list[str]:
        if value is None:
            return []
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list) or not all(isinstance(p, str) for p in value):
            self.errors.append(f"{key}: expected a list of regular expressions")
            return []
        good = []
        for pattern in value:
            problem = regex_problem(pattern)
            if problem:
                self.errors.append(f"{key}: pattern {pattern!r}: {problem}")
                continue
            good.append(pattern)
        return good

    def _fund_org_patterns(self, value: Any) -> None:
        patterns = self._patterns("review.fund_org_patterns", value)
        if not patterns:
            if value is not None:
                self.item("review.fund_org_patterns", "unchanged", "empty: fund/org regex kept as is")
            return
        regex = fund_org_regex(patterns)
        problem = regex_problem(regex)
        if problem:
            self.errors.append(f"review.fund_org_patterns: cannot combine the patterns: {problem}")
            return
        self._set("review.fund_org_patterns", "fund_org_regex", regex, "full match, case-insensitive")

    def _flag_patterns(self, value: Any) -> None:
        from billing import services
        from billing.models import FlagRule

        for pattern in self._patterns("review.flag_patterns", value):
            name = (FLAG_RULE_PREFIX + pattern)[:100]
            regex = pattern if pattern.startswith("(?i)") else "(?i)" + pattern
            if len(regex) > (getattr(FlagRule._meta.get_field("pattern"), "max_length", None) or 500):
                self.errors.append(f"review.flag_patterns: {pattern!r} is too long for a flag rule")
                continue
            existing = FlagRule.objects.filter(name=name).first()
            wanted = {"pattern": regex, "fields": FLAG_PATTERN_FIELDS, "mode": FlagRule.Mode.FLAG_IF_MATCH}
            if existing and all(getattr(existing, k) == v for k, v in wanted.items()) and existing.is_active:
                self.item("review.flag_patterns", "unchanged", f"flag rule {name!r}")
                continue
            if self.errors:
                continue
            services.flag_rule_save(
                name=name,
                pattern=regex,
                fields=FLAG_PATTERN_FIELDS,
                mode=FlagRule.Mode.FLAG_IF_MATCH,
                description=(
                    "Imported from config.yaml review.flag_patterns: flags a charge whose service name, "
                    "resource id or resource name contains a match (case-insensitive)."
                ),
                rule_id=existing.pk if existing else None,
            )
            self.item(
                "review.flag_patterns",
                "applied",
                f"flag rule {name!r} {'updated' if existing else 'created'}",
            )

    def _sources(self, value: Any) -> None:
        from billing import services
        from billing.models import Source

        if value is None:
            return
        if not isinstance(value, list):
            self.errors.append("imports.known_sources: expected a list")
            return
        seen: set[str] = set()
        for n, entry in enumerate(value):
            key = f"imports.known_sources[{n}]"
            if not isinstance(entry, dict) or not str(entry.get("name") or "").strip():
                self.errors.append(f"{key}: each source needs a name")
                continue
            for extra in entry:
                if extra not in SOURCE_KEYS:
                    self.item(f"{key}.{extra}", "unknown", "not a setting of a source")
            name = str(entry["name"]).strip()
            pattern = str(entry.get("pattern") or "").strip()
            slug = source_slug(name, pattern)
            if not slug:
                self.errors.append(f"{key}: cannot make a source name from {name!r}")
                continue
            if slug in seen:
                self.errors.append(f"{key}: source {slug!r} appears twice")
                continue
            seen.add(slug)
            values = {
                "display_name": name,
                "filename_pattern": source_glob(pattern, slug),
                "fund_org": str(entry.get("fund_org") or "").strip(),
                "account": str(entry.get("account_code") or "").strip(),
            }
            for attr, text in values.items():
                limit = getattr(Source._meta.get_field(attr), "max_length", None)
                if limit and len(text) > limit:
                    self.errors.append(f"{key}.{attr}: {text!r} is longer than {limit} characters")
            if self.errors:
                continue
            existing = Source.objects.filter(slug=slug).first()
            if existing is None:
                services.source_create(slug=slug, **values)
                self.item(key, "applied", f"source {slug} created ({values['filename_pattern']})")
                continue
            # An empty fund/org or account in the file does not erase one set here.
            changes = {k: v for k, v in values.items() if v and getattr(existing, k) != v}
            if changes:
                services.source_update(slug=slug, **changes)
                self.item(key, "applied", f"source {slug} updated: {', '.join(sorted(changes))}")
            else:
                self.item(key, "unchanged", f"source {slug}")

    def _journal(self, journal: dict[str, Any]) -> None:
        for key, value in journal.items():
            if key not in JOURNAL_FIELDS:
                continue
            field_name = JOURNAL_FIELDS[key]
            if not field_name:
                self.item(
                    f"journal.{key}",
                    "not_supported",
                    "the layout is a JournalFormat here: edit one in the admin (Journals → formats)",
                )
                continue
            if key.endswith("regex") and value:
                problem = regex_problem(str(value))
                if problem:
                    self.errors.append(f"journal.{key}: {problem}")
                    continue
            self._set_journal(f"journal.{key}", field_name, "" if value is None else str(value))

    def _set_journal(self, key: str, field_name: str, value: str) -> None:
        old = getattr(self.journal_settings, field_name)
        if old == value:
            self.item(key, "unchanged", f"journal {field_name} = {value!r}")
            return
        self.journal_changes[field_name] = value
        self.item(key, "applied", f"journal {field_name}: {old!r} → {value!r}")

    def _email(self, email: dict[str, Any], smtp: dict[str, Any]) -> None:
        address = str(email.get("from_address") or "").strip()
        if address:
            display = str(email.get("from_name") or "").strip()
            sender = f'"{display}" <{address}>' if display else address
            self.env("DEFAULT_FROM_EMAIL", sender, "email.from_address")
        elif "from_name" in email:
            self.item("email.from_name", "not_needed", "without from_address")
        if email.get("subject_template"):
            self.env(
                "OPENCHARGEBACK_STATEMENT_EMAIL_SUBJECT",
                _subject_template(str(email["subject_template"])),
                "email.subject_template",
                "a Django template here",
            )
        if smtp.get("host"):
            scheme = "smtp+tls" if smtp.get("use_tls", True) else "smtp"
            user = str(smtp.get("username") or "")
            user_ref, password_ref = _env_reference(user), _env_reference(smtp.get("password"))
            auth, notes = "", []
            if user:
                auth = "<user>" if user_ref else quote(user, safe="")
                if user_ref:
                    notes.append(f"<user>: the value of ${{{user_ref}}}")
                if smtp.get("password"):
                    auth += ":<password>"
                    notes.append(
                        f"<password>: the value of ${{{password_ref}}}"
                        if password_ref
                        else "<password>: from config.yaml"
                    )
                auth += "@"
            url = f"{scheme}://{auth}{smtp['host']}:{int(smtp.get('port') or 587)}"
            if notes:
                notes.append("URL-encoded")
            self.env("EMAIL_URL", url, "smtp", ", ".join(notes))

    def _logging(self, section: dict[str, Any]) -> None:
        if section.get("level"):
            level = str(section["level"]).upper()
            self.env("LOG_LEVEL", "WARNING" if level == "WARN" else level, "logging.level")
        if section.get("format"):
            fmt = {"splunk": "kv", "json": "json"}.get(str(section["format"]).lower())
            if fmt:
                self.env("LOG_FORMAT", fmt, "logging.format", "splunk = key=value" if fmt == "kv" else "")
            else:
                self.errors.append(f"logging.format: {section['format']!r} is neither splunk nor json")
        for key in ("file", "enabled"):
            if key in section:
                self.item(
                    f"logging.{key}",
                    "not_needed",
                    "logs go to stderr (journald or the container runtime keeps them)",
                )

    def _web(self, web: dict[str, Any]) -> None:
        if web.get("secret_key"):
            ref = _env_reference(web["secret_key"])
            self.env(
                "SECRET_KEY",
                None,
                "web.secret_key",
                f"from ${{{ref}}}" if ref else "copy it from config.yaml",
            )
        for key in ("enabled", "host", "port"):
            if key in web:
                self.item(f"web.{key}", "not_needed", "use `openchargeback serve --bind HOST:PORT`")
        if "users" in web:
            self.item(
                "web.users",
                "not_needed",
                "create accounts with `openchargeback createsuperuser` or the admin; bcrypt hashes are not carried over",
            )
        for key in ("session_lifetime_hours", "password_requirements"):
            if key in web:
                self.item(f"web.{key}", "not_supported", "Django's defaults apply")


def config_import(
    *, path: str | Path, dry_run: bool = False, currency: str | None = None
) -> ConfigImportOutcome:
    """Read an original OpenChargeback config.yaml into the billing settings, sources and flag rules."""
    from billing.services import actor_label

    config_path = Path(path)
    data = load_yaml(config_path)
    outcome = ConfigImportOutcome(path=config_path, dry_run=dry_run)
    try:
        with transaction.atomic():
            _Importer(data, outcome, currency).run()
            if dry_run:
                raise _DryRun
            audit(
                "config_imported",
                actor=actor_label(),
                path=str(config_path),
                applied=[i.key for i in outcome.items if i.status == "applied"],
            )
    except _DryRun:
        pass
    return outcome
