"""The settings: one frozen object per section, and the checks a whole Settings must pass.

Durations are seconds (floats) here; :mod:`proxy.config.loading` builds these from the
TOML file, the environment and the flags.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Literal
from urllib.parse import urlsplit

from proxy.errors import ConfigError
from proxy.limits import (
    LOCATION_RE,
    MAX_CONCURRENCY,
    MAX_DISPATCH_DEADLINE,
    MAX_RATE,
    MIN_DISPATCH_DEADLINE,
    PROJECT_ID_RE,
    QUEUE_ID_RE,
    default_burst,
)
from proxy.networks import trusted_networks

EngineName = Literal["local", "cloudtasks"]
ENGINES: tuple[EngineName, ...] = ("local", "cloudtasks")


MAX_DELIVERY_PROCESSES = 16
DEFAULT_MAX_BODY_BYTES = 100 * 1024
DEFAULT_MAX_HEADER_BYTES = 64 * 1024
DEFAULT_MAX_HEADER_COUNT = 100  # Apache's and Envoy's default
MAX_HEADER_COUNT = 10_000
API_KEY_HASH_RE = re.compile(r"^sha256:[0-9a-f]{64}$")


@dataclass(frozen=True, kw_only=True)
class RetrySettings:
    """Cloud Tasks RetryConfig. Durations in seconds; 0 retry duration means unlimited."""

    max_attempts: int = 100
    min_backoff: float = 0.1
    max_backoff: float = 3600.0
    max_doublings: int = 16
    max_retry_duration: float = 0.0


@dataclass(frozen=True, kw_only=True)
class QueueSettings:
    """One queue: where its tasks go and how fast.

    ``rate`` is dispatches per second (max 500), ``burst`` the token-bucket size (derived
    from the rate when unset), ``concurrency`` the cap on dispatches in flight,
    ``dispatch_deadline`` seconds per attempt (15 s to 30 min).
    """

    name: str
    target: str
    rate: float = MAX_RATE
    burst: int | None = None
    concurrency: int = 1000
    dispatch_deadline: float = 600.0
    retry: RetrySettings = field(default_factory=RetrySettings)
    audience: str | None = None
    service_account_email: str | None = None
    auth: str | None = None  # "oidc", "oauth" or "none"; unset: oidc with an email, else none
    scope: str | None = None  # the OAuth scope (auth = "oauth"); default: cloud-platform
    max_backlog_tasks: int | None = None
    max_backlog_bytes: int | None = None
    relay: bool | None = None  # Cloud Tasks engine: deliver through the relay; None: inherit

    @property
    def effective_burst(self) -> int:
        """The configured burst, or the one Cloud Tasks would derive from the rate."""
        return self.burst if self.burst is not None else default_burst(self.rate)

    @property
    def oidc(self) -> bool:
        """Whether each delivery carries a Google-signed ID token."""
        return self.auth == "oidc" or (self.auth is None and bool(self.service_account_email))

    @property
    def oauth(self) -> bool:
        """Whether each delivery carries an OAuth access token (a Google API target)."""
        return self.auth == "oauth"

    @property
    def oauth_scope(self) -> str:
        """The access token's scope."""
        return self.scope or "https://www.googleapis.com/auth/cloud-platform"

    @property
    def oidc_audience(self) -> str:
        """The ID token's ``aud``: the queue's ``audience``, else the target's origin."""
        return self.audience or self.target_origin

    @property
    def target_origin(self) -> str:
        """``scheme://host[:port]`` of the target: the default OIDC audience."""
        parts = urlsplit(self.target)
        return f"{parts.scheme}://{parts.netloc}"


@dataclass(frozen=True, kw_only=True)
class RouteSettings:
    """Requests whose path starts with ``prefix`` (and whose Host is ``host``, if set) go to
    ``queue``. Credential headers are stripped unless forwarding them is allowed here.
    ``api_keys`` (``sha256:<hex>`` hashes) require a key on this route; ``None`` inherits
    the top-level ``api_keys``, an empty list makes the route open."""

    prefix: str = "/"
    queue: str
    host: str | None = None
    strip_prefix: bool = False
    forward_authorization: bool = False
    forward_cookies: bool = False
    api_keys: tuple[str, ...] | None = None


