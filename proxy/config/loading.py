"""Where settings come from, lowest to highest precedence: built-in defaults, the TOML
file (``--config``), environment variables (``INGEST_PROXY_*``), command-line flags; and
how a dict of them becomes a validated :class:`~proxy.config.settings.Settings` (values
coerced by the field's type; durations by :func:`~proxy.config.durations.parse_duration`).
Nothing here runs at import time.
"""

from __future__ import annotations

import math
import re
import tomllib
from collections.abc import Mapping
from dataclasses import fields, replace
from pathlib import Path
from typing import Any, TypeVar

from proxy.config.durations import parse_duration
from proxy.config.settings import (
    CloudTasksSettings,
    LimitsSettings,
    LocalSettings,
    QueueSettings,
    RetrySettings,
    RouteSettings,
    ServerSettings,
    Settings,
)
from proxy.errors import ConfigError

ENV_PREFIX = "INGEST_PROXY_"

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
    "spool": ("cloudtasks", "spool"),
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
    "spool_breaker_open",
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
