"""Google's identity endpoints, run locally on 127.0.0.1: what cannot run here (Google's own
services) stands in this form, and the proxy talks to it with the real google-auth.

- a metadata server (as on GKE, Compute Engine, Cloud Run): ``/`` answers the detection
  ping with ``Metadata-Flavor: Google``; ``instance/service-accounts/default/identity``
  mints an ID token for ``?audience=``; ``.../default/email`` and
  ``.../default/?recursive=true`` describe the identity;
- a ``token_uri`` (``/token``) for a service-account key file: it takes the JWT-bearer
  grant google-auth sends, checks the assertion's signature with the key file's public
  key, and answers ``{"id_token": ...}`` for the assertion's ``target_audience``;
- access tokens for the proxy's own credentials (``.../default/token`` on the metadata
  server, a scoped grant at ``/token``), accepted by a stand-in of IAM Credentials'
  ``v1/projects/-/serviceAccounts/EMAIL:generateIdToken`` (and ``:generateAccessToken``),
  which mints the token of an account in ``impersonable`` and answers 403
  (PERMISSION_DENIED) for any other;
- ``/certs``: the signing key's certificate as Google publishes its own
  (``{key id: PEM certificate}``), so a backend verifies tokens with google-auth's
  ``id_token.verify_token(..., certs_url=...)``.

Tokens are RS256 JWTs signed by a key made for the test, with the claims Google puts in
(``iss``, ``aud``, ``azp``, ``email``, ``email_verified``, ``sub``, ``iat``, ``exp``);
``lifetime`` (seconds) sets ``exp``. ``down`` makes every endpoint answer 503;
``refuse_grants`` makes ``/token`` refuse every grant (as for a revoked key).
"""

from __future__ import annotations

import contextlib
import datetime
import json
import threading
import time
from collections import Counter
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from cryptography.hazmat.primitives.asymmetric import rsa
from google.auth import crypt, jwt

from tests.support.certs import private_pem, self_signed

ISSUER = "https://accounts.google.com"
EMAIL = "proxy@test-project.iam.gserviceaccount.com"
SCOPE = "https://www.googleapis.com/auth/cloud-platform"


class SigningKey:
    """An RSA key with a key id and a self-signed certificate of it."""

    def __init__(self, key_id: str) -> None:
        self.key_id = key_id
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.private_pem = private_pem(key).decode()
        self.certificate_pem = self_signed(key, key_id).decode()
        self.signer = crypt.RSASigner.from_string(self.private_pem, key_id)


class IdentityServer:
    """The endpoints above; ``fetches`` counts tokens minted per endpoint."""

    def __init__(self, *, email: str = EMAIL, lifetime: float = 3600.0) -> None:
        self.email = email
        self.lifetime = lifetime
        self.down = False
        self.refuse_grants = False  # /token answers invalid_grant (a revoked key)
        self.google_key = SigningKey("google-key-1")  # signs the ID tokens
        self.account_key = SigningKey("account-key-1")  # the key file's
        self.fetches: Counter[str] = Counter()
        self.minted: list[str] = []
        self.access_tokens: set[str] = set()
        self.access_token_accounts: dict[str, str] = {}  # impersonated ones: token -> account
        self.impersonable: set[str] = set()  # accounts the identity may sign as
        self.url = ""
        self._lock = threading.Lock()

    def mint(self, audience: str, email: str | None = None) -> str:
        """An ID token for ``audience`` as Google signs them, of ``email`` (default: the
        server's identity)."""
        now = int(time.time())
        claims = {
            "iss": ISSUER,
            "aud": audience,
            "azp": "1234567890",
            "sub": "1234567890",
            "email": email or self.email,
            "email_verified": True,
            "iat": now,
            "exp": int(now + self.lifetime),
        }
        token: str = jwt.encode(self.google_key.signer, claims).decode()
        with self._lock:
            self.minted.append(token)
        return token

    def access_token(self) -> str:
        """An OAuth access token of the identity (opaque, remembered)."""
        token = f"ya29.test-{len(self.access_tokens)}-{time.monotonic_ns()}"
        with self._lock:
            self.access_tokens.add(token)
        return token

    def key_file(self, directory: Path) -> Path:
        """A service-account key file whose ``token_uri`` is this server's."""
        path = directory / "key.json"
        path.write_text(
            json.dumps(
                {
                    "type": "service_account",
                    "project_id": "test-project",
                    "private_key_id": self.account_key.key_id,
                    "private_key": self.account_key.private_pem,
                    "client_email": self.email,
                    "client_id": "1234567890",
                    "token_uri": f"{self.url}/token",
                }
            )
        )
        return path

    def certs(self) -> dict[str, str]:
        """What ``/certs`` serves."""
        return {self.google_key.key_id: self.google_key.certificate_pem}

    @property
    def host(self) -> str:
        """``127.0.0.1:PORT``, for ``GCE_METADATA_HOST`` and ``GCE_METADATA_IP``."""
        return self.url.removeprefix("http://")


