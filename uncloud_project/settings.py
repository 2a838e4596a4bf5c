"""uncloud settings.

With nothing set, uncloud runs on an embedded default: SQLite and a filesystem Celery
broker under UNCLOUD_DATA_DIR (./var), no server to install. DATABASE_URL and
CELERY_BROKER_URL switch to PostgreSQL and Redis. Every variable is in .env.example.
"""

import os
import secrets
from pathlib import Path

import dj_database_url

from uncloud_project.env import envbool, envint, envlist, envstr, resolv_conf_ipv6_servers

BASE_DIR = Path(__file__).resolve().parent.parent
DATA_DIR = Path(envstr("UNCLOUD_DATA_DIR", str(BASE_DIR / "var"))).resolve()
# The data directory holds the SQLite database (TOTP keys, session ids), the secret key and the demo
# credentials: only its owner may enter it.
DATA_DIR.mkdir(mode=0o700, parents=True, exist_ok=True)
try:
    DATA_DIR.chmod(0o700)
except PermissionError:  # a directory someone else made for us (a volume): theirs to set
    pass


def _secret_key() -> str:
    # The embedded default generates its key once and keeps it out of git (var/ is ignored).
    configured = envstr("SECRET_KEY")
    if configured:
        return configured
    key_file = DATA_DIR / "secret_key"
    if not key_file.exists():
        key_file.write_text(secrets.token_urlsafe(64))
        key_file.chmod(0o600)
    return key_file.read_text().strip()


SECRET_KEY = _secret_key()
DEBUG = envbool("DEBUG", False)
ALLOWED_HOSTS = envlist("ALLOWED_HOSTS", "localhost,127.0.0.1,[::1]")
CSRF_TRUSTED_ORIGINS = envlist("CSRF_TRUSTED_ORIGINS", "")
SITE_URL = envstr("SITE_URL", "http://localhost:8000")

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "django_filters",
    "drf_spectacular",
    "drf_spectacular_sidecar",  # Swagger UI and Redoc as static files of our own: no CDN
    "accounts",
    "agents",
    "images",
    "networks",
    "vms",
    "proxy",
    "billing",
    "observability",
    "consoles",
]

MIDDLEWARE = [
    "observability.middleware.RequestLatencyMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "uncloud_project.urls"
WSGI_APPLICATION = "uncloud_project.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

DATABASE_URL = envstr("DATABASE_URL")
if DATABASE_URL:
    # Persistent connections are pinged before reuse (a restarted PostgreSQL costs a reconnect, not an error).
    DATABASES = {"default": dj_database_url.parse(DATABASE_URL, conn_max_age=envint("DB_CONN_MAX_AGE", 60),
                                                  conn_health_checks=True)}
    if envbool("DB_PREPARED_STATEMENTS", True):
        # Parameters bound by the server, and a statement a connection runs a second time prepared:
        # PostgreSQL parses and plans it once per connection. Worth 3 to 4 ms of a VM create's 60
        # statements (bench/vm_lifecycle.py --profile). Off (false) behind a PgBouncer in transaction
        # mode older than 1.21, which cannot keep prepared statements apart.
        DATABASES["default"]["OPTIONS"] = {"server_side_binding": True, "prepare_threshold": 2}
else:
    _sqlite_file = DATA_DIR / "uncloud.sqlite3"
    # SQLite creates its -wal and -shm files with the database file's mode: make that 0600.
    _sqlite_file.touch(mode=0o600, exist_ok=True)
    for _path in (_sqlite_file, DATA_DIR / "uncloud.sqlite3-wal", DATA_DIR / "uncloud.sqlite3-shm"):
        if _path.exists():
            _path.chmod(0o600)
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": _sqlite_file,
            # web, worker and beat share one file: WAL lets readers and a writer coexist,
            # IMMEDIATE makes writers queue instead of failing with "database is locked".
            "OPTIONS": {
                "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
                "transaction_mode": "IMMEDIATE",
                "timeout": 20,
            },
        }
    }
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "dashboard"
LOGOUT_REDIRECT_URL = "login"

LANGUAGE_CODE = "en-us"
TIME_ZONE = envstr("TIME_ZONE", "Europe/Zurich")
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = DATA_DIR / "static"
STATIC_ROOT.mkdir(exist_ok=True)  # WhiteNoise warns on every request until collectstatic ran
STATICFILES_DIRS = [BASE_DIR / "static"]

