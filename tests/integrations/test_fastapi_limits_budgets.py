"""FastAPI over real HTTP: budgets through ``require_scope`` (SQLite and a real Redis), the store
out of reach (503), and one request debited once behind the middleware, ``@sudo`` in the handler
or not (issue 11, attack finding 3)."""

from collections.abc import Iterator
from typing import Annotated, Any

import httpx
import pytest
from fastapi import Depends, FastAPI
from test_fastapi_limits import serve

from agentsudo_tokens import Agent, Issuer, JwksFile, KeyDirectory, Verifier, sudo
from agentsudo_tokens.guard.budget import reset_default_ledger
from agentsudo_tokens.integrations.fastapi import AgentSudoMiddleware, require_scope
from agentsudo_tokens.state import Store, open_store
from agentsudo_tokens.state.budgets import Budgets
from agentsudo_tokens.tokens.limits import Limits

LIMIT = "write:refunds amount<=100"
CALLS = 4


@sudo(scope="write:refunds")
def pay_out(order_id: str, amount: int) -> str:
    return f"paid {amount} on {order_id}"


def build(verifier: Verifier, *, middleware: bool) -> FastAPI:
    app = FastAPI()
    if middleware:
        app.add_middleware(AgentSudoMiddleware, verifier=verifier)
    refunds = Annotated[Agent, Depends(require_scope("write:refunds", verifier=verifier))]

    @app.post("/refunds")
    def refund(order_id: str, amount: int, agent: refunds) -> str:
        return order_id

    @app.post("/pay")  # the README's pattern: the route guarded, and the function it calls
    def pay(order_id: str, amount: int, agent: refunds) -> str:
        return pay_out(order_id, amount)

    @app.post("/pay-twice")  # two payments in one request: the second is its own call
    def pay_twice(order_id: str, amount: int, agent: refunds) -> list[str]:
        return [pay_out(order_id, amount), pay_out(order_id, amount)]

    @app.post("/pay-other")  # the handler pays another amount than the request named
    async def pay_other(order_id: str, amount: int, agent: refunds) -> str:
        return pay_out(order_id, amount + 1)

    return app


@pytest.fixture
def opened(store_url: str) -> Iterator[Store]:
    store = open_store(store_url)
    yield store
    store.close()


@pytest.fixture
def verifier(key_dir: KeyDirectory, opened: Store) -> Verifier:
    return Verifier(JwksFile(key_dir.jwks_path), store=opened)


def issue(issuer: Issuer, budget: str) -> tuple[str, str]:
    limits = Limits.parse([LIMIT], budgets=[budget])
    issued = issuer.issue("SupportBot", ["write:refunds"], limits=limits)
    return issued.token, str(issued.claims["jti"])


def spent(store: Store, jti: str) -> dict[str, int]:
    balance = Budgets(store).balance(jti, "0")
    return dict(balance.spent) if balance is not None else {}


def client_for(base: str, token: str) -> httpx.Client:
    return httpx.Client(base_url=base, headers={"Authorization": f"Bearer {token}"})


def refused(answer: httpx.Response, detail: str) -> None:
    assert (answer.status_code, answer.json()) == (403, {"detail": detail}), answer.text
    challenge = answer.headers["www-authenticate"]
    assert challenge.startswith('Bearer error="insufficient_scope"')
    assert 'scope="write:refunds"' in challenge


def test_require_scope_debits_each_request_and_refuses_an_exhausted_budget(
    issuer: Issuer, verifier: Verifier, opened: Store
) -> None:
    token, jti = issue(issuer, f"write:refunds amount=100 calls={CALLS}")
    with serve(build(verifier, middleware=False)) as base, client_for(base, token) as client:
        for n in range(1, 4):
            assert client.post(f"/refunds?order_id=o{n}&amount=30").json() == f"o{n}"
            assert spent(opened, jti) == {"sum:amount": n * 30 * 10**6, "calls": n}
        answer = client.post("/refunds?order_id=o4&amount=30")
        refused(
            answer, "write:refunds budget: amount 30 would pass the token's total 100 (10 left)"
        )
        assert spent(opened, jti) == {"sum:amount": 90 * 10**6, "calls": 3}  # nothing taken
        assert client.post("/refunds?order_id=o5&amount=10").status_code == 200
        refused(
            client.post("/refunds?order_id=o6&amount=0"),
            f"write:refunds budget: the token's {CALLS} calls are used",
        )
        refused(
            client.post("/refunds?order_id=o7&amount=500"),
            "amount 500 exceeds the token's limit 100 for write:refunds",
        )
    assert spent(opened, jti) == {"sum:amount": 100 * 10**6, "calls": CALLS}


@pytest.mark.parametrize(
    "where", ["redis://127.0.0.1:{port}/0", "sqlite:///{tmp}/no-such-directory/state.db"]
)
def test_a_ledger_out_of_reach_is_a_503_and_the_handler_never_runs(
    issuer: Issuer,
    key_dir: KeyDirectory,
    tmp_path: Any,
    monkeypatch: pytest.MonkeyPatch,
    where: str,
) -> None:
    from conftest_store import free_port

    monkeypatch.setenv("AGENTSUDO_STORE", where.format(port=free_port(), tmp=tmp_path))
    reset_default_ledger()  # the budgets' store is read from the settings: no verifier store
    token, _ = issue(issuer, "write:refunds amount=100")
    app = build(Verifier(JwksFile(key_dir.jwks_path)), middleware=False)
    ran: list[str] = []

    @app.post("/counted")
    def counted(
        order_id: str,
        amount: int,
        agent: Annotated[
            Agent,
            Depends(require_scope("write:refunds", verifier=Verifier(JwksFile(key_dir.jwks_path)))),
        ],
    ) -> str:
        ran.append(order_id)
        return order_id

    try:
        with serve(app) as base, client_for(base, token) as client:
            answer = client.post("/counted?order_id=o1&amount=10")
    finally:
        reset_default_ledger()
    assert answer.status_code == 503, answer.text
    assert answer.json() == {"detail": "cannot check the token now: the budgets cannot be debited"}
    assert ran == []


def test_one_request_is_debited_once_with_sudo_in_the_handler(
    issuer: Issuer, verifier: Verifier, opened: Store
) -> None:
    token, jti = issue(issuer, f"write:refunds calls={CALLS}")
    with serve(build(verifier, middleware=True)) as base, client_for(base, token) as client:
        answers = [client.post(f"/pay?order_id=o{n}&amount=5") for n in range(CALLS + 1)]
    assert [answer.status_code for answer in answers] == [200] * CALLS + [403]
    assert answers[0].json() == "paid 5 on o0"
    assert (
        answers[-1].json()["detail"] == f"write:refunds budget: the token's {CALLS} calls are used"
    )
    assert spent(opened, jti) == {"calls": CALLS}


def test_a_second_call_in_the_same_request_or_another_amount_is_debited(
    issuer: Issuer, verifier: Verifier, opened: Store
) -> None:
    token, jti = issue(issuer, "write:refunds amount=100 calls=10")
    with serve(build(verifier, middleware=True)) as base, client_for(base, token) as client:
        assert client.post("/pay-twice?order_id=a&amount=5").status_code == 200
        assert spent(opened, jti) == {"sum:amount": 10 * 10**6, "calls": 2}
        assert client.post("/pay-other?order_id=b&amount=5").json() == "paid 6 on b"
        assert spent(opened, jti) == {"sum:amount": 21 * 10**6, "calls": 4}
        assert client.post("/pay?order_id=c&amount=5").status_code == 200  # a new request
        assert spent(opened, jti) == {"sum:amount": 26 * 10**6, "calls": 5}
