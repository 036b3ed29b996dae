"""The relay's token check (proxy/relay/verify.py) against the keys of our local Cloud
Tasks server (its REST port publishes them as Google publishes its own): the certs are
fetched once per max-age, with an injected clock; refusals say why without the token."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from proxy.cloudtasks_server.signing import LocalSigner
from proxy.errors import ForbiddenError, UnauthorizedError
from proxy.relay.verify import (
    DEFAULT_MAX_AGE,
    VERIFIED_FOR,
    CachingRequest,
    TokenVerifier,
    max_age,
)
from tests.support.cloudtasks_server import ServerThread, run_server

EMAIL = "invoker@p.iam.gserviceaccount.com"
AUDIENCE = "https://proxy.example/_ingest-proxy/relay"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerThread]:
    with run_server(tmp_path_factory.mktemp("verify") / "t.db", rest_port=0) as running:
        yield running


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _token(server: ServerThread, email: str = EMAIL, age: float = 0.0) -> str:
    """A token signed by the server's key, issued ``age`` seconds ago (tokens of other
    ages differ, so none is taken from the verifier's cache of good tokens)."""
    assert server.server is not None
    signer = server.server.runtime.signer
    assert signer is not None
    spec = {"kind": "oidc", "email": email, "audience": AUDIENCE}
    return signer.token(json.dumps(spec), time.time() - age)


def _verifier(server: ServerThread, clock: Clock) -> TokenVerifier:
    return TokenVerifier(
        issuer=f"http://{server.rest_host}",
        audience=AUDIENCE,
        email=EMAIL,
        certs_url=f"http://{server.rest_host}/oauth2/v1/certs",
        request=CachingRequest(clock),
    )


@pytest.mark.parametrize(
    ("header", "seconds"),
    [
        (None, DEFAULT_MAX_AGE),
        ("public, max-age=19845, must-revalidate, no-transform", 19845.0),
        ("max-age=999999", 86400.0),
        ("no-store", 0.0),
        ("private, no-cache", 0.0),
        ("public", DEFAULT_MAX_AGE),
    ],
)
def test_max_age_reads_cache_control(header: str | None, seconds: float) -> None:
    assert max_age(header) == seconds


def test_certs_are_fetched_once_per_max_age(server: ServerThread) -> None:
    clock = Clock()
    verifier = _verifier(server, clock)

    async def verify_twice() -> None:
        for age in (1, 2):
            claims = await verifier.verify("Bearer " + _token(server, age=age))
            assert claims["email"] == EMAIL

    asyncio.run(verify_twice())
    assert verifier.checks == 2
    assert verifier.request.fetches == 1
    clock.now += DEFAULT_MAX_AGE + 1  # the cloudtasks-server's certs carry no max-age
    asyncio.run(verifier.verify("Bearer " + _token(server, age=3)))
    assert verifier.request.fetches == 2


def test_a_token_of_an_unknown_key_refetches_at_most_every_30_seconds(
    server: ServerThread, tmp_path: Path
) -> None:
    """A token naming a key the kept certs lack makes one fetch (a rotated key), and not
    another within 30 s however many such tokens come."""
    clock = Clock()
    verifier = _verifier(server, clock)
    stranger = LocalSigner(tmp_path / "other.pem", f"http://{server.rest_host}")
    forged = stranger.token(json.dumps({"kind": "oidc", "email": EMAIL, "audience": AUDIENCE}),
                            time.time())  # fmt: skip
    asyncio.run(verifier.verify("Bearer " + _token(server)))
    clock.now += 31
    for _ in range(3):
        with pytest.raises(UnauthorizedError) as info:
            asyncio.run(verifier.verify("Bearer " + forged))
        assert forged not in info.value.detail
    assert verifier.request.fetches == 2


def test_refusals() -> None:
    verifier = TokenVerifier(issuer="i", audience="a", email=EMAIL, certs_url="http://127.0.0.1:9")
    for header in (None, "", "Basic abc", "Bearer "):
        with pytest.raises(UnauthorizedError) as info:
            asyncio.run(verifier.verify(header))
        assert info.value.code == "missing_token"


def test_another_account_is_forbidden(server: ServerThread) -> None:
    verifier = _verifier(server, Clock())
    with pytest.raises(ForbiddenError):
        asyncio.run(verifier.verify("Bearer " + _token(server, email="other@p.example")))


def test_a_good_token_is_taken_as_checked_for_five_minutes_at_most(
    server: ServerThread,
) -> None:
    """The same token again is not checked again within VERIFIED_FOR (nor past its exp);
    after that it is; a bad token is checked every time."""
    clock = Clock()
    clock.now = time.time()
    verifier = TokenVerifier(
        issuer=f"http://{server.rest_host}",
        audience=AUDIENCE,
        email=EMAIL,
        certs_url=f"http://{server.rest_host}/oauth2/v1/certs",
        clock=clock,
    )
    good = "Bearer " + _token(server)
    for _ in range(3):
        asyncio.run(verifier.verify(good))
    assert verifier.checks == 1
    clock.now += VERIFIED_FOR + 1
    asyncio.run(verifier.verify(good))
    assert verifier.checks == 2
    # Checked first near its exp, it is kept until exp only, not VERIFIED_FOR beyond:
    expires = float(asyncio.run(verifier.verify(good))["exp"])
    late = TokenVerifier(
        issuer=verifier.issuer,
        audience=AUDIENCE,
        email=EMAIL,
        certs_url=verifier.certs_url,
        clock=clock,
    )
    clock.now = expires - 10
    asyncio.run(late.verify(good))
    clock.now = expires + 1
    asyncio.run(late.verify(good))  # google-auth's own clock says it is still good
    assert late.checks == 2
    wrong = "Bearer " + _token(server, email="other@p.example")
    for _ in range(2):
        with pytest.raises(ForbiddenError):
            asyncio.run(verifier.verify(wrong))
    assert verifier.checks == 4
