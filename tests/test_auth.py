"""API-key hashing and constant-time checks (proxy/auth.py)."""

from __future__ import annotations

import subprocess
import sys

from proxy.auth import bearer_token, hash_key, key_matches, token_matches


def test_hash_key_is_sha256_hex() -> None:
    """The config form of a key is 'sha256:' and 64 hex digits, stable for a key."""
    hashed = hash_key("abc")
    assert hashed == "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"


def test_key_matches_any_stored_hash() -> None:
    """A key matches when its hash is among the stored ones, and only then."""
    stored = (hash_key("one"), hash_key("two"))
    assert key_matches("two", stored)
    assert not key_matches("three", stored)
    assert not key_matches("two", ())


def test_bearer_token_parsing() -> None:
    """Only 'Bearer <token>' (any case) yields a token."""
    assert bearer_token("Bearer abc") == "abc"
    assert bearer_token("bearer  abc ") == "abc"
    assert bearer_token("Basic abc") is None
    assert bearer_token("Bearer ") is None
    assert bearer_token(None) is None


def test_token_matches() -> None:
    """The admin token comparison accepts the exact token only."""
    assert token_matches("s" * 20, "s" * 20)
    assert not token_matches("s" * 19, "s" * 20)
    assert not token_matches(None, "s" * 20)


def test_hash_key_command_reads_stdin() -> None:
    """`ingest-proxy hash-key` prints the hash of the key given on standard input."""
    done = subprocess.run(
        [sys.executable, "-m", "proxy", "hash-key"],
        input="abc\n",
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert done.stdout.strip() == hash_key("abc")
