"""The original OpenChargeback's `config.yaml`, read directly (`-c config.yaml`, or
`./instance/config.yaml` when present, as the original does).

settings.py reads the file through `read_config()` before Django is set up, so this module
imports nothing of Django's. What the file says becomes:

- settings of this process (`ConfigFile.settings`, Django setting names): the database file, where
  emails go (SMTP or files), the sender and subject of statement emails, the PDF and journal
  folders, logging, the web server's address, secret key, session length and password rules, and
  the users the file defines (`web.users`, for the login backend);
- settings kept in the database (currency, tag keys, review patterns, known sources, journal,
  bootstrap users, the organisation's name): applied by `chargeback.operations.legacy_config.config_apply`
  when the file is new or changed since it was last applied (see there).

An environment variable set explicitly (DATABASE_URL, EMAIL_URL, SECRET_KEY, LOG_LEVEL, ...) wins
over the file. `${VAR}` in a value is replaced by that environment variable (empty when unset,
with a warning). A key this project cannot honour is named in `ConfigFile.warnings`, never
silently dropped; a value that cannot be used raises ConfigError naming the key.
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

YAML_SUFFIXES = (".yaml", ".yml")
DEFAULT_CONFIG = Path("instance") / "config.yaml"  # the original's default, relative to the working folder
_ENV_REFERENCE = re.compile(r"\$\{([^}]+)\}")

# Every key of the original's file; what each becomes is in settings_of() and legacy_config.
SECTION_KEYS: dict[str, set[str]] = {
    "database": {"path"},
    "smtp": {"host", "port", "use_tls", "username", "password"},
    "email": {"from_address", "from_name", "subject_template"},
    "tag_mapping": {
        "pi_email",
        "project_id",
        "fund_org",
        "cost_center",
        "reference_1",
        "reference_2",
        "account_code",
    },
    "output": {"pdf_dir", "journal_dir", "email_dir"},
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
    "journal": {
        "fund_org_regex",
        "account_code_regex",
        "template",
        "default_account",
        "debit_description",
        "credit_description",
    },
}
TOP_LEVEL = {"dev_mode", "currency", "sources", *SECTION_KEYS}
USER_KEYS = {"email", "display_name", "password_hash", "role", "recovery"}
USER_ROLES = {"admin", "reviewer", "viewer"}
PASSWORD_KEYS = {
    "min_length",
    "require_uppercase",
    "require_lowercase",
    "require_numbers",
    "require_special_chars",
}
# journal.template: the original's GL template is this project's `gl` layout.
ORIGINAL_GL_TEMPLATE = "journal_gl.csv"


class ConfigError(ValueError):
    """The file cannot be used: not YAML, or a value of the wrong kind (the message names the key)."""


@dataclass
class ConfigUser:
    """A user of `web.users`: `name` is its key in the file (it can sign in with it or its email)."""

    name: str
    email: str
    display_name: str
    password_hash: str
    role: str
    recovery: bool


@dataclass
class ConfigFile:
    path: Path
    raw: dict[str, Any]  # as written (${VAR} references kept: import-config prints them, never secrets)
    data: dict[str, Any]  # ${VAR} replaced by the environment
    sha256: str
    settings: dict[str, Any] = field(default_factory=dict)
    users: list[ConfigUser] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def is_yaml(path: str | Path) -> bool:
    return str(path).lower().endswith(YAML_SUFFIXES)


def load_yaml(path: Path) -> tuple[dict[str, Any], bytes]:
    """The mapping a YAML file holds, and its bytes; ConfigError for anything else."""
    import yaml

    try:
        content = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"config file {path} not found") from None
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from None
    try:
        data = yaml.safe_load(content.decode("utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path} is not valid YAML: {' '.join(str(exc).split())}") from None
    if data is None:
        return {}, content
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of settings at the top level")
    return data, content


def expand_env(value: Any, key: str, unset: list[str]) -> Any:
    """`${VAR}` in strings replaced by the environment (empty when unset: noted in `unset`)."""
    if isinstance(value, str):

        def replace(match: re.Match[str]) -> str:
            name = match.group(1)
            if name not in os.environ:
                unset.append(f"{key}: ${{{name}}} is not set in the environment")
            return os.environ.get(name, "")

        return _ENV_REFERENCE.sub(replace, value)
    if isinstance(value, dict):
        return {k: expand_env(v, f"{key}.{k}" if key else str(k), unset) for k, v in value.items()}
    if isinstance(value, list):
        return [expand_env(v, f"{key}[{n}]", unset) for n, v in enumerate(value)]
    return value


def subject_template(text: str) -> str:
    """The original's subject (`{billing_period}`, Python format) as a Django template."""
    names = {"billing_period": "period"}
    return re.sub(r"\{(\w+)\}", lambda m: "{{ " + names.get(m.group(1), m.group(1)) + " }}", text)


def read_config(path: str | Path) -> ConfigFile:
    """Read and check the file; every key is either used or named in a warning."""
    path = Path(path).expanduser().resolve()
    raw, content = load_yaml(path)
    unset: list[str] = []
    data = expand_env(raw, "", unset)
    config = ConfigFile(path=path, raw=raw, data=data, sha256=hashlib.sha256(content).hexdigest())
    config.warnings += unset
    _Reader(config).read()
    return config


