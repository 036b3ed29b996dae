"""Google-signed ID tokens (OIDC) for deliveries to private backends: a Cloud Run service
that requires authentication, or anything behind IAP, checks ``Authorization: Bearer``.

The token comes from google-auth, for the proxy's own identity: a service-account key
file named by ``GOOGLE_APPLICATION_CREDENTIALS`` (google-auth calls its ``token_uri``),
else the metadata server (GKE Workload Identity, Compute Engine, Cloud Run; google-auth
honours ``GCE_METADATA_HOST``). Tokens live an hour; one is cached per audience and
identity and refreshed ahead of its expiry, one refresh at a time, in a thread (google-
auth's transport blocks), so the ingest path never waits for one and an attempt only
when none is valid. A token is never logged, counted or put in an error text.

When the queue names a ``service_account_email`` other than the identity the proxy has,
the token is that account's, signed by IAM Credentials (``generateIdToken``) on the
proxy's own credentials: the proxy's identity needs the Service Account OpenID Connect
Identity Token Creator role (``roles/iam.serviceAccountOpenIdTokenCreator``, part of Token
Creator) on it, as Cloud Tasks needs Service Account User. ``iam_url`` is that API's
base URL (Google's by default; a local stand-in in tests).
"""

from __future__ import annotations

import asyncio
import calendar
import logging
import time
from collections.abc import Callable
from typing import Any

logger = logging.getLogger("ingest_proxy.auth")

IAM_CREDENTIALS_URL = "https://iamcredentials.googleapis.com"
CLOUD_PLATFORM = "https://www.googleapis.com/auth/cloud-platform"
OPENID_TOKEN_CREATOR = "roles/iam.serviceAccountOpenIdTokenCreator"  # noqa: S105 - a role name
REFRESH_AHEAD = 300.0  # seconds before expiry a token is replaced (ID tokens live 1 h)
RETRY_FAILED = 1.0  # seconds before a failed refresh is tried again (attempts back off)


class TokenError(Exception):
    """No ID token can be had right now; the message says why (never holds a token)."""


class IdTokens:
    """ID tokens for ``audience``, as ``service_account_email`` (``None``: whatever
    identity the proxy has). ``clock`` gives Unix seconds."""

    def __init__(
        self,
        audience: str,
        service_account_email: str | None = None,
        *,
        iam_url: str = IAM_CREDENTIALS_URL,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.audience = audience
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
        self._refreshing: asyncio.Task[None] | None = None
        self.fetches = 0  # tokens fetched (for tests and logs; never the token)

    async def token(self) -> str:
        """A valid ID token; raises :class:`TokenError` when none can be had."""
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
        raise TokenError(self._failure or "no ID token yet")

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
            # Ahead of expiry, but never sooner than three quarters of its life.
            self._refresh_at = max(expires_at - REFRESH_AHEAD, now + 0.75 * (expires_at - now))
            self.fetches += 1
        finally:
            self._refreshing = None

    def _fail(self, reason: str) -> None:
        self._failed_at = self._clock()
        self._failure = f"cannot get an ID token for {self.audience}: {reason}"
        logger.warning("%s", self._failure)

    def _fetch(self) -> tuple[str, float]:
        """A token and its expiry (Unix seconds), from google-auth (blocking)."""
        import google.auth.transport.requests

        request = google.auth.transport.requests.Request()
        wanted = self.service_account_email
        if wanted is not None and self._own_email is None:
            self._own_email = self._identity(request)
        if wanted is not None and wanted != self._own_email:
            return self._impersonated(request, wanted)
        from google.oauth2 import id_token

        # A typed alias of an untyped google-auth helper.
        find: Callable[[str, Any], Any] = id_token.fetch_id_token_credentials
        if self._credentials is None:
            self._credentials = find(self.audience, request)
        credentials = self._credentials
        credentials.refresh(request)
        token = str(credentials.token)
        claims = _claims(token)
        if wanted is not None and claims.get("email") != wanted:
            raise TokenError(f"the ID token names {claims.get('email')}, not {wanted}")
        expiry = credentials.expiry
        if expiry is not None:
            return token, float(calendar.timegm(expiry.timetuple()))
        return token, float(claims["exp"])

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

    def _impersonated(self, request: Any, account: str) -> tuple[str, float]:
        """``account``'s ID token from IAM Credentials, signed on the proxy's behalf."""
        from google.auth.transport import requests as transport

        authorized: Callable[..., Any] = transport.AuthorizedSession  # a typed alias
        session = authorized(self._source, auth_request=request)
        url = f"{self.iam_url}/v1/projects/-/serviceAccounts/{account}:generateIdToken"
        try:
            answer = session.post(
                url, json={"audience": self.audience, "includeEmail": True}, timeout=10
            )
        finally:
            session.close()
        if answer.status_code != 200:
            raise TokenError(
                f"IAM Credentials answered {answer.status_code} to signing as {account}: the"
                f" proxy's identity {self._own_email} needs {OPENID_TOKEN_CREATOR} on it"
            )
        token = str(answer.json()["token"])
        return token, float(_claims(token)["exp"])


def _claims(token: str) -> dict[str, Any]:
    """The claims of our own ID token (its signature is the backend's to check)."""
    from google.auth import jwt

    decode: Callable[..., dict[str, Any]] = jwt.decode  # a typed alias
    return decode(token, verify=False)


def _describe(exc: BaseException) -> str:
    """A short text of a google-auth error; its arguments may hold a server's answer, which
    holds no token when the call failed, but is cut short all the same."""
    return str(exc)[:300]
