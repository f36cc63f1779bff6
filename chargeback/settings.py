"""Settings, read from the environment and a config file.

The config file is the one named by OPENCHARGEBACK_CONFIG (the CLI's `-c/--config` sets it; the
CLI also picks ./instance/config.yaml when present, as the original does), else `./.env`:
- `.yaml`/`.yml`: the original OpenChargeback's config.yaml (chargeback/config_file.py says what
  each key becomes); an environment variable set explicitly wins over the file;
- anything else: an env file (django-environ), which overrides the environment.
With nothing configured the embedded default applies: SQLite, media and dev emails under
OPENCHARGEBACK_DATA_DIR (./instance), Celery eager.
"""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path
from typing import Any

import environ
from celery.schedules import crontab

from chargeback.config_file import ConfigFile, is_yaml, read_config
from chargeback.logging import build_logging
from chargeback.secret_key import DEVELOPMENT_SECRET_KEY, secret_key_from_file
from chargeback.storage import storages_setting

BASE_DIR = Path(__file__).resolve().parent.parent

env = environ.Env()
_config_file = os.environ.get("OPENCHARGEBACK_CONFIG")
# The original's config.yaml, when that is the file given (None otherwise).
OPENCHARGEBACK_CONFIG_FILE: ConfigFile | None = None
if _config_file and is_yaml(_config_file):
    OPENCHARGEBACK_CONFIG_FILE = read_config(_config_file)  # ConfigError names a bad key
elif _config_file:
    if not Path(_config_file).is_file():
        raise environ.ImproperlyConfigured(f"config file not found: {_config_file}")
    env.read_env(_config_file, overwrite=True)
elif Path(".env").is_file():
    env.read_env(".env")
_yaml: dict[str, Any] = OPENCHARGEBACK_CONFIG_FILE.settings if OPENCHARGEBACK_CONFIG_FILE else {}
# What the file could not honour: the CLI names each once per command.
OPENCHARGEBACK_CONFIG_WARNINGS: list[str] = (
    OPENCHARGEBACK_CONFIG_FILE.warnings if OPENCHARGEBACK_CONFIG_FILE else []
)

DATA_DIR = Path(
    env.str("OPENCHARGEBACK_DATA_DIR", default=str(_yaml.get("OPENCHARGEBACK_DATA_DIR", "instance")))
).resolve()
DATA_DIR.mkdir(parents=True, exist_ok=True)

DEBUG = env.bool("DEBUG", default=False)
# SECRET_KEY from the environment or config.yaml, else the installation's key file in the data dir
# (`demo` writes one), else a public development key: `serve`, `worker`, `beat` and the WSGI app
# refuse to start with that one while DEBUG is off (secret_key.py).
SECRET_KEY = env.str(
    "SECRET_KEY",
    default=_yaml.get("SECRET_KEY") or secret_key_from_file(DATA_DIR) or DEVELOPMENT_SECRET_KEY,
)
ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["localhost", "127.0.0.1", "[::1]", "testserver"])
CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS", default=[])

INSTALLED_APPS = [
    # django.contrib.admin with the OpenChargeback site (dashboard on the index, branding).
    "billing.admin_site.OpenChargebackAdminConfig",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "django.contrib.humanize",
    "crispy_forms",
    "auditlog",
    "axes",  # login lockout (accounts.security)
    "accounts",
    "billing",
    "statements",
    "journals",
    "chargeback",  # operational commands (serve, worker, backup, restore, import-config) and tasks
]

MIDDLEWARE = [
    "chargeback.health.HealthCheckMiddleware",  # /healthz, ahead of host checks and redirects
    "django.middleware.security.SecurityMiddleware",
    "accounts.security.ContentSecurityPolicyMiddleware",  # django-csp, see CONTENT_SECURITY_POLICY
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "auditlog.middleware.AuditlogMiddleware",
    "axes.middleware.AxesMiddleware",  # last: turns a lockout into its response
]

ROOT_URLCONF = "chargeback.urls"
WSGI_APPLICATION = "chargeback.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        # A site's own templates first (DATA_DIR/templates/: statement emails, README "Statement
        # emails"), then the project's.
        "DIRS": [DATA_DIR / "templates", BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
            # The portal's template tags live with the portal (accounts/portal), not in an app.
            "libraries": {"portal": "accounts.portal.templatetags"},
        },
    },
]

