"""Verifiable local tokens: the server signs each delivery's OIDC (or OAuth) token with an
RSA key of its own (RS256), as Google signs Cloud Tasks' tokens, and publishes the public
key on its REST port, so a backend verifies a local token with the same google-auth call
it uses in production, pointed at this issuer instead of Google's:

- ``/.well-known/openid-configuration`` (``issuer``, ``jwks_uri``),
- ``/oauth2/v3/certs`` (the JWK set), ``/oauth2/v1/certs`` (``{key id: PEM certificate}``,
  the format of Google's v1 certs, which google-auth reads without PyJWT).

The key is generated on first start and kept beside the database (``<db>.signing-key.pem``,
mode 0600), or given (``--signing-key``). The token's claims are Google's: ``iss``,
``aud`` (OIDC) or ``scope`` (OAuth), ``azp``, ``email``, ``email_verified``, ``sub``,
``iat``, ``exp``. The key signs nothing but these development tokens; it is not a Google
credential and no Google service accepts what it signs.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import json
import os
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID
from google.auth import crypt, jwt

TOKEN_LIFETIME = 3600  # seconds, as Google's ID tokens
CERT_LIFETIME = datetime.timedelta(days=3650)
_CLAIMS = ("aud", "azp", "email", "email_verified", "exp", "iat", "iss", "scope", "sub")


class LocalSigner:
    """The RSA key in ``key_path`` (made there, mode 0600, when the file does not exist);
    ``issuer`` goes in every token's ``iss``."""

    def __init__(self, key_path: Path, issuer: str) -> None:
        self.issuer = issuer
        pem = _load_or_create(key_path)
        key = serialization.load_pem_private_key(pem, password=None)
        if not isinstance(key, rsa.RSAPrivateKey):
            raise ValueError(f"{key_path} does not hold an RSA private key")
        public = key.public_key()
        der = public.public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        self.key_id = hashlib.sha256(der).hexdigest()[:32]
        from_string: Any = crypt.RSASigner.from_string  # untyped in google-auth
        self._signer = from_string(pem.decode(), self.key_id)
        numbers = public.public_numbers()
        self._jwk: dict[str, str] = {
            "kty": "RSA",
            "alg": "RS256",
            "use": "sig",
            "kid": self.key_id,
            "n": _b64(numbers.n.to_bytes((numbers.n.bit_length() + 7) // 8, "big")),
            "e": _b64(numbers.e.to_bytes((numbers.e.bit_length() + 7) // 8, "big")),
        }
        self._certificate = _certificate(key, self.key_id)

    def token(self, spec_json: str, now: float) -> str:
        """The signed token a task's token request (``tasks.token_request``'s JSON) asks for."""
        spec = json.loads(spec_json)
        claims: dict[str, Any] = {
            "iss": self.issuer,
            "azp": spec["email"],
            "sub": spec["email"],
            "email": spec["email"],
            "email_verified": True,
            "iat": int(now),
            "exp": int(now) + TOKEN_LIFETIME,
        }
        if spec["kind"] == "oidc":
            claims["aud"] = spec["audience"]
        else:
            claims["scope"] = spec["scope"]
        encode: Any = jwt.encode  # untyped in google-auth
        return str(encode(self._signer, claims).decode())

    def openid_configuration(self, base_url: str) -> dict[str, object]:
        """``/.well-known/openid-configuration`` for the REST port at ``base_url``."""
        return {
            "issuer": self.issuer,
            "jwks_uri": f"{base_url}/oauth2/v3/certs",
            "id_token_signing_alg_values_supported": ["RS256"],
            "subject_types_supported": ["public"],
            "response_types_supported": ["id_token"],
            "claims_supported": [*_CLAIMS],
        }

    def jwks(self) -> dict[str, list[dict[str, str]]]:
        """The JWK set (``/oauth2/v3/certs``)."""
        return {"keys": [self._jwk]}

    def certs(self) -> dict[str, str]:
        """``{key id: PEM certificate}`` (``/oauth2/v1/certs``)."""
        return {self.key_id: self._certificate}


def _load_or_create(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        pass
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "wb") as handle:
        handle.write(pem)
    return pem


def _certificate(key: rsa.RSAPrivateKey, key_id: str) -> str:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"ingest-proxy local {key_id}")])
    start = datetime.datetime(2020, 1, 1, tzinfo=datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(int(key_id[:16], 16))
        .not_valid_before(start)
        .not_valid_after(start + CERT_LIFETIME * 2)
        .sign(key, hashes.SHA256())
    )
    return certificate.public_bytes(serialization.Encoding.PEM).decode()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()