# Security: safe defaults for the embedded HTTP run; production turns these on (see .env.example).
SECURE_SSL_REDIRECT = envbool("SECURE_SSL_REDIRECT", False)
SESSION_COOKIE_SECURE = envbool("SESSION_COOKIE_SECURE", False)
CSRF_COOKIE_SECURE = envbool("CSRF_COOKIE_SECURE", False)
SECURE_HSTS_SECONDS = envint("SECURE_HSTS_SECONDS", 0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = envbool("SECURE_HSTS_INCLUDE_SUBDOMAINS", False)
SECURE_HSTS_PRELOAD = envbool("SECURE_HSTS_PRELOAD", False)
if envbool("BEHIND_TLS_PROXY", False):
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
X_FRAME_OPTIONS = "DENY"
# Content-Security-Policy on every response (accounts/csp.py): only this site's scripts and
# inline scripts with the response's nonce; pages that need a third party allow it themselves
# (Stripe.js on the card pages, from STRIPE_JS_URL). Inline styles stay allowed (they run no code).
MIDDLEWARE.insert(MIDDLEWARE.index("django.middleware.security.SecurityMiddleware") + 1,
                  "accounts.csp.ContentSecurityPolicyMiddleware")
CONTENT_SECURITY_POLICY = {} if not envbool("UNCLOUD_CSP_ENABLED", True) else {
    "default-src": ["'self'"],
    "script-src": ["'self'"],
    "style-src": ["'self'", "'unsafe-inline'"],
    "img-src": ["'self'", "data:"],
    "font-src": ["'self'"],
    "connect-src": ["'self'"],
    "frame-src": ["'none'"],
    "object-src": ["'none'"],
    "base-uri": ["'self'"],
    "form-action": ["'self'"],
    "frame-ancestors": ["'none'"],
}

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "accounts.authentication.APITokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_PARSER_CLASSES": ["accounts.api.parsers.BoundedJSONParser", "rest_framework.parsers.FormParser",
                               "rest_framework.parsers.MultiPartParser"],
    "DEFAULT_FILTER_BACKENDS": ["accounts.api.filters.FilterBackend"],
    "DEFAULT_PAGINATION_CLASS": "rest_framework.pagination.LimitOffsetPagination",
    "PAGE_SIZE": 100,
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "accounts.api.exceptions.exception_handler",
}
SPECTACULAR_SETTINGS = {
    "TITLE": "uncloud API",
    "DESCRIPTION": "IPv6-first VMs, networks, images and billing.",
    "VERSION": "1",
    "SERVE_INCLUDE_SCHEMA": False,
    "COMPONENT_SPLIT_REQUEST": True,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    # Several apps have a field named "kind": each choice set gets a name of its own.
    "ENUM_NAME_OVERRIDES": {"ConsoleKindEnum": "consoles.choices.ConsoleKind"},
    # The error answers the API really gives (400/401/403/404/409/413/422/429), on every operation they apply to.
    "POSTPROCESSING_HOOKS": ["drf_spectacular.hooks.postprocess_schema_enums",
                             "accounts.api.schema.document_error_responses",
                             # Staff-only endpoints are listed to staff only.
                             "accounts.api.schema.hide_staff_only_endpoints"],
}

# Celery: the filesystem transport needs no server; Redis (or RabbitMQ) by CELERY_BROKER_URL.
CELERY_BROKER_URL = envstr("CELERY_BROKER_URL", "filesystem://localhost/")
CELERY_TASK_DEFAULT_QUEUE = envstr("CELERY_TASK_DEFAULT_QUEUE", "uncloud")
CELERY_TASK_ALWAYS_EAGER = envbool("CELERY_TASK_ALWAYS_EAGER", False)
if CELERY_BROKER_URL.startswith("filesystem://"):
    _queue_dir = DATA_DIR / "celery-broker"
    (_queue_dir / "processed").mkdir(parents=True, exist_ok=True)
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(_queue_dir),
        "data_folder_out": str(_queue_dir),
        "processed_folder": str(_queue_dir / "processed"),
        "store_processed": False,
        # Broadcast (worker control) tables: kombu's default is ./control in the working directory,
        # which is the checkout under bin/run. Everything the product writes stays under DATA_DIR.
        "control_folder": str(_queue_dir / "control"),
    }
else:
    # Redis redelivers an unacked task after this long; longer than any task's hard time limit.
    CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": envint("CELERY_VISIBILITY_TIMEOUT", 3600)}
    if CELERY_BROKER_URL.startswith("sentinel://"):
        # Redis behind Sentinel (sentinel://s1:26379;sentinel://s2:26379): the monitored master's name.
        CELERY_BROKER_TRANSPORT_OPTIONS["master_name"] = envstr("CELERY_BROKER_SENTINEL_MASTER", "uncloud")