@dataclass(frozen=True, kw_only=True)
class ServerSettings:
    """Listeners and logs. The admin listener is separate so the proxy never shadows a
    backend path; ``admin_token`` (a bearer token, best set through the environment) guards
    its state-changing calls. ``access_log`` writes one line per ingress request."""

    host: str = "127.0.0.1"
    port: int = 8080
    admin_host: str = "127.0.0.1"
    admin_port: int = 9090
    trusted_proxies: str = "127.0.0.1"
    log_level: str = "info"
    log_format: Literal["auto", "json", "text"] = "auto"
    access_log: bool = True
    shutdown_grace: float = 25.0
    header_timeout: float = 10.0
    admin_token: str | None = field(default=None, repr=False)


@dataclass(frozen=True, kw_only=True)
class LimitsSettings:
    """Per-request limits: body bytes (default 100 KiB, the CreateTask task size), the
    total size of forwarded headers (Cloud Tasks caps headers below 80 KB), the number of
    header fields in a request (default 100: most backends refuse more), and seconds a
    client may take to send its whole body (a slow-drip body then gets 408)."""

    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    max_header_bytes: int = DEFAULT_MAX_HEADER_BYTES
    max_header_count: int = DEFAULT_MAX_HEADER_COUNT
    body_timeout: float = 30.0


@dataclass(frozen=True, kw_only=True)
class LocalSettings:
    """Embedded engine: the SQLite file and its durability; ``delivery_processes`` child
    processes make the HTTP requests of deliveries (0: the ingress's event loop does);
    ``iam_credentials_url`` signs ID tokens of another service account (impersonation)."""

    db: str = "ingest-proxy.db"
    synchronous: Literal["FULL", "NORMAL", "EXTRA"] = "FULL"
    dedup_window: float = 3600.0
    delivery_processes: int = 1
    iam_credentials_url: str = "https://iamcredentials.googleapis.com"


GOOGLE_ISSUER = "https://accounts.google.com"
GOOGLE_CERTS_URL = "https://www.googleapis.com/oauth2/v1/certs"
DEFAULT_RELAY_PATH = "/_ingest-proxy/relay"
DEAD_LETTER_SUFFIX = "-dead-letters"


@dataclass(frozen=True, kw_only=True)
class CloudTasksSettings:
    """Cloud Tasks engine. ``emulator_host`` (``host:port``) switches to an insecure channel;
    ``enqueue_deadline`` bounds all CreateTask attempts of one request, in seconds.

    ``spool`` (a SQLite file; ``None``: off) keeps requests Cloud Tasks cannot take within
    the deadline, up to ``spool_max_tasks`` tasks and ``spool_max_bytes`` bytes, and
    forwards them at most ``spool_forward_rate`` per second. After
    ``spool_breaker_failures`` failed CreateTasks in a row, requests go straight to the
    spool for ``spool_breaker_open`` seconds, then one probe decides.

    The delivery relay (``relay``, see ``proxy/relay``): ``relay_url`` is its externally
    reachable base URL (its path is a reserved path on the ingress port, or any path on the
    relay's own ``relay_port``); ``relay_service_account_email`` the identity Cloud Tasks
    signs the relay's tokens as, the only one the relay accepts; ``relay_audience``
    defaults to ``relay_url``; ``relay_issuer`` and ``relay_certs_url`` are Google's unless
    a local Cloud Tasks signs the tokens.
    """

    project: str | None = None
    location: str | None = None
    service_account_email: str | None = None
    emulator_host: str | None = None
    enqueue_deadline: float = 2.0
    spool: str | None = None
    spool_max_tasks: int = 100_000
    spool_max_bytes: int = 1 << 30
    spool_forward_rate: float = 50.0
    spool_breaker_failures: int = 5
    spool_breaker_open: float = 10.0
    relay: bool = False
    relay_url: str | None = None
    relay_port: int | None = None  # its own listener (GKE); None: a path on the ingress port
    relay_host: str | None = None  # of its own listener; None: server.host
    relay_service_account_email: str | None = None
    relay_audience: str | None = None
    relay_issuer: str = GOOGLE_ISSUER
    relay_certs_url: str = GOOGLE_CERTS_URL

    def relays(self, queue: QueueSettings) -> bool:
        """Whether ``queue``'s tasks go through the delivery relay (its own ``relay``, else
        ``cloudtasks.relay``)."""
        return self.relay if queue.relay is None else queue.relay

    @property
    def relay_path(self) -> str:
        """The path prefix the relay serves: ``relay_url``'s, without a trailing slash."""
        return urlsplit(self.relay_url or "").path.rstrip("/")

    @property
    def relay_token_audience(self) -> str:
        """The ``aud`` of the tokens Cloud Tasks sends the relay."""
        return self.relay_audience or self.relay_url or ""


