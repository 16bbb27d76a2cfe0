"""Limits and budgets at token exchange, on a real broker (issue 11 part 4).

The policy gives ``Orchestrator`` limits and a budget on ``write:refunds`` and
lets it pass ``write:refunds`` and ``read:*`` on. A child carries the parent's
limits that may apply to its scopes plus narrower ones asked; a looser one is
refused; its budget is carved out of the parent's remainder in the broker's
store (the parent's ``budgets`` drop by as much), a child asking more than is
left is refused with nothing debited, and two exchanges racing for the last
remainder: at most one wins.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
from broker_harness import Broker, init_keys
from test_broker_server import raw

from agentsudo_tokens import KeySet, Verifier
from agentsudo_tokens.errors import DelegationRefusedError, InvalidLimitError, LimitExceededError
from agentsudo_tokens.tokens.delegation import GRANT_TYPE
from agentsudo_tokens.tokens.limit_entry import UNIT

pytest.importorskip("uvicorn")

ME = os.getuid()
POLICY = f"""
[broker]
admins = ["uid:{ME}"]

[agents.Orchestrator]
scopes = ["read:*", "write:refunds"]
delegable = ["read:*", "write:refunds"]
max_depth = 2
callers = ["uid:{ME}"]
limits = ["write:refunds amount<=100 currency in USD,EUR"]
budgets = ["write:refunds amount=500 calls=20"]
"""
ACCESS = "urn:ietf:params:oauth:token-type:access_token"


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    init_keys(tmp_path)
    running = Broker(tmp_path, POLICY)
    yield running
    running.stop()


def _claims(broker: Broker, token: str) -> Any:
    return Verifier(KeySet.from_dict(broker.client.jwks()), audience="agentsudo").verify(token)


def _parent(broker: Broker) -> str:
    return str(broker.client.issue("Orchestrator", ttl=600)["token"])


def _left(broker: Broker, token: str) -> dict[str, int]:
    (balance,) = broker.client.budgets(token).values()
    return {name: balance.left(name) for name in balance.limits}


def test_a_child_carries_the_parents_limits_and_narrower_ones(broker: Broker) -> None:
    parent = _parent(broker)
    answer = broker.client.exchange(
        parent, actor="Refunder", scopes=["write:refunds"],
        limits=["write:refunds amount<=50"], budgets=["write:refunds amount=100 calls=5"],
    )  # fmt: skip
    child = _claims(broker, answer["access_token"])
    assert child.limits is not None
    assert answer["authorization_details"] == child.limits.claim()
    texts = [entry.text() for entry in child.limits]
    assert texts == [
        "write:refunds amount<=100 currency in USD,EUR",  # copied, without the budget
        "write:refunds amount<=50",
    ]
    assert [e.budget for e in child.limits][0] is None
    assert child.limits.entries[1].budget is not None
    assert child.limits.entries[1].budget.text() == "amount=100 calls=5"
    with pytest.raises(LimitExceededError, match="amount 60 exceeds the token's limit 50"):
        child.limits.check("write:refunds", {"amount": 60, "currency": "USD"})
    with pytest.raises(LimitExceededError, match="currency"):
        child.limits.check("write:refunds", {"amount": 6, "currency": "GBP"})
    # a child with read scopes alone: none of the parent's limits apply, no budget needed
    reader = broker.client.exchange(parent, actor="Reader", scopes=["read:orders"])
    assert _claims(broker, reader["access_token"]).limits is None
    assert "authorization_details" not in reader


def test_carving_drops_the_parents_remainder(broker: Broker) -> None:
    parent = _parent(broker)
    assert _left(broker, parent) == {"calls": 20, "sum:amount": 500 * UNIT}
    broker.client.exchange(
        parent, scopes=["write:refunds"], budgets=["write:refunds amount=120 calls=4"]
    )
    assert _left(broker, parent) == {"calls": 16, "sum:amount": 380 * UNIT}
    child = broker.client.exchange(
        parent, scopes=["write:refunds"], budgets=["write:refunds amount=380 calls=1"]
    )["access_token"]
    assert _left(broker, parent) == {"calls": 15, "sum:amount": 0}
    (grandchild_balance,) = broker.client.budgets(child).values()
    assert grandchild_balance.limits == {"calls": 1, "sum:amount": 380 * UNIT}
    audit = (broker.root / "keys" / "broker-audit.jsonl").read_text()
    events = [json.loads(line) for line in audit.splitlines()]
    carved = [e for e in events if e.get("outcome") == "exchanged" and e.get("carved")]
    assert carved[0]["carved"] == [
        {"entry": "0", "scope": "write:refunds", "amounts": "calls 4, amount 120"}
    ]


def test_more_than_is_left_is_refused_and_nothing_debited(broker: Broker) -> None:
    parent = _parent(broker)
    broker.client.exchange(
        parent, scopes=["write:refunds"], budgets=["write:refunds amount=450 calls=1"]
    )
    before = _left(broker, parent)
    with pytest.raises(DelegationRefusedError) as refused:
        broker.client.exchange(
            parent, scopes=["write:refunds"], budgets=["write:refunds amount=51 calls=1"]
        )
    assert refused.value.reason == "budget"
    assert "amount 51" in str(refused.value) and "amount 50 left of 500" in str(refused.value)
    assert _left(broker, parent) == before  # nothing debited, calls neither
    # a child's budget above the parent's whole is refused before the store is asked
    with pytest.raises(DelegationRefusedError, match="calls 21 exceeds the parent token's"):
        broker.client.exchange(
            parent, scopes=["write:refunds"], budgets=["write:refunds amount=1 calls=21"]
        )


def test_a_missing_budget_and_a_looser_limit_are_refused(broker: Broker) -> None:
    parent = _parent(broker)
    with pytest.raises(DelegationRefusedError) as refused:
        broker.client.exchange(parent, scopes=["write:refunds"])
    assert refused.value.reason == "budget"
    assert "--budget 'write:refunds amount=N calls=N'" in str(refused.value)
    with pytest.raises(DelegationRefusedError) as refused:
        broker.client.exchange(
            parent, scopes=["write:refunds"], limits=["write:refunds amount<=1000"],
            budgets=["write:refunds amount=1 calls=1"],
        )  # fmt: skip
    assert refused.value.reason == "limits"
    assert "amount<=1000 is looser than the parent token's write:refunds amount<=100" in str(
        refused.value
    )
    assert _left(broker, parent) == {"calls": 20, "sum:amount": 500 * UNIT}
    with pytest.raises(InvalidLimitError):  # the client checks the grammar before sending
        broker.client.exchange(parent, limits=["write:refunds amount<<1"])


def _post(broker: Broker, fields: dict[str, str]) -> tuple[int, dict[str, Any]]:
    body = urlencode(fields).encode()
    request = (
        f"POST /v1/oauth/token HTTP/1.1\r\nHost: broker\r\nContent-Type: "
        f"application/x-www-form-urlencoded\r\nContent-Length: {len(body)}\r\n"
        "Connection: close\r\n\r\n"
    ).encode() + body
    status, _, answer = raw(broker.socket, request)
    return status, json.loads(answer)


@pytest.mark.parametrize(
    "details",
    [
        "not json",
        "{}",
        "[]",
        '[{"type": "other", "scope": "write:refunds"}]',
        '[{"type": "agentsudo_limits", "scope": "write:refunds",'
        ' "constraints": [{"arg": "a", "zz": 1}]}]',
        '[{"type": "agentsudo_limits", "scope": "write:refunds", "budget": {"calls": -1}}]',
        "[" * 5000 + "]" * 5000,
        '[{"type": "agentsudo_limits", "scope": "write:refunds", "budget": {"calls": NaN}}]',
    ],
)
def test_malformed_authorization_details_are_a_400(broker: Broker, details: str) -> None:
    parent = _parent(broker)
    status, body = _post(
        broker,
        {
            "grant_type": GRANT_TYPE,
            "subject_token": parent,
            "subject_token_type": ACCESS,
            "authorization_details": details,
        },
    )
    assert status == 400, body
    assert body["error"] in ("invalid_authorization_details", "invalid_request")
    assert "\n" not in body["detail"]
    assert _left(broker, parent) == {"calls": 20, "sum:amount": 500 * UNIT}


def _race(broker: Broker, parent: str, results: list[str], start: threading.Barrier) -> None:
    start.wait()
    try:
        broker.client.exchange(
            parent, scopes=["write:refunds"], budgets=["write:refunds amount=100 calls=1"]
        )
        results.append("won")
    except DelegationRefusedError as exc:
        results.append("refused" if exc.reason == "budget" else str(exc))


def test_two_exchanges_racing_for_the_last_remainder_one_wins(broker: Broker) -> None:
    for _ in range(5):
        parent = _parent(broker)
        broker.client.exchange(
            parent, scopes=["write:refunds"], budgets=["write:refunds amount=400 calls=1"]
        )
        results: list[str] = []
        start = threading.Barrier(2)
        threads = [
            threading.Thread(target=_race, args=(broker, parent, results, start)) for _ in range(2)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert sorted(results) == ["refused", "won"]
        assert _left(broker, parent)["sum:amount"] == 0


def test_a_childs_budget_is_carved_further_by_its_own_child(broker: Broker) -> None:
    parent = _parent(broker)
    child = broker.client.exchange(
        parent,
        actor="Helper",
        scopes=["write:refunds"],
        budgets=["write:refunds amount=100 calls=10"],
    )["access_token"]
    grandchild = broker.client.exchange(
        child, actor="Worker", scopes=["write:refunds"], budgets=["write:refunds calls=3 amount=30"]
    )["access_token"]
    left = _left(broker, child)
    assert left == {"calls": 7, "sum:amount": 70 * UNIT}
    claims = _claims(broker, grandchild)
    assert claims.chain == ("Orchestrator", "Helper", "Worker")
    assert [e.text() for e in claims.limits][0] == "write:refunds amount<=100 currency in USD,EUR"