CELERY_BEAT_SCHEDULE_FILENAME = str(DATA_DIR / "celerybeat-schedule")

# Hypervisors
UNCLOUD_HOSTSIDE_DIR = envstr("UNCLOUD_HOSTSIDE_DIR", "/var/lib/uncloud/bin")
UNCLOUD_SSH_CONNECT_TIMEOUT = envint("UNCLOUD_SSH_CONNECT_TIMEOUT", 10)
UNCLOUD_SSH_COMMAND_TIMEOUT = envint("UNCLOUD_SSH_COMMAND_TIMEOUT", 120)
UNCLOUD_SSH_KEY_FILE = envstr("UNCLOUD_SSH_KEY_FILE", str(DATA_DIR / "ssh" / "id_ed25519"))
# A step's worker renews its operation's lease while the step runs (agents/leases.py), so a short
# lease only bounds how long a killed worker's operation waits before another worker resumes it.
UNCLOUD_OPERATION_LEASE_SECONDS = envint("UNCLOUD_OPERATION_LEASE_SECONDS", 15)
UNCLOUD_OPERATION_MAX_ATTEMPTS = envint("UNCLOUD_OPERATION_MAX_ATTEMPTS", 5)
# A pending operation untouched this long has probably lost its Celery message: enqueue it again.
UNCLOUD_OPERATION_STALE_SECONDS = envint("UNCLOUD_OPERATION_STALE_SECONDS", 30)
# Beat looks for operations with an expired lease or a lost message this often (seconds).
UNCLOUD_RESUME_INTERVAL = envint("UNCLOUD_RESUME_INTERVAL", 5)

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": envstr("LOG_LEVEL", "INFO")},
}

# Networks
UNCLOUD_VNI_MIN = envint("UNCLOUD_VNI_MIN", 1000)
UNCLOUD_VNI_MAX = envint("UNCLOUD_VNI_MAX", 16_000_000)
UNCLOUD_MAC_PREFIX = envstr("UNCLOUD_MAC_PREFIX", "02:00")
UNCLOUD_MAX_NICS_PER_VM = envint("UNCLOUD_MAX_NICS_PER_VM", 8)  # the host side has 8 hot-plug ports
UNCLOUD_MAX_INGRESS_RULES = envint("UNCLOUD_MAX_INGRESS_RULES", 64)
# How long a guest gets to let go of a NIC on hot-unplug (Linux needs about 5 s) (seconds).
UNCLOUD_NIC_DETACH_TIMEOUT = envint("UNCLOUD_NIC_DETACH_TIMEOUT", 30)
# Unset: this machine's own global IPv6 resolvers (from /etc/resolv.conf); set (even empty): as given.
# When none is left, a system check and the admin warn: guests then cannot resolve names.
UNCLOUD_DNS_SERVERS = (envlist("UNCLOUD_DNS_SERVERS") if "UNCLOUD_DNS_SERVERS" in os.environ
                       else resolv_conf_ipv6_servers())
UNCLOUD_DNS_SEARCH = envlist("UNCLOUD_DNS_SEARCH", "")

# The shared IPv4 proxy and SSH jump host (proxy app, README "IPv4 visitors")
UNCLOUD_PROXY_NAMES_PER_PROJECT = envint("UNCLOUD_PROXY_NAMES_PER_PROJECT", 20)
UNCLOUD_PROXY_NAME_MONTHLY_PRICE = envstr("UNCLOUD_PROXY_NAME_MONTHLY_PRICE", "0.00")  # first price of "proxy-name"
UNCLOUD_PROXY_JUMP_USER = envstr("UNCLOUD_PROXY_JUMP_USER", "uncloud-jump")  # system user on proxy hosts
# Where the control plane fetches a name's challenge instead of resolving it (a lab without DNS)
UNCLOUD_PROXY_CHALLENGE_ADDRESS = envstr("UNCLOUD_PROXY_CHALLENGE_ADDRESS", "")
UNCLOUD_PROXY_CHALLENGE_TIMEOUT = envint("UNCLOUD_PROXY_CHALLENGE_TIMEOUT", 10)
UNCLOUD_PROXY_SYNC_INTERVAL = envint("UNCLOUD_PROXY_SYNC_INTERVAL", 300)  # beat: proxy hosts re-synced (s)