@dataclass(frozen=True, kw_only=True)
class Settings:
    """Everything the proxy needs, validated on construction."""

    engine: EngineName = "local"
    queues: tuple[QueueSettings, ...] = ()
    routes: tuple[RouteSettings, ...] = ()
    default_queue: str | None = None
    api_keys: tuple[str, ...] = ()
    server: ServerSettings = field(default_factory=ServerSettings)
    limits: LimitsSettings = field(default_factory=LimitsSettings)
    local: LocalSettings = field(default_factory=LocalSettings)
    cloudtasks: CloudTasksSettings = field(default_factory=CloudTasksSettings)

    def __post_init__(self) -> None:
        validate(self)

    def queue(self, name: str) -> QueueSettings:
        """The queue called ``name``; ``KeyError`` when there is none."""
        for queue in self.queues:
            if queue.name == name:
                return queue
        raise KeyError(name)

    @property
    def effective_routes(self) -> tuple[RouteSettings, ...]:
        """The configured routes, then a catch-all to the default queue."""
        default = self.default_queue or (self.queues[0].name if self.queues else "")
        return (*self.routes, RouteSettings(prefix="/", queue=default))

    def route_api_keys(self, route: RouteSettings) -> tuple[str, ...]:
        """The key hashes that open ``route``: its own, else the top-level ones."""
        return self.api_keys if route.api_keys is None else route.api_keys


# ---------------------------------------------------------------- validation


def validate(settings: Settings) -> None:
    """Raise :class:`ConfigError` naming the first key whose value is not allowed."""
    if settings.engine not in ENGINES:
        raise ConfigError("engine", f"must be one of {', '.join(ENGINES)}, not {settings.engine!r}")
    if not settings.queues:
        raise ConfigError(
            "queues", "no queue is configured: pass --target URL or add a [[queues]] table"
        )
    seen: set[str] = set()
    for index, queue in enumerate(settings.queues):
        _validate_queue(f"queues[{index}]", queue)
        if queue.name in seen:
            raise ConfigError(f"queues[{index}].name", f"duplicate queue name {queue.name!r}")
        seen.add(queue.name)
    if settings.default_queue is not None and settings.default_queue not in seen:
        raise ConfigError("default_queue", f"no queue is named {settings.default_queue!r}")
    _validate_key_hashes("api_keys", settings.api_keys)
    for index, route in enumerate(settings.routes):
        key = f"routes[{index}]"
        if not route.prefix.startswith("/"):
            raise ConfigError(f"{key}.prefix", "must start with '/'")
        _validate_key_hashes(f"{key}.api_keys", route.api_keys or ())
        if route.queue not in seen:
            raise ConfigError(f"{key}.queue", f"no queue is named {route.queue!r}")
    _validate_server(settings.server)
    limits = settings.limits
    if not 1 <= limits.max_body_bytes <= 32 * 1024 * 1024:
        raise ConfigError("limits.max_body_bytes", "must be between 1 and 33554432")
    if not 1024 <= limits.max_header_bytes <= 80 * 1000:
        raise ConfigError("limits.max_header_bytes", "must be between 1024 and 80000")
    if not 1 <= limits.max_header_count <= MAX_HEADER_COUNT:
        raise ConfigError("limits.max_header_count", f"must be between 1 and {MAX_HEADER_COUNT}")
    if not 0.1 <= limits.body_timeout <= 3600:
        raise ConfigError("limits.body_timeout", "must be between 0.1s and 1h")
    if not 0.1 <= settings.server.header_timeout <= 3600:
        raise ConfigError("server.header_timeout", "must be between 0.1s and 1h")
    if urlsplit(settings.local.iam_credentials_url).scheme not in ("http", "https"):
        raise ConfigError("local.iam_credentials_url", "must be an http:// or https:// URL")
    if settings.local.synchronous not in ("FULL", "NORMAL", "EXTRA"):
        raise ConfigError("local.synchronous", "must be FULL, NORMAL or EXTRA")
    if not 0 <= settings.local.delivery_processes <= MAX_DELIVERY_PROCESSES:
        raise ConfigError(
            "local.delivery_processes", f"must be between 0 and {MAX_DELIVERY_PROCESSES}"
        )
    if settings.engine == "cloudtasks":
        _validate_cloudtasks(settings.cloudtasks, settings.queues)
        _validate_relay(settings)


