"""Budgets debited at the broker (issue 11 part 3): ``POST /v1/budgets/spend``, ``GET
/v1/budgets/<jti>``, and ``BrokerClient.spend``/``budgets``, on a real broker's socket.

The cost comes from the token's own limits, never the client's numbers; a
revoked token spends nothing; bad input is a 400 problem, never a 500; the
budget's holder and the broker's admins may read it, nobody else.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from broker_harness import Broker, init_keys
from test_broker_server import raw

from agentsudo_tokens import Issuer, KeyDirectory
from agentsudo_tokens.errors import (
    AgentSudoError,
    BudgetExhaustedError,
    InvalidTokenError,
    PermissionDeniedError,
    RevokedTokenError,
)
from agentsudo_tokens.tokens.limit_entry import UNIT
from agentsudo_tokens.tokens.verifier import decode_unverified

pytest.importorskip("uvicorn")

ME = os.getuid()
POLICY = f"""
[broker]
admins = ["uid:{ME}"]

[agents.SupportBot]
scopes = ["read:orders", "write:refunds"]
callers = ["uid:{ME}"]
limits = ["write:refunds amount<=100"]
budgets = ["write:refunds amount=500 calls=20"]

[agents.Plain]
scopes = ["read:orders"]
callers = ["uid:{ME}"]
"""


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    init_keys(tmp_path)
    running = Broker(tmp_path, POLICY)
    yield running
    running.stop()


def _token(broker: Broker, agent: str = "SupportBot") -> str:
    return str(broker.client.issue(agent)["token"])


def _send(broker: Broker, method: str, path: str, body: bytes = b"", **headers: str) -> Any:
    head = "".join(f"{name.replace('_', '-')}: {value}\r\n" for name, value in headers.items())
    request = (
        f"{method} {path} HTTP/1.1\r\nHost: broker\r\n{head}Content-Length: {len(body)}\r\n"
        "Connection: close\r\n\r\n"
    ).encode() + body
    status, answer_headers, answer = raw(broker.socket, request)
    return status, answer_headers, json.loads(answer)


def test_spend_debits_what_the_tokens_limits_say(broker: Broker) -> None:
    token = _token(broker)
    balances = broker.client.spend(token, "write:refunds", {"amount": 50})
    (balance,) = balances.values()
    assert balance.limits == {"calls": 20, "sum:amount": 500 * UNIT}
    assert balance.spent == {"calls": 1, "sum:amount": 50 * UNIT}
    broker.client.spend(token, "write:refunds", {"amount": 12.25, "other": 9})
    assert broker.client.budgets(token)["0"].left("sum:amount") == int(437.75 * UNIT)
    # a scope no budget applies to costs nothing and says so
    assert broker.client.spend(token, "read:orders", {}) == {}
    assert broker.client.spend(_token(broker, "Plain"), "read:orders", {"amount": 1}) == {}


def test_the_holder_and_an_admin_read_the_budget(broker: Broker) -> None:
    token = _token(broker)
    jti = decode_unverified(token).claims["jti"]
    report = broker.client.budget_report(token)  # untouched: shown whole, with its budget
    assert report["balances"]["0"]["budget"] == "amount=500 calls=20"
    assert report["balances"]["0"]["left"] == {"calls": 20, "sum:amount": 500 * UNIT}
    assert broker.client.budgets(jti) == {}  # the admin sees what was spent: nothing yet
    broker.client.spend(token, "write:refunds", {"amount": 5})
    assert broker.client.budgets(jti)["0"].spent == {"calls": 1, "sum:amount": 5 * UNIT}
    # another token's holder is no admin and not its holder: over the socket the uid decides,
    # so a token presented for someone else's jti falls back to the caller (an admin here)
    other = _token(broker)
    status, _, body = _send(broker, "GET", f"/v1/budgets/{jti}", authorization=f"Bearer {other}")
    assert status == 200 and body["balances"]["0"]["spent"]["calls"] == 1


def test_an_exhausted_budget_is_a_403_with_one_line(broker: Broker) -> None:
    token = _token(broker)
    for _ in range(4):
        broker.client.spend(token, "write:refunds", {"amount": 100})
    with pytest.raises(BudgetExhaustedError) as refused:
        broker.client.spend(token, "write:refunds", {"amount": 100.5})
    message = str(refused.value)
    # worded as a guard debiting its own store words it
    assert message.endswith(
        "write:refunds budget: amount 100.5 would pass the token's total 500 (100 left)"
    )
    assert refused.value.argument == "amount"
    assert refused.value.limit == "write:refunds amount=500"
    assert broker.client.budgets(token)["0"].spent["calls"] == 4  # nothing more was debited
    broker.client.spend(token, "write:refunds", {"amount": 100})  # exactly what is left
    with pytest.raises(BudgetExhaustedError, match="amount 0.000001 would pass"):
        broker.client.spend(token, "write:refunds", {"amount": 0.000001})
    # the client's word about limits is never asked: a missing budgeted argument is refused
    with pytest.raises(BudgetExhaustedError, match="amount is missing"):
        broker.client.spend(token, "write:refunds", {})
    with pytest.raises(BudgetExhaustedError, match="not a number >= 0"):
        broker.client.spend(token, "write:refunds", {"amount": -5})


def test_calls_run_out_too(broker: Broker) -> None:
    token = _token(broker)
    for _ in range(20):
        broker.client.spend(token, "write:refunds", {"amount": 0})
    with pytest.raises(BudgetExhaustedError, match="the token's 20 calls are used"):
        broker.client.spend(token, "write:refunds", {"amount": 0})


def test_a_revoked_or_forged_token_spends_nothing(broker: Broker) -> None:
    token = _token(broker)
    broker.client.spend(token, "write:refunds", {"amount": 1})
    broker.client.revoke(token=token)
    with pytest.raises(RevokedTokenError):
        broker.client.spend(token, "write:refunds", {"amount": 1})
    stranger = Issuer(KeyDirectory.init(broker.root / "other").signing_key())
    forged = stranger.issue("SupportBot", ["write:refunds"]).token
    with pytest.raises(InvalidTokenError):
        broker.client.spend(forged, "write:refunds", {"amount": 1})
    credential = Issuer(KeyDirectory(broker.root / "keys").signing_key()).issue(
        "launcher", ["broker:issue"], audience="agentsudo-broker"
    )
    with pytest.raises(PermissionDeniedError, match="broker credential"):
        broker.client.spend(credential.token, "write:refunds", {"amount": 1})


@pytest.mark.parametrize(
    ("body", "status"),
    [
        (b"not json", 400),
        (b"[]", 400),
        (b'{"arguments": {}}', 400),  # no scope
        (b'{"scope": 5, "arguments": {}}', 400),
        (b'{"scope": "write:refunds", "arguments": []}', 400),
        (b'{"scope": "write:refunds", "arguments": {"amount": "50"}}', 400),
        (b'{"scope": "write:refunds", "arguments": {"amount": true}}', 400),
        (b'{"scope": "write:refunds", "arguments": {"amount": NaN}}', 400),
        (b'{"scope": "write:refunds", "arguments": {"amount": null}}', 400),
        (b'{"scope": "write:refunds", "arguments": {"bad name": 1}}', 400),
        (b'{"scope": "write:*", "arguments": {"amount": 1}}', 400),  # not a concrete scope
        (b'{"scope": "write:refunds", "arguments": {"amount": 1}, "extra": 1}', 400),
        (b'{"scope": "write:refunds", "arguments": {"amount": 1}, "token": 7}', 400),
        (b'{"scope": "write:refunds", "arguments": {"amount": 1}, "token": "x.y.z"}', 400),
        (b'{"scope": "write:refunds", "arguments": {"amount": 1e400}}', 400),
        (
            b'{"scope": "write:refunds", "arguments": {'
            + b",".join(b'"a%d": 1' % i for i in range(65))
            + b"}}",
            400,
        ),  # fmt: skip
        (b"[" * 100000 + b"]" * 100000, 413),
    ],
)
def test_malformed_spends_are_4xx_never_500(broker: Broker, body: bytes, status: int) -> None:
    token = _token(broker)
    found, headers, answer = _send(
        broker, "POST", "/v1/budgets/spend", body,
        content_type="application/json", authorization=f"Bearer {token}",
    )  # fmt: skip
    assert found == status, answer
    assert headers["content-type"] == "application/problem+json"
    assert "\n" not in answer["detail"]
    assert broker.client.budgets(token)["0"].spent == {"calls": 0, "sum:amount": 0}


def test_the_token_in_the_body_and_no_token(broker: Broker) -> None:
    token = _token(broker)
    body = json.dumps({"token": token, "scope": "write:refunds", "arguments": {"amount": 3}})
    status, _, answer = _send(
        broker, "POST", "/v1/budgets/spend", body.encode(), content_type="application/json"
    )
    assert status == 200, answer
    assert answer["balances"]["0"]["spent"] == {"calls": 1, "sum:amount": 3 * UNIT}
    bare = json.dumps({"scope": "write:refunds", "arguments": {"amount": 3}}).encode()
    status, _, answer = _send(
        broker, "POST", "/v1/budgets/spend", bare, content_type="application/json"
    )
    assert status == 401
    status, _, answer = _send(
        broker, "POST", "/v1/budgets/spend", body.encode(), content_type="application/json",
        authorization=f"Bearer {_token(broker)}",
    )  # fmt: skip
    assert status == 400 and "two different tokens" in answer["detail"]


def test_reading_a_budget_needs_its_holder_or_an_admin(tmp_path: Path) -> None:
    init_keys(tmp_path)
    policy = POLICY.replace(f'admins = ["uid:{ME}"]', 'admins = ["uid:4242"]')
    broker = Broker(tmp_path, policy)
    try:
        token = _token(broker)
        jti = decode_unverified(token).claims["jti"]
        assert broker.client.budgets(token)["0"].spent == {"calls": 0, "sum:amount": 0}
        with pytest.raises(PermissionDeniedError, match="not an admin"):
            broker.client.budgets(jti)
        for bad in ("x" * 300, "a%3Ab"):
            status, _, answer = _send(broker, "GET", f"/v1/budgets/{bad}")
            assert status in (400, 403), answer
    finally:
        broker.stop()


def test_a_bound_token_spends_only_with_a_proof_of_its_key(broker: Broker) -> None:
    from agentsudo_tokens.tokens.dpop import DPoPKey

    key = DPoPKey.generate()
    token = str(broker.client.issue("SupportBot", dpop_key=key)["token"])
    (balance,) = broker.client.spend(token, "write:refunds", {"amount": 5}, dpop_key=key).values()
    assert balance.spent == {"calls": 1, "sum:amount": 5 * UNIT}
    with pytest.raises(InvalidTokenError):  # a copy of the token without the key
        broker.client.spend(token, "write:refunds", {"amount": 5})
    with pytest.raises(InvalidTokenError):  # a proof of another key
        broker.client.spend(token, "write:refunds", {"amount": 5}, dpop_key=DPoPKey.generate())
    assert broker.client.budgets(decode_unverified(token).claims["jti"])["0"].spent["calls"] == 1


def test_spends_are_rate_limited_in_their_own_bucket(tmp_path: Path) -> None:
    init_keys(tmp_path)
    broker = Broker(tmp_path, POLICY, "--issue-burst", "2", "--issue-rate", "0.001")
    try:
        token = _token(broker)  # one of the two issuances
        for _ in range(8):  # four times the issuance burst
            broker.client.spend(token, "write:refunds", {"amount": 1})
        body = json.dumps({"scope": "write:refunds", "arguments": {"amount": 1}}).encode()
        status, headers, answer = _send(
            broker, "POST", "/v1/budgets/spend", body,
            content_type="application/json", authorization=f"Bearer {token}",
        )  # fmt: skip
        assert status == 429, answer
        assert int(headers["retry-after"]) >= 1 and "rate limit of budgets" in answer["detail"]
        assert broker.client.issue("SupportBot")["token"]  # issuance has its own bucket
        with pytest.raises(AgentSudoError, match="over the rate limit of budgets"):
            broker.client.budgets(token)  # reading counts in the same bucket
    finally:
        broker.stop()
