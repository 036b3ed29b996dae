"""API keys for ingress routes and the bearer token of the admin listener.

Keys are stored only as ``sha256:<hex>`` hashes; a presented key is hashed and compared
with every stored hash in constant time, so neither the key nor which hash matched leaks
through timing.
"""

from __future__ import annotations

import hashlib
import hmac


def hash_key(key: str) -> str:
    """The config form of an API key: ``sha256:`` and the hex digest of its UTF-8 bytes."""
    return "sha256:" + hashlib.sha256(key.encode()).hexdigest()


def key_matches(presented: str, hashes: tuple[str, ...]) -> bool:
    """Whether ``presented`` hashes to one of ``hashes`` (all are compared)."""
    candidate = hash_key(presented).encode()
    found = False
    for stored in hashes:
        found |= hmac.compare_digest(candidate, stored.encode())
    return found


def bearer_token(authorization: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header, else ``None``."""
    if authorization is None:
        return None
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


def token_matches(presented: str | None, expected: str) -> bool:
    """Constant-time comparison of a presented admin token with the configured one."""
    if presented is None:
        return False
    return hmac.compare_digest(
        hashlib.sha256(presented.encode()).digest(), hashlib.sha256(expected.encode()).digest()
    )
