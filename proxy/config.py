"""Settings: one validated, frozen object built from a TOML file, env vars and CLI flags.

Precedence, lowest to highest: built-in defaults, the TOML file (``--config``), environment
variables (``INGEST_PROXY_*``), command-line flags. Nothing here runs at import time.
Durations accept seconds as a number or a string with a unit: ``0.1``, ``"100ms"``,
``"30s"``, ``"5m"``, ``"2h"``, ``"1d"``.
"""

from __future__ import annotations

import ipaddress
import math
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Literal, TypeVar
from urllib.parse import urlsplit

from proxy.errors import ConfigError

EngineName = Literal["local", "cloudtasks"]
ENGINES: tuple[EngineName, ...] = ("local", "cloudtasks")

QUEUE_NAME_RE = re.compile(r"^[A-Za-z0-9-]{1,100}$")
PROJECT_ID_RE = re.compile(r"^[A-Za-z0-9.:-]{1,100}$")
LOCATION_RE = re.compile(r"^[A-Za-z0-9-]{1,63}$")

MAX_RATE = 500.0
MAX_CONCURRENCY = 5000
MAX_DELIVERY_PROCESSES = 16
MIN_DISPATCH_DEADLINE = 15.0
MAX_DISPATCH_DEADLINE = 1800.0
MAX_SCHEDULE_AHEAD = 30 * 86400.0
DEFAULT_MAX_BODY_BYTES = 100 * 1024
DEFAULT_MAX_HEADER_BYTES = 64 * 1024
DEFAULT_MAX_HEADER_COUNT = 100  # Apache's and Envoy's default
MAX_HEADER_COUNT = 10_000
ENV_PREFIX = "INGEST_PROXY_"
API_KEY_HASH_RE = re.compile(r"^sha256:[0-9a-f]{64}$")

_DURATION_RE = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*(ms|s|m|h|d)?\s*$")
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}


def parse_duration(value: object) -> float:
    """Seconds from a number or a string such as ``"30s"``, ``"5m"``, ``"2h"``.

    Raises ``ValueError`` for anything else, negative values included.
    """
    if isinstance(value, bool):
        raise ValueError("expected a duration")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str) and (match := _DURATION_RE.match(value)):
        seconds = float(match.group(1)) * _DURATION_UNITS[match.group(2)]
    else:
        raise ValueError("expected a duration such as 10, 0.5, '30s', '5m' or '2h'")
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError("a duration must be a finite number of seconds, zero or more")
    return seconds


