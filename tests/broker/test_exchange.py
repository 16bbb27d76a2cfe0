"""Token exchange at a real broker (issue 10 parts 1 and 4): RFC 8693 over the Unix socket.

``agentsudo serve`` runs with a policy that lets ``Orchestrator`` pass ``read:*``
on, two exchanges deep; each test exchanges tokens with ``BrokerClient`` or raw
form posts, verifies what comes back with the broker's JWKS alone, and reads
the broker's audit for the event of every exchange and every refusal.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
from test_broker_server import Broker, raw

from agentsudo_tokens import KeySet, Verifier
from agentsudo_tokens.errors import (
    DelegationRefusedError,
    ExpiredTokenError,
    InvalidTokenError,
    RevokedTokenError,
    UnknownKeyError,
)
from agentsudo_tokens.tokens.delegation import GRANT_TYPE

pytest.importorskip("uvicorn")

ME = os.getuid()
POLICY = f"""
[broker]
admins = ["uid:{ME}"]

[agents.Orchestrator]
scopes = ["read:*", "write:refunds"]
ask = ["delete:customer"]
delegable = ["read:*"]
max_depth = 2
max_ttl = "1h"
callers = ["uid:{ME}"]
audiences = ["agentsudo", "billing"]

[agents.Remote]
scopes = ["read:orders"]
delegable = true
callers = ["uid:{ME}"]
audiences = ["agentsudo-broker"]

