"""The signed revocation list: built from a real store, parsed strictly, fetched and cached.

The list is served by real servers (HTTP on 127.0.0.1, HTTP on a Unix socket,
a file); the clock that schedules refreshes is the source's own (``clock=``),
so "within the refresh interval" and "until max_stale" are shown without
sleeping. The end-to-end test runs a FastAPI service under uvicorn with only
AGENTSUDO_JWKS and AGENTSUDO_REVOCATIONS set: no store, nothing writable.
"""

from __future__ import annotations

import json
import os
import shutil
import socketserver
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from orders_service import ask, service, until

from agentsudo_tokens import (
    BadSignatureError,
    ConfigError,
    ExpiredTokenError,
    Issuer,
    JwksFile,
    KeyDirectory,
    MalformedTokenError,
    NotYetValidTokenError,
    RevocationListSource,
    RevocationsUnavailableError,
    RevokedTokenError,
    Settings,
    SigningKey,
    StateRequiredError,
    UnknownKeyError,
    Verifier,
    WrongIssuerError,
    revoke,
    revoke_agent,
)
from agentsudo_tokens.state import STATE_FILE, Store, open_store
from agentsudo_tokens.tokens import revocation_list as rl
from agentsudo_tokens.tokens.jws import encode
from agentsudo_tokens.tokens.keys import b64url_encode
from agentsudo_tokens.tokens.revocation_list import (
    LIST_TYPE,
    MEDIA_TYPE,
    build_revocation_list,
    parse_revocation_list,
)

ISS = "agentsudo"


class Clock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def _sign(key: SigningKey, claims: dict[str, Any], **header: Any) -> str:
    head = {"alg": key.alg, "typ": LIST_TYPE, "kid": key.kid, **header}
    return encode(head, claims, key)


def _claims(**changes: Any) -> dict[str, Any]:
    now = int(time.time())
    claims: dict[str, Any] = {"iss": ISS, "iat": now, "exp": now + 60, "revoked": {}, "agents": {}}
    claims.update(changes)
    return claims


# -- building from real stores, parsing back -------------------------------------------


def test_a_list_built_from_the_store_parses_back_with_every_revocation(
    store: Store, key_dir: KeyDirectory, issuer: Issuer
) -> None:
    keys = JwksFile(key_dir.jwks_path)
    revoked = issuer.issue("SupportBot", ["read:orders"])
    kept = issuer.issue("OtherBot", ["read:orders"])
    revoke(store, revoked.claims["jti"], reason="leaked")
    cut = revoke_agent(store, "AnalyticsBot")
    text = build_revocation_list(store, key_dir.signing_key(), issuer=ISS, ttl=30)

    listed = parse_revocation_list(text, keys, issuer=ISS)
    assert list(listed.revoked) == [revoked.claims["jti"]]
    assert listed.agents == {"AnalyticsBot": cut.cutoff}
    assert listed.expires_at - listed.issued_at == 30
    verifier = Verifier(keys)
    listed.check(verifier.verify(kept.token))  # not listed: passes
    with pytest.raises(RevokedTokenError, match="was revoked"):
        listed.check(verifier.verify(revoked.token))
    analytics = issuer.issue("AnalyticsBot", ["read:orders"], now=cut.revoked_at - 5)
    with pytest.raises(RevokedTokenError, match="AnalyticsBot"):
        listed.check(verifier.verify(analytics.token))


def test_an_empty_store_gives_an_empty_signed_list(store: Store, key_dir: KeyDirectory) -> None:
    text = build_revocation_list(store, key_dir.signing_key(), issuer=ISS)
    listed = parse_revocation_list(text, JwksFile(key_dir.jwks_path), issuer=ISS)
    assert (dict(listed.revoked), dict(listed.agents)) == ({}, {})


