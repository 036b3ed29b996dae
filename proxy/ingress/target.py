"""The delivery URL's path and query, from the request's: percent-encoded where RFC 3986
asks (so every engine and HTTP client sends the same URL), with the route's prefix
stripped when it says so; ``.`` and ``..`` segments refused (in any spelling), and the
whole URL held to Cloud Tasks' length limit."""

from __future__ import annotations

import re
from urllib.parse import quote

from proxy.errors import BadRequestError, UriTooLongError
from proxy.ingress.head import Scope
from proxy.ingress.routing import Route
from proxy.limits import MAX_URL_LENGTH

_PATH_SAFE = "/%:@!$&'()*+,;=-._~"
# Characters RFC 3986 does not allow as they are (and a "%" that starts no escape): they
# are percent-encoded, so the delivery URL is the same for every engine and HTTP client.
_UNSAFE_PATH = re.compile(r"%(?![0-9A-Fa-f]{2})|[^A-Za-z0-9/%:@!$&'()*+,;=._~-]")
_UNSAFE_QUERY = re.compile(r"%(?![0-9A-Fa-f]{2})|[^A-Za-z0-9/?%:@!$&'()*+,;=._~-]")


def delivery_path(scope: Scope, route: Route) -> str:
    """The path to append to the route's target."""
    raw = scope.get("raw_path")
    path = raw.decode("latin-1") if raw else quote(scope["path"], safe=_PATH_SAFE)
    if not path.startswith("/"):
        raise BadRequestError(
            "The request target must be a path starting with '/'.", code="invalid_target"
        )
    if _UNSAFE_PATH.search(path) is not None:
        path = _UNSAFE_PATH.sub(_percent_encode, path)
    if ("." in path or "%2" in path) and _has_dot_segment(path):
        raise BadRequestError("The path may not contain '.' or '..' segments.", code="invalid_path")
    if route.settings.strip_prefix and route.prefix:
        path = path[len(route.prefix) :] or "/"
        if not path.startswith("/"):
            path = "/" + path
    return path


def delivery_query(scope: Scope) -> str:
    """The query string to deliver ("" when there is none)."""
    raw_query = scope.get("query_string")
    if not raw_query:
        return ""
    query: str = raw_query.decode("latin-1")
    if _UNSAFE_QUERY.search(query) is not None:
        query = _UNSAFE_QUERY.sub(_percent_encode, query)
    return query


def check_url_length(route: Route, path: str, query: str) -> None:
    """Refuse (414) a delivery URL longer than Cloud Tasks takes: target + path
    [+ "?" + query]."""
    if route.target_length + len(path) + (len(query) + 1 if query else 0) > MAX_URL_LENGTH:
        raise UriTooLongError(f"The delivery URL would be longer than {MAX_URL_LENGTH} characters.")


def _has_dot_segment(path: str) -> bool:
    """Whether a segment is ``.`` or ``..`` (also percent-encoded, between backslashes or
    encoded slashes, which some servers treat as ``/``, or followed by ``;`` parameters,
    which Java servers strip: ``/..;/``): such a path could climb out of the target's base
    path once a client or server normalises it."""
    text = path.lower().replace("%2e", ".").replace("%2f", "/").replace("%5c", "/")
    text = text.replace("%3b", ";")
    return any(segment.split(";", 1)[0] in (".", "..") for segment in text.split("/"))


def _percent_encode(match: re.Match[str]) -> str:
    """``%XX`` for a character a URL may not carry as it is (the request's own byte)."""
    return "".join(f"%{byte:02X}" for byte in match.group().encode("latin-1"))