_database_file = _yaml.get("DATABASE_PATH") or DATA_DIR / "openchargeback.sqlite3"  # database.path
DATABASES = {"default": env.db("DATABASE_URL", default=f"sqlite:///{_database_file}")}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # WAL lets readers (the admin) work while an import writes; IMMEDIATE avoids lock upgrades.
    DATABASES["default"].setdefault("OPTIONS", {}).update(
        {
            "transaction_mode": "IMMEDIATE",
            "timeout": 30,
            # A 64 MB page cache per connection: enough for the index maintenance of a 1M-charge import
            # (measured no faster at 256 MB), and affordable for every web worker's connection.
            "init_command": (
                "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; PRAGMA cache_size=-65536; "
                "PRAGMA temp_store=MEMORY;"
            ),
        }
    )
    DATABASES["default"]["TEST"] = {"NAME": ":memory:"}

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# Cache: the admin keeps per-period rankings (top PIs/projects) here, keyed by what they depend on,
# so a stale entry is never read. Per process by default; CACHE_URL=redis://... shares it.
CACHES = {"default": env.cache_url("CACHE_URL", default="locmemcache://openchargeback")}

AUTH_PASSWORD_VALIDATORS = _yaml.get("AUTH_PASSWORD_VALIDATORS") or [  # web.password_requirements
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator", "OPTIONS": {"min_length": 12}},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
# New passwords are hashed with PBKDF2; bcrypt hashes (web.users of config.yaml) are checked, and
# replaced by PBKDF2 at the next sign-in.
PASSWORD_HASHERS = [
    "django.contrib.auth.hashers.PBKDF2PasswordHasher",
    "django.contrib.auth.hashers.PBKDF2SHA1PasswordHasher",
    "django.contrib.auth.hashers.Argon2PasswordHasher",
    "accounts.passwords.OriginalBCryptPasswordHasher",
    "django.contrib.auth.hashers.ScryptPasswordHasher",
]
# Users defined in web.users of config.yaml (accounts.security.ConfigUserBackend).
OPENCHARGEBACK_CONFIG_USERS: list[dict[str, Any]] = _yaml.get("OPENCHARGEBACK_CONFIG_USERS", [])

LANGUAGE_CODE = "en-us"
TIME_ZONE = env.str("TIME_ZONE", default="UTC")
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
# Static files are served from the apps when `collectstatic` has not run (a fresh clone, the
# original's quick start): the admin is styled from the first start, DEBUG or not.
WHITENOISE_USE_FINDERS = True
STATIC_ROOT = Path(env.str("STATIC_ROOT", default=str(DATA_DIR / "static")))
# whitenoise warns about a missing directory before collectstatic
STATIC_ROOT.mkdir(parents=True, exist_ok=True)
STATICFILES_DIRS = [BASE_DIR / "static"]  # project-wide assets: the admin's CSS, upload script
MEDIA_URL = "media/"
MEDIA_ROOT = Path(env.str("MEDIA_ROOT", default=str(DATA_DIR / "media")))
# Media (stored imports, PDFs, journals): the local folder, or S3-compatible object storage shared
# by web and worker hosts with OPENCHARGEBACK_STORAGE_URL=s3://bucket/prefix (chargeback/storage.py).
OPENCHARGEBACK_STORAGE_URL = env.str("OPENCHARGEBACK_STORAGE_URL", default="")
STORAGES = storages_setting(
    OPENCHARGEBACK_STORAGE_URL, dict(os.environ), "whitenoise.storage.CompressedStaticFilesStorage"
)

# Email: EMAIL_URL (smtp://user:pass@host:587/?tls=True), else config.yaml's smtp (or dev_mode:
# files in output.email_dir); the default writes .eml files for inspection.
EMAIL_FILE_PATH = _yaml.get("EMAIL_FILE_PATH", DATA_DIR / "emails")
if env.str("EMAIL_URL", default=""):
    vars().update(env.email_url("EMAIL_URL"))
elif _yaml.get("EMAIL_BACKEND"):
    vars().update({k: v for k, v in _yaml.items() if k.startswith("EMAIL_") and k != "EMAIL_FILE_PATH"})
else:
    EMAIL_BACKEND = "django.core.mail.backends.filebased.EmailBackend"
DEFAULT_FROM_EMAIL = env.str(
    "DEFAULT_FROM_EMAIL", default=_yaml.get("DEFAULT_FROM_EMAIL", "billing@localhost")
)

# Celery: without a broker, tasks run eagerly in the calling process.
CELERY_BROKER_URL = env.str("CELERY_BROKER_URL", default="")
CELERY_RESULT_BACKEND = env.str("CELERY_RESULT_BACKEND", default=CELERY_BROKER_URL)
CELERY_TASK_ALWAYS_EAGER = not CELERY_BROKER_URL
CELERY_TASK_EAGER_PROPAGATES = True
CELERY_TASK_ACKS_LATE = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_WORKER_HIJACK_ROOT_LOGGER = False  # worker logs go through LOGGING below (LOG_FORMAT)
# Periodic tasks (the `beat` service): on this day of each month, remind the billing admins of
# past months whose period is still open.
CELERY_BEAT_SCHEDULE = {
    "remind-open-periods": {
        "task": "chargeback.tasks.remind_open_periods",
        "schedule": crontab(
            minute="0", hour="8", day_of_month=str(env.int("OPENCHARGEBACK_REMINDER_DAY", default=3))
        ),
    },
}
# Collection points (billing/collection): beat collects new exports every this many minutes (0: never;
# `openchargeback collect` still runs by hand or from cron). A local file modified in the last
# OPENCHARGEBACK_COLLECT_SETTLE_SECONDS may still be being written: it waits for the next run.
OPENCHARGEBACK_COLLECT_MINUTES = env.int("OPENCHARGEBACK_COLLECT_MINUTES", default=60)
OPENCHARGEBACK_COLLECT_SETTLE_SECONDS = env.int("OPENCHARGEBACK_COLLECT_SETTLE_SECONDS", default=60)
if OPENCHARGEBACK_COLLECT_MINUTES > 0:
    CELERY_BEAT_SCHEDULE["collect-exports"] = {
        "task": "billing.collect_exports",
        "schedule": dt.timedelta(minutes=OPENCHARGEBACK_COLLECT_MINUTES),
    }
CELERY_TASK_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
# A task whose worker dies mid-run is delivered again (every task is idempotent); the broker hands
# an unacknowledged message to another worker after visibility_timeout seconds (Redis). JSON, e.g.
# CELERY_BROKER_TRANSPORT_OPTIONS='{"visibility_timeout": 3600}'.
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_BROKER_TRANSPORT_OPTIONS = env.json(
    "CELERY_BROKER_TRANSPORT_OPTIONS", default={"visibility_timeout": 3600}
)
CELERY_TASK_DEFAULT_QUEUE = env.str("CELERY_TASK_DEFAULT_QUEUE", default="celery")
CELERY_RESULT_EXPIRES = 7 * 24 * 3600

CRISPY_TEMPLATE_PACK = "bootstrap4"

# Ingest tuning: rows per streamed block and the largest upload accepted through the web.
OPENCHARGEBACK_INGEST_BLOCK_BYTES = env.int("OPENCHARGEBACK_INGEST_BLOCK_BYTES", default=1024 * 1024)
OPENCHARGEBACK_UPLOAD_MAX_BYTES = env.int("OPENCHARGEBACK_UPLOAD_MAX_BYTES", default=2 * 1024**3)
# The limit is enforced while the body streams in (chargeback/uploads.py), before anything is stored.
FILE_UPLOAD_HANDLERS = [
    "chargeback.uploads.UploadLimitHandler",
    "django.core.files.uploadhandler.MemoryFileUploadHandler",
    "django.core.files.uploadhandler.TemporaryFileUploadHandler",
]
# Limits of one import, whatever its origin (web or CLI): text once decompressed, rows, and the bad
# rows after which a file is abandoned without reading the rest (its first 50 errors are listed).
OPENCHARGEBACK_INGEST_MAX_BYTES = env.int("OPENCHARGEBACK_INGEST_MAX_BYTES", default=20 * 1024**3)
OPENCHARGEBACK_INGEST_MAX_ROWS = env.int("OPENCHARGEBACK_INGEST_MAX_ROWS", default=200_000_000)
OPENCHARGEBACK_INGEST_MAX_BAD_ROWS = env.int("OPENCHARGEBACK_INGEST_MAX_BAD_ROWS", default=10_000)
# Past this many charges an import sums the rest on disk, in a temporary folder (the system's, or
# this one), so that its memory stops growing with the file (billing/ingest/spill.py).
OPENCHARGEBACK_INGEST_SPILL_CHARGES = env.int("OPENCHARGEBACK_INGEST_SPILL_CHARGES", default=600_000)
OPENCHARGEBACK_INGEST_SPILL_DIR = env.str("OPENCHARGEBACK_INGEST_SPILL_DIR", default="")

# Backups are signed (HMAC-SHA256 of the manifest) with this key, or else with the key file, which
# the first backup creates; restore refuses an archive whose signature does not verify.
OPENCHARGEBACK_BACKUP_KEY = env.str("OPENCHARGEBACK_BACKUP_KEY", default="")
OPENCHARGEBACK_BACKUP_KEY_FILE = Path(
    env.str("OPENCHARGEBACK_BACKUP_KEY_FILE", default=str(DATA_DIR / "backup.key"))
)

# Rating of on-premises usage (billing/rating): the time zone sacct timestamps are written in, the
# Slurm job states never billed, and the first month of the fiscal year (subsidy caps are per year).
OPENCHARGEBACK_SLURM_TIME_ZONE = env.str("OPENCHARGEBACK_SLURM_TIME_ZONE", default="UTC")
OPENCHARGEBACK_SLURM_NOT_BILLED_STATES = env.list(
    "OPENCHARGEBACK_SLURM_NOT_BILLED_STATES", default=["NODE_FAIL"]
)
OPENCHARGEBACK_FISCAL_YEAR_START = env.int("OPENCHARGEBACK_FISCAL_YEAR_START", default=7)

# Statements: the email subject is a Django template (organization, period, period_label, pi_name,
# pi_email, count, total); PDFs on letter or a4 paper; a delivery left "sending" longer than this
# many seconds (its worker died mid-send) is marked failed, never re-sent by itself.
OPENCHARGEBACK_STATEMENT_EMAIL_SUBJECT = env.str(
    "OPENCHARGEBACK_STATEMENT_EMAIL_SUBJECT",
    default=_yaml.get(
        "OPENCHARGEBACK_STATEMENT_EMAIL_SUBJECT",
        "{{ organization }}: your statement{{ count|pluralize }} for {{ period_label }} ({{ total }} due)",
    ),
)
# Statement logos (Billing settings): at most this many bytes, and pixels on the longest side (PNG, JPEG).
OPENCHARGEBACK_LOGO_MAX_BYTES = env.int("OPENCHARGEBACK_LOGO_MAX_BYTES", default=512 * 1024)
OPENCHARGEBACK_LOGO_MAX_PIXELS = env.int("OPENCHARGEBACK_LOGO_MAX_PIXELS", default=2000)
OPENCHARGEBACK_PDF_PAGE_SIZE = env.str("OPENCHARGEBACK_PDF_PAGE_SIZE", default="letter")
# Where `export-journal` writes journals without -o, and where `generate` also writes statement PDFs
# (empty: PDFs only in the media folder, downloadable from the admin and portal).
OPENCHARGEBACK_JOURNAL_DIR = Path(
    env.str(
        "OPENCHARGEBACK_JOURNAL_DIR",
        default=str(_yaml.get("OPENCHARGEBACK_JOURNAL_DIR", DATA_DIR / "output" / "journals")),
    )
)
OPENCHARGEBACK_PDF_DIR = env.str(
    "OPENCHARGEBACK_PDF_DIR", default=str(_yaml.get("OPENCHARGEBACK_PDF_DIR", ""))
)
OPENCHARGEBACK_SENDING_STALE_SECONDS = env.int("OPENCHARGEBACK_SENDING_STALE_SECONDS", default=900)
# A CLI waiting for workers that sees no progress for this long queues the unfinished tasks again
# (idempotent; recovers messages a dying worker took from Redis without recording them).
OPENCHARGEBACK_REDISPATCH_SECONDS = env.int("OPENCHARGEBACK_REDISPATCH_SECONDS", default=120)
# A statements run from the admin (StatementRun) still queued or running without progress for
# this long is shown as stale: its worker most likely stopped. Longer than generating the largest
# period takes (the one step that reports no progress on the way).
OPENCHARGEBACK_STATEMENT_RUN_STALE_SECONDS = env.int(
    "OPENCHARGEBACK_STATEMENT_RUN_STALE_SECONDS", default=900
)

# Logs: LOG_FORMAT json | kv (key=value) | plain, one line per record, on stderr.
_log_level = env.str("LOG_LEVEL", default=_yaml.get("LOG_LEVEL", "WARNING"))
LOGGING = build_logging(
    env.str("LOG_FORMAT", default=_yaml.get("LOG_FORMAT", "plain")),
    _log_level,
    log_file=env.str("LOG_FILE", default=str(_yaml.get("LOG_FILE", ""))),
)
if CELERY_TASK_ALWAYS_EAGER:
    # Tasks run inside the CLI or the web request: a line per task would only be noise there.
    LOGGING["loggers"]["celery.app.trace"]["level"] = _log_level.upper()

# `openchargeback serve` listens here unless told otherwise (web.host, web.port of config.yaml).
OPENCHARGEBACK_WEB_HOST = env.str(
    "OPENCHARGEBACK_WEB_HOST", default=_yaml.get("OPENCHARGEBACK_WEB_HOST", "127.0.0.1")
)
OPENCHARGEBACK_WEB_PORT = env.int(
    "OPENCHARGEBACK_WEB_PORT", default=_yaml.get("OPENCHARGEBACK_WEB_PORT", 8000)
)
OPENCHARGEBACK_WEB_ENABLED = env.bool(
    "OPENCHARGEBACK_WEB_ENABLED", default=_yaml.get("OPENCHARGEBACK_WEB_ENABLED", True)
)

# Behind a TLS-terminating reverse proxy that sets X-Forwarded-Proto (docs/deploy.md).
if env.bool("TRUST_X_FORWARDED_PROTO", default=False):
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    SESSION_COOKIE_SECURE = CSRF_COOKIE_SECURE = True

# --- accounts, the PI portal and login security (accounts/, docs/portal.md) -----------------

# The address people use (scheme://host[:port]), for links in emails: invitations, statements.
OPENCHARGEBACK_BASE_URL = env.str("OPENCHARGEBACK_BASE_URL", default="http://localhost:8000")
LOGIN_URL = "portal:login"
LOGIN_REDIRECT_URL = "portal:home"
LOGOUT_REDIRECT_URL = "portal:login"
# Invitation and password-reset links stay valid this long (until the password is set).
PASSWORD_RESET_TIMEOUT = env.int("OPENCHARGEBACK_INVITATION_DAYS", default=7) * 24 * 3600
SESSION_COOKIE_AGE = (
    env.int("OPENCHARGEBACK_SESSION_HOURS", default=_yaml.get("SESSION_COOKIE_AGE", 12 * 3600) // 3600) * 3600
)
# Emails (invitations, notices) one PI's delegations may cause in 24 hours.
OPENCHARGEBACK_DELEGATION_EMAILS_PER_DAY = env.int("OPENCHARGEBACK_DELEGATION_EMAILS_PER_DAY", default=10)

# django-axes: a user name is locked out after 5 failed sign-ins, and a client address after 20
# (whatever names and user agents it tries: accounts.security.LockoutHandler), on the portal and
# the admin, for OPENCHARGEBACK_LOCKOUT_MINUTES; every failure and lockout is logged (audit events
# login_failed, login_locked_out). Billing admins unlock by deleting the access attempts in the admin.
AUTHENTICATION_BACKENDS = [
    "accounts.security.LockoutModelBackend",  # ModelBackend + axes' lockout
    "accounts.security.ConfigUserBackend",  # web.users of config.yaml: by name, and recovery users
]
AXES_HANDLER = "accounts.security.LockoutHandler"
AXES_FAILURE_LIMIT = env.int("OPENCHARGEBACK_LOGIN_FAILURE_LIMIT", default=5)
OPENCHARGEBACK_LOGIN_ADDRESS_FAILURE_LIMIT = env.int("OPENCHARGEBACK_LOGIN_ADDRESS_FAILURE_LIMIT", default=20)
AXES_COOLOFF_TIME = env.int("OPENCHARGEBACK_LOCKOUT_MINUTES", default=30) / 60  # hours
AXES_LOCKOUT_PARAMETERS = ["username"]  # the address is counted by the handler, with its own limit
# axes.W006 asks for ip_address among the lockout parameters; LockoutHandler locks addresses itself
# (with a limit of their own, and not reset by one successful sign-in from that address).
SILENCED_SYSTEM_CHECKS = ["axes.W006"]
AXES_USERNAME_CALLABLE = "accounts.security.axes_username"
AXES_RESET_ON_SUCCESS = True
AXES_LOCKOUT_TEMPLATE = "registration/locked_out.html"
AXES_VERBOSE = True
AXES_CLIENT_IP_CALLABLE = "accounts.security.client_ip"
# Behind the reverse proxy the client's address is the last one the proxy added to X-Forwarded-For.
OPENCHARGEBACK_CLIENT_IP_FROM_PROXY = env.bool("TRUST_X_FORWARDED_PROTO", default=False)

# Single sign-on with OpenID Connect (mozilla-django-oidc), off by default. The IdP's email claim
# names the user or the PI; nobody else gets an account through it.
OIDC_ENABLED = env.bool("OIDC_ENABLED", default=False)
OIDC_PROVIDER_NAME = env.str("OIDC_PROVIDER_NAME", default="single sign-on")
OIDC_EMAIL_CLAIM = env.str("OIDC_EMAIL_CLAIM", default="email")
if OIDC_ENABLED:
    INSTALLED_APPS.append("mozilla_django_oidc")
    AUTHENTICATION_BACKENDS.append("billing.sso.PortalOIDCBackend")
    OIDC_RP_CLIENT_ID = env.str("OIDC_RP_CLIENT_ID")
    OIDC_RP_CLIENT_SECRET = env.str("OIDC_RP_CLIENT_SECRET")
    OIDC_RP_SIGN_ALGO = env.str("OIDC_RP_SIGN_ALGO", default="RS256")
    OIDC_RP_SCOPES = env.str("OIDC_RP_SCOPES", default="openid email profile")
    OIDC_OP_AUTHORIZATION_ENDPOINT = env.str("OIDC_OP_AUTHORIZATION_ENDPOINT")
    OIDC_OP_TOKEN_ENDPOINT = env.str("OIDC_OP_TOKEN_ENDPOINT")
    OIDC_OP_USER_ENDPOINT = env.str("OIDC_OP_USER_ENDPOINT")
    OIDC_OP_JWKS_ENDPOINT = env.str("OIDC_OP_JWKS_ENDPOINT", default="")
    OIDC_CREATE_USER = False
    LOGIN_REDIRECT_URL_FAILURE = "portal:login"

# Security headers. The Content Security Policy (django-csp) allows this site's own scripts,
# styles, images and forms only; the admin additionally gets inline scripts and styles
# (accounts.security.ContentSecurityPolicyMiddleware).
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": ["'self'"],
        "script-src": ["'self'"],
        "style-src": ["'self'"],
        "img-src": ["'self'", "data:"],
        "font-src": ["'self'"],
        "connect-src": ["'self'"],
        "object-src": ["'none'"],
        "base-uri": ["'self'"],
        "frame-ancestors": ["'none'"],
        "form-action": ["'self'"],
    },
}
OPENCHARGEBACK_CSP_INLINE_PREFIXES = ["/admin/"]
X_FRAME_OPTIONS = "DENY"
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
SECURE_CROSS_ORIGIN_OPENER_POLICY = "same-origin"
SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_SAMESITE = CSRF_COOKIE_SAMESITE = "Lax"