def _validate_key_hashes(key: str, hashes: tuple[str, ...]) -> None:
    for index, value in enumerate(hashes):
        if not API_KEY_HASH_RE.match(value):
            raise ConfigError(
                f"{key}[{index}]",
                "must be 'sha256:' and 64 lower-case hex digits (make one with "
                "`ingest-proxy hash-key`); plain keys are never stored in config",
            )


def _validate_queue(key: str, queue: QueueSettings) -> None:
    if not QUEUE_ID_RE.match(queue.name):
        raise ConfigError(f"{key}.name", "must be 1-100 letters, digits or hyphens")
    parts = urlsplit(queue.target)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(
            f"{key}.target", f"must be an http:// or https:// URL, not {queue.target!r}"
        )
    if parts.query or parts.fragment:
        raise ConfigError(f"{key}.target", "must not carry a query string or fragment")
    if not 0 < queue.rate <= MAX_RATE:
        raise ConfigError(f"{key}.rate", f"must be more than 0 and at most {MAX_RATE:g} per second")
    if queue.burst is not None and not 1 <= queue.burst <= 500:
        raise ConfigError(f"{key}.burst", "must be between 1 and 500")
    if not 1 <= queue.concurrency <= MAX_CONCURRENCY:
        raise ConfigError(f"{key}.concurrency", f"must be between 1 and {MAX_CONCURRENCY}")
    if not MIN_DISPATCH_DEADLINE <= queue.dispatch_deadline <= MAX_DISPATCH_DEADLINE:
        raise ConfigError(f"{key}.dispatch_deadline", "must be between 15s and 30m")
    if queue.auth not in (None, "none", "oidc", "oauth"):
        raise ConfigError(f"{key}.auth", "must be oidc, oauth or none")
    if queue.scope is not None and queue.auth != "oauth":
        raise ConfigError(f"{key}.scope", 'is the OAuth scope: set auth = "oauth" with it')
    for name in ("max_backlog_tasks", "max_backlog_bytes"):
        value = getattr(queue, name)
        if value is not None and value < 1:
            raise ConfigError(f"{key}.{name}", "must be at least 1")
    retry = queue.retry
    if retry.max_attempts < -1 or retry.max_attempts == 0:
        raise ConfigError(f"{key}.retry.max_attempts", "must be -1 (unlimited) or at least 1")
    if retry.max_backoff < retry.min_backoff:
        raise ConfigError(f"{key}.retry.max_backoff", "must not be less than min_backoff")
    if not 0 <= retry.max_doublings <= 64:
        raise ConfigError(f"{key}.retry.max_doublings", "must be between 0 and 64")


def _validate_server(server: ServerSettings) -> None:
    for name in ("port", "admin_port"):
        if not 0 <= getattr(server, name) <= 65535:
            raise ConfigError(f"server.{name}", "must be a TCP port between 0 and 65535")
    if server.port == server.admin_port and server.port != 0:
        raise ConfigError("server.admin_port", "must differ from the ingress port")
    if server.log_level not in ("critical", "error", "warning", "info", "debug"):
        raise ConfigError("server.log_level", "must be critical, error, warning, info or debug")
    if server.log_format not in ("auto", "json", "text"):
        raise ConfigError("server.log_format", "must be auto, json or text")
    if server.admin_token is not None and len(server.admin_token) < 16:
        raise ConfigError("server.admin_token", "must be at least 16 characters")
    try:
        trusted_networks(server.trusted_proxies)
    except ValueError as exc:
        raise ConfigError("server.trusted_proxies", str(exc)) from None


