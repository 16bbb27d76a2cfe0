"""Public keys by URL past their time: ``max_stale``, a whole-request deadline, FastAPI's 503,
https; each against a real server on 127.0.0.1."""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from jwks_endpoint import (
    Endpoint,
    FakeClock,
    break_endpoint,
    keyset_of,
    start_keys_serve,
    stop_process,
    token_of,
)

from agentsudo_tokens import (
    ConfigError,
    InvalidTokenError,
    Issuer,
    KeyDirectory,
    KeysUnavailableError,
    SigningKey,
    UnknownKeyError,
    Verifier,
)
from agentsudo_tokens.tokens.jwks import load_key_source
from agentsudo_tokens.tokens.jwks_remote import JwksUrl


def test_the_cache_lifetime_setting_reaches_the_default_verifier(endpoint: Endpoint) -> None:
    from agentsudo_tokens import Settings, Verifier

    endpoint.serve(keyset_of(SigningKey.generate()))
    verifier = Verifier.from_settings(Settings(jwks=endpoint.url, jwks_cache_ttl=7), store=None)
    assert isinstance(verifier.keys, JwksUrl)
    assert verifier.keys.max_age == 7


# --- max_stale: a failing endpoint is not trusted forever ------------------------------


@pytest.mark.parametrize("how", ["500", "garbage", "no-usable-key", "slow", "gone"])
def test_keys_past_max_stale_are_refused_until_a_fetch_succeeds(
    endpoint: Endpoint, clock: FakeClock, how: str, caplog: pytest.LogCaptureFixture
) -> None:
    old, new = SigningKey.generate(), SigningKey.generate()
    endpoint.serve(keyset_of(old))
    source = JwksUrl(
        endpoint.url, max_age=60, min_refetch_interval=10, max_stale=120, timeout=0.3, clock=clock
    )
    verifier = Verifier(source)  # with its cache of verified tokens: that must not help either
    token = token_of(old)
    verifier.verify(token)
    url = endpoint.url
    if how == "gone":
        endpoint.close()  # nothing listens any more
    else:
        break_endpoint(endpoint, how)
    clock.advance(60)
    verifier.verify(token)  # the refetch failed: the last good keys, for max_stale more
    clock.advance(119)
    verifier.verify(token)  # 179 s old, a retry failed again: still within 60 + 120
    requests = endpoint.requests
    clock.advance(1)
    with caplog.at_level(logging.WARNING, logger="agentsudo.jwks"):
        for _ in range(20):  # refused at once, and retried only once per interval
            with pytest.raises(KeysUnavailableError) as info:
                verifier.verify(token)
            with pytest.raises(KeysUnavailableError):
                source.get(old.kid)
            with pytest.raises(KeysUnavailableError):
                source.get(secrets.token_urlsafe(8))
            with pytest.raises(KeysUnavailableError):
                source.keys  # noqa: B018
            with pytest.raises(KeysUnavailableError):
                asyncio.run(source.aget(old.kid))
        assert endpoint.requests == requests
        message = str(info.value)
        assert message.startswith(f"public keys from {url} unavailable: ")
        assert "180s old (max_age 60s + max_stale 120s)" in message
        assert "\n" not in message and "AAAA" not in message
        assert not isinstance(info.value, InvalidTokenError)  # not the token's fault: a 503
        clock.advance(10)
        with pytest.raises(KeysUnavailableError):
            verifier.verify(token)  # one more failed retry
    assert any("refusing every token" in r.getMessage() for r in caplog.records)
    if how == "gone":
        return
    assert endpoint.requests == requests + 1
    endpoint.serve(keyset_of(new))  # the endpoint is back; the old key was retired meanwhile
    with pytest.raises(KeysUnavailableError):
        verifier.verify(token)  # within the retry interval: no fetch yet
    clock.advance(10)
    with pytest.raises(UnknownKeyError):
        verifier.verify(token)  # recovered: and the retired key is gone
    verifier.verify(token_of(new))
    assert list(source.keys) == [new.kid]
    assert endpoint.requests == requests + 2


def test_max_stale_zero_refuses_as_soon_as_a_due_refetch_fails(
    endpoint: Endpoint, clock: FakeClock
) -> None:
    key = SigningKey.generate()
    endpoint.serve(keyset_of(key))
    source = JwksUrl(endpoint.url, max_age=60, max_stale=0, clock=clock)
    clock.advance(59)
    assert source.get(key.kid) == key.public
    break_endpoint(endpoint, "500")
    clock.advance(1)
    with pytest.raises(KeysUnavailableError, match="HTTP 500"):
        source.get(key.kid)
    endpoint.serve(keyset_of(key))
    clock.advance(10)
    assert source.get(key.kid) == key.public


