"""The request target of a request line, as the ingress's HTTP/1.1 protocol reads it.

Origin-form (``/path?query``) is the common case. Absolute-form (``http://host/path``) is
accepted as RFC 9112 §3.2.2 requires of a server; its authority then stands for Host (the
ingress routes by it and delivers it as ``X-Forwarded-Host``), never for where the task
goes. Userinfo, schemes other than http(s) and an empty host are refused (RFC 9110
§4.2.1, §4.2.4); so are the asterisk and authority forms, which name no resource here.
"""

from __future__ import annotations

from typing import Any

import httptools

from proxy.http.responses import Answer, refusal_parts

Target = tuple[bytes, bytes, bytes | None]  # raw path, query, authority (absolute-form)

BAD_TARGET = refusal_parts(
    400, "invalid_target", "The request target must be a path, or an http(s) URL with a host."
)
USERINFO = refusal_parts(
    400, "invalid_target", "The request target may not carry user information (user@host)."
)


class TargetError(Exception):
    """A request target that is refused; ``refusal`` is the answer (a 400)."""

    def __init__(self, refusal: Answer) -> None:
        super().__init__(refusal[0])
        self.refusal = refusal


def origin_form(url: bytes) -> Target:
    """``/path?query`` as (raw path, query, None); raises :class:`TargetError` for what
    the URL parser refuses."""
    try:
        # Any: the stubs say bytes, but an absent part is None (and compiled code checks).
        parsed: Any = httptools.parse_url(url)
    except httptools.HttpParserInvalidURLError:
        raise TargetError(BAD_TARGET) from None
    return parsed.path or b"/", parsed.query or b"", None


def absolute_form(url: bytes) -> Target:
    """``http(s)://authority/path?query`` as (raw path, query, authority), the path ``/``
    when empty; raises :class:`TargetError` for userinfo, another scheme, an empty host,
    and targets of any other form."""
    scheme, sep, rest = url.partition(b"://")
    if not sep or scheme.lower() not in (b"http", b"https"):
        raise TargetError(BAD_TARGET)
    end = len(rest)
    for delimiter in (b"/", b"?", b"#"):
        found = rest.find(delimiter)
        if 0 <= found < end:
            end = found
    authority = rest[:end]
    if b"@" in authority:
        raise TargetError(USERINFO)
    if not authority or authority.startswith(b":"):
        raise TargetError(BAD_TARGET)
    try:
        parsed: Any = httptools.parse_url(url)  # Any: as in origin_form
    except httptools.HttpParserInvalidURLError:
        raise TargetError(BAD_TARGET) from None
    return parsed.path or b"/", parsed.query or b"", authority
