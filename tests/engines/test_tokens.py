"""ID tokens for private backends (proxy/engines/tokens.py), from the real google-auth
against a local stand-in of Google's token endpoint (tests/support/google_identity.py;
Google's own cannot run here): a service-account key file whose ``token_uri`` is local."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import google.auth.transport.requests
import pytest
from google.oauth2 import id_token

from proxy.engines import tokens as tokens_module
from proxy.engines.tokens import AccessTokens, IdTokens, TokenError
from tests.support.google_identity import EMAIL, SCOPE, IdentityServer, run_identity_server

AUDIENCE = "https://backend.example.run.app"


@pytest.fixture
def identity(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[IdentityServer]:
    with run_identity_server() as server:
        monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(server.key_file(tmp_path)))
        yield server


def _verify(server: IdentityServer, token: str) -> dict[str, object]:
    """What a backend does: google-auth checks the signature, ``aud`` and ``exp``."""
    claims: dict[str, object] = id_token.verify_token(
        token,
        google.auth.transport.requests.Request(),
        audience=AUDIENCE,
        certs_url=f"{server.url}/certs",
    )
    return claims


def test_a_key_file_token_verifies_and_is_fetched_once(identity: IdentityServer) -> None:
    """The token is google-auth's from the key file's token_uri: signed, for the audience,
    naming the identity; asked for again, it comes from the cache."""

    async def main() -> list[str]:
        tokens = IdTokens(AUDIENCE)
        return [await tokens.token(), await tokens.token()]

    first, second = asyncio.run(main())
    assert first == second
    claims = _verify(identity, first)
    assert (claims["aud"], claims["email"]) == (AUDIENCE, EMAIL)
    assert identity.fetches["token_uri"] == 1


def test_callers_at_once_share_one_fetch(identity: IdentityServer) -> None:
    """Twenty attempts that need a token at the same moment cause one fetch."""

    async def main() -> set[str]:
        tokens = IdTokens(AUDIENCE)
        return set(await asyncio.gather(*(tokens.token() for _ in range(20))))

    assert len(asyncio.run(main())) == 1
    assert identity.fetches["token_uri"] == 1


def test_a_short_lived_token_is_replaced_once_per_lifetime(identity: IdentityServer) -> None:
    """With 3 s tokens (``exp`` in whole seconds: 2 to 3 s left when fetched), calls every
    50 ms for 5 s each get a valid token, and the endpoint is asked about once per
    lifetime (a quarter of it ahead), not once per call."""
    identity.lifetime = 3.0

    async def main() -> list[str]:
        tokens = IdTokens(AUDIENCE)
        seen = []
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            token = await tokens.token()
            _verify(identity, token)  # valid when handed out
            seen.append(token)
            await asyncio.sleep(0.05)
        return seen

    seen = asyncio.run(main())
    assert len(seen) > 50
    assert 2 <= identity.fetches["token_uri"] <= 6
    assert len(set(seen)) == identity.fetches["token_uri"]


def test_an_endpoint_that_fails_gives_a_token_error_then_recovers(
    identity: IdentityServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No token while the endpoint answers 503: TokenError, whose text names the audience
    and holds no token; once it answers again, the next call gets one."""
    monkeypatch.setattr(tokens_module, "RETRY_FAILED", 0.0)
    identity.down = True

    async def main() -> tuple[str, str]:
        tokens = IdTokens(AUDIENCE)
        with pytest.raises(TokenError) as caught:
            await tokens.token()
        identity.down = False
        return str(caught.value), await tokens.token()

    reason, token = asyncio.run(main())
    assert AUDIENCE in reason
    _verify(identity, token)
    assert not any(minted in reason for minted in identity.minted)


OTHER = "invoker@test-project.iam.gserviceaccount.com"


def test_another_account_s_token_is_signed_by_iam_credentials(identity: IdentityServer) -> None:
    """The key file is proxy@..., the queue wants invoker@...: the token is invoker's,
    from generateIdToken called with the proxy's own access token."""
    identity.impersonable.add(OTHER)

    async def main() -> str:
        tokens = IdTokens(AUDIENCE, OTHER, iam_url=identity.url)
        first = await tokens.token()
        assert first == await tokens.token()
        return first

    claims = _verify(identity, asyncio.run(main()))
    assert claims["email"] == OTHER
    assert identity.fetches["iam"] == 1


def test_the_same_account_as_the_proxy_s_needs_no_iam(identity: IdentityServer) -> None:
    """Naming the proxy's own account takes its own token, without IAM Credentials."""

    async def main() -> str:
        return await IdTokens(AUDIENCE, EMAIL, iam_url=identity.url).token()

    assert _verify(identity, asyncio.run(main()))["email"] == EMAIL
    assert identity.fetches["iam"] == 0


def test_impersonation_without_the_role_says_which_role(identity: IdentityServer) -> None:
    """IAM Credentials answers 403: TokenError naming both accounts and the role."""

    async def main() -> None:
        await IdTokens(AUDIENCE, OTHER, iam_url=identity.url).token()

    with pytest.raises(TokenError) as caught:
        asyncio.run(main())
    text = str(caught.value)
    assert OTHER in text
    assert EMAIL in text
    assert "roles/iam.serviceAccountOpenIdTokenCreator" in text


def test_an_access_token_is_the_identity_s_own_for_the_scope(identity: IdentityServer) -> None:
    """auth = "oauth": google-auth's access token from the key file's token_uri (a scoped
    grant), cached like ID tokens."""

    async def main() -> list[str]:
        tokens = AccessTokens(SCOPE)
        return [await tokens.token(), await tokens.token()]

    first, second = asyncio.run(main())
    assert first == second
    assert first in identity.access_tokens
    assert identity.fetches["iam"] == 0


def test_another_account_s_access_token_comes_from_iam_credentials(
    identity: IdentityServer,
) -> None:
    """The access token of invoker@... is generateAccessToken's, called as the proxy."""
    identity.impersonable.add(OTHER)

    async def main() -> str:
        return await AccessTokens(SCOPE, OTHER, iam_url=identity.url).token()

    token = asyncio.run(main())
    assert identity.access_token_accounts[token] == OTHER
    assert identity.fetches["iam"] == 1


def test_an_outage_is_logged_once_per_ten_seconds_not_per_attempt(
    identity: IdentityServer, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Failures with the same reason (the key refused): one warning, then the next after
    LOG_EVERY seconds (an injected clock), however many attempts ask meanwhile."""
    monkeypatch.setattr(tokens_module, "RETRY_FAILED", 0.0)
    identity.refuse_grants = True
    now = [1000.0]

    async def main() -> None:
        tokens = IdTokens(AUDIENCE, clock=lambda: now[0])
        for step in (0.0, 1.0, 2.0, 9.0, 11.0):
            now[0] = 1000.0 + step
            with pytest.raises(TokenError):
                await tokens.token()

    with caplog.at_level("WARNING", logger="ingest_proxy.auth"):
        asyncio.run(main())
    warnings = [r for r in caplog.records if r.name == "ingest_proxy.auth"]
    assert len(warnings) == 2
