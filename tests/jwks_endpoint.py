"""A JWKS endpoint under a test's control: a real HTTP server on 127.0.0.1 that counts requests
and can answer errors, garbage, redirects, oversized or slow responses; and an injected clock."""

from __future__ import annotations

import http.client
import json
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from agentsudo_tokens import (
    Issuer,
    KeyDirectory,
    KeySet,
    SigningKey,
)
from agentsudo_tokens.tokens.jwks import MAX_JWKS_BYTES

AGENTSUDO = Path(sys.executable).parent / "agentsudo"


class Endpoint:
    """A local HTTP server answering every GET with what the test set last."""

    def __init__(self) -> None:
        self.status = 200
        self.body = b"{}"
        self.content_type = "application/json"
        self.headers: dict[str, str] = {}
        self.send_length = True
        self.delay = 0.0
        self.requests = 0
        self.paths: list[str] = []
        self._count_lock = threading.Lock()
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                with endpoint._count_lock:
                    endpoint.requests += 1
                    endpoint.paths.append(self.path)
                status, body, delay = endpoint.status, endpoint.body, endpoint.delay
                if delay:
                    time.sleep(delay)
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", endpoint.content_type)
                    if endpoint.send_length:
                        self.send_header("Content-Length", str(len(body)))
                    for name, value in endpoint.headers.items():
                        self.send_header(name, value)
                    self.end_headers()
                    self.wfile.write(body)
                except OSError:  # the client gave up (a timeout test)
                    pass

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}/.well-known/jwks.json"
        self._thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )
        self._closed = False
        self._thread.start()

    def serve(self, keys: KeySet | dict[str, Any]) -> None:
        """Answer 200 with this JWK Set from now on."""
        data = keys.to_dict() if isinstance(keys, KeySet) else keys
        self.status, self.body, self.content_type = (
            200,
            json.dumps(data).encode(),
            "application/json",
        )
        self.headers, self.send_length, self.delay = {}, True, 0.0

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self.server.shutdown()
        self.server.server_close()


class FakeClock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def keyset_of(*keys: SigningKey) -> KeySet:
    return KeySet([key.public for key in keys])


def token_of(key: SigningKey) -> str:
    return Issuer(key).issue("SupportBot", ["read:orders"]).token


def huge_body() -> bytes:
    jwks = {"keys": [SigningKey.generate().public.to_jwk()], "pad": "x" * MAX_JWKS_BYTES}
    return json.dumps(jwks).encode()


def break_endpoint(endpoint: Endpoint, how: str) -> None:
    """Make the endpoint fail in one of many ways."""
    endpoint.serve({"keys": []})
    if how == "500":
        endpoint.status, endpoint.body = 500, b'{"error": "boom"}'
    elif how == "404":
        endpoint.status, endpoint.body = 404, b"not found"
    elif how == "204":
        endpoint.status, endpoint.body = 204, b""
    elif how == "redirect":  # to a good JWKS on the same server: still not followed
        endpoint.status, endpoint.body = 302, b""
        endpoint.headers = {"Location": endpoint.url}
    elif how == "garbage":
        endpoint.body = b"<html>oops</html>"
    elif how == "not-a-jwks":
        endpoint.body = b'{"keys": "none"}'
    elif how == "no-usable-key":
        endpoint.body = json.dumps({"keys": [{"kty": "RSA", "alg": "RS256", "kid": "r"}]}).encode()
    elif how == "private-key":
        jwk = {**SigningKey.generate().public.to_jwk(), "d": "AAAA"}
        endpoint.body = json.dumps({"keys": [jwk]}).encode()
    elif how == "text/html":
        key = SigningKey.generate()
        endpoint.serve(keyset_of(key))
        endpoint.content_type = "text/html"
    elif how == "oversize":
        endpoint.body = huge_body()
    elif how == "oversize-no-length":
        endpoint.body, endpoint.send_length = huge_body(), False
    elif how == "slow":
        endpoint.serve(keyset_of(SigningKey.generate()))
        endpoint.delay = 1.0
    else:  # pragma: no cover
        raise AssertionError(how)


FAILURES = [
    "500",
    "404",
    "204",
    "redirect",
    "garbage",
    "not-a-jwks",
    "no-usable-key",
    "private-key",
    "text/html",
    "oversize",
    "oversize-no-length",
    "slow",
]


def get_path(port: int, path: str, method: str = "GET") -> tuple[int, dict[str, str], bytes]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        connection.request(method, path)
        response = connection.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        connection.close()


def start_keys_serve(key_dir: KeyDirectory, log: Path) -> tuple[subprocess.Popen[bytes], int]:
    """``agentsudo keys serve --port 0``; the port is read from its stderr line."""
    stderr = log.open("wb")
    proc = subprocess.Popen(
        [str(AGENTSUDO), "keys", "serve", "--port", "0", "--keys-dir", str(key_dir.path)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=stderr,
    )
    stderr.close()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        for line in log.read_text().splitlines():
            prefix, _, rest = line.partition("serving http://127.0.0.1:")
            if not prefix and rest.endswith("/.well-known/jwks.json"):
                return proc, int(rest.partition("/")[0])
        if proc.poll() is not None:
            break
        time.sleep(0.02)
    proc.kill()
    proc.wait()
    raise AssertionError(f"agentsudo keys serve did not start: {log.read_text()!r}")


def stop_process(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:  # pragma: no cover
        proc.kill()
        proc.wait()
