"""Google-signed tokens for deliveries, as Cloud Tasks attaches them: an ID token (OIDC)
for a private backend (a Cloud Run service that requires authentication, or anything
behind IAP, checks ``Authorization: Bearer``), or an OAuth access token for a Google API
target (``*.googleapis.com``), with a scope.

The token comes from google-auth, for the proxy's own identity: a service-account key
file named by ``GOOGLE_APPLICATION_CREDENTIALS`` (google-auth calls its ``token_uri``),
else the metadata server (GKE Workload Identity, Compute Engine, Cloud Run; google-auth
honours ``GCE_METADATA_HOST``). Tokens live an hour; one is cached per audience (or
scope) and identity and refreshed ahead of its expiry, one refresh at a time, in a thread (google-
auth's transport blocks), so the ingest path never waits for one and an attempt only
when none is valid. A token is never logged, counted or put in an error text.

When the queue names a ``service_account_email`` other than the identity the proxy has,
the token is that account's, made by IAM Credentials (``generateIdToken``,
``generateAccessToken``) on the proxy's own credentials: the proxy's identity needs
``roles/iam.serviceAccountOpenIdTokenCreator`` (ID tokens) or
``roles/iam.serviceAccountTokenCreator`` (access tokens) on it, as Cloud Tasks needs
Service Account User. ``iam_url`` is that API's base URL (Google's by default; a local
stand-in in tests).
"""

from __future__ import annotations

import asyncio
import calendar
import datetime
import logging
import time
from collections.abc import Callable
from typing import Any

logger = logging.getLogger("ingest_proxy.auth")

IAM_CREDENTIALS_URL = "https://iamcredentials.googleapis.com"
CLOUD_PLATFORM = "https://www.googleapis.com/auth/cloud-platform"
OPENID_TOKEN_CREATOR = "roles/iam.serviceAccountOpenIdTokenCreator"  # noqa: S105 - a role name
TOKEN_CREATOR = "roles/iam.serviceAccountTokenCreator"  # noqa: S105 - a role name
REFRESH_AHEAD = 300.0  # seconds before expiry a token is replaced (ID tokens live 1 h)
RETRY_FAILED = 1.0  # seconds before a failed refresh is tried again (attempts back off)
LOG_EVERY = 10.0  # seconds between two warnings of the same failure (an outage must not flood)


class TokenError(Exception):
    """No token can be had right now; the message says why (never holds a token)."""


