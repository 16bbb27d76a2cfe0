"""Public keys by URL (``JwksUrl``) and ``agentsudo keys serve``.

Every test talks to a real HTTP server on 127.0.0.1 started here (no other
network): one that counts requests and can answer errors, garbage, redirects,
oversized or slow responses. Cache lifetimes use an injected monotonic clock,
so no test sleeps through a ``max_age``.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import logging
import secrets
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from agentsudo_cli.main import cli
from agentsudo_tokens import (
    ConfigError,
    InvalidTokenError,
    Issuer,
    KeyDirectory,
    KeySet,
    KeysUnavailableError,
    SigningKey,
    UnknownKeyError,
    Verifier,
)
from agentsudo_tokens.tokens.jwks import MAX_JWKS_BYTES, load_key_source
from agentsudo_tokens.tokens.jwks_remote import JwksUrl, is_loopback_host

AGENTSUDO = Path(sys.executable).parent / "agentsudo"


# --- a JWKS endpoint under the test's control ----------------------------------------


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


@pytest.fixture
def endpoint() -> Iterator[Endpoint]:
    server = Endpoint()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def _keyset(*keys: SigningKey) -> KeySet:
    return KeySet([key.public for key in keys])


def _token(key: SigningKey) -> str:
    return Issuer(key).issue("SupportBot", ["read:orders"]).token


# --- fetching and verifying ----------------------------------------------------------


def test_a_url_source_verifies_tokens_and_fetches_once(endpoint: Endpoint) -> None:
    key = SigningKey.generate("EdDSA")
    ec = SigningKey.generate("ES256")
    endpoint.serve(_keyset(key, ec))
    source = JwksUrl(endpoint.url)
    verifier = Verifier(source)
    for _ in range(50):
        assert verifier.verify(_token(key)).subject == "SupportBot"
        assert verifier.verify(_token(ec)).subject == "SupportBot"
    assert endpoint.requests == 1
    assert set(source.keys) == {key.kid, ec.kid}
    assert repr(source) == f"JwksUrl({endpoint.url!r})"


def test_load_key_source_gives_a_url_source_for_urls(endpoint: Endpoint) -> None:
    key = SigningKey.generate()
    endpoint.serve(_keyset(key))
    source = load_key_source(endpoint.url, max_age=7, min_refetch_interval=0)
    assert isinstance(source, JwksUrl)
    assert (source.max_age, source.min_refetch_interval) == (7, 0)
    assert source.get(key.kid) == key.public
    localhost = load_key_source(f"HTTP://localhost:{endpoint.port}/jwks.json")
    assert isinstance(localhost, JwksUrl) and localhost.get(key.kid) == key.public


def test_loopback_is_fetched_directly_even_with_a_proxy_configured(
    endpoint: Endpoint, monkeypatch: pytest.MonkeyPatch
) -> None:
    key = SigningKey.generate()
    endpoint.serve(_keyset(key))
    for name in ("http_proxy", "HTTP_PROXY", "https_proxy", "all_proxy"):
        monkeypatch.setenv(name, "http://127.0.0.1:9")  # discard port: nothing listens
    monkeypatch.delenv("no_proxy", raising=False)
    monkeypatch.delenv("NO_PROXY", raising=False)
    assert JwksUrl(endpoint.url).get(key.kid) == key.public


def test_keys_not_for_verifying_signatures_are_ignored(endpoint: Endpoint) -> None:
    good, enc, sign_only = (SigningKey.generate() for _ in range(3))
    endpoint.serve(
        {
            "keys": [
                {**enc.public.to_jwk(), "use": "enc"},
                {**sign_only.public.to_jwk(), "key_ops": ["sign"]},
                {**good.public.to_jwk(), "key_ops": ["verify"]},
            ]
        }
    )
    source = JwksUrl(endpoint.url, min_refetch_interval=3600)
    assert list(source.keys) == [good.kid]
    verifier = Verifier(source)
    verifier.verify(_token(good))
    for ignored in (enc, sign_only):
        with pytest.raises(UnknownKeyError):
            verifier.verify(_token(ignored))


# --- what a URL may be ---------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "http://example.com/.well-known/jwks.json",
        "http://10.0.0.1/jwks.json",
        "http://192.168.1.10:8765/jwks.json",
        "http://localhost.example.com/jwks.json",
        "http://[::2]/jwks.json",
        "http://0.0.0.0:8765/jwks.json",
        "ftp://example.com/jwks.json",
        "file:///etc/passwd",
        "https://",
        "https:///jwks.json",
        "https://example.com:99999/jwks.json",
        "https://exa mple.com/jwks.json",
        "https://exämple.com/jwks.json",
        "https://user:hunter2@example.com/jwks.json",
    ],
)
def test_urls_we_do_not_fetch_from_are_refused_before_any_request(url: str) -> None:
    with pytest.raises(ConfigError) as info:
        JwksUrl(url)
    message = str(info.value)
    assert "\n" not in message and "hunter2" not in message
    with pytest.raises(ConfigError):
        load_key_source(url)


def test_plain_http_names_the_rule() -> None:
    with pytest.raises(ConfigError) as info:
        JwksUrl("http://example.com/jwks.json")
    assert str(info.value) == (
        "JWKS URL: expected https://, or http:// for localhost, 127.0.0.1 or ::1, "
        "found 'http://example.com/jwks.json'"
    )


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("localhost", True),
        ("LOCALHOST.", True),
        ("127.0.0.1", True),
        ("127.8.9.10", True),
        ("::1", True),
        ("[::1]", True),
        ("0.0.0.0", False),
        ("::", False),
        ("128.0.0.1", False),
        ("localhost.evil.example", False),
        ("example.com", False),
    ],
)
def test_is_loopback_host(host: str, loopback: bool) -> None:
    assert is_loopback_host(host) is loopback


@pytest.mark.parametrize(
    "option",
    [
        {"max_age": 0},
        {"max_age": float("inf")},
        {"timeout": -1},
        {"min_refetch_interval": -1},
        {"max_stale": -1},
        {"max_stale": float("nan")},
    ],
)
def test_bad_limits_are_refused(endpoint: Endpoint, option: dict[str, float]) -> None:
    endpoint.serve(_keyset(SigningKey.generate()))
    with pytest.raises(ConfigError):
        JwksUrl(endpoint.url, **option)
    assert endpoint.requests == 0


# --- the first fetch fails early -----------------------------------------------------


def _huge() -> bytes:
    jwks = {"keys": [SigningKey.generate().public.to_jwk()], "pad": "x" * MAX_JWKS_BYTES}
    return json.dumps(jwks).encode()


def _break(endpoint: Endpoint, how: str) -> None:
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
        endpoint.serve(_keyset(key))
        endpoint.content_type = "text/html"
    elif how == "oversize":
        endpoint.body = _huge()
    elif how == "oversize-no-length":
        endpoint.body, endpoint.send_length = _huge(), False
    elif how == "slow":
        endpoint.serve(_keyset(SigningKey.generate()))
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


@pytest.mark.parametrize("how", FAILURES)
def test_a_failed_first_fetch_is_a_config_error(endpoint: Endpoint, how: str) -> None:
    _break(endpoint, how)
    with pytest.raises(ConfigError) as info:
        JwksUrl(endpoint.url, timeout=0.3)
    message = str(info.value)
    assert message.startswith(f"cannot fetch the public keys from {endpoint.url}: ")
    assert "\n" not in message and "AAAA" not in message
    assert endpoint.requests == 1


def test_a_redirect_says_it_was_not_followed(endpoint: Endpoint) -> None:
    _break(endpoint, "redirect")
    with pytest.raises(ConfigError, match=r"HTTP 302 \(redirects are not followed\)"):
        JwksUrl(endpoint.url)
    assert endpoint.requests == 1


def test_nothing_listening_is_a_config_error(endpoint: Endpoint) -> None:
    url = endpoint.url
    endpoint.close()
    with pytest.raises(ConfigError, match="cannot connect"):
        JwksUrl(url, timeout=1)


# --- cache lifetime, retirement, failures --------------------------------------------


def test_the_key_set_is_refetched_after_max_age(endpoint: Endpoint, clock: FakeClock) -> None:
    key = SigningKey.generate()
    endpoint.serve(_keyset(key))
    source = JwksUrl(endpoint.url, max_age=60, clock=clock)
    for _ in range(100):
        assert source.get(key.kid) is not None
    clock.advance(59.9)
    assert source.get(key.kid) is not None and endpoint.requests == 1
    assert not source.needs_fetch(key.kid)
    clock.advance(0.1)
    assert source.needs_fetch(key.kid)
    assert source.get(key.kid) is not None and endpoint.requests == 2
    assert source.get(key.kid) is not None and endpoint.requests == 2  # fresh for 60 s again
    clock.advance(60)
    assert list(source.keys) == [key.kid] and endpoint.requests == 3


def test_a_retired_key_stops_verifying_after_max_age(endpoint: Endpoint, clock: FakeClock) -> None:
    old, new = SigningKey.generate(), SigningKey.generate()
    endpoint.serve(_keyset(old, new))
    verifier = Verifier(JwksUrl(endpoint.url, max_age=30, clock=clock))
    old_token, new_token = _token(old), _token(new)
    verifier.verify(old_token)
    verifier.verify(new_token)
    endpoint.serve(_keyset(new))  # the issuer retires the old key
    clock.advance(29)
    verifier.verify(old_token)  # still within max_age: cached keys
    clock.advance(1)
    with pytest.raises(UnknownKeyError):
        verifier.verify(old_token)  # the cached verification is dropped as well
    verifier.verify(new_token)
    assert endpoint.requests == 2


def test_unknown_kids_refetch_at_most_once_per_interval(
    endpoint: Endpoint, clock: FakeClock
) -> None:
    key = SigningKey.generate()
    endpoint.serve(_keyset(key))
    source = JwksUrl(endpoint.url, max_age=300, min_refetch_interval=10, clock=clock)
    verifier = Verifier(source)
    for _ in range(100):  # an attacker making up kids, right after the first fetch
        assert source.get(secrets.token_urlsafe(16)) is None
    assert endpoint.requests == 1
    clock.advance(10)
    for _ in range(100):
        assert source.get(secrets.token_urlsafe(16)) is None
        clock.advance(0.05)  # 5 s in all: still one interval
    assert endpoint.requests == 2
    strangers = [SigningKey.generate() for _ in range(20)]  # real tokens, unknown keys
    for stranger in strangers:
        with pytest.raises(UnknownKeyError):
            verifier.verify(_token(stranger))
    assert endpoint.requests == 2
    assert source.get(key.kid) is not None


def test_an_unknown_kid_picks_up_a_rotation_before_max_age(
    endpoint: Endpoint, clock: FakeClock
) -> None:
    old, new = SigningKey.generate(), SigningKey.generate()
    endpoint.serve(_keyset(old))
    verifier = Verifier(JwksUrl(endpoint.url, max_age=300, min_refetch_interval=10, clock=clock))
    endpoint.serve(_keyset(old, new))  # rotated
    with pytest.raises(UnknownKeyError):
        verifier.verify(_token(new))  # within the interval after the first fetch: not yet
    clock.advance(10)
    verifier.verify(_token(new))
    verifier.verify(_token(old))
    assert endpoint.requests == 2


def test_concurrent_callers_share_one_fetch(endpoint: Endpoint) -> None:
    old, new = SigningKey.generate(), SigningKey.generate()
    endpoint.serve(_keyset(old))
    source = JwksUrl(endpoint.url, min_refetch_interval=0)
    endpoint.serve(_keyset(old, new))
    endpoint.delay = 0.3
    barrier = threading.Barrier(20)
    found: list[object] = []

    def look() -> None:
        barrier.wait()
        found.append(source.get(new.kid))

    threads = [threading.Thread(target=look) for _ in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=5)
    assert found == [new.public] * 20
    assert endpoint.requests == 2


def test_a_known_kid_does_not_wait_for_a_fetch_in_flight(endpoint: Endpoint) -> None:
    key = SigningKey.generate()
    endpoint.serve(_keyset(key))
    clock = FakeClock()
    source = JwksUrl(endpoint.url, max_age=10, clock=clock)
    endpoint.delay = 0.5
    clock.advance(10)
    fetcher = threading.Thread(target=source.get, args=(key.kid,))
    fetcher.start()
    while endpoint.requests < 2:
        time.sleep(0.01)
    started = time.monotonic()
    assert source.get(key.kid) == key.public  # the stale set, at once
    assert time.monotonic() - started < 0.2
    fetcher.join(timeout=5)
    assert endpoint.requests == 2


@pytest.mark.parametrize("how", FAILURES)
def test_a_failed_refetch_keeps_the_last_good_keys(
    endpoint: Endpoint, clock: FakeClock, how: str, caplog: pytest.LogCaptureFixture
) -> None:
    key = SigningKey.generate()
    endpoint.serve(_keyset(key))
    source = JwksUrl(endpoint.url, max_age=60, min_refetch_interval=10, timeout=0.3, clock=clock)
    verifier = Verifier(source, cache_size=0)
    token = _token(key)
    _break(endpoint, how)
    clock.advance(60)
    with caplog.at_level(logging.WARNING, logger="agentsudo.jwks"):
        verifier.verify(token)  # the refetch failed; the last good key still verifies
    assert endpoint.requests == 2
    [record] = [r for r in caplog.records if r.name == "agentsudo.jwks"]
    assert record.levelno == logging.WARNING and "keeping the last good key set" in record.message
    assert "AAAA" not in record.getMessage()
    for _ in range(50):  # retries are rate limited while the endpoint is down
        verifier.verify(token)
        assert source.get(secrets.token_urlsafe(8)) is None
    assert endpoint.requests == 2
    other = SigningKey.generate()
    endpoint.serve(_keyset(other))  # back, with a new key set
    clock.advance(10)
    with pytest.raises(UnknownKeyError):
        verifier.verify(token)
    verifier.verify(_token(other))
    assert endpoint.requests == 3


def test_an_unexpected_error_while_fetching_keeps_the_keys_too(
    endpoint: Endpoint, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    key = SigningKey.generate()
    endpoint.serve(_keyset(key))
    source = JwksUrl(endpoint.url, max_age=60, min_refetch_interval=10, clock=clock)
    calls: list[int] = []

    def explode() -> KeySet:
        calls.append(1)
        raise RuntimeError("surprise")

    monkeypatch.setattr(source, "_download", explode)
    clock.advance(60)
    for _ in range(20):
        assert source.get(key.kid) == key.public
        assert source.get("unknown") is None
    assert len(calls) == 1  # and retried only after the interval
    clock.advance(10)
    assert source.get(key.kid) == key.public and len(calls) == 2


def test_refresh_fetches_now_and_reports_failure(endpoint: Endpoint, clock: FakeClock) -> None:
    old, new = SigningKey.generate(), SigningKey.generate()
    endpoint.serve(_keyset(old))
    source = JwksUrl(endpoint.url, min_refetch_interval=3600, clock=clock)
    endpoint.serve(_keyset(new))
    source.refresh()
    assert list(source.keys) == [new.kid]
    _break(endpoint, "500")
    with pytest.raises(ConfigError, match="HTTP 500"):
        source.refresh()
    assert list(source.keys) == [new.kid]


# --- async -----------------------------------------------------------------------------


def test_aget_fetches_in_a_thread_and_never_blocks_the_loop(endpoint: Endpoint) -> None:
    old, new = SigningKey.generate(), SigningKey.generate()
    endpoint.serve(_keyset(old))
    source = JwksUrl(endpoint.url, min_refetch_interval=0)
    endpoint.serve(_keyset(old, new))
    endpoint.delay = 0.4

    async def main() -> tuple[object, int, float]:
        ticks = 0
        done = asyncio.Event()

        async def ticker() -> None:
            nonlocal ticks
            while not done.is_set():
                ticks += 1
                await asyncio.sleep(0.01)

        task = asyncio.create_task(ticker())
        started = time.monotonic()
        key = await source.aget(new.kid)  # due: the fetch runs in a worker thread
        elapsed = time.monotonic() - started
        hit = await source.aget(new.kid)  # now a cache hit, on the loop
        assert hit is key
        done.set()
        await task
        return key, ticks, elapsed

    key, ticks, elapsed = asyncio.run(main())
    assert key == new.public
    assert elapsed >= 0.35 and ticks >= 10  # the loop kept running during the fetch
    assert endpoint.requests == 2
    assert source.get(new.kid) == new.public and endpoint.requests == 2


def test_refresh_async(endpoint: Endpoint) -> None:
    old, new = SigningKey.generate(), SigningKey.generate()
    endpoint.serve(_keyset(old))
    source = JwksUrl(endpoint.url)
    endpoint.serve(_keyset(new))
    asyncio.run(source.refresh_async())
    assert list(source.keys) == [new.kid]


# --- agentsudo keys serve ----------------------------------------------------------------


def _get(port: int, path: str, method: str = "GET") -> tuple[int, dict[str, str], bytes]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        connection.request(method, path)
        response = connection.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        connection.close()


def _start_serve(key_dir: KeyDirectory, log: Path) -> tuple[subprocess.Popen[bytes], int]:
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


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:  # pragma: no cover
        proc.kill()
        proc.wait()


def test_keys_serve_publishes_the_current_jwks_and_nothing_else(
    key_dir: KeyDirectory, tmp_path: Path
) -> None:
    proc, port = _start_serve(key_dir, tmp_path / "serve.log")
    try:
        first = key_dir.active().kid
        status, headers, body = _get(port, "/.well-known/jwks.json")
        assert status == 200
        assert headers["Content-Type"] == "application/json"
        assert headers["Cache-Control"] == "max-age=60"
        assert [jwk["kid"] for jwk in json.loads(body)["keys"]] == [first]
        assert _get(port, "/jwks.json")[2] == body
        assert _get(port, "/jwks.json", "HEAD")[0] == 200

        second = key_dir.rotate().kid  # re-read per request
        listed = json.loads(_get(port, "/.well-known/jwks.json?x=1")[2])["keys"]
        assert [jwk["kid"] for jwk in listed] == [first, second]
        source = JwksUrl(f"http://127.0.0.1:{port}/.well-known/jwks.json")
        assert set(source.keys) == {first, second}
        key_dir.retire(first)
        assert [jwk["kid"] for jwk in json.loads(_get(port, "/jwks.json")[2])["keys"]] == [second]

        for path in (
            "/",
            "/keys.json",
            f"/{second}.pem",
            "/.gitignore",
            "/../keys.json",
            "/..%2fkeys.json",
            "/.well-known/../keys.json",
            "/.well-known/jwks.json/../../keys.json",
            "//etc/passwd",
        ):
            status, _, body = _get(port, path)
            assert status == 404, path
            assert b"PRIVATE" not in body and b"active" not in body
        assert _get(port, "/jwks.json", "POST")[0] == 501
    finally:
        _stop(proc)
    log = (tmp_path / "serve.log").read_text()
    assert "PRIVATE" not in log and "Traceback" not in log


def test_keys_serve_refuses_a_public_host_without_public(key_dir: KeyDirectory) -> None:
    result = CliRunner().invoke(
        cli, ["keys", "serve", "--host", "0.0.0.0", "--keys-dir", str(key_dir.path)]
    )
    assert result.exit_code == 2
    assert "not a loopback address; add --public" in result.stderr


def test_keys_serve_without_keys_fails_at_once(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        cli, ["keys", "serve", "--port", "0", "--keys-dir", str(tmp_path / "none")]
    )
    assert result.exit_code == 2
    assert "agentsudo keys init" in result.stderr


def test_the_cache_lifetime_setting_reaches_the_default_verifier(endpoint: Endpoint) -> None:
    from agentsudo_tokens import Settings, Verifier

    endpoint.serve(_keyset(SigningKey.generate()))
    verifier = Verifier.from_settings(Settings(jwks=endpoint.url, jwks_cache_ttl=7), store=None)
    assert isinstance(verifier.keys, JwksUrl)
    assert verifier.keys.max_age == 7


# --- max_stale: a failing endpoint is not trusted forever ------------------------------


@pytest.mark.parametrize("how", ["500", "garbage", "no-usable-key", "slow", "gone"])
def test_keys_past_max_stale_are_refused_until_a_fetch_succeeds(
    endpoint: Endpoint, clock: FakeClock, how: str, caplog: pytest.LogCaptureFixture
) -> None:
    old, new = SigningKey.generate(), SigningKey.generate()
    endpoint.serve(_keyset(old))
    source = JwksUrl(
        endpoint.url, max_age=60, min_refetch_interval=10, max_stale=120, timeout=0.3, clock=clock
    )
    verifier = Verifier(source)  # with its cache of verified tokens: that must not help either
    token = _token(old)
    verifier.verify(token)
    url = endpoint.url
    if how == "gone":
        endpoint.close()  # nothing listens any more
    else:
        _break(endpoint, how)
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
    endpoint.serve(_keyset(new))  # the endpoint is back; the old key was retired meanwhile
    with pytest.raises(KeysUnavailableError):
        verifier.verify(token)  # within the retry interval: no fetch yet
    clock.advance(10)
    with pytest.raises(UnknownKeyError):
        verifier.verify(token)  # recovered: and the retired key is gone
    verifier.verify(_token(new))
    assert list(source.keys) == [new.kid]
    assert endpoint.requests == requests + 2


def test_max_stale_zero_refuses_as_soon_as_a_due_refetch_fails(
    endpoint: Endpoint, clock: FakeClock
) -> None:
    key = SigningKey.generate()
    endpoint.serve(_keyset(key))
    source = JwksUrl(endpoint.url, max_age=60, max_stale=0, clock=clock)
    clock.advance(59)
    assert source.get(key.kid) == key.public
    _break(endpoint, "500")
    clock.advance(1)
    with pytest.raises(KeysUnavailableError, match="HTTP 500"):
        source.get(key.kid)
    endpoint.serve(_keyset(key))
    clock.advance(10)
    assert source.get(key.kid) == key.public


def test_a_good_fetch_within_max_stale_starts_a_new_lifetime(
    endpoint: Endpoint, clock: FakeClock
) -> None:
    key = SigningKey.generate()
    endpoint.serve(_keyset(key))
    source = JwksUrl(endpoint.url, max_age=60, min_refetch_interval=10, max_stale=30, clock=clock)
    _break(endpoint, "500")
    clock.advance(85)
    assert source.get(key.kid) == key.public  # 85 s old: a failed refetch, still trusted
    endpoint.serve(_keyset(key))
    clock.advance(10)
    assert source.get(key.kid) == key.public  # the retry succeeds
    _break(endpoint, "500")
    clock.advance(89)  # 89 s after the good fetch: within 60 + 30
    assert source.get(key.kid) == key.public
    clock.advance(1)
    with pytest.raises(KeysUnavailableError):
        source.get(key.kid)


def test_max_stale_defaults_to_an_hour_and_reaches_the_default_verifier(
    endpoint: Endpoint,
) -> None:
    from agentsudo_tokens import Settings

    endpoint.serve(_keyset(SigningKey.generate()))
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
    endpoint.serve(_keyset(key))
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

    proc, port = _start_serve(key_dir, tmp_path / "serve.log")
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
        _stop(proc)  # the key server is gone: every refetch fails from now on
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
    body = json.dumps(_keyset(key).to_dict()).encode()

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