[agents.Solo]
scopes = ["read:orders"]
callers = ["uid:{ME}"]
"""
ACCESS = "urn:ietf:params:oauth:token-type:access_token"


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    from installed_cli import sh

    assert sh("keys", "init", "--keys-dir", str(tmp_path / "keys"), cwd=tmp_path).returncode == 0
    running = Broker(tmp_path, POLICY)
    yield running
    running.stop()


def _verifier(broker: Broker, audience: str = "agentsudo") -> Verifier:
    return Verifier(KeySet.from_dict(broker.client.jwks()), audience=audience)


def _root(broker: Broker, **asked: Any) -> str:
    options: dict[str, Any] = {"scopes": ["read:*", "write:refunds"], "ttl": 600}
    options.update(asked)
    return str(broker.client.issue("Orchestrator", **options)["token"])


def _audit(broker: Broker) -> list[dict[str, Any]]:
    path = broker.root / "keys" / "broker-audit.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _post(broker: Broker, fields: Any, content_type: str = "application/x-www-form-urlencoded"):
    body = urlencode(fields, doseq=True).encode() if not isinstance(fields, bytes) else fields
    request = (
        f"POST /v1/oauth/token HTTP/1.1\r\nHost: broker\r\nContent-Type: {content_type}\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    ).encode() + body
    status, headers, answer = raw(broker.socket, request)
    return status, headers, json.loads(answer)


def test_an_exchange_answers_as_rfc_8693_says(broker: Broker) -> None:
    parent = _root(broker)
    status, headers, body = _post(
        broker,
        {
            "grant_type": GRANT_TYPE,
            "subject_token": parent,
            "subject_token_type": ACCESS,
            "scope": "read:orders",
            "audience": "billing",
            "actor": "Summarizer",
            "expires_in": "300",
        },
    )
    assert status == 200, body
    assert headers["cache-control"] == "no-store"
    assert set(body) == {"access_token", "issued_token_type", "token_type", "expires_in", "scope"}
    assert body["issued_token_type"] == ACCESS
    assert body["token_type"] == "Bearer"
    assert body["expires_in"] == 300
    assert body["scope"] == "read:orders"
    child = _verifier(broker, "billing").verify(body["access_token"])
    root = _verifier(broker).verify(parent)
    assert child.subject == "Orchestrator" and child.agent == "Summarizer"
    assert child.chain == ("Orchestrator", "Summarizer")
    assert dict(child.claims)["act"] == {"sub": "Summarizer"}
    assert dict(child.claims)["ancestors"] == [root.jti]
    assert child.expires_at <= root.expires_at
    event = [e for e in _audit(broker) if e["outcome"] == "exchanged"][-1]
    assert event["chain"] == ["Orchestrator", "Summarizer"]
    assert event["agent"] == "Summarizer" and event["parent_jti"] == root.jti
    assert event["jti"] == child.jti and event["scopes"] == ["read:orders"]
    assert event["caller"] == f"uid:{ME}"
    assert parent not in json.dumps(_audit(broker))
    assert body["access_token"] not in json.dumps(_audit(broker))


def test_defaults_the_parent_scopes_audience_and_agent(broker: Broker) -> None:
    parent = _root(broker, scopes=["read:*"])
    answer = broker.client.exchange(parent)
    child = _verifier(broker).verify(answer["access_token"])
    assert child.scopes.scopes == ("read:*",)
    assert child.agent == "Orchestrator"  # a narrowed copy of itself, still one exchange deep
    assert child.chain == ("Orchestrator", "Orchestrator")
    assert answer["expires_in"] <= 600


def test_a_chain_two_deep_then_refused_at_three(broker: Broker) -> None:
    first = broker.client.exchange(_root(broker), actor="Summarizer", scopes=["read:*"])
    second = broker.client.exchange(
        first["access_token"], actor="Helper", scopes=["read:orders"], ttl=60
    )
    child = _verifier(broker).verify(second["access_token"])
    assert child.chain == ("Orchestrator", "Summarizer", "Helper")
    with pytest.raises(DelegationRefusedError) as refused:
        broker.client.exchange(second["access_token"], actor="Deeper")
    assert refused.value.reason == "depth"
    assert "3 deep" in str(refused.value) and "allows 2" in str(refused.value)
    event = [e for e in _audit(broker) if e["outcome"] == "broker_refused"][-1]
    assert event["action"] == "exchange"
    assert event["chain"] == ["Orchestrator", "Summarizer", "Helper"]
    assert event["asked"] == {"actor": "Deeper"}


@pytest.mark.parametrize(
    ("asked", "reason", "error"),
    [
        ({"scopes": ["delete:customer"]}, "scope", "invalid_scope"),
        ({"scopes": ["read:**"]}, "scope", "invalid_scope"),  # read:* does not cover read:a:b
        ({"scopes": ["write:refunds"]}, "not_delegable", "invalid_scope"),  # held, not passable
        ({"audience": ["payments"]}, "audience", "invalid_target"),
        ({"ttl": 601}, "ttl", "invalid_request"),  # longer than the parent has left
    ],
)
def test_more_than_the_parent_or_the_policy_is_refused(
    broker: Broker, asked: dict[str, Any], reason: str, error: str
) -> None:
    parent = _root(broker)
    asked = {"scopes": ["read:orders"], **asked}
    with pytest.raises(DelegationRefusedError) as refused:
        broker.client.exchange(parent, actor="Summarizer", **asked)
    assert refused.value.reason == reason
    assert "\n" not in str(refused.value)
    form = {"grant_type": GRANT_TYPE, "subject_token": parent, "subject_token_type": ACCESS}
    form["scope"] = " ".join(asked["scopes"])
    if "audience" in asked:
        form["audience"] = asked["audience"][0]
    if "ttl" in asked:
        form["expires_in"] = str(asked["ttl"])
    status, _, body = _post(broker, form)
    assert status == 400
    assert body["error"] == error
    assert body["type"] == "urn:agentsudo:problem:delegation-refused"
    assert body["reason"] == reason and body["agentsudo_error"] == "DelegationRefusedError"
    assert body["error_description"].isascii()


def test_a_grant_usable_but_not_delegable(broker: Broker) -> None:
    parent = str(broker.client.issue("Solo")["token"])
    assert _verifier(broker).verify(parent).scopes.allows("read:orders")  # usable
    with pytest.raises(DelegationRefusedError) as refused:
        broker.client.exchange(parent, actor="Helper")
    assert refused.value.reason == "not_delegable"
    assert "'Solo'" in str(refused.value)


def test_a_one_time_parent_is_refused_and_not_consumed(broker: Broker) -> None:
    parent = str(broker.client.issue("Orchestrator", scopes=["read:*"], once=True)["token"])
    with pytest.raises(DelegationRefusedError) as refused:
        broker.client.exchange(parent, actor="Helper")
    assert refused.value.reason == "one_time"


def test_a_parent_bound_to_a_key_is_refused(broker: Broker) -> None:
    """A copy of a DPoP-bound token must not buy an unbound child: it is not exchanged."""
    from agentsudo_tokens.tokens.dpop import DPoPKey

    bound = broker.client.issue("Orchestrator", scopes=["read:*"], dpop_key=DPoPKey.generate())[
        "token"
    ]
    with pytest.raises(DelegationRefusedError) as refused:
        broker.client.exchange(bound, actor="Summarizer", scopes=["read:orders"])
    assert refused.value.reason == "bound" and "bound to a key" in str(refused.value)


def test_a_revoked_parent_is_refused(broker: Broker) -> None:
    parent = _root(broker)
    broker.client.revoke(token=parent)
    with pytest.raises(RevokedTokenError):
        broker.client.exchange(parent, actor="Helper")


def test_a_child_of_a_revoked_ancestor_cannot_exchange_either(broker: Broker) -> None:
    parent = _root(broker)
    child = broker.client.exchange(parent, actor="Summarizer", scopes=["read:*"])
    broker.client.revoke(token=parent)
    with pytest.raises(RevokedTokenError, match="ancestor"):
        broker.client.exchange(child["access_token"], actor="Helper")


def test_a_killed_agent_gets_no_new_child(broker: Broker) -> None:
    parent = _root(broker, scopes=["read:*"])
    broker.client.revoke(agent="Helper")
    with pytest.raises(DelegationRefusedError) as refused:
        broker.client.exchange(parent, actor="Helper")
    assert refused.value.reason == "revoked_actor"


def test_an_expired_parent_is_refused(broker: Broker) -> None:
    parent = _root(broker, ttl=1)
    time.sleep(2.1)  # past exp, within the verifier's leeway: nothing left to delegate
    with pytest.raises(ExpiredTokenError):
        broker.client.exchange(parent, actor="Helper")


def test_a_broker_credential_is_not_exchanged(broker: Broker) -> None:
    credential = str(broker.client.issue("Remote")["token"])
    with pytest.raises(DelegationRefusedError) as refused:
        broker.client.exchange(credential, actor="Helper")
    assert refused.value.reason == "broker_credential"


def test_a_token_of_another_issuer_key_is_refused(broker: Broker, tmp_path: Path) -> None:
    from agentsudo_tokens import Issuer, KeyDirectory

    other = Issuer(KeyDirectory.init(tmp_path / "other").signing_key())
    forged = other.issue("Orchestrator", ["read:*"]).token
    with pytest.raises(UnknownKeyError):
        broker.client.exchange(forged, actor="Helper")
    status, _, body = _post(
        broker, {"grant_type": GRANT_TYPE, "subject_token": forged, "subject_token_type": ACCESS}
    )
    assert status == 400 and body["error"] == "invalid_request"
    assert body["type"] == "urn:agentsudo:problem:invalid-token"


def test_garbage_as_the_subject_token(broker: Broker) -> None:
    with pytest.raises(InvalidTokenError):
        broker.client.exchange("not.a.token", actor="Helper")


@pytest.mark.parametrize(
    ("fields", "error", "words"),
    [
        ({}, "invalid_request", "grant_type is missing"),
        ({"grant_type": "client_credentials"}, "unsupported_grant_type", "only urn"),
        ({"grant_type": GRANT_TYPE}, "invalid_request", "subject_token and"),
        (
            {"grant_type": GRANT_TYPE, "subject_token": "x", "subject_token_type": "saml2"},
            "invalid_request",
            "subject_token_type",
        ),
        ({"requested_token_type": "urn:x"}, "invalid_request", "requested_token_type"),
        ({"resource": "https://api.example"}, "invalid_target", "resource"),
        ({"actor_token": "x", "actor_token_type": ACCESS}, "invalid_request", "actor_token"),
        ({"scope": "read:orders  write:x"}, "invalid_scope", "scope"),
        ({"scope": "read:ord?ers"}, "invalid_scope", "scope"),
        ({"actor": "Evil Bot"}, "invalid_request", "actor"),
        ({"actor": "A\x1b[31m"}, "invalid_request", "printable"),
        ({"expires_in": "-5"}, "invalid_request", "expires_in"),
        ({"expires_in": "1e9"}, "invalid_request", "expires_in"),
        ({"scope": ["read:a", "read:b"]}, "invalid_request", "2 times"),
    ],
)
def test_malformed_requests(broker: Broker, fields: dict[str, Any], error: str, words: str) -> None:
    form: dict[str, Any] = dict(fields)
    if fields and "grant_type" not in fields:
        form = {
            "grant_type": GRANT_TYPE,
            "subject_token": "a.b.c",
            "subject_token_type": ACCESS,
            **fields,
        }
    status, headers, body = _post(broker, form)
    assert status == 400, body
    assert body["error"] == error
    assert words in body["error_description"]
    assert body["status"] == 400 and body["type"].startswith("urn:agentsudo:problem:")
    assert headers["content-type"].startswith("application/json")


@pytest.mark.parametrize(
    ("body", "content_type", "status"),
    [
        (b'{"grant_type": "x"}', "application/json", 400),
        (b"grant_type=%ff%fe", "application/x-www-form-urlencoded", 400),
        (b"a" * (64 * 1024 + 1), "application/x-www-form-urlencoded", 413),
        (b"&".join(b"f%d=1" % i for i in range(100)), "application/x-www-form-urlencoded", 400),
    ],
)
def test_not_a_form(broker: Broker, body: bytes, content_type: str, status: int) -> None:
    got, _, answer = _post(broker, body, content_type)
    assert got == status
    assert answer["error"] == "invalid_request"


def test_the_broker_still_serves_after_hostile_requests(broker: Broker) -> None:
    for junk in (b"\x00" * 100, b"grant_type=" + b"%" * 1000, b"=" * 500):
        _post(broker, junk)
    assert broker.client.health() == {"status": "ok"}
    assert broker.client.exchange(_root(broker), actor="Helper", scopes=["read:orders"])


def _tcp_broker(root: Path, *extra: str) -> tuple[Broker, int]:
    import broker_harness

    broker_harness.init_keys(root)
    running = broker_harness.Broker(root, POLICY, "--listen", "127.0.0.1:0", *extra)
    assert running.process.stderr is not None
    line = running.process.stderr.readline()
    assert "listening on http://" in line, line
    return running, int(line.strip().rpartition(":")[2])  # type: ignore[return-value]


def test_over_tcp_the_token_is_the_credential(tmp_path: Path) -> None:
    from agentsudo_tokens.broker.client import BrokerClient

    running, port = _tcp_broker(tmp_path / "b")
    try:
        parent = str(running.client.issue("Orchestrator", scopes=["read:*"])["token"])
        remote = BrokerClient(f"http://127.0.0.1:{port}")  # no broker credential
        answer = remote.exchange(parent, actor="Summarizer", scopes=["read:orders"])
        assert _verifier(running).verify(answer["access_token"]).agent == "Summarizer"
        with pytest.raises(InvalidTokenError):
            remote.exchange(parent[:-4] + "AAAA", actor="Summarizer")
        with pytest.raises(InvalidTokenError, match="credential"):
            remote.issue("Orchestrator")  # the other endpoints still want a credential
    finally:
        running.stop()


def test_exchanges_are_rate_limited_per_caller(tmp_path: Path) -> None:
    running, _ = _tcp_broker(tmp_path / "b", "--issue-burst", "3", "--issue-rate", "0.01")
    try:
        parent = str(running.client.issue("Orchestrator", scopes=["read:*"])["token"])
        form = {"grant_type": GRANT_TYPE, "subject_token": parent, "subject_token_type": ACCESS}
        statuses = [_post(running, form)[0] for _ in range(5)]
        assert statuses[:2] == [200, 200] and statuses[-1] == 429  # the issue took one
        status, headers, body = _post(running, form)
        assert status == 429 and int(headers["retry-after"]) >= 1
        assert body["type"] == "urn:agentsudo:problem:too-many-requests"
    finally:
        running.stop()


def test_a_sub_agent_may_not_ask_a_human_for_its_roots_ask_scope(broker: Broker) -> None:
    """Delegation narrows what a sub-agent may ask a human for (``delegable``): under a policy,
    nothing (``tests/broker/test_elevation_delegated.py`` has the rest)."""
    from agentsudo_tokens.errors import PermissionDeniedError
    from agentsudo_tokens.state.approvals import canonical_arguments

    child = broker.client.exchange(_root(broker), actor="Summarizer", scopes=["read:orders"])
    body = {
        "token": child["access_token"],
        "scope": "delete:customer",  # an ask scope of the root agent's policy
        "function": "app.delete_customer",
        "arguments": canonical_arguments({"customer_id": "c-42"}),
    }
    with pytest.raises(PermissionDeniedError, match="delegated token"):
        broker.client.request("POST", "/v1/elevations", body)
    assert broker.client.approvals() == []
    event = _audit(broker)[-1]
    assert event["outcome"] == "broker_refused" and event["action"] == "elevation"


def test_names_kept_in_two_places_agree() -> None:
    import inspect

    from agentsudo_tokens.broker import app, exchange
    from agentsudo_tokens.broker.client import BrokerClient

    assert exchange._BROKER_AUDIENCE == app.BROKER_AUDIENCE
    assert f'"{exchange.EXCHANGE_PATH}"' in inspect.getsource(BrokerClient.exchange)


def test_an_exchanged_token_is_listed_among_the_live_tokens(broker: Broker) -> None:
    from agentsudo_tokens.broker.console.minted import live_tokens
    from agentsudo_tokens.state import open_store

    parent = _root(broker)
    status, _, body = _post(
        broker,
        {
            "grant_type": GRANT_TYPE,
            "subject_token": parent,
            "subject_token_type": ACCESS,
            "scope": "read:orders",
            "actor": "Summarizer",
        },
    )
    assert status == 200, body
    child = _verifier(broker).verify(body["access_token"])
    store = open_store(f"sqlite:///{broker.root / 'keys' / 'agentsudo-state.db'}")
    listed = {token.jti for tokens in live_tokens(store).values() for token in tokens}
    assert {child.jti, _verifier(broker).verify(parent).jti} <= listed