def test_a_good_fetch_within_max_stale_starts_a_new_lifetime(
    endpoint: Endpoint, clock: FakeClock
) -> None:
    key = SigningKey.generate()
    endpoint.serve(keyset_of(key))
    source = JwksUrl(endpoint.url, max_age=60, min_refetch_interval=10, max_stale=30, clock=clock)
    break_endpoint(endpoint, "500")
    clock.advance(85)
    assert source.get(key.kid) == key.public  # 85 s old: a failed refetch, still trusted
    endpoint.serve(keyset_of(key))
    clock.advance(10)
    assert source.get(key.kid) == key.public  # the retry succeeds
    break_endpoint(endpoint, "500")
    clock.advance(89)  # 89 s after the good fetch: within 60 + 30
    assert source.get(key.kid) == key.public
    clock.advance(1)
    with pytest.raises(KeysUnavailableError):
        source.get(key.kid)


def test_max_stale_defaults_to_an_hour_and_reaches_the_default_verifier(
    endpoint: Endpoint,
) -> None:
    from agentsudo_tokens import Settings

    endpoint.serve(keyset_of(SigningKey.generate()))
    assert JwksUrl(endpoint.url).max_stale == 3600
    source = load_key_source(endpoint.url, max_stale=5)
    assert isinstance(source, JwksUrl) and source.max_stale == 5
    assert Settings().jwks_max_stale == 3600
    assert Settings.from_env({"AGENTSUDO_JWKS_MAX_STALE": "2h"}).jwks_max_stale == 7200
    assert Settings.from_env({"AGENTSUDO_JWKS_MAX_STALE": "0"}).jwks_max_stale == 0
    for bad in ("soon", "-1", "1w"):
        with pytest.raises(ConfigError, match=r"^AGENTSUDO_JWKS_MAX_STALE: expected"):
            Settings.from_env({"AGENTSUDO_JWKS_MAX_STALE": bad})
    verifier = Verifier.from_settings(Settings(jwks=endpoint.url, jwks_max_stale=9), store=None)
    assert isinstance(verifier.keys, JwksUrl) and verifier.keys.max_stale == 9
    default = Verifier.from_settings(Settings(jwks=endpoint.url), store=None)
    assert isinstance(default.keys, JwksUrl) and default.keys.max_stale == 3600


# --- a whole-request deadline ----------------------------------------------------------


class Trickle:
    """A TCP server that answers every request one byte per second (headers, then body).

    Each byte comes well within a 2 s socket timeout, so only a deadline on the
    whole request stops the client before the minute or so the answer takes.
    """

    RESPONSE = (
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
        b"Content-Length: 40\r\nX-Padding: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n\r\n"
    ) + b'{"keys": []}                            '

    def __init__(self, *, body_only: bool = False) -> None:
        self.body_only = body_only  # headers at once, then the body byte by byte
        self.stop = threading.Event()
        self.hung_up = threading.Event()  # the client closed a connection before the end
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(0.05)
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}/jwks.json"
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while not self.stop.is_set():
            try:
                conn, _ = self.listener.accept()
            except TimeoutError:
                continue
            threading.Thread(target=self._answer, args=(conn,), daemon=True).start()

    def _answer(self, conn: socket.socket) -> None:
        with conn:
            request = b""
            while b"\r\n\r\n" not in request:
                chunk = conn.recv(4096)
                if not chunk:
                    return
                request += chunk
            data = self.RESPONSE
            if self.body_only:
                head, _, body = data.partition(b"\r\n\r\n")
                conn.sendall(head + b"\r\n\r\n")
                data = body
            for byte in data:  # 1 byte/s: this would take over a minute
                try:
                    conn.sendall(bytes([byte]))
                except OSError:
                    self.hung_up.set()
                    return
                if self.stop.wait(1.0):
                    return

    def close(self) -> None:
        self.stop.set()
        self._thread.join(timeout=5)
        self.listener.close()


@pytest.fixture
def trickle() -> Iterator[Trickle]:
    server = Trickle()
    try:
        yield server
    finally:
        server.close()


