"""FastAPI over real HTTP: ``require_scope`` and ``@sudo`` behind the middleware check the
limits a token carries on the request's arguments (path, query, JSON body)."""

import contextlib
import json
import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Annotated, Any

import pytest
import uvicorn
from fastapi import Depends, FastAPI
from pydantic import BaseModel

from agentsudo_tokens import Agent, Issuer, Verifier, sudo
from agentsudo_tokens.integrations.fastapi import AgentSudoMiddleware, require_scope
from agentsudo_tokens.tokens.limits import Limits

SECRET = "read:secret-payroll"
LIMITS = ["write:refunds amount<=100 currency in USD,EUR", "read:orders limit<=50"]


class Refund(BaseModel):
    order_id: str
    amount: float
    currency: str = "USD"


@sudo(scope="write:refunds")
def issue_refund(order_id: str, amount: float, currency: str = "USD") -> str:
    return f"{amount} {currency}"


def build(verifier: Verifier) -> FastAPI:
    app = FastAPI()
    refunds = require_scope("write:refunds", verifier=verifier)
    orders = require_scope("read:orders", verifier=verifier)

    @app.post("/refunds")
    def refund(body: Refund, agent: Annotated[Agent, Depends(refunds)]) -> dict[str, Any]:
        return {"amount": body.amount, "currency": body.currency}

    @app.post("/refunds/{amount}")
    def refund_path(amount: int, currency: str, agent: Annotated[Agent, Depends(refunds)]) -> int:
        return amount

    @app.get("/orders")
    def list_orders(agent: Annotated[Agent, Depends(orders)], limit: int = 10) -> int:
        return limit

    @app.get("/orders-text")
    def list_orders_text(limit: str, agent: Annotated[Agent, Depends(orders)]) -> str:
        return limit

    return app


def build_sudo(verifier: Verifier) -> FastAPI:
    app = FastAPI()
    app.add_middleware(AgentSudoMiddleware, verifier=verifier)

    @app.post("/refunds")
    def refund(body: Refund) -> str:
        return issue_refund(body.order_id, body.amount, body.currency)

    return app


@contextlib.contextmanager
def serve(app: FastAPI) -> Iterator[str]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the service did not start"
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