def default_burst(rate: float) -> int:
    """Token-bucket size Cloud Tasks derives from the rate: 10 at 1/s, otherwise rate/5."""
    if rate == 1:
        return 10
    return max(1, math.ceil(rate / 5))


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
    max_backlog_tasks: int | None = None
    max_backlog_bytes: int | None = None

    @property
    def effective_burst(self) -> int:
        """The configured burst, or the one Cloud Tasks would derive from the rate."""
        return self.burst if self.burst is not None else default_burst(self.rate)

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
    processes make the HTTP requests of deliveries (0: the ingress's event loop does)."""

    db: str = "ingest-proxy.db"
    synchronous: Literal["FULL", "NORMAL", "EXTRA"] = "FULL"
    dedup_window: float = 3600.0
    delivery_processes: int = 1


@dataclass(frozen=True, kw_only=True)
class CloudTasksSettings:
    """Cloud Tasks engine. ``emulator_host`` (``host:port``) switches to an insecure channel;
    ``enqueue_deadline`` bounds all CreateTask attempts of one request, in seconds."""

    project: str | None = None
    location: str | None = None
    service_account_email: str | None = None
    emulator_host: str | None = None
    enqueue_deadline: float = 2.0


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
        _validate(self)

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


def _validate(settings: Settings) -> None:
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
    if settings.local.synchronous not in ("FULL", "NORMAL", "EXTRA"):
        raise ConfigError("local.synchronous", "must be FULL, NORMAL or EXTRA")
    if not 0 <= settings.local.delivery_processes <= MAX_DELIVERY_PROCESSES:
        raise ConfigError(
            "local.delivery_processes", f"must be between 0 and {MAX_DELIVERY_PROCESSES}"
        )
    if settings.engine == "cloudtasks":
        _validate_cloudtasks(settings.cloudtasks, settings.queues)


def _validate_key_hashes(key: str, hashes: tuple[str, ...]) -> None:
    for index, value in enumerate(hashes):
        if not API_KEY_HASH_RE.match(value):
            raise ConfigError(
                f"{key}[{index}]",
                "must be 'sha256:' and 64 lower-case hex digits (make one with "
                "`ingest-proxy hash-key`); plain keys are never stored in config",
            )


def _validate_queue(key: str, queue: QueueSettings) -> None:
    if not QUEUE_NAME_RE.match(queue.name):
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


Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def trusted_networks(spec: str) -> list[Network] | None:
    """The networks of a ``server.trusted_proxies`` value (an address is a one-address
    network), ``None`` for ``*`` (every peer). Raises ValueError naming a bad entry."""
    entries = [entry.strip() for entry in spec.split(",") if entry.strip()]
    if entries == ["*"]:
        return None
    networks = []
    for entry in entries:
        try:
            networks.append(ipaddress.ip_network(entry, strict=False))
        except ValueError:
            raise ValueError(
                f"{entry!r} is not an IP address or network; use addresses and CIDR "
                "networks separated by commas, or * alone"
            ) from None
    return networks


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


# ---------------------------------------------------------------- loading

T = TypeVar("T")

# One table per flag: name -> (section, key, parser). Every flag is also INGEST_PROXY_<NAME>.
_QUEUE_FLAGS = {"target", "rate", "burst", "concurrency"}
_FLAGS: dict[str, tuple[str, str]] = {
    "engine": ("", "engine"),
    "host": ("server", "host"),
    "port": ("server", "port"),
    "admin_host": ("server", "admin_host"),
    "admin_port": ("server", "admin_port"),
    "trusted_proxies": ("server", "trusted_proxies"),
    "log_level": ("server", "log_level"),
    "log_format": ("server", "log_format"),
    "shutdown_grace": ("server", "shutdown_grace"),
    "header_timeout": ("server", "header_timeout"),
    "admin_token": ("server", "admin_token"),
    "api_keys": ("", "api_keys"),
    "db": ("local", "db"),
    "delivery_processes": ("local", "delivery_processes"),
    "project": ("cloudtasks", "project"),
    "location": ("cloudtasks", "location"),
    "service_account": ("cloudtasks", "service_account_email"),
    "emulator_host": ("cloudtasks", "emulator_host"),
    "max_body_bytes": ("limits", "max_body_bytes"),
    "queue": ("", "default_queue"),
}
FLAG_NAMES: tuple[str, ...] = (*_FLAGS, *sorted(_QUEUE_FLAGS))


def load_settings(
    config_path: str | Path | None = None,
    *,
    env: Mapping[str, str] | None = None,
    flags: Mapping[str, Any] | None = None,
) -> Settings:
    """Build Settings from the TOML file, then ``INGEST_PROXY_*`` env vars, then flags.

    ``flags`` maps names in :data:`FLAG_NAMES` to values (``None`` means not given).
    ``--target``, ``--rate``, ``--burst`` and ``--concurrency`` set the default queue,
    creating it (named ``--queue`` or ``default``) when the file defines none.
    Raises :class:`ConfigError` naming the bad key.
    """
    env = env or {}
    data: dict[str, Any] = {}
    path = config_path or env.get(ENV_PREFIX + "CONFIG")
    if path:
        data = _read_toml(Path(path))
    overrides: dict[str, Any] = {}
    for name in FLAG_NAMES:
        value = env.get(ENV_PREFIX + name.upper())
        if value is not None and value != "":
            overrides[name] = value
    if "port" not in overrides and env.get("PORT"):
        overrides["port"] = env["PORT"]  # Cloud Run tells the container its port this way
    if "emulator_host" not in overrides and env.get("CLOUD_TASKS_EMULATOR_HOST"):
        overrides["emulator_host"] = env["CLOUD_TASKS_EMULATOR_HOST"]
    for name, value in (flags or {}).items():
        if name not in FLAG_NAMES:
            raise ConfigError(name, "is not a known flag")
        if value is not None:
            overrides[name] = value
    return settings_from_dict(_apply_overrides(data, overrides))


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as handle:
            return tomllib.load(handle)
    except FileNotFoundError:
        raise ConfigError("--config", f"file {str(path)!r} does not exist") from None
    except OSError as exc:
        raise ConfigError("--config", f"cannot read {str(path)!r}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError("--config", f"{str(path)!r} is not valid TOML: {exc}") from None


def _apply_overrides(data: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    merged = {k: (dict(v) if isinstance(v, dict) else v) for k, v in data.items()}
    for name, value in overrides.items():
        if name in _QUEUE_FLAGS:
            continue
        section, key = _FLAGS[name]
        if section:
            table = merged.setdefault(section, {})
            if not isinstance(table, dict):
                raise ConfigError(section, "must be a table")
            table[key] = value
        else:
            merged[key] = value
    queue_overrides = {k: overrides[k] for k in sorted(_QUEUE_FLAGS) if k in overrides}
    if queue_overrides:
        queues = [dict(q) if isinstance(q, dict) else q for q in merged.get("queues", [])]
        default_name = merged.get("default_queue") or (
            queues[0].get("name") if queues and isinstance(queues[0], dict) else None
        )
        default = next(
            (q for q in queues if isinstance(q, dict) and q.get("name") == default_name), None
        )
        if default is None:
            default = {"name": default_name or "default"}
            queues.append(default)
        default.update(queue_overrides)
        merged["queues"] = queues
    return merged


def settings_from_dict(data: Mapping[str, Any]) -> Settings:
    """Settings from a parsed config document (the TOML layout); unknown keys are errors."""
    data = dict(data)
    _check_keys("", data, {f.name for f in fields(Settings)})
    queues = tuple(_queue(f"queues[{i}]", q) for i, q in enumerate(_list(data, "queues")))
    routes = tuple(
        _build(RouteSettings, f"routes[{i}]", q) for i, q in enumerate(_list(data, "routes"))
    )
    return Settings(
        engine=_text("engine", data.get("engine", "local")),  # type: ignore[arg-type]
        queues=queues,
        routes=routes,
        default_queue=data.get("default_queue"),
        api_keys=_text_tuple("api_keys", data.get("api_keys", ())),
        server=_build(ServerSettings, "server", data.get("server", {})),
        limits=_build(LimitsSettings, "limits", data.get("limits", {})),
        local=_build(LocalSettings, "local", data.get("local", {})),
        cloudtasks=_build(CloudTasksSettings, "cloudtasks", data.get("cloudtasks", {})),
    )


def _queue(key: str, raw: object) -> QueueSettings:
    if not isinstance(raw, dict):
        raise ConfigError(key, "must be a table")
    raw = dict(raw)
    retry = _build(RetrySettings, f"{key}.retry", raw.pop("retry", {}))
    queue = _build(QueueSettings, key, raw)
    return replace(queue, retry=retry)


def _list(data: Mapping[str, Any], key: str) -> list[Any]:
    value = data.get(key, [])
    if not isinstance(value, list):
        raise ConfigError(key, "must be an array of tables ([[" + key + "]])")
    return value


def _check_keys(key: str, raw: Mapping[str, Any], allowed: set[str]) -> None:
    for name in raw:
        if name not in allowed:
            where = f"{key}.{name}" if key else name
            raise ConfigError(where, f"unknown setting (known: {', '.join(sorted(allowed))})")


def _build(cls: type[T], key: str, raw: object) -> T:
    if not isinstance(raw, dict):
        raise ConfigError(key, "must be a table")
    known = {f.name: f for f in fields(cls)}  # type: ignore[arg-type]
    _check_keys(key, raw, set(known) - {"retry"})
    kwargs: dict[str, Any] = {}
    for name, value in raw.items():
        kwargs[name] = _coerce(f"{key}.{name}", str(known[name].type), value)
    try:
        return cls(**kwargs)
    except TypeError as exc:
        missing = [n for n, f in known.items() if n not in kwargs and _required(f)]
        if missing:
            raise ConfigError(f"{key}.{missing[0]}", "is required") from None
        raise ConfigError(key, str(exc)) from None


def _required(f: Any) -> bool:
    from dataclasses import MISSING

    return bool(f.default is MISSING and f.default_factory is MISSING)


_DURATION_KEYS = {
    "min_backoff",
    "max_backoff",
    "max_retry_duration",
    "dispatch_deadline",
    "dedup_window",
    "enqueue_deadline",
    "shutdown_grace",
    "header_timeout",
    "body_timeout",
}


def _coerce(key: str, type_name: str, value: object) -> object:
    """Turn a TOML/env/flag value into the field's type; env values arrive as strings."""
    leaf = key.rsplit(".", 1)[-1]
    try:
        if leaf in _DURATION_KEYS:
            return parse_duration(_number_or_text(value))
        if type_name.startswith("int"):
            return _int(value)
        if type_name.startswith("float"):
            return _float(value)
        if type_name.startswith("bool"):
            return _bool(value)
        if type_name.startswith("tuple"):
            return _text_tuple(key, value)
        if type_name.startswith("str") or type_name.startswith("Literal"):
            return _text(key, value)
    except ValueError as exc:
        raise ConfigError(key, str(exc)) from None
    return value


def _number_or_text(value: object) -> object:
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    return value


def _int(value: object) -> int:
    if isinstance(value, bool):
        raise ValueError("expected a whole number")
    if isinstance(value, int):
        return value
    if isinstance(value, str) and re.fullmatch(r"\s*-?\d+\s*", value):
        return int(value)
    raise ValueError(f"expected a whole number, not {value!r}")


def _float(value: object) -> float:
    if isinstance(value, bool):
        raise ValueError("expected a number")
    if isinstance(value, int | float):
        result = float(value)
    elif isinstance(value, str):
        try:
            result = float(value)
        except ValueError:
            raise ValueError(f"expected a number, not {value!r}") from None
    else:
        raise ValueError(f"expected a number, not {value!r}")
    if not math.isfinite(result):
        raise ValueError("expected a finite number")
    return result


def _bool(value: object) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in (
        "1",
        "true",
        "yes",
        "on",
        "0",
        "false",
        "no",
        "off",
    ):
        return value.lower() in ("1", "true", "yes", "on")
    raise ValueError(f"expected true or false, not {value!r}")


def _text_tuple(key: str, value: object) -> tuple[str, ...]:
    """A list of strings; from the environment, a comma-separated string."""
    if isinstance(value, str):
        return tuple(part.strip() for part in value.split(",") if part.strip())
    if isinstance(value, list | tuple):
        return tuple(_text(f"{key}[{i}]", item) for i, item in enumerate(value))
    raise ConfigError(key, "expected a list of strings")


def _text(key: str, value: object) -> str:
    if not isinstance(value, str):
        raise ConfigError(key, f"expected a string, not {value!r}")
    return value
