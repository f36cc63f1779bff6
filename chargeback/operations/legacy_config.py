"""The settings of the original OpenChargeback's `config.yaml` that live in the database here.

Two ways in, one importer:
- `config_apply()`: every command given the file with `-c` (or finding ./instance/config.yaml)
  applies it when the file is new or changed since it was last applied (BillingSettings keeps its
  path and sha256, and which keys it manages, for the admin to show); the command says what changed;
- `config_import()` (`openchargeback import-config`): a one-off import, which also prints the
  environment settings the file implies, for sites that keep an env file instead.

What moves where:

| config.yaml | here |
|---|---|
| `currency` (a symbol such as `$`, or an ISO code) | BillingSettings.currency_code (`$` reads as USD; `--currency` to choose) |
| `tag_mapping.pi_email / project_id / fund_org / cost_center / reference_1 / reference_2` | BillingSettings tag keys (keys a tag_mapping leaves out take the original's defaults, e.g. `project`) |
| `review.flag_patterns` | one FlagRule each: flag when service name, resource id or resource name contains a match, case-insensitive (as the original) |
| `review.fund_org_patterns` | BillingSettings.fund_org_regex: a fund/org must start with a match of one of them, case-insensitive (as the original) |
| `imports.known_sources[]` (`name`, `pattern`, `fund_org`, `account_code`) | Sources: slug from the pattern, glob `*pattern*`, credit fund/org and GL account |
| `email.from_name` | BillingSettings.organization_name (the organisation shown on statements) |
| `journal.fund_org_regex / account_code_regex / default_account / debit_description / credit_description`, `tag_mapping.account_code` | journals.JournalSettings (`fund_org_regex`, `account_regex`, `default_account`, `debit_description`, `credit_description`, `account_tag`) |
| `web.users` | users (created when missing, with their bcrypt hash as password, and their role) |
| `email.from_address` + `from_name`, `email.subject_template`, `smtp.*`, `logging.level/format`, `web.secret_key`, `web.session_lifetime_hours` | settings of the process (chargeback/config_file.py); import-config prints them for an env file (secrets are never printed) |
| `dev_mode`, `database`, `output`, `logging.file/enabled`, `web.enabled/host/port/password_requirements`, recovery users | read from the file itself (`-c config.yaml`); import-config reports them |
| `journal.template` | `journal_gl.csv` is the gl layout; another template is reported (a layout is a JournalFormat here) |
| `sources` | API credentials: reported, unused (costs arrive as FOCUS files) |

Anything else is reported as unknown. All changes happen in one transaction; a value that
cannot be used (a bad regex, an unknown currency symbol, a field too long) refuses the whole
file and nothing is written.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import quote

from django.db import transaction
from django.utils import timezone

from chargeback.config_file import (
    ORIGINAL_GL_TEMPLATE,
    SECTION_KEYS,
    TOP_LEVEL,
    ConfigError,
    ConfigFile,
    read_config,
    subject_template,
)
from chargeback.errors import Refused
from chargeback.logging import audit
from chargeback.operations.legacy_values import (  # env_line, fund_org_regex: imported from here too
    FLAG_PATTERN_FIELDS,
    FLAG_RULE_PREFIX,
    FROM_THE_FILE,
    JOURNAL_FIELDS,
    NOT_USED,
    ORIGINAL_TAG_DEFAULTS,
    SOURCE_KEYS,
    TAG_FIELDS,
    ConfigImportOutcome,
    EnvSetting,
    Item,
    _DryRun,
    _env_reference,
    currency_code,
    fund_org_regex,
    source_glob,
    source_slug,
)
from chargeback.regex import regex_problem


class _Importer:
    def __init__(
        self, config: ConfigFile, data: dict[str, Any], outcome: ConfigImportOutcome, currency: str | None
    ) -> None:
        self.config, self.data, self.outcome, self.currency_override = config, data, outcome, currency
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
        for key, detail in FROM_THE_FILE.items():
            if key in root:
                self.item(key, "from_file", detail)
        if root.get("sources"):
            self.item("sources", "not_needed", NOT_USED["sources"])
        if "currency" in root:
            self._currency(root["currency"])
        elif self.currency_override:
            self._currency("")
        if "tag_mapping" in root:
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
            from billing.services import billing_settings_update

            for name, (_, new) in self.settings_changes.items():
                setattr(self.settings, name, new)
            self.settings.full_clean()  # the model's own limits, checked before anything is saved
            # Saved by the service like any other settings change (its rules; the audit log).
            self.settings = billing_settings_update(
                **{name: new for name, (_, new) in self.settings_changes.items()}
            )
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
                if str(value or "").strip() == ORIGINAL_GL_TEMPLATE:
                    self.item(f"journal.{key}", "unchanged", "the gl layout (export-journal's default)")
                else:
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
        display = str(email.get("from_name") or "").strip()
        if display:  # the sender's name is the organisation statements are from
            self._set("email.from_name", "organization_name", display, "shown on statements")
        if address:
            sender = f'"{display}" <{address}>' if display else address
            self.env("DEFAULT_FROM_EMAIL", sender, "email.from_address")
        if email.get("subject_template"):
            self.env(
                "OPENCHARGEBACK_STATEMENT_EMAIL_SUBJECT",
                subject_template(str(email["subject_template"])),
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
                    "from_file",
                    "used with -c config.yaml; with an env file, logs go to stderr (LOG_FILE for a file)",
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
        if web.get("session_lifetime_hours"):
            self.env(
                "OPENCHARGEBACK_SESSION_HOURS",
                str(web["session_lifetime_hours"]),
                "web.session_lifetime_hours",
            )
        for key in ("enabled", "host", "port"):
            if key in web:
                self.item(
                    f"web.{key}", "from_file", "used by `serve` with -c config.yaml (or serve --host/--port)"
                )
        if "password_requirements" in web:
            self.item(
                "web.password_requirements", "from_file", "the password validators, with -c config.yaml"
            )
        self._users()

    def _users(self) -> None:
        from accounts.services import config_user_ensure

        for user in self.config.users:
            key = f"web.users.{user.name}"
            if user.recovery:
                self.item(
                    f"{key}.recovery",
                    "from_file",
                    "signs in with the file's password whenever the file is given with -c config.yaml",
                )
            if self.errors:
                continue
            account, created = config_user_ensure(entry=vars(user))
            if created:
                self.item(
                    key, "applied", f"user {account.email} created ({user.role}), its bcrypt hash as password"
                )
            else:
                self.item(key, "unchanged", f"user {account.email} exists: its password is the database's")


def _import(
    config: ConfigFile, data: dict[str, Any], outcome: ConfigImportOutcome, currency: str | None
) -> None:
    try:
        _Importer(config, data, outcome, currency).run()
    except ConfigError as exc:
        raise Refused(str(exc)) from None


def config_import(
    *, path: str | Path, dry_run: bool = False, currency: str | None = None
) -> ConfigImportOutcome:
    """Read an original OpenChargeback config.yaml into the billing settings, sources and flag rules."""
    from chargeback.actors import actor_label

    config_path = Path(path)
    try:
        config = read_config(config_path)
    except ConfigError as exc:
        raise Refused(str(exc)) from None
    outcome = ConfigImportOutcome(path=config_path, dry_run=dry_run)
    try:
        with transaction.atomic():
            # As written: ${VAR} references are printed as such for the env file, never their values.
            _import(config, config.raw, outcome, currency)
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


# Keys of the file whose values live in the database (what config_managed lists for the admin).
DATABASE_KEYS = (
    "currency",
    "email.from_name",
    "tag_mapping",
    "review",
    "imports.known_sources",
    "journal",
    "web.users",
)


def config_apply(*, config: ConfigFile, force: bool = False) -> ConfigImportOutcome | None:
    """Apply the database settings of a config.yaml read directly (-c), when the file is new or has
    changed since it was last applied (or with `force`); None when there was nothing to do. One
    transaction: a value that cannot be used refuses the whole file (Refused)."""
    from billing.selectors import billing_settings_get
    from billing.services import billing_settings_update

    settings = billing_settings_get()
    if not force and (settings.config_path, settings.config_sha256) == (str(config.path), config.sha256):
        return None
    outcome = ConfigImportOutcome(path=config.path, dry_run=False)
    with transaction.atomic():
        _import(config, config.data, outcome, None)
        managed = [key for key in DATABASE_KEYS if _has_key(config.data, key)]
        billing_settings_update(
            config_path=str(config.path),
            config_sha256=config.sha256,
            config_applied_at=timezone.now(),
            config_managed=managed,
        )
        audit(
            "config_applied",
            actor="config.yaml",
            path=str(config.path),
            sha256=config.sha256,
            applied=[i.key for i in outcome.items if i.status == "applied"],
        )
    return outcome


def _has_key(data: dict[str, Any], dotted: str) -> bool:
    node: Any = data
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return False
        node = node[part]
    return node not in (None, "", [], {})