# Quotas every new project starts with (staff raise them per project)
UNCLOUD_DEFAULT_QUOTA_VMS = envint("UNCLOUD_DEFAULT_QUOTA_VMS", 10)
UNCLOUD_DEFAULT_QUOTA_CORES = envint("UNCLOUD_DEFAULT_QUOTA_CORES", 16)
UNCLOUD_DEFAULT_QUOTA_MEMORY_MIB = envint("UNCLOUD_DEFAULT_QUOTA_MEMORY_MIB", 32768)
UNCLOUD_DEFAULT_QUOTA_DISK_MIB = envint("UNCLOUD_DEFAULT_QUOTA_DISK_MIB", 512000)
UNCLOUD_DEFAULT_QUOTA_IPV4 = envint("UNCLOUD_DEFAULT_QUOTA_IPV4", 1)

# The browser console (consoles/, `manage.py console_gateway`). The gateway listens here; the
# browser reaches it at UNCLOUD_CONSOLE_URL (ws:// or wss://, any path; empty: ws(s)://<the portal's
# host>:<the bind port>), and only from pages of these origins (empty: SITE_URL's).
UNCLOUD_CONSOLE_BIND = envstr("UNCLOUD_CONSOLE_BIND", "127.0.0.1:8001")
UNCLOUD_CONSOLE_URL = envstr("UNCLOUD_CONSOLE_URL", "")
UNCLOUD_CONSOLE_ALLOWED_ORIGINS = envlist("UNCLOUD_CONSOLE_ALLOWED_ORIGINS", "")
# A ticket must be used within this many seconds, once.
UNCLOUD_CONSOLE_TICKET_SECONDS = envint("UNCLOUD_CONSOLE_TICKET_SECONDS", 15)
# Open sessions at once per user and per VM (a VM's serial console: one at a time anyway).
UNCLOUD_CONSOLE_SESSIONS_PER_USER = envint("UNCLOUD_CONSOLE_SESSIONS_PER_USER", 4)
UNCLOUD_CONSOLE_SESSIONS_PER_VM = envint("UNCLOUD_CONSOLE_SESSIONS_PER_VM", 2)
# A session ends after this long without a keystroke or click from the user, and after this long at all.
UNCLOUD_CONSOLE_IDLE_SECONDS = envint("UNCLOUD_CONSOLE_IDLE_SECONDS", 900)
UNCLOUD_CONSOLE_MAX_SECONDS = envint("UNCLOUD_CONSOLE_MAX_SECONDS", 4 * 3600)
# Every open session is checked this often (VM stopped or moved, access or token gone).
UNCLOUD_CONSOLE_RECHECK_SECONDS = envint("UNCLOUD_CONSOLE_RECHECK_SECONDS", 2)
# An open session its gateway has not renewed for this long counts as ended (the gateway died).
UNCLOUD_CONSOLE_STALE_SECONDS = envint("UNCLOUD_CONSOLE_STALE_SECONDS", 60)

# Images and disks (images app)
# Validated images live in UNCLOUD_IMAGE_STORE_DIR; uploads stream into UNCLOUD_IMAGE_UPLOAD_DIR
# (never into memory) and leave it when validation ends, accepted or refused.
UNCLOUD_IMAGE_STORE_DIR = Path(envstr("UNCLOUD_IMAGE_STORE_DIR", str(DATA_DIR / "images"))).resolve()
UNCLOUD_IMAGE_UPLOAD_DIR = Path(envstr("UNCLOUD_IMAGE_UPLOAD_DIR", str(DATA_DIR / "uploads"))).resolve()
UNCLOUD_IMAGE_MAX_UPLOAD_GIB = envint("UNCLOUD_IMAGE_MAX_UPLOAD_GIB", 64)
UNCLOUD_IMAGE_MAX_VIRTUAL_GIB = envint("UNCLOUD_IMAGE_MAX_VIRTUAL_GIB", 2048)
# Limits for qemu-img on untrusted files (address space and CPU seconds).
UNCLOUD_QEMU_IMG_MEMORY_MIB = envint("UNCLOUD_QEMU_IMG_MEMORY_MIB", 1024)
UNCLOUD_QEMU_IMG_CPU_SECONDS = envint("UNCLOUD_QEMU_IMG_CPU_SECONDS", 600)
# Ceph RBD: hosts whose storage is rbd keep disks in this pool (ceph.conf and key on the host).
UNCLOUD_RBD_POOL = envstr("UNCLOUD_RBD_POOL", "rbd")
UNCLOUD_RBD_CEPH_CONF = envstr("UNCLOUD_RBD_CEPH_CONF", "/etc/ceph/ceph.conf")
UNCLOUD_RBD_USER = envstr("UNCLOUD_RBD_USER", "admin")
# Seconds a running guest has to let go of a data volume being detached (PCIe hot-unplug).
UNCLOUD_DISK_DETACH_TIMEOUT = envint("UNCLOUD_DISK_DETACH_TIMEOUT", 30)
# The image sweep (beat, every UNCLOUD_IMAGE_SWEEP_INTERVAL s) removes upload files nobody has
# written for UNCLOUD_UPLOAD_STALE_SECONDS, and base images a host has cached for disks that are
# all gone, once they have been unused for UNCLOUD_BASE_IMAGE_GRACE_SECONDS.
UNCLOUD_IMAGE_SWEEP_INTERVAL = envint("UNCLOUD_IMAGE_SWEEP_INTERVAL", 3600)
UNCLOUD_UPLOAD_STALE_SECONDS = envint("UNCLOUD_UPLOAD_STALE_SECONDS", 6 * 3600)
UNCLOUD_BASE_IMAGE_GRACE_SECONDS = envint("UNCLOUD_BASE_IMAGE_GRACE_SECONDS", 24 * 3600)

