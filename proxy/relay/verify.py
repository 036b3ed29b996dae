"""The relay's first step: the OIDC token Cloud Tasks sent must be Google's (or, in
tests, the local Cloud Tasks server's), for the relay, and of the one service account the
relay trusts. Nothing else of a request is looked at before it passes.

Verification is google-auth's ``id_token.verify_token`` (signature against the issuer's
certificates, ``exp`` and ``iat``, ``aud``), then the issuer, the email and
``email_verified`` here. The certificates are fetched through :class:`CachingRequest`,
which keeps a GET answer for its ``Cache-Control: max-age`` (Google's certs say hours), so
a verification costs a signature check, not a fetch. google-auth blocks, so it runs in a
thread. A token that passed is taken as passed for :data:`VERIFIED_FOR` seconds at most
(and never past its ``exp``): Cloud Tasks sends the same token with many deliveries.
"""

from __future__ import annotations

import asyncio
import re
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

import google.auth.transport.requests
from google.auth import exceptions as auth_exceptions
from google.auth import transport
from google.oauth2 import id_token

from proxy.errors import EngineUnavailableError, ForbiddenError, UnauthorizedError

DEFAULT_MAX_AGE = 60.0  # seconds a certs answer without Cache-Control is kept
MAX_AGE_CAP = 86400.0
FETCH_TIMEOUT = 10.0  # seconds
REFETCH_AFTER = 30.0  # seconds: an unknown key id fetches the certs again, at most this often
# A token that verified is taken as verified again for this long (never past its exp):
# Cloud Tasks sends one token many times, and each check costs an RSA verification and a
# thread hop (bench/README.md, the relay hop). Only good tokens are kept, at most
# MAX_VERIFIED of them.
VERIFIED_FOR = 300.0
MAX_VERIFIED = 1024
_MAX_AGE = re.compile(r"(?:^|[,\s])max-age\s*=\s*(\d+)", re.I)
_NO_CACHE = re.compile(r"(?:^|[,\s])(no-store|no-cache)\b", re.I)


def max_age(cache_control: str | None) -> float:
    """Seconds an answer with this ``Cache-Control`` may be reused: its ``max-age``
    (at most a day), 0 for ``no-store``/``no-cache``, else :data:`DEFAULT_MAX_AGE`."""
    if not cache_control:
        return DEFAULT_MAX_AGE
    if _NO_CACHE.search(cache_control):
        return 0.0
    found = _MAX_AGE.search(cache_control)
    return min(float(found[1]), MAX_AGE_CAP) if found else DEFAULT_MAX_AGE


