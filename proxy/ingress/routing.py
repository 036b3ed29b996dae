"""Which route, and so which queue, a request goes to: the configured routes by path prefix
(and Host, for routes that name one), then the catch-all to the default queue."""

from __future__ import annotations

from dataclasses import dataclass, field

from proxy.config.settings import QueueSettings, RouteSettings, Settings


@dataclass(frozen=True, slots=True)
class Route:
    settings: RouteSettings
    queue: QueueSettings
    prefix: str  # without a trailing slash; "" for the catch-all
    api_keys: tuple[str, ...]
    target_length: int = field(init=False)  # of the target URL the path is appended to

    def __post_init__(self) -> None:
        object.__setattr__(self, "target_length", len(self.queue.target.rstrip("/")))

    def matches(self, path: str, host: str) -> bool:
        """Whether a request for ``path`` with Host name ``host`` (lower case, no port;
        "" when no route names a host) takes this route."""
        if self.settings.host is not None and host != self.settings.host:
            return False
        prefix = self.prefix
        return not prefix or path == prefix or path.startswith(prefix + "/")


class Router:
    """The routes of ``settings`` in order, the catch-all last."""

    def __init__(self, settings: Settings) -> None:
        self.routes = [
            Route(
                route,
                settings.queue(route.queue),
                route.prefix.rstrip("/"),
                settings.route_api_keys(route),
            )
            for route in settings.effective_routes
        ]
        self._by_host = any(route.settings.host is not None for route in self.routes)

    def route(self, path: str, host: str | None) -> Route:
        """The first route that takes a request for ``path`` with this Host value."""
        name = host.lower().rsplit(":", 1)[0] if host and self._by_host else ""
        for route in self.routes:
            if route.matches(path, name):
                return route
        raise AssertionError("the catch-all route always matches")  # pragma: no cover