# Identity (accounts/): TOTP second factor, LDAP, sign-up mail, login rate limits, cookies
INSTALLED_APPS += ["django_otp", "django_otp.plugins.otp_totp", "django_otp.plugins.otp_static"]
MIDDLEWARE.insert(
    MIDDLEWARE.index("django.contrib.auth.middleware.AuthenticationMiddleware") + 1, "django_otp.middleware.OTPMiddleware"
)
MIDDLEWARE.insert(MIDDLEWARE.index("django_otp.middleware.OTPMiddleware") + 1, "accounts.middleware.StaffOTPMiddleware")
OTP_TOTP_ISSUER = envstr("UNCLOUD_OTP_ISSUER", "uncloud")
UNCLOUD_SIGNUP_ENABLED = envbool("UNCLOUD_SIGNUP_ENABLED", True)
# Failed logins (password or one-time code) allowed per account+network, per account (from anywhere),
# and per network (an IPv4 address or an IPv6 /64) over all accounts, in the window.
UNCLOUD_LOGIN_FAILURES_PER_USER = envint("UNCLOUD_LOGIN_FAILURES_PER_USER", 5)
UNCLOUD_LOGIN_FAILURES_PER_ACCOUNT = envint("UNCLOUD_LOGIN_FAILURES_PER_ACCOUNT", 20)
UNCLOUD_LOGIN_FAILURES_PER_ADDRESS = envint("UNCLOUD_LOGIN_FAILURES_PER_ADDRESS", 30)
# Reverse proxies (addresses or networks) whose client-address header is believed; empty: none, the
# socket's address is the client. Behind a proxy, set this or every client shares the proxy's counters.
UNCLOUD_TRUSTED_PROXIES = envlist("UNCLOUD_TRUSTED_PROXIES", "")
# Mails anyone can make the site send (sign-up, password reset, invitations), per recipient and per
# client network, per hour.
UNCLOUD_MAIL_PER_RECIPIENT_PER_HOUR = envint("UNCLOUD_MAIL_PER_RECIPIENT_PER_HOUR", 5)
UNCLOUD_MAIL_PER_ADDRESS_PER_HOUR = envint("UNCLOUD_MAIL_PER_ADDRESS_PER_HOUR", 20)
UNCLOUD_CLIENT_ADDRESS_HEADER = envstr("UNCLOUD_CLIENT_ADDRESS_HEADER", "X-Forwarded-For")
UNCLOUD_LOGIN_WINDOW_SECONDS = envint("UNCLOUD_LOGIN_WINDOW_SECONDS", 900)
# The rate limiter's counters live in the cache: use Redis when more than one web process runs.
_cache_url = envstr("CACHE_URL")
CACHES = {
    "default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": _cache_url}
    if _cache_url else {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}
}
from accounts.ldapconfig import ldap_settings as _ldap_settings  # noqa: E402, I001  (imports no models)

globals().update(_ldap_settings(__import__("os").environ))
# Local users log in with their uncloud password, directory users with their LDAP one; neither backend
# accepts the other's users (accounts.backends).
AUTHENTICATION_BACKENDS = ["accounts.backends.LocalBackend"]
if envstr("LDAP_SERVER_URI"):
    AUTHENTICATION_BACKENDS.insert(0, "accounts.backends.UncloudLDAPBackend")