def call(
    url: str, token: str, method: str = "GET", body: bytes | None = None
) -> tuple[int, dict[str, Any], dict[str, str]]:
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    request = urllib.request.Request(url, data=body, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            return answer.status, json.loads(answer.read()), dict(answer.headers)
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, json.loads(exc.read()), dict(exc.headers)


def post(url: str, token: str, fields: Any) -> tuple[int, Any, dict[str, str]]:
    return call(url, token, "POST", json.dumps(fields).encode())


@pytest.fixture
def token(issuer: Issuer) -> str:
    grants = ["write:refunds", "read:orders", SECRET]
    return issuer.issue("SupportBot", grants, limits=Limits.parse(LIMITS)).token


@pytest.fixture
def url(verifier: Verifier) -> Iterator[str]:
    with serve(build(verifier)) as base:
        yield base


def test_a_json_body_within_the_limits_is_served(url: str, token: str) -> None:
    fields = {"order_id": "o1", "amount": 50, "currency": "EUR"}
    status, body, _ = post(f"{url}/refunds", token, fields)
    assert (status, body) == (200, {"amount": 50.0, "currency": "EUR"})


def test_an_argument_the_request_does_not_give_is_missing_whatever_the_default(
    url: str, token: str
) -> None:
    status, body, _ = post(f"{url}/refunds", token, {"order_id": "o1", "amount": 50})
    assert (status, body["detail"]) == (
        403,
        "currency is missing; the token limits it (currency in USD,EUR) for write:refunds",
    )


def test_a_json_body_over_a_limit_is_403_insufficient_scope_with_the_reason(
    url: str, token: str
) -> None:
    status, body, headers = post(f"{url}/refunds", token, {"order_id": "o1", "amount": 5000})
    assert status == 403
    assert body == {"detail": "amount 5000 exceeds the token's limit 100 for write:refunds"}
    challenge = headers["www-authenticate"]
    assert challenge.startswith('Bearer error="insufficient_scope"')
    assert 'scope="write:refunds"' in challenge
    assert SECRET not in json.dumps(body) + challenge


@pytest.mark.parametrize(
    ("fields", "words"),
    [
        ({"order_id": "o1", "amount": 50, "currency": "GBP"}, "currency 'GBP' is not one of"),
        ({"order_id": "o1", "amount": "50", "currency": "USD"}, "amount '50' is not a number"),
        ({"order_id": "o1", "amount": True, "currency": "USD"}, "amount true is not a number"),
        ({"order_id": "o1", "amount": None, "currency": "USD"}, "amount None is not a number"),
        ({"order_id": "o1", "amount": 10**30, "currency": "USD"}, "exceeds the token's limit 100"),
        ({"order_id": "o1"}, "amount is missing"),
        ([{"order_id": "o1", "amount": 5}], "amount is missing"),
    ],
)
def test_hostile_bodies_are_refused(url: str, token: str, fields: Any, words: str) -> None:
    status, body, _ = post(f"{url}/refunds", token, fields)
    assert status == 403 and words in body["detail"], body


def test_nan_a_key_given_twice_and_a_broken_body_are_refused(url: str, token: str) -> None:
    for raw, words in (
        (b'{"order_id": "o1", "amount": NaN', "amount nan is not a number"),
        (b'{"order_id": "o1", "amount": 1e999', "amount inf is not a number"),
        (b'{"order_id": "o1", "amount": 5, "amount": 5000', "twice in the JSON body"),
    ):
        status, body, _ = call(f"{url}/refunds", token, "POST", raw + b',"currency":"USD"}')
        assert status == 403 and words in body["detail"], (raw[:60], body)
    for raw in (b'{"order_id": "o1", "amount": 5', b'{"amount": ' + b"9" * 5000 + b"}"):
        status, body, _ = call(f"{url}/refunds", token, "POST", raw)
        assert status in (400, 403, 422), (raw[:60], body)  # FastAPI refuses what it cannot parse


def test_a_path_parameter_is_read_as_the_route_declares_it(url: str, token: str) -> None:
    assert call(f"{url}/refunds/100?currency=USD", token, "POST")[:2] == (200, 100)
    status, body, _ = call(f"{url}/refunds/101?currency=USD", token, "POST")
    assert (status, body["detail"]) == (
        403,
        "amount 101 exceeds the token's limit 100 for write:refunds",
    )
    for text in ("1e3", "0x10", "%20100", "100.0", "NaN"):
        status, body, _ = call(f"{url}/refunds/{text}?currency=USD", token, "POST")
        assert status == 403 and "is not a number" in body["detail"], (text, body)


def test_query_parameters_defaults_and_repeats(url: str, token: str) -> None:
    assert call(f"{url}/orders?limit=50", token)[:2] == (200, 50)
    status, body, _ = call(f"{url}/orders?limit=51", token)
    assert (status, body["detail"]) == (
        403,
        "limit 51 exceeds the token's limit 50 for read:orders",
    )
    status, body, _ = call(f"{url}/orders?limit=5&limit=500", token)
    assert status == 403 and "more than once in the query" in body["detail"]
    # not given: the route's default is not what the request says; the limit needs a value
    status, body, _ = call(f"{url}/orders", token)
    assert status == 403 and "limit is missing" in body["detail"]


def test_a_parameter_declared_as_text_is_never_read_as_a_number(url: str, token: str) -> None:
    status, body, _ = call(f"{url}/orders-text?limit=5", token)
    assert status == 403 and "limit '5' is not a number" in body["detail"]


def test_a_token_without_limits_is_served_as_before(url: str, issuer: Issuer) -> None:
    plain = issuer.issue("SupportBot", ["write:refunds", "read:orders"]).token
    assert (
        post(f"{url}/refunds", plain, {"order_id": "o", "amount": 10**6})[0] == 200
    )  # no currency
    assert call(f"{url}/orders?limit=5000", plain)[:2] == (200, 5000)


def test_sudo_behind_the_middleware_answers_403_with_the_reason(
    verifier: Verifier, token: str
) -> None:
    with serve(build_sudo(verifier)) as base:
        assert post(f"{base}/refunds", token, {"order_id": "o", "amount": 5})[:2] == (
            200,
            "5.0 USD",
        )
        status, body, headers = post(f"{base}/refunds", token, {"order_id": "o", "amount": 500})
    assert (status, body["detail"]) == (
        403,
        "amount 500.0 exceeds the token's limit 100 for write:refunds",
    )
    assert 'error="insufficient_scope"' in headers["www-authenticate"]