def _path(value: Any, key: str) -> Path:
    if not isinstance(value, str | Path) or not str(value).strip():
        raise ConfigError(f"{key}: expected a path, found {value!r}")
    return Path(str(value).strip()).expanduser().resolve()  # relative to the working folder, as the original


class _Reader:
    def __init__(self, config: ConfigFile) -> None:
        self.config = config
        self.out = config.settings
        self.warn = config.warnings.append

    def section(self, name: str) -> dict[str, Any]:
        value = self.config.data.get(name)
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise ConfigError(f"{name}: expected a mapping of settings, found {type(value).__name__}")
        for key in value:
            if key not in SECTION_KEYS.get(name, set()):
                self.warn(f"{name}.{key}: not a setting OpenChargeback knows; ignored")
        return value

    def read(self) -> None:
        data = self.config.data
        for key in data:
            if key not in TOP_LEVEL:
                self.warn(f"{key}: not a setting OpenChargeback knows; ignored")
        if data.get("sources"):
            self.warn(
                "sources: API credentials are not used: costs arrive as FOCUS files "
                "(ingest, the admin's upload, collection points)"
            )
        self._database(self.section("database"))
        output = self.section("output")
        self._output(output)
        self._email(bool(_bool(data.get("dev_mode", False), "dev_mode")), output)
        self._logging(self.section("logging"))
        self._web(self.section("web"))
        for name in ("tag_mapping", "review", "imports"):
            self.section(name)  # applied to the database by legacy_config; checked for unknown keys here
        journal = self.section("journal")
        template = journal.get("template")
        if template and str(template).strip() != ORIGINAL_GL_TEMPLATE:
            self.warn(
                f"journal.template: {template!r} is not used: layouts are journal formats here (edit one in "
                "the admin, then export-journal -f NAME); the original's journal_gl.csv is the gl layout"
            )

    def _database(self, section: dict[str, Any]) -> None:
        path = _path(section.get("path", "./instance/billing.db"), "database.path")
        self.out["DATABASE_PATH"] = path
        self.out["OPENCHARGEBACK_DATA_DIR"] = path.parent

    def _output(self, section: dict[str, Any]) -> None:
        data_dir = self.out["OPENCHARGEBACK_DATA_DIR"]
        # The original's defaults: output/ beside the database (./instance/output/...).
        for key, name, folder in (
            ("pdf_dir", "OPENCHARGEBACK_PDF_DIR", "pdfs"),
            ("journal_dir", "OPENCHARGEBACK_JOURNAL_DIR", "journals"),
            ("email_dir", "EMAIL_FILE_PATH", "emails"),
        ):
            self.out[name] = (
                _path(section[key], f"output.{key}") if section.get(key) else data_dir / "output" / folder
            )

    def _email(self, dev_mode: bool, output: dict[str, Any]) -> None:
        smtp = self.section("smtp")
        email = self.section("email")
        if dev_mode:
            self.out["EMAIL_BACKEND"] = "django.core.mail.backends.filebased.EmailBackend"
        elif smtp.get("host"):
            port = _int(smtp.get("port", 587), "smtp.port")
            tls = _bool(smtp.get("use_tls", True), "smtp.use_tls")
            self.out.update(
                {
                    "EMAIL_BACKEND": "django.core.mail.backends.smtp.EmailBackend",
                    "EMAIL_HOST": str(smtp["host"]).strip(),
                    "EMAIL_PORT": port,
                    # STARTTLS, except on 465 where TLS starts with the connection.
                    "EMAIL_USE_TLS": tls and port != 465,
                    "EMAIL_USE_SSL": tls and port == 465,
                    "EMAIL_HOST_USER": str(smtp.get("username") or ""),
                    "EMAIL_HOST_PASSWORD": str(smtp.get("password") or ""),
                    "EMAIL_TIMEOUT": 30,
                }
            )
        else:
            self.out["EMAIL_BACKEND"] = "django.core.mail.backends.filebased.EmailBackend"
            self.warn(
                "dev_mode is false but there is no smtp.host: emails are written as files in "
                f"{self.out['EMAIL_FILE_PATH']}"
            )
        address = str(email.get("from_address") or "").strip()
        if address:
            name = str(email.get("from_name") or "").strip().replace('"', "'")
            self.out["DEFAULT_FROM_EMAIL"] = f'"{name}" <{address}>' if name else address
        if email.get("subject_template"):
            self.out["OPENCHARGEBACK_STATEMENT_EMAIL_SUBJECT"] = subject_template(
                str(email["subject_template"])
            )

    def _logging(self, section: dict[str, Any]) -> None:
        if "level" in section:
            level = str(section["level"]).strip().upper()
            level = "WARNING" if level == "WARN" else level
            if level not in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"):
                raise ConfigError(
                    f"logging.level: {section['level']!r} is not DEBUG, INFO, WARN(ING) or ERROR"
                )
            self.out["LOG_LEVEL"] = level
        if "format" in section:
            formats = {"splunk": "kv", "json": "json"}
            chosen = formats.get(str(section["format"]).strip().lower())
            if chosen is None:
                raise ConfigError(f"logging.format: {section['format']!r} is neither splunk nor json")
            self.out["LOG_FORMAT"] = chosen
        if section.get("file"):
            self.out["LOG_FILE"] = _path(section["file"], "logging.file")
        if not _bool(section.get("enabled", True), "logging.enabled"):
            self.out["LOG_LEVEL"] = "CRITICAL"  # the original's switch: nothing but the gravest
            self.out.pop("LOG_FILE", None)

    def _web(self, web: dict[str, Any]) -> None:
        if "enabled" in web:
            self.out["OPENCHARGEBACK_WEB_ENABLED"] = _bool(web["enabled"], "web.enabled")
        if web.get("host"):
            self.out["OPENCHARGEBACK_WEB_HOST"] = str(web["host"]).strip()
        if "port" in web:
            self.out["OPENCHARGEBACK_WEB_PORT"] = _int(web["port"], "web.port")
        if str(web.get("secret_key") or "").strip():
            self.out["SECRET_KEY"] = str(web["secret_key"]).strip()
        if "session_lifetime_hours" in web:
            hours = _int(web["session_lifetime_hours"], "web.session_lifetime_hours")
            if hours < 1:
                raise ConfigError("web.session_lifetime_hours: at least 1")
            self.out["SESSION_COOKIE_AGE"] = hours * 3600
        self._users(web.get("users"))
        self._password_requirements(web.get("password_requirements"))

    def _users(self, users: Any) -> None:
        if users is None:
            return
        if not isinstance(users, dict):
            raise ConfigError("web.users: expected a mapping of user name to settings")
        for name, entry in users.items():
            key = f"web.users.{name}"
            if not isinstance(entry, dict):
                raise ConfigError(f"{key}: expected a mapping (email, display_name, password_hash, role)")
            for extra in entry:
                if extra not in USER_KEYS:
                    self.warn(f"{key}.{extra}: not a setting of a user; ignored")
            email = str(entry.get("email") or "").strip().lower()
            if not re.fullmatch(r"[^@\s]+@[^@\s]+\.[^@\s]+", email):
                raise ConfigError(f"{key}.email: an email address is required, found {entry.get('email')!r}")
            password_hash = str(entry.get("password_hash") or "").strip()
            if not re.fullmatch(r"\$2[aby]?\$\d\d\$[./A-Za-z0-9]{53}", password_hash):
                raise ConfigError(f"{key}.password_hash: expected a bcrypt hash ($2b$12$...)")
            role = str(entry.get("role") or "viewer").strip().lower()
            if role not in USER_ROLES:
                raise ConfigError(f"{key}.role: {role!r} is not admin, reviewer or viewer")
            self.config.users.append(
                ConfigUser(
                    name=str(name).strip().lower(),
                    email=email,
                    display_name=str(entry.get("display_name") or "").strip(),
                    password_hash=password_hash,
                    role=role,
                    recovery=_bool(entry.get("recovery", False), f"{key}.recovery"),
                )
            )
        self.out["OPENCHARGEBACK_CONFIG_USERS"] = [vars(u) for u in self.config.users]

    def _password_requirements(self, rules: Any) -> None:
        if rules is None:
            return
        if not isinstance(rules, dict):
            raise ConfigError("web.password_requirements: expected a mapping")
        for extra in rules:
            if extra not in PASSWORD_KEYS:
                self.warn(
                    f"web.password_requirements.{extra}: not a password rule OpenChargeback knows; ignored"
                )
        min_length = _int(rules.get("min_length", 8), "web.password_requirements.min_length")
        classes = {
            "uppercase": _bool(rules.get("require_uppercase", False), "require_uppercase"),
            "lowercase": _bool(rules.get("require_lowercase", False), "require_lowercase"),
            "digits": _bool(rules.get("require_numbers", False), "require_numbers"),
            "special": _bool(rules.get("require_special_chars", False), "require_special_chars"),
        }
        validators: list[dict[str, Any]] = [
            {
                "NAME": "django.contrib.auth.password_validation.MinimumLengthValidator",
                "OPTIONS": {"min_length": max(1, min_length)},
            },
            # Kept whatever the file says: a password a dictionary or the user's name guesses is no password.
            {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
            {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
        ]
        if any(classes.values()):
            validators.append({"NAME": "accounts.passwords.CharacterClassValidator", "OPTIONS": classes})
        self.out["AUTH_PASSWORD_VALIDATORS"] = validators


def _bool(value: Any, key: str) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("true", "yes", "on", "1"):
        return True
    if text in ("false", "no", "off", "0", ""):
        return False
    raise ConfigError(f"{key}: expected true or false, found {value!r}")


def _int(value: Any, key: str) -> int:
    if isinstance(value, bool):
        raise ConfigError(f"{key}: expected a whole number, found {value!r}")
    try:
        return int(str(value).strip())
    except ValueError:
        raise ConfigError(f"{key}: expected a whole number, found {value!r}") from None