@pytest.mark.parametrize("body_only", [False, True], ids=["headers", "body"])
def test_a_trickling_server_cannot_hold_the_first_fetch_past_its_timeout(
    body_only: bool,
) -> None:
    server = Trickle(body_only=body_only)
    try:
        started = time.monotonic()
        with pytest.raises(ConfigError, match=r"no complete response within 2s"):
            JwksUrl(server.url, timeout=2)
        assert time.monotonic() - started < 10  # the trickle alone would take over a minute
        assert server.hung_up.wait(10)  # and the connection was really dropped, not left running
    finally:
        server.close()


def test_a_trickling_server_cannot_hold_a_refetch_past_its_timeout(
    endpoint: Endpoint, trickle: Trickle, clock: FakeClock
) -> None:
    key = SigningKey.generate()
    endpoint.serve(keyset_of(key))
    source = JwksUrl(endpoint.url, max_age=60, max_stale=0, timeout=2, clock=clock)
    source.url = trickle.url  # the same source, now fetching from a server that trickles
    clock.advance(60)
    started = time.monotonic()
    with pytest.raises(KeysUnavailableError, match=r"no complete response within 2s"):
        source.get(key.kid)
    assert time.monotonic() - started < 10


# --- FastAPI, default configuration ----------------------------------------------------


def test_fastapi_answers_503_once_the_keys_are_past_max_stale(
    key_dir: KeyDirectory,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """AGENTSUDO_JWKS names a URL, no verifier is given; the key server then goes away."""
    from fastapi import Depends, FastAPI
    from fastapi.testclient import TestClient

    from agentsudo_tokens import Agent
    from agentsudo_tokens.integrations.fastapi import AgentSudoMiddleware, require_scope

    proc, port = start_keys_serve(key_dir, tmp_path / "serve.log")
    try:
        monkeypatch.chdir(tmp_path)  # no key directory, no state store here
        monkeypatch.setenv("AGENTSUDO_JWKS", f"http://127.0.0.1:{port}/.well-known/jwks.json")
        monkeypatch.setenv("AGENTSUDO_JWKS_CACHE_TTL", "1s")
        monkeypatch.setenv("AGENTSUDO_JWKS_MAX_STALE", "0")
        token = Issuer(key_dir.signing_key()).issue("SupportBot", ["read:orders"]).token
        app = FastAPI()
        app.add_middleware(AgentSudoMiddleware)
        bare = FastAPI()  # the dependency alone

        for service in (app, bare):

            @service.get("/orders")
            def orders(agent: Agent = Depends(require_scope("read:orders"))) -> str:  # noqa: B008
                return agent.name

        clients = [TestClient(app), TestClient(bare)]
        for client in clients:
            response = client.get("/orders", headers={"Authorization": f"Bearer {token}"})
            assert response.status_code == 200, response.text
        fetched_before = time.monotonic()
    finally:
        stop_process(proc)  # the key server is gone: every refetch fails from now on
    while time.monotonic() < fetched_before + 1.1:  # past the 1 s lifetime (+ 0 s max_stale)
        time.sleep(0.05)
    with caplog.at_level(logging.WARNING, logger="agentsudo"):
        for client in clients:
            for _ in range(3):
                response = client.get("/orders", headers={"Authorization": f"Bearer {token}"})
                assert response.status_code == 503, response.text
                assert response.json() == {
                    "detail": "cannot check the token now: the public keys are unavailable"
                }
    warnings = [r.getMessage() for r in caplog.records if r.name == "agentsudo.http"]
    assert warnings and all("unavailable" in w and token not in w for w in warnings)


# --- https ---------------------------------------------------------------------------


def _self_signed(tmp_path: Path) -> tuple[Path, Path]:
    """A throwaway certificate for 127.0.0.1 and its key, as PEM files in ``tmp_path``."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


def test_an_https_endpoint_is_fetched_within_the_deadline(tmp_path: Path) -> None:
    import ssl

    key = SigningKey.generate()
    body = json.dumps(keyset_of(key).to_dict()).encode()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    cert, private = _self_signed(tmp_path)
    server_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_context.load_cert_chain(cert, private)
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    server.socket = server_context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02})
    thread.start()
    url = f"https://127.0.0.1:{server.server_address[1]}/.well-known/jwks.json"
    try:
        trusted = ssl.create_default_context(cafile=str(cert))
        source = JwksUrl(url, ssl_context=trusted, min_refetch_interval=0)
        assert source.get(key.kid) == key.public
        source.refresh()  # a second connection through the same handlers
        with pytest.raises(ConfigError, match="CERTIFICATE_VERIFY_FAILED"):
            JwksUrl(url)  # the system's CAs do not know this certificate
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