EMAIL_BACKEND = envstr("EMAIL_BACKEND", "django.core.mail.backends.console.EmailBackend")
EMAIL_HOST = envstr("EMAIL_HOST", "localhost")
EMAIL_PORT = envint("EMAIL_PORT", 25)
EMAIL_HOST_USER = envstr("EMAIL_HOST_USER")
EMAIL_HOST_PASSWORD = envstr("EMAIL_HOST_PASSWORD")
EMAIL_USE_TLS = envbool("EMAIL_USE_TLS", False)
DEFAULT_FROM_EMAIL = envstr("DEFAULT_FROM_EMAIL", "uncloud <noreply@localhost>")
# Cookies: secure by default whenever the site is served over HTTPS; the variables above still win.
if SITE_URL.startswith("https://"):
    SESSION_COOKIE_SECURE = envbool("SESSION_COOKIE_SECURE", True)
    CSRF_COOKIE_SECURE = envbool("CSRF_COOKIE_SECURE", True)
SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_SAMESITE = "Lax"
CSRF_COOKIE_SAMESITE = "Lax"
SESSION_COOKIE_AGE = envint("SESSION_COOKIE_AGE", 12 * 3600)

# Billing (billing/): bills, VAT, QR-bill, Stripe cards, bank transfers, dunning
UNCLOUD_BILLING_CURRENCY = envstr("UNCLOUD_BILLING_CURRENCY", "CHF")
UNCLOUD_BILLING_VM_PRODUCT = envstr("UNCLOUD_BILLING_VM_PRODUCT", "vm")
# vms may not import billing, so the VM create form finds the price through this dotted path: a function
# (project, *, cores, memory_mib, disk_mib) -> quote or None. Empty: no price shown.
UNCLOUD_VM_PRICE_FUNCTION = envstr("UNCLOUD_VM_PRICE_FUNCTION", "billing.pricing.monthly_vm_price")
UNCLOUD_BILLING_PAYMENT_DAYS = envint("UNCLOUD_BILLING_PAYMENT_DAYS", 30)
UNCLOUD_BILLING_BATCH_SIZE = envint("UNCLOUD_BILLING_BATCH_SIZE", 1000)
UNCLOUD_BILLING_IBAN = envstr("UNCLOUD_BILLING_IBAN", "CH44 3199 9123 0008 8901 2")
UNCLOUD_BILLING_CREDITOR_NAME = envstr("UNCLOUD_BILLING_CREDITOR_NAME", "uncloud hosting")
UNCLOUD_BILLING_CREDITOR_STREET = envstr("UNCLOUD_BILLING_CREDITOR_STREET", "Musterstrasse")
UNCLOUD_BILLING_CREDITOR_HOUSE_NUMBER = envstr("UNCLOUD_BILLING_CREDITOR_HOUSE_NUMBER", "1")
UNCLOUD_BILLING_CREDITOR_POSTAL_CODE = envstr("UNCLOUD_BILLING_CREDITOR_POSTAL_CODE", "8000")
UNCLOUD_BILLING_CREDITOR_CITY = envstr("UNCLOUD_BILLING_CREDITOR_CITY", "Zürich")
UNCLOUD_BILLING_CREDITOR_COUNTRY = envstr("UNCLOUD_BILLING_CREDITOR_COUNTRY", "CH")
UNCLOUD_BILLING_VAT_NUMBER = envstr("UNCLOUD_BILLING_VAT_NUMBER", "")
UNCLOUD_BILLING_REMINDER_DAYS = [int(day) for day in envlist("UNCLOUD_BILLING_REMINDER_DAYS", "7,21")]
UNCLOUD_BILLING_SUSPEND_AFTER_DAYS = envint("UNCLOUD_BILLING_SUSPEND_AFTER_DAYS", 30)
UNCLOUD_BILLING_TERMINATE_AFTER_DAYS = envint("UNCLOUD_BILLING_TERMINATE_AFTER_DAYS", 60)
# Who at the hoster hears about money that needs a person: termination requests, bank reversals,
# unmatched bank entries, card refunds and disputes, months that could not be billed.
UNCLOUD_BILLING_STAFF_EMAILS = envlist("UNCLOUD_BILLING_STAFF_EMAILS", "")
# Bills below this are not issued: the amount is carried to the next bill (Stripe charges 0.50 CHF at least).
UNCLOUD_BILLING_MINIMUM_BILL = envstr("UNCLOUD_BILLING_MINIMUM_BILL", "0.50")
# Bank files larger than this are imported by the worker in the background, with progress on the staff page.
UNCLOUD_BILLING_INLINE_IMPORT_BYTES = envint("UNCLOUD_BILLING_INLINE_IMPORT_BYTES", 1024 * 1024)
STRIPE_SECRET_KEY = envstr("STRIPE_SECRET_KEY", "")
STRIPE_PUBLISHABLE_KEY = envstr("STRIPE_PUBLISHABLE_KEY", "")
STRIPE_WEBHOOK_SECRET = envstr("STRIPE_WEBHOOK_SECRET", "")
STRIPE_API_BASE = envstr("STRIPE_API_BASE", "https://api.stripe.com")
STRIPE_JS_URL = envstr("STRIPE_JS_URL", "https://js.stripe.com/v3/")
STRIPE_MAX_NETWORK_RETRIES = envint("STRIPE_MAX_NETWORK_RETRIES", 2)