def test_the_builder_refuses_a_list_beyond_its_bound(
    store: Store, key_dir: KeyDirectory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(rl, "MAX_ENTRIES", 2)
    for jti in ("a" * 22, "b" * 22, "c" * 22):
        revoke(store, jti)
    with pytest.raises(ConfigError, match="at most 2 entries, found 3"):
        build_revocation_list(store, key_dir.signing_key(), issuer=ISS)


def test_a_list_is_not_a_token_and_a_token_is_not_a_list(
    store: Store, key_dir: KeyDirectory, issuer: Issuer
) -> None:
    keys = JwksFile(key_dir.jwks_path)
    text = build_revocation_list(store, key_dir.signing_key(), issuer=ISS)
    with pytest.raises(MalformedTokenError, match="typ"):
        Verifier(keys).verify(text)
    token = issuer.issue("SupportBot", ["read:orders"]).token
    with pytest.raises(MalformedTokenError, match="typ"):
        parse_revocation_list(token, keys, issuer=ISS)


# -- the hostile table -----------------------------------------------------------------


def _duplicate_jti(key: SigningKey) -> str:
    now = int(time.time())
    payload = (
        f'{{"iss":"{ISS}","iat":{now},"exp":{now + 60},'
        f'"revoked":{{"j1":{now},"j1":{now}}},"agents":{{}}}}'
    )
    head = json.dumps({"alg": key.alg, "typ": LIST_TYPE, "kid": key.kid}, separators=(",", ":"))
    signing_input = f"{b64url_encode(head.encode())}.{b64url_encode(payload.encode())}"
    return f"{signing_input}.{b64url_encode(key.sign(signing_input.encode()))}"


def _tampered(key: SigningKey) -> str:
    head, _, signature = _sign(key, _claims()).split(".")
    other = _sign(key, _claims(revoked={}, agents={}, iss=ISS, exp=int(time.time()) + 61))
    return f"{head}.{other.split('.')[1]}.{signature}"


def _unsigned_payload_swap(key: SigningKey) -> str:  # a list with a revocation removed
    listed = _sign(key, _claims(revoked={"j1": int(time.time()) + 60}))
    head, _, signature = listed.split(".")
    return f"{head}.{b64url_encode(json.dumps(_claims()).encode())}.{signature}"


HOSTILE: list[Any] = [
    pytest.param(lambda k: _sign(k, _claims(), typ="at+jwt"), MalformedTokenError, id="wrong-typ"),
    pytest.param(lambda k: _sign(k, _claims(), typ="JWT"), MalformedTokenError, id="typ-jwt"),
    pytest.param(
        lambda k: _sign(SigningKey.generate(), _claims()), UnknownKeyError, id="unknown-kid"
    ),
    pytest.param(_tampered, BadSignatureError, id="tampered"),
    pytest.param(_unsigned_payload_swap, BadSignatureError, id="revocation-removed"),
    pytest.param(
        lambda k: _sign(k, _claims(iat=int(time.time()) - 600, exp=int(time.time()) - 120)),
        ExpiredTokenError,
        id="expired",
    ),
    pytest.param(
        lambda k: _sign(k, _claims(iat=int(time.time()) + 600, exp=int(time.time()) + 660)),
        NotYetValidTokenError,
        id="future-iat",
    ),
    pytest.param(_duplicate_jti, MalformedTokenError, id="duplicate-key"),
    pytest.param(lambda k: "a" * (rl.MAX_LIST_BYTES + 10), MalformedTokenError, id="oversize"),
    pytest.param(lambda k: _sign(k, _claims(iss="evil")), WrongIssuerError, id="wrong-issuer"),
    pytest.param(
        lambda k: _sign(k, _claims(revoked={"j1": "tomorrow"})),
        MalformedTokenError,
        id="entry-not-seconds",
    ),
    pytest.param(
        lambda k: _sign(k, _claims(agents={"": 5})), MalformedTokenError, id="empty-agent-name"
    ),
    pytest.param(
        lambda k: _sign(k, _claims(revoked=["j1"])), MalformedTokenError, id="revoked-not-object"
    ),
    pytest.param(lambda k: _sign(k, _claims(extra=1)), MalformedTokenError, id="unknown-claim"),
    pytest.param(
        lambda k: _sign(k, {k2: v for k2, v in _claims().items() if k2 != "exp"}),
        MalformedTokenError,
        id="no-exp",
    ),
    pytest.param(
        lambda k: _sign(k, _claims(exp=int(time.time()) + 10 * 86400)),
        MalformedTokenError,
        id="long-lived",
    ),
    pytest.param(lambda k: _sign(k, _claims(), jku="https://x"), MalformedTokenError, id="jku"),
    pytest.param(lambda k: _sign(k, _claims(), alg="ES256"), MalformedTokenError, id="wrong-alg"),
    pytest.param(lambda k: "not.a-list", MalformedTokenError, id="two-parts"),
]


@pytest.mark.parametrize(("make", "error"), HOSTILE)
def test_a_hostile_list_is_refused_with_its_exact_error(
    key_dir: KeyDirectory, make: Callable[[SigningKey], str], error: type[Exception]
) -> None:
    text = make(key_dir.signing_key())
    with pytest.raises(error) as info:
        parse_revocation_list(text, JwksFile(key_dir.jwks_path), issuer=ISS)
    assert type(info.value) is error
    message = str(info.value)
    assert "\n" not in message and len(message) < 300
    assert text[:40] not in message  # never the list itself


def test_too_many_entries_are_refused_when_read(
    key_dir: KeyDirectory, monkeypatch: pytest.MonkeyPatch
) -> None:
    text = _sign(key_dir.signing_key(), _claims(revoked={"a": 1, "b": 2}, agents={"c": 3}))
    monkeypatch.setattr(rl, "MAX_ENTRIES", 2)
    with pytest.raises(MalformedTokenError, match="at most 2 entries"):
        parse_revocation_list(text, JwksFile(key_dir.jwks_path), issuer=ISS)


# -- real servers: HTTP on 127.0.0.1 and HTTP on a Unix socket ----------------------------


class _Handler(BaseHTTPRequestHandler):
    body: Callable[[], bytes]

    def do_GET(self) -> None:
        if self.path != "/v1/revocations":
            self.send_error(404)
            return
        data = self.body()
        self.send_response(200)
        self.send_header("Content-Type", MEDIA_TYPE)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        pass


class _UnixHTTPServer(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True


class ListServer:
    """Serves ``body()`` at ``/v1/revocations``, over TCP on 127.0.0.1 or on a Unix socket.

    ``stop`` and ``start`` again keep the address: a broker restarting.
    """

    def __init__(self, kind: str, body: Callable[[], bytes]) -> None:
        self.kind = kind
        self.body = body
        self._dir = Path(tempfile.mkdtemp(prefix="asrl-", dir="/tmp"))  # short: AF_UNIX paths
        self._port = 0
        self._server: socketserver.BaseServer | None = None
        self.start()

    @property
    def location(self) -> str:
        if self.kind == "unix":
            return f"unix://{self._dir / 'broker.sock'}"
        return f"http://127.0.0.1:{self._port}/v1/revocations"

    def start(self) -> None:
        handler = type("H", (_Handler,), {"body": staticmethod(lambda: self.body())})
        server: socketserver.BaseServer
        if self.kind == "unix":
            path = self._dir / "broker.sock"
            path.unlink(missing_ok=True)
            server = _UnixHTTPServer(str(path), handler)
        else:
            server = ThreadingHTTPServer(("127.0.0.1", self._port), handler)
            self._port = server.server_address[1]
        self._server = server
        threading.Thread(target=server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self._dir, ignore_errors=True)


@pytest.fixture(params=["http", "unix"])
def served(
    request: pytest.FixtureRequest, store: Store, key_dir: KeyDirectory
) -> Iterator[ListServer]:
    """The store's list, built per request like a broker does, on 127.0.0.1 or a socket."""
    signing = key_dir.signing_key()
    server = ListServer(
        request.param, lambda: build_revocation_list(store, signing, issuer=ISS).encode()
    )
    yield server
    server.close()


def test_a_revocation_reaches_a_running_verifier_at_its_next_refresh_and_survives_an_outage(
    served: ListServer, store: Store, key_dir: KeyDirectory, issuer: Issuer
) -> None:
    clock = Clock()
    keys = JwksFile(key_dir.jwks_path)
    source = RevocationListSource(served.location, keys, refresh=10, max_stale=30, clock=clock)
    verifier = Verifier(keys, revocations=source)
    bad = issuer.issue("SupportBot", ["read:orders"]).token
    good = issuer.issue("OtherBot", ["read:orders"]).token
    assert verifier.verify(bad).subject == "SupportBot"  # now cached by the verifier

    revoke(store, verifier.verify(bad).jti)
    clock.advance(9.9)
    verifier.verify(bad)  # the list in hand is used until the refresh interval
    assert not verifier.needs_store(bad)
    clock.advance(0.1)
    assert verifier.needs_store(bad)  # a fetch is due: a service moves off its event loop
    with pytest.raises(RevokedTokenError, match="was revoked"):
        verifier.verify(bad)  # the cached token too
    good_claims = verifier.verify(good)

    served.stop()  # the broker goes down: the last good list is kept until max_stale
    clock.advance(10)
    verifier.verify(good)
    with pytest.raises(RevokedTokenError):
        verifier.verify(bad)
    clock.advance(15)
    verifier.verify(good)
    clock.advance(6)  # 31 s after the last good fetch
    with pytest.raises(RevocationsUnavailableError, match="max_stale 30s"):
        verifier.verify(good)
    with pytest.raises(RevocationsUnavailableError):
        verifier.check_revocation(good_claims)  # a live session's recheck: refused too

    served.start()  # back: the next check after the retry interval recovers
    clock.advance(rl.RETRY_INTERVAL)
    verifier.verify(good)
    with pytest.raises(RevokedTokenError):
        verifier.verify(bad)


def test_a_kill_switch_reaches_the_verifier_through_the_list(
    served: ListServer, store: Store, key_dir: KeyDirectory, issuer: Issuer
) -> None:
    clock = Clock()
    keys = JwksFile(key_dir.jwks_path)
    verifier = Verifier(keys, revocations=RevocationListSource(served.location, keys, clock=clock))
    token = issuer.issue("SupportBot", ["read:orders"]).token
    verifier.verify(token)
    cut = revoke_agent(store, "SupportBot", leeway=0)
    clock.advance(rl.DEFAULT_REFRESH)
    with pytest.raises(RevokedTokenError, match="every token of agent 'SupportBot'"):
        verifier.verify(token)
    later = issuer.issue("SupportBot", ["read:orders"], now=cut.cutoff + 1)
    verifier.verify(later.token)  # minted after the cut-off


def test_a_session_under_way_is_refused_once_the_list_revokes_its_token(
    served: ListServer, store: Store, key_dir: KeyDirectory, issuer: Issuer
) -> None:
    from agentsudo_tokens import Agent, PermissionDeniedError, sudo

    @sudo(scope="read:orders")
    def read_orders() -> str:
        return "orders"

    clock = Clock()
    keys = JwksFile(key_dir.jwks_path)
    verifier = Verifier(keys, revocations=RevocationListSource(served.location, keys, clock=clock))
    token = issuer.issue("SupportBot", ["read:orders"]).token
    with Agent.from_token(token, verifier=verifier).start_session():
        assert read_orders() == "orders"
        revoke(store, verifier.verify(token).jti)
        clock.advance(rl.DEFAULT_REFRESH)  # the list's next fetch has it
        deadline = time.monotonic() + 30  # the session asks again about once a second
        with pytest.raises(PermissionDeniedError, match="refused after its session began"):
            while time.monotonic() < deadline:
                read_orders()
                time.sleep(0.05)


def _expired(key: SigningKey) -> bytes:
    now = int(time.time())
    return _sign(key, _claims(iat=now - 600, exp=now - 300)).encode()


BAD_BODIES: list[Any] = [
    pytest.param(lambda k: _sign(SigningKey.generate(), _claims()).encode(), id="unknown-key"),
    pytest.param(_expired, id="expired"),
    pytest.param(lambda k: b"<html>maintenance</html>", id="malformed"),
    pytest.param(
        lambda k: _sign(k, _claims(iat=int(time.time()) - 20)).encode(), id="older-than-held"
    ),
]


@pytest.mark.parametrize("bad_body", BAD_BODIES)
def test_a_bad_list_is_refused_and_the_last_good_one_kept_until_max_stale(
    served: ListServer,
    store: Store,
    key_dir: KeyDirectory,
    issuer: Issuer,
    bad_body: Callable[[SigningKey], bytes],
) -> None:
    revoked = issuer.issue("SupportBot", ["read:orders"])
    revoke(store, revoked.claims["jti"])
    clock = Clock()
    keys = JwksFile(key_dir.jwks_path)
    source = RevocationListSource(served.location, keys, refresh=5, max_stale=20, clock=clock)
    verifier = Verifier(keys, revocations=source)
    good = issuer.issue("OtherBot", ["read:orders"]).token
    held = source.current
    assert held is not None

    served.body = lambda: bad_body(key_dir.signing_key())  # an empty list, or garbage
    for _ in range(3):
        clock.advance(5)
        verifier.verify(good)
        with pytest.raises(RevokedTokenError):
            verifier.verify(revoked.token)  # the bad list never replaced the good one
        assert source.current is held
    clock.advance(6)
    with pytest.raises(RevocationsUnavailableError):
        verifier.verify(good)


def test_no_list_yet_refuses_every_token_until_one_arrives(
    key_dir: KeyDirectory, issuer: Issuer, tmp_path: Path
) -> None:
    path = tmp_path / "revocations.jwt"
    clock = Clock()
    keys = JwksFile(key_dir.jwks_path)
    source = RevocationListSource(str(path), keys, clock=clock)  # the file does not exist yet
    verifier = Verifier(keys, revocations=source)
    token = issuer.issue("SupportBot", ["read:orders"]).token
    with pytest.raises(RevocationsUnavailableError, match="none fetched yet"):
        verifier.verify(token)
    path.write_text(
        build_revocation_list(
            open_store(f"sqlite:///{tmp_path / 's.db'}"), key_dir.signing_key(), issuer=ISS
        )
        + "\n"
    )
    clock.advance(rl.RETRY_INTERVAL)
    verifier.verify(token)


def test_a_file_list_is_reread_at_each_refresh(
    key_dir: KeyDirectory, issuer: Issuer, tmp_path: Path
) -> None:
    state = open_store(f"sqlite:///{tmp_path / 'state.db'}")
    path = tmp_path / "revocations.jwt"
    signing = key_dir.signing_key()
    path.write_text(build_revocation_list(state, signing, issuer=ISS))
    clock = Clock()
    keys = JwksFile(key_dir.jwks_path)
    verifier = Verifier(keys, revocations=RevocationListSource(str(path), keys, clock=clock))
    token = issuer.issue("SupportBot", ["read:orders"]).token
    verifier.verify(token)
    revoke(state, verifier.verify(token).jti)
    path.write_text(build_revocation_list(state, signing, issuer=ISS, now=time.time() + 1))
    clock.advance(rl.DEFAULT_REFRESH)
    with pytest.raises(RevokedTokenError):
        verifier.verify(token)


@pytest.mark.parametrize(
    "location",
    ["http://example.com/v1/revocations", "ftp://127.0.0.1/x", "unix://relative.sock"],
)
def test_a_location_it_does_not_fetch_from_is_a_config_error(
    key_dir: KeyDirectory, location: str
) -> None:
    with pytest.raises(ConfigError, match="revocation list URL"):
        RevocationListSource(location, JwksFile(key_dir.jwks_path))


def test_max_stale_below_the_refresh_interval_is_refused(key_dir: KeyDirectory) -> None:
    with pytest.raises(ConfigError, match="max_stale"):
        RevocationListSource("/nonexistent", JwksFile(key_dir.jwks_path), refresh=10, max_stale=5)


# -- the default verifier: AGENTSUDO_REVOCATIONS and AGENTSUDO_BROKER ----------------------


def test_the_default_verifier_uses_the_list_instead_of_the_state_file(
    served: ListServer, key_dir: KeyDirectory, issuer: Issuer, tmp_path: Path
) -> None:
    env = {"AGENTSUDO_JWKS": str(key_dir.jwks_path), "AGENTSUDO_REVOCATIONS": served.location}
    verifier = Verifier.from_settings(Settings.from_env(env))
    assert verifier.store is None
    assert isinstance(verifier.revocations, RevocationListSource)
    verifier.verify(issuer.issue("SupportBot", ["read:orders"]).token)
    once = issuer.issue("SupportBot", ["read:orders"], once=True).token
    with pytest.raises(StateRequiredError):
        verifier.verify(once)  # one-time tokens still need a store
    assert not (key_dir.path / STATE_FILE).exists()  # nothing written

    explicit = {**env, "AGENTSUDO_STORE": f"sqlite:///{tmp_path / 'state.db'}"}
    with_store = Verifier.from_settings(Settings.from_env(explicit))
    assert with_store.store is not None and with_store.revocations is not None
    with_store.verify(once)


def test_the_broker_address_gives_the_list_location() -> None:
    unix = Settings.from_env({"AGENTSUDO_BROKER": "unix:///run/agentsudo/broker.sock"})
    assert unix.revocations_source == "unix:///run/agentsudo/broker.sock"
    tcp = Settings.from_env({"AGENTSUDO_BROKER": "https://broker.example:8443/"})
    assert tcp.revocations_source == "https://broker.example:8443/v1/revocations"
    both = Settings.from_env(
        {"AGENTSUDO_BROKER": "https://broker.example", "AGENTSUDO_REVOCATIONS": "/srv/rl.jwt"}
    )
    assert both.revocations_source == "/srv/rl.jwt"
    assert Settings.from_env({}).revocations_source is None


@pytest.mark.parametrize(
    "value",
    ["unix://relative.sock", "ftp://host", "https://user:pw@host", "https://h/path", "host:80"],
)
def test_a_bad_broker_address_names_its_variable(value: str) -> None:
    with pytest.raises(ConfigError, match="^AGENTSUDO_BROKER: expected"):
        Settings.from_env({"AGENTSUDO_BROKER": value})


def test_a_broker_that_is_down_fails_closed_and_names_its_variable(
    key_dir: KeyDirectory, issuer: Issuer
) -> None:
    sock = Path(tempfile.mkdtemp(prefix="asrl-", dir="/tmp")) / "broker.sock"
    env = {"AGENTSUDO_JWKS": str(key_dir.jwks_path), "AGENTSUDO_BROKER": f"unix://{sock}"}
    verifier = Verifier.from_settings(Settings.from_env(env))
    with pytest.raises(RevocationsUnavailableError, match="none fetched yet"):
        verifier.verify(issuer.issue("SupportBot", ["read:orders"]).token)
    bad = {**env, "AGENTSUDO_BROKER": "http://example.com"}
    with pytest.raises(ConfigError, match="^AGENTSUDO_BROKER: revocation list URL"):
        Verifier.from_settings(Settings.from_env(bad))
    sock.parent.rmdir()


# -- a real FastAPI service with no store --------------------------------------------------


SERVICE = """
    from typing import Annotated

    from fastapi import Depends, FastAPI

    from agentsudo_tokens import Agent
    from agentsudo_tokens.integrations.fastapi import require_scope

    app = FastAPI()


    @app.get("/orders")
    async def orders(agent: Annotated[Agent, Depends(require_scope("read:orders"))]) -> dict:
        return {"read_by": agent.name}
"""


@pytest.mark.parametrize("kind", ["http", "unix"])
def test_a_fastapi_service_with_no_store_refuses_a_revoked_agent_within_the_refresh_interval(
    kind: str, tmp_path: Path, key_dir: KeyDirectory, issuer: Issuer
) -> None:
    state = open_store(
        f"sqlite:///{tmp_path / 'broker-state.db'}"
    )  # the broker's, not the service's
    signing = key_dir.signing_key()
    server = ListServer(kind, lambda: build_revocation_list(state, signing, issuer=ISS).encode())
    trusted = tmp_path / "trusted"  # what the service may read: the public keys, nothing writable
    trusted.mkdir()
    shutil.copy(key_dir.jwks_path, trusted / "jwks.json")
    workdir = tmp_path / "service"
    workdir.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("AGENTSUDO_")}
    env |= {
        "AGENTSUDO_JWKS": str(trusted / "jwks.json"),
        "AGENTSUDO_REVOCATIONS": server.location,
        "AGENTSUDO_REVOCATIONS_REFRESH": "1",
        "AGENTSUDO_REVOCATIONS_MAX_STALE": "3",
    }
    token = issuer.issue("SupportBot", ["read:orders"]).token
    try:
        with service(env, workdir, SERVICE) as url:
            trusted.chmod(0o555)
            workdir.chmod(0o555)
            assert ask(url, token)[0] == 200
            revoke_agent(state, "SupportBot", leeway=0)  # the kill switch, at the broker
            status, body = until(url, token, 401)
            assert status == 401, body
            assert "revoked" in body

            other = issuer.issue("OtherBot", ["read:orders"]).token
            assert ask(url, other)[0] == 200
            server.stop()  # the broker goes away: refused with a 503 once max_stale passes
            status, body = until(url, other, 503)
            assert status == 503, body
            assert "revocation list is unavailable" in body
            server.start()
            assert until(url, other, 200)[0] == 200
    finally:
        trusted.chmod(0o755)
        workdir.chmod(0o755)
        server.close()
    assert sorted(p.name for p in trusted.iterdir()) == ["jwks.json"]
    assert not (key_dir.path / STATE_FILE).exists()