class Tokens:
    """The cache every kind of token shares: one token for ``subject`` (an audience or a
    scope) as ``service_account_email`` (``None``: whatever identity the proxy has),
    replaced ahead of expiry, one fetch at a time. ``clock`` gives Unix seconds."""

    kind = "token"  # for messages
    role = TOKEN_CREATOR  # the IAM role that lets the proxy make another account's token

    def __init__(
        self,
        subject: str,
        service_account_email: str | None = None,
        *,
        iam_url: str = IAM_CREDENTIALS_URL,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.subject = subject
        self.service_account_email = service_account_email
        self.iam_url = iam_url.rstrip("/")
        self._clock = clock
        self._credentials: Any = None  # google-auth's, made in the thread on first use
        self._source: Any = None  # the proxy's own (access-token) credentials
        self._own_email: str | None = None
        self._token = ""
        self._expires_at = 0.0  # Unix seconds
        self._refresh_at = 0.0
        self._failed_at = float("-inf")
        self._failure = ""
        self._logged_at = float("-inf")
        self._refreshing: asyncio.Task[None] | None = None
        self._recent: list[str] = []  # the tokens handed out lately, to redact
        self.fetches = 0  # tokens fetched (for tests and logs; never the token)

    async def token(self) -> str:
        """A valid token; raises :class:`TokenError` when none can be had."""
        now = self._clock()
        if self._token and now < self._refresh_at:
            return self._token
        if self._refreshing is None and now - self._failed_at >= RETRY_FAILED:
            self._refreshing = asyncio.get_running_loop().create_task(self._refresh())
        if self._token and now < self._expires_at:
            return self._token  # still valid: the refresh goes on without this attempt
        refreshing = self._refreshing
        if refreshing is not None:
            await asyncio.shield(refreshing)  # every caller waits for the one refresh
        if self._token and self._clock() < self._expires_at:
            return self._token
        raise TokenError(self._failure or f"no {self.kind} yet")

    def redact(self, text: str) -> str:
        """``text`` (a backend's answer, kept as a snippet) without any token of ours in
        it: a backend that echoes its request headers must not put one in the dead-letter
        table or the admin API."""
        for token in self._recent:
            if token in text:
                text = text.replace(token, "[token]")
        return text

    async def _refresh(self) -> None:
        try:
            token, expires_at = await asyncio.to_thread(self._fetch)
        except TokenError as exc:
            self._fail(str(exc))
        except Exception as exc:  # google-auth's errors: transport, refresh, config
            self._fail(f"{type(exc).__name__}: {_describe(exc)}")
        else:
            now = self._clock()
            self._token, self._expires_at = token, expires_at
            self._recent = [token, *self._recent[:1]]
            # Ahead of expiry, but never sooner than three quarters of its life.
            self._refresh_at = max(expires_at - REFRESH_AHEAD, now + 0.75 * (expires_at - now))
            self.fetches += 1
        finally:
            self._refreshing = None

    def _fail(self, reason: str) -> None:
        now = self._clock()
        failure = f"cannot get an {self.kind} for {self.subject}: {reason}"
        if failure != self._failure or now - self._logged_at >= LOG_EVERY:
            logger.warning("%s", failure)
            self._logged_at = now
        self._failed_at, self._failure = now, failure

    def _fetch(self) -> tuple[str, float]:
        """A token and its expiry (Unix seconds), from google-auth (blocking)."""
        import google.auth.transport.requests

        request = google.auth.transport.requests.Request()
        wanted = self.service_account_email
        if wanted is not None and self._own_email is None:
            self._own_email = self._identity(request)
        if wanted is not None and wanted != self._own_email:
            return self._impersonated(request, wanted)
        return self._own(request)

    def _own(self, request: Any) -> tuple[str, float]:
        """A token of the proxy's own identity (blocking)."""
        raise NotImplementedError

    def _impersonated(self, request: Any, account: str) -> tuple[str, float]:
        """A token of ``account``, from IAM Credentials on the proxy's behalf (blocking)."""
        raise NotImplementedError

    def _identity(self, request: Any) -> str:
        """The proxy's own service account (Application Default Credentials)."""
        import google.auth

        default: Callable[..., tuple[Any, str | None]] = google.auth.default
        self._source, _ = default(scopes=[CLOUD_PLATFORM], request=request)
        self._source.refresh(request)
        email = getattr(self._source, "service_account_email", None)
        if not email or email == "default":
            raise TokenError("the proxy's credentials name no service account")
        return str(email)

    def _iam(self, request: Any, account: str, method: str, body: dict[str, Any]) -> Any:
        """The JSON answer of IAM Credentials' ``method`` for ``account``, called with the
        proxy's own credentials; :class:`TokenError` unless it is a 200."""
        from google.auth.transport import requests as transport

        authorized: Callable[..., Any] = transport.AuthorizedSession  # a typed alias
        session = authorized(self._source, auth_request=request)
        url = f"{self.iam_url}/v1/projects/-/serviceAccounts/{account}:{method}"
        try:
            answer = session.post(url, json=body, timeout=10)
        finally:
            session.close()
        if answer.status_code != 200:
            raise TokenError(
                f"IAM Credentials answered {answer.status_code} to {method} for {account}: the"
                f" proxy's identity {self._own_email} needs {self.role} on it"
            )
        return answer.json()


class IdTokens(Tokens):
    """ID tokens whose ``aud`` is ``audience``."""

    kind = "ID token"
    role = OPENID_TOKEN_CREATOR

    @property
    def audience(self) -> str:
        """The tokens' ``aud``."""
        return self.subject

    def _own(self, request: Any) -> tuple[str, float]:
        from google.oauth2 import id_token

        # A typed alias of an untyped google-auth helper.
        find: Callable[[str, Any], Any] = id_token.fetch_id_token_credentials
        if self._credentials is None:
            self._credentials = find(self.audience, request)
        credentials = self._credentials
        credentials.refresh(request)
        token = str(credentials.token)
        claims = _claims(token)
        wanted = self.service_account_email
        if wanted is not None and claims.get("email") != wanted:
            raise TokenError(f"the ID token names {claims.get('email')}, not {wanted}")
        expiry = credentials.expiry
        if expiry is not None:
            return token, float(calendar.timegm(expiry.timetuple()))
        return token, float(claims["exp"])

    def _impersonated(self, request: Any, account: str) -> tuple[str, float]:
        answer = self._iam(
            request, account, "generateIdToken", {"audience": self.audience, "includeEmail": True}
        )
        token = str(answer["token"])
        return token, float(_claims(token)["exp"])


class AccessTokens(Tokens):
    """OAuth access tokens for ``scope`` (Google API targets)."""

    kind = "access token"

    def _own(self, request: Any) -> tuple[str, float]:
        import google.auth

        if self._credentials is None:
            default: Callable[..., tuple[Any, str | None]] = google.auth.default
            self._credentials, _ = default(scopes=[self.subject], request=request)
        credentials = self._credentials
        credentials.refresh(request)
        expiry = credentials.expiry
        if expiry is None:
            raise TokenError("the access token has no expiry")
        return str(credentials.token), float(calendar.timegm(expiry.timetuple()))

    def _impersonated(self, request: Any, account: str) -> tuple[str, float]:
        body = {"scope": [self.subject], "lifetime": "3600s"}
        answer = self._iam(request, account, "generateAccessToken", body)
        expires = datetime.datetime.fromisoformat(str(answer["expireTime"]).replace("Z", "+00:00"))
        return str(answer["accessToken"]), expires.timestamp()


def _claims(token: str) -> dict[str, Any]:
    """The claims of our own ID token (its signature is the backend's to check)."""
    from google.auth import jwt

    decode: Callable[..., dict[str, Any]] = jwt.decode  # a typed alias
    return decode(token, verify=False)


def _describe(exc: BaseException) -> str:
    """A short text of a google-auth error; its arguments may hold a server's answer, which
    holds no token when the call failed, but is cut short all the same."""
    return str(exc)[:300]