# VMs and the scheduler
# auto: KVM when a throw-away test guest really runs with it on the host (a /dev/kvm that opens is no
# proof: nested KVM without vmx/svm dies with "failed to set MSR"), else TCG. kvm or tcg force one.
UNCLOUD_VM_ACCEL = envstr("UNCLOUD_VM_ACCEL", "auto")
# The public image a VM created through the API without `image` boots (its name); empty: such a
# create is refused (400). bin/run sets it to its demo image.
UNCLOUD_DEFAULT_IMAGE = envstr("UNCLOUD_DEFAULT_IMAGE", "")
# spread: the host with the most free memory; pack: the fullest host that still fits.
UNCLOUD_SCHEDULER_STRATEGY = envstr("UNCLOUD_SCHEDULER_STRATEGY", "spread")
# A host whose last heartbeat is older than this gets no new VMs (and the reconciler marks it down).
UNCLOUD_HOST_HEARTBEAT_TIMEOUT = envint("UNCLOUD_HOST_HEARTBEAT_TIMEOUT", 180)
# ACPI powerdown gets this long before a stop turns into a hard stop.
UNCLOUD_VM_STOP_TIMEOUT = envint("UNCLOUD_VM_STOP_TIMEOUT", 60)
# The reconciler compares every host with the database this often (seconds).
UNCLOUD_RECONCILE_INTERVAL = envint("UNCLOUD_RECONCILE_INTERVAL", 30)
# A qemu the database does not want is stopped after being reported for this long.
UNCLOUD_UNKNOWN_VM_GRACE = envint("UNCLOUD_UNKNOWN_VM_GRACE", 300)

# Live migration (vms/migration.py). The guest may stop for this long at the switch; when it does
# not converge the limit doubles every _STEP_S seconds up to _MAX_DOWNTIME_MS (Proxmox starts at
# 100 ms too; QEMU's own default is 300 ms). Bandwidth in MiB/s, 0 = QEMU's default (128 MiB/s).
UNCLOUD_MIGRATION_DOWNTIME_MS = envint("UNCLOUD_MIGRATION_DOWNTIME_MS", 100)
UNCLOUD_MIGRATION_MAX_DOWNTIME_MS = envint("UNCLOUD_MIGRATION_MAX_DOWNTIME_MS", 2000)
UNCLOUD_MIGRATION_DOWNTIME_STEP_S = envint("UNCLOUD_MIGRATION_DOWNTIME_STEP_S", 10)
UNCLOUD_MIGRATION_BANDWIDTH_MIB = envint("UNCLOUD_MIGRATION_BANDWIDTH_MIB", 0)
UNCLOUD_MIGRATION_AUTO_CONVERGE = envbool("UNCLOUD_MIGRATION_AUTO_CONVERGE", True)
# A migration that has not finished after this many seconds is cancelled (the guest stays where it
# was). The transfer is one step; its worker renews the operation's lease while it runs.
UNCLOUD_MIGRATION_TIMEOUT = envint("UNCLOUD_MIGRATION_TIMEOUT", 240)
# Concurrent migrations per host, leaving and arriving (Nova: 1; KubeVirt: 2 outbound per node).
UNCLOUD_MIGRATION_MAX_OUTGOING = envint("UNCLOUD_MIGRATION_MAX_OUTGOING", 2)
UNCLOUD_MIGRATION_MAX_INCOMING = envint("UNCLOUD_MIGRATION_MAX_INCOMING", 2)