def _validate_cloudtasks(ct: CloudTasksSettings, queues: tuple[QueueSettings, ...]) -> None:
    if not ct.project or not PROJECT_ID_RE.match(ct.project):
        raise ConfigError(
            "cloudtasks.project", "the cloudtasks engine needs a project id (--project)"
        )
    if not ct.location or not LOCATION_RE.match(ct.location):
        raise ConfigError(
            "cloudtasks.location", "the cloudtasks engine needs a location (--location)"
        )
    if not 0.1 <= ct.enqueue_deadline <= 60:
        raise ConfigError("cloudtasks.enqueue_deadline", "must be between 0.1s and 60s")
    _validate_spool(ct)
    for index, queue in enumerate(queues):
        if queue.auth in ("oidc", "oauth") and not (
            queue.service_account_email or ct.service_account_email
        ):
            raise ConfigError(
                f"queues[{index}].service_account_email",
                "Cloud Tasks signs tokens as a service account: name one (here or as"
                " cloudtasks.service_account_email)",
            )


def _validate_spool(ct: CloudTasksSettings) -> None:
    if ct.spool is not None and not ct.spool.strip():
        raise ConfigError("cloudtasks.spool", "must be the path of a file (or left out)")
    if ct.spool_max_tasks < 1:
        raise ConfigError("cloudtasks.spool_max_tasks", "must be at least 1")
    if ct.spool_max_bytes < 1024:
        raise ConfigError("cloudtasks.spool_max_bytes", "must be at least 1024 bytes")
    if not 0 < ct.spool_forward_rate <= 500:
        raise ConfigError(
            "cloudtasks.spool_forward_rate", "must be more than 0 and at most 500 per second"
        )
    if ct.spool_breaker_failures < 1:
        raise ConfigError("cloudtasks.spool_breaker_failures", "must be at least 1")
    if not 0.1 <= ct.spool_breaker_open <= 600:
        raise ConfigError("cloudtasks.spool_breaker_open", "must be between 0.1s and 600s")


def _validate_relay(settings: Settings) -> None:
    ct = settings.cloudtasks
    relayed = [(i, q) for i, q in enumerate(settings.queues) if ct.relays(q)]
    if not relayed:
        return
    parts = urlsplit(ct.relay_url or "")
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(
            "cloudtasks.relay_url",
            "the relay needs its externally reachable http(s) URL (Cloud Tasks delivers to it)",
        )
    if parts.query or parts.fragment:
        raise ConfigError("cloudtasks.relay_url", "must not carry a query string or fragment")
    if ct.relay_port is None and not ct.relay_path:
        raise ConfigError(
            "cloudtasks.relay_url",
            "on the ingress port the relay needs a reserved path (e.g. "
            f"https://proxy.example{DEFAULT_RELAY_PATH}), or set cloudtasks.relay_port",
        )
    port = ct.relay_port
    if port is not None and not 0 <= port <= 65535:
        raise ConfigError("cloudtasks.relay_port", "must be a TCP port between 0 and 65535")
    if port and port in (settings.server.port, settings.server.admin_port):
        raise ConfigError("cloudtasks.relay_port", "must differ from the ingress and admin ports")
    if not ct.relay_service_account_email:
        raise ConfigError(
            "cloudtasks.relay_service_account_email",
            "the relay accepts only tokens of one service account: name it",
        )
    for key in ("relay_issuer", "relay_certs_url"):
        if urlsplit(getattr(ct, key)).scheme not in ("http", "https"):
            raise ConfigError(f"cloudtasks.{key}", "must be an http:// or https:// URL")
    for index, queue in relayed:
        if len(queue.name) + len(DEAD_LETTER_SUFFIX) > 100:
            raise ConfigError(
                f"queues[{index}].name",
                f"must be at most {100 - len(DEAD_LETTER_SUFFIX)} characters in relay mode "
                f"(its dead-letter queue is <name>{DEAD_LETTER_SUFFIX})",
            )