# Production: served over HTTPS (directly or behind the TLS proxy of TRUST_X_FORWARDED_PROTO).
# Cookies only over HTTPS, plain HTTP redirected, HSTS. includeSubDomains and preload are
# decisions about the whole domain: off unless set (their deploy checks are then silenced).
OPENCHARGEBACK_HTTPS = env.bool(
    "OPENCHARGEBACK_HTTPS", default=env.bool("TRUST_X_FORWARDED_PROTO", default=False)
)
if OPENCHARGEBACK_HTTPS and not DEBUG:
    SESSION_COOKIE_SECURE = CSRF_COOKIE_SECURE = True
    SECURE_SSL_REDIRECT = env.bool("SECURE_SSL_REDIRECT", default=True)
    SECURE_HSTS_SECONDS = env.int("SECURE_HSTS_SECONDS", default=31536000)
    SECURE_HSTS_INCLUDE_SUBDOMAINS = env.bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", default=False)
    SECURE_HSTS_PRELOAD = env.bool("SECURE_HSTS_PRELOAD", default=False)
    SESSION_COOKIE_NAME = "__Host-sessionid"
    CSRF_COOKIE_NAME = "__Host-csrftoken"
    SILENCED_SYSTEM_CHECKS = [
        *SILENCED_SYSTEM_CHECKS,
        *([] if SECURE_HSTS_INCLUDE_SUBDOMAINS else ["security.W005"]),
        *([] if SECURE_HSTS_PRELOAD else ["security.W021"]),
    ]