# High availability (`manage.py watch_hosts`, agents/liveness.py). Every host gets a heartbeat this
# often (ms) over its open connection; a call may take this long (ms) before it counts as missed.
UNCLOUD_HEARTBEAT_INTERVAL_MS = envint("UNCLOUD_HEARTBEAT_INTERVAL_MS", 1000)
UNCLOUD_HEARTBEAT_CALL_TIMEOUT_MS = envint("UNCLOUD_HEARTBEAT_CALL_TIMEOUT_MS", 2000)
# Silent this long (ms): suspect, and its peers are asked whether they still reach it.
UNCLOUD_HEARTBEAT_SUSPECT_AFTER_MS = envint("UNCLOUD_HEARTBEAT_SUSPECT_AFTER_MS", 3000)
# A host's guard kills its guests when it has not heard a heartbeat for this long (and is the one
# cut off); the control plane counts a host as fenced this much later (lease + margin).
UNCLOUD_FENCE_LEASE_SECONDS = envint("UNCLOUD_FENCE_LEASE_SECONDS", 15)
UNCLOUD_FENCE_MARGIN_SECONDS = envint("UNCLOUD_FENCE_MARGIN_SECONDS", 5)
# The guard listens on the host's underlay address at this port (peers ask it for a second opinion).
UNCLOUD_HA_GUARD_PORT = envint("UNCLOUD_HA_GUARD_PORT", 7411)
# More than this share (percent) of hosts silent at once: a switch or the control plane failed,
# not the hosts; nothing is evacuated and an alarm is raised.
UNCLOUD_HA_MASS_FAILURE_PERCENT = envint("UNCLOUD_HA_MASS_FAILURE_PERCENT", 50)
# Blocklist a failed host's Ceph client address before its RBD VMs start elsewhere.
UNCLOUD_HA_CEPH_FENCE = envbool("UNCLOUD_HA_CEPH_FENCE", True)
# A power fence command (Host.power_fence_command) may take this long.
UNCLOUD_POWER_FENCE_TIMEOUT = envint("UNCLOUD_POWER_FENCE_TIMEOUT", 60)
# A host call (disks, VMs) ends after this long (seconds), and at once when the host goes silent.
UNCLOUD_HOST_CALL_TIMEOUT = envint("UNCLOUD_HOST_CALL_TIMEOUT", 120)
# At most this many operations hold a worker for one host at a time (agents/hostslots.py); more
# wait in turn without a worker. Keep it below the worker pool (concurrency x workers); 0: no bound.
UNCLOUD_HOST_WORKER_SLOTS = envint("UNCLOUD_HOST_WORKER_SLOTS", 2)
# Each worker process connects to the hosts as it starts (agents.hosts.warm_host_connections), so
# no customer's operation pays for a cold SSH connection.
UNCLOUD_WORKER_WARM_CONNECTIONS = envbool("UNCLOUD_WORKER_WARM_CONNECTIONS", True)
# A VM that failed to start this many times in a row on one host is moved (RBD) or left stopped.
UNCLOUD_START_FAILURES_BEFORE_GIVING_UP = envint("UNCLOUD_START_FAILURES_BEFORE_GIVING_UP", 3)

# Metrics (observability/). /metrics and the Prometheus service discovery (/metrics/targets) answer
# staff sessions and scrapers presenting this token (`Authorization: Bearer ...`); empty: staff only.
UNCLOUD_METRICS_TOKEN = envstr("UNCLOUD_METRICS_TOKEN", "")
# The control plane's own scrape target in the service discovery (host:port); empty: the Host
# header of the discovery request.
UNCLOUD_METRICS_SELF_TARGET = envstr("UNCLOUD_METRICS_SELF_TARGET", "")
# The `site` label of every discovered target.
UNCLOUD_SITE_NAME = envstr("UNCLOUD_SITE_NAME", "uncloud")
# Each host's exporter listens on its management (SSH) address at this port; 0: no exporters.
UNCLOUD_HOST_EXPORTER_PORT = envint("UNCLOUD_HOST_EXPORTER_PORT", 9847)
# Customers' graphs: every host's exporter is read this often (seconds); samples are kept this long.
UNCLOUD_METRICS_SAMPLE_INTERVAL = envint("UNCLOUD_METRICS_SAMPLE_INTERVAL", 60)
UNCLOUD_METRICS_RETENTION_HOURS = envint("UNCLOUD_METRICS_RETENTION_HOURS", 48)
# A Prometheus that scrapes the host exporters (http://prometheus:9090): graphs come from it, and from
# the kept samples when it does not answer. Empty: the kept samples only.
UNCLOUD_METRICS_PROMETHEUS_URL = envstr("UNCLOUD_METRICS_PROMETHEUS_URL", "")