class CachingRequest(transport.Request):
    """google-auth's requests transport, with successful GET answers kept per URL for
    their ``max-age``. Thread-safe; ``clock`` gives monotonic seconds."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._inner = google.auth.transport.requests.Request()
        self._clock = clock
        self._lock = threading.Lock()
        # url -> (fetched at, expires at, response)
        self._cache: dict[str, tuple[float, float, Any]] = {}
        self.fetches = 0  # answers fetched (for tests)

    def __call__(
        self,
        url: str,
        method: str = "GET",
        body: bytes | None = None,
        headers: Mapping[str, str] | None = None,
        timeout: float | None = None,
        **kwargs: Any,
    ) -> Any:
        if method != "GET":
            return self._inner(url, method, body, headers, timeout or FETCH_TIMEOUT, **kwargs)
        with self._lock:
            cached = self._cache.get(url)
        if cached is not None and cached[1] > self._clock():
            return cached[2]
        response = self._inner(url, method, body, headers, timeout or FETCH_TIMEOUT, **kwargs)
        self.fetches += 1
        if response.status == 200:
            keep = max_age(response.headers.get("cache-control"))
            with self._lock:
                now = self._clock()
                if keep > 0:
                    self._cache[url] = (now, now + keep, response)
                else:
                    self._cache.pop(url, None)
        return response

    def forget(self, url: str, *, older_than: float = REFETCH_AFTER) -> bool:
        """Drop the answer kept for ``url`` if it was fetched more than ``older_than``
        seconds ago (the issuer may have a new key; tokens naming unknown keys must not
        make a fetch each); True when it was dropped."""
        with self._lock:
            cached = self._cache.get(url)
            if cached is None or self._clock() - cached[0] < older_than:
                return False
            del self._cache[url]
            return True


class TokenVerifier:
    """Checks ``Authorization: Bearer`` tokens of Cloud Tasks deliveries to the relay.

    ``issuer``, ``audience`` and ``email`` are what the token must name; ``certs_url``
    where the issuer publishes its keys (PEM map or JWK set)."""

    def __init__(
        self,
        *,
        issuer: str,
        audience: str,
        email: str,
        certs_url: str,
        request: CachingRequest | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.issuer = issuer
        self.audience = audience
        self.email = email
        self.certs_url = certs_url
        self.request = request or CachingRequest()
        self._clock = clock  # Unix seconds
        self._verified: dict[str, tuple[float, Mapping[str, Any]]] = {}  # token -> (until, claims)
        self.checks = 0  # tokens checked by google-auth (for tests)

    async def verify(self, authorization: str | None) -> Mapping[str, Any]:
        """The token's claims; raises :class:`UnauthorizedError` (no token, a bad or
        expired one, another issuer or audience), :class:`ForbiddenError` (a good token
        of another account) or :class:`EngineUnavailableError` (the certificates cannot
        be fetched: Cloud Tasks retries). Error texts never hold the token."""
        token = _bearer(authorization)
        if token is None:
            raise UnauthorizedError(
                "The relay takes only Cloud Tasks deliveries with an OIDC token.",
                code="missing_token",
            )
        now = self._clock()
        verified = self._verified.get(token)
        if verified is not None and verified[0] > now:
            return verified[1]
        claims = await asyncio.to_thread(self._verify, token)
        if len(self._verified) >= MAX_VERIFIED:
            self._verified = {t: v for t, v in self._verified.items() if v[0] > now}
            if len(self._verified) >= MAX_VERIFIED:
                self._verified.clear()
        expires = claims.get("exp")
        until = now + VERIFIED_FOR
        if isinstance(expires, int | float):
            until = min(until, float(expires))
        self._verified[token] = (until, claims)
        return claims

    def _verify(self, token: str) -> Mapping[str, Any]:
        self.checks += 1
        claims = self._decode(token)
        if claims.get("iss") != self.issuer:
            raise UnauthorizedError(
                "The token was not issued by the expected issuer.", code="invalid_token"
            )
        if claims.get("email") != self.email or claims.get("email_verified") is not True:
            raise ForbiddenError(
                "The token is not of the service account the relay trusts.",
                code="wrong_identity",
            )
        return claims

    def _decode(self, token: str) -> Mapping[str, Any]:
        for attempt in (1, 2):
            try:
                claims: Mapping[str, Any] = id_token.verify_token(
                    token, self.request, audience=self.audience, certs_url=self.certs_url
                )
                return claims
            except auth_exceptions.TransportError:
                raise EngineUnavailableError(
                    "The relay cannot fetch the token issuer's certificates.", retry_after=5
                ) from None
            except Exception as exc:
                unknown_key = "key" in str(exc).lower()
                if attempt == 1 and unknown_key and self.request.forget(self.certs_url):
                    continue  # a key id the kept certificates lack: maybe a new key
                raise UnauthorizedError(_reason(exc), code="invalid_token") from None
        raise AssertionError("unreachable")  # pragma: no cover


def _bearer(authorization: str | None) -> str | None:
    if not authorization:
        return None
    scheme, _, token = authorization.strip().partition(" ")
    token = token.strip()
    return token if scheme.lower() == "bearer" and token else None


def _reason(exc: Exception) -> str:
    """Why a token failed, without the token (google-auth's messages may quote claims)."""
    text = str(exc).lower()
    if "expired" in text or "too early" in text or "exp" in text.split():
        return "The token has expired or is not yet valid."
    if "audience" in text or "aud" in text.split():
        return "The token is for another audience."
    return "The token does not verify."
