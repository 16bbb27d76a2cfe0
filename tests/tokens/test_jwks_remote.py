"""Public keys by URL (``JwksUrl``): fetching, what a URL may be, failures, the cache, async.

Every test talks to a real HTTP server on 127.0.0.1 started here (no other
network): one that counts requests and can answer errors, garbage, redirects,
oversized or slow responses. Cache lifetimes use an injected monotonic clock,
so no test sleeps through a ``max_age``.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import threading
import time

import pytest
from jwks_endpoint import (
    FAILURES,
    Endpoint,
    FakeClock,
    break_endpoint,
    keyset_of,
    token_of,
)

from agentsudo_tokens import (
    ConfigError,
    KeySet,
    SigningKey,
    UnknownKeyError,
    Verifier,
)
from agentsudo_tokens.tokens.jwks import load_key_source
from agentsudo_tokens.tokens.jwks_remote import JwksUrl, is_loopback_host

# --- fetching and verifying ----------------------------------------------------------


def test_a_url_source_verifies_tokens_and_fetches_once(endpoint: Endpoint) -> None:
    key = SigningKey.generate("EdDSA")
    ec = SigningKey.generate("ES256")
    endpoint.serve(keyset_of(key, ec))
    source = JwksUrl(endpoint.url)
    verifier = Verifier(source)
    for _ in range(50):
        assert verifier.verify(token_of(key)).subject == "SupportBot"
        assert verifier.verify(token_of(ec)).subject == "SupportBot"
    assert endpoint.requests == 1
    assert set(source.keys) == {key.kid, ec.kid}
    assert repr(source) == f"JwksUrl({endpoint.url!r})"


def test_load_key_source_gives_a_url_source_for_urls(endpoint: Endpoint) -> None:
    key = SigningKey.generate()
    endpoint.serve(keyset_of(key))
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
    endpoint.serve(keyset_of(key))
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
    verifier.verify(token_of(good))
    for ignored in (enc, sign_only):
        with pytest.raises(UnknownKeyError):
            verifier.verify(token_of(ignored))


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
    endpoint.serve(keyset_of(SigningKey.generate()))
    with pytest.raises(ConfigError):
        JwksUrl(endpoint.url, **option)
    assert endpoint.requests == 0


# --- the first fetch fails early -----------------------------------------------------


@pytest.mark.parametrize("how", FAILURES)
def test_a_failed_first_fetch_is_a_config_error(endpoint: Endpoint, how: str) -> None:
    break_endpoint(endpoint, how)
    with pytest.raises(ConfigError) as info:
        JwksUrl(endpoint.url, timeout=0.3)
    message = str(info.value)
    assert message.startswith(f"cannot fetch the public keys from {endpoint.url}: ")
    assert "\n" not in message and "AAAA" not in message
    assert endpoint.requests == 1


def test_a_redirect_says_it_was_not_followed(endpoint: Endpoint) -> None:
    break_endpoint(endpoint, "redirect")
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
    endpoint.serve(keyset_of(key))
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
    endpoint.serve(keyset_of(old, new))
    verifier = Verifier(JwksUrl(endpoint.url, max_age=30, clock=clock))
    old_token, new_token = token_of(old), token_of(new)
    verifier.verify(old_token)
    verifier.verify(new_token)
    endpoint.serve(keyset_of(new))  # the issuer retires the old key
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
    endpoint.serve(keyset_of(key))
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
            verifier.verify(token_of(stranger))
    assert endpoint.requests == 2
    assert source.get(key.kid) is not None


def test_an_unknown_kid_picks_up_a_rotation_before_max_age(
    endpoint: Endpoint, clock: FakeClock
) -> None:
    old, new = SigningKey.generate(), SigningKey.generate()
    endpoint.serve(keyset_of(old))
    verifier = Verifier(JwksUrl(endpoint.url, max_age=300, min_refetch_interval=10, clock=clock))
    endpoint.serve(keyset_of(old, new))  # rotated
    with pytest.raises(UnknownKeyError):
        verifier.verify(token_of(new))  # within the interval after the first fetch: not yet
    clock.advance(10)
    verifier.verify(token_of(new))
    verifier.verify(token_of(old))
    assert endpoint.requests == 2


def test_concurrent_callers_share_one_fetch(endpoint: Endpoint) -> None:
    old, new = SigningKey.generate(), SigningKey.generate()
    endpoint.serve(keyset_of(old))
    source = JwksUrl(endpoint.url, min_refetch_interval=0)
    endpoint.serve(keyset_of(old, new))
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
    endpoint.serve(keyset_of(key))
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
    endpoint.serve(keyset_of(key))
    source = JwksUrl(endpoint.url, max_age=60, min_refetch_interval=10, timeout=0.3, clock=clock)
    verifier = Verifier(source, cache_size=0)
    token = token_of(key)
    break_endpoint(endpoint, how)
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
    endpoint.serve(keyset_of(other))  # back, with a new key set
    clock.advance(10)
    with pytest.raises(UnknownKeyError):
        verifier.verify(token)
    verifier.verify(token_of(other))
    assert endpoint.requests == 3


def test_an_unexpected_error_while_fetching_keeps_the_keys_too(
    endpoint: Endpoint, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    key = SigningKey.generate()
    endpoint.serve(keyset_of(key))
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
    endpoint.serve(keyset_of(old))
    source = JwksUrl(endpoint.url, min_refetch_interval=3600, clock=clock)
    endpoint.serve(keyset_of(new))
    source.refresh()
    assert list(source.keys) == [new.kid]
    break_endpoint(endpoint, "500")
    with pytest.raises(ConfigError, match="HTTP 500"):
        source.refresh()
    assert list(source.keys) == [new.kid]


# --- async -----------------------------------------------------------------------------


def test_aget_fetches_in_a_thread_and_never_blocks_the_loop(endpoint: Endpoint) -> None:
    old, new = SigningKey.generate(), SigningKey.generate()
    endpoint.serve(keyset_of(old))
    source = JwksUrl(endpoint.url, min_refetch_interval=0)
    endpoint.serve(keyset_of(old, new))
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
    endpoint.serve(keyset_of(old))
    source = JwksUrl(endpoint.url)
    endpoint.serve(keyset_of(new))
    asyncio.run(source.refresh_async())
    assert list(source.keys) == [new.kid]