def _handler(server: IdentityServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:  # quiet
            pass

        def _answer(self, status: int, body: str, content_type: str = "text/plain") -> None:
            data = body.encode()
            self.send_response(status)
            self.send_header("Metadata-Flavor", "Google")
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            if server.down:
                return self._answer(503, "down")
            url = urlsplit(self.path)
            query = parse_qs(url.query)
            metadata = self.headers.get("Metadata-Flavor") == "Google"
            if url.path == "/certs":
                return self._answer(200, json.dumps(server.certs()), "application/json")
            if not metadata:
                return self._answer(403, "Missing Metadata-Flavor:Google header.")
            if url.path in ("/", ""):
                return self._answer(200, "computeMetadata/")
            account = "/computeMetadata/v1/instance/service-accounts/default/"
            if url.path == account + "email":
                return self._answer(200, server.email)
            if url.path == account and query.get("recursive") == ["true"]:
                info = {"aliases": ["default"], "email": server.email, "scopes": [SCOPE]}
                return self._answer(200, json.dumps(info), "application/json")
            if url.path == account + "token":
                answer = {"access_token": server.access_token(), "expires_in": 3600}
                body = json.dumps(answer | {"token_type": "Bearer"})
                return self._answer(200, body, "application/json")
            if url.path == "/computeMetadata/v1/project/project-id":
                return self._answer(200, "test-project")
            if url.path == account + "identity" and query.get("audience"):
                server.fetches["metadata"] += 1
                return self._answer(200, server.mint(query["audience"][0]))
            return self._answer(404, "not found")

        def do_POST(self) -> None:
            if server.down:
                return self._answer(503, "down")
            length = int(self.headers.get("Content-Length", "0"))
            data = self.rfile.read(length).decode()
            path = unquote(urlsplit(self.path).path)
            if path.endswith((":generateIdToken", ":generateAccessToken")):
                return self._generate(path, data)
            form = parse_qs(data)
            if server.refuse_grants:
                return self._answer(400, json.dumps({"error": "invalid_grant"}), "application/json")
            if path != "/token" or "assertion" not in form:
                return self._answer(400, json.dumps({"error": "invalid_request"}))
            certs = {server.account_key.key_id: server.account_key.certificate_pem}
            try:
                claims = jwt.decode(form["assertion"][0], certs=certs, verify=True, audience=None)
            except ValueError:
                return self._answer(401, json.dumps({"error": "invalid_grant"}))
            if "target_audience" not in claims:  # a scoped grant: an access token
                answer = {"access_token": server.access_token(), "expires_in": 3600}
                body = json.dumps(answer | {"token_type": "Bearer"})
                return self._answer(200, body, "application/json")
            server.fetches["token_uri"] += 1
            token = server.mint(claims["target_audience"])
            return self._answer(200, json.dumps({"id_token": token}), "application/json")

        def _generate(self, path: str, data: str) -> None:
            bearer = (self.headers.get("Authorization") or "").removeprefix("Bearer ")
            if bearer not in server.access_tokens:
                return self._answer(401, json.dumps({"error": {"status": "UNAUTHENTICATED"}}))
            account, _, method = path.rsplit("/", 1)[1].partition(":")
            if account not in server.impersonable:
                error = {"code": 403, "status": "PERMISSION_DENIED"}
                return self._answer(403, json.dumps({"error": error}), "application/json")
            server.fetches["iam"] += 1
            if method == "generateAccessToken":
                token = server.access_token()
                server.access_token_accounts[token] = account
                expires = datetime.datetime.now(datetime.UTC) + datetime.timedelta(hours=1)
                answer = {
                    "accessToken": token,
                    "expireTime": expires.isoformat().replace("+00:00", "Z"),
                }
                return self._answer(200, json.dumps(answer), "application/json")
            token = server.mint(json.loads(data)["audience"], account)
            return self._answer(200, json.dumps({"token": token}), "application/json")

    return Handler


@contextlib.contextmanager
def run_identity_server(server: IdentityServer | None = None) -> Iterator[IdentityServer]:
    """Serve ``server`` on a free port of 127.0.0.1 until the block ends."""
    server = server or IdentityServer()
    http = ThreadingHTTPServer(("127.0.0.1", 0), _handler(server))
    http.daemon_threads = True
    server.url = f"http://127.0.0.1:{http.server_address[1]}"
    thread = threading.Thread(target=http.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield server
    finally:
        http.shutdown()
        http.server_close()
        thread.join(timeout=10)
