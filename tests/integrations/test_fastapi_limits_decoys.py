"""FastAPI over real HTTP: ``require_scope`` reads each limited argument only where the route
declares it, by the key FastAPI reads; a decoy elsewhere in the request never passes the check
for a value the handler does not get (issue 11, attack findings 1 and 2)."""

from collections.abc import Iterator
from typing import Annotated, Any

import httpx
import pytest
from fastapi import Body, Cookie, Depends, FastAPI, Form, Header, Query
from pydantic import AliasChoices, BaseModel, Field
from test_fastapi_limits import serve

from agentsudo_tokens import Agent, Issuer, Verifier
from agentsudo_tokens.integrations.fastapi import AgentSudoMiddleware, require_scope
from agentsudo_tokens.tokens.limits import Limits

LIMITS = [
    "write:refunds amount<=100 currency in USD,EUR",
    "write:fx currency in USD,EUR",
    "write:files path under /srv/data",
]
Refunds = Annotated[Agent, Depends(require_scope("write:refunds"))]
Fx = Annotated[Agent, Depends(require_scope("write:fx"))]
Files = Annotated[Agent, Depends(require_scope("write:files"))]


class Refund(BaseModel):
    amount: int = 5000
    currency: str = "GBP"


class Aliased(BaseModel):
    amount: int = Field(alias="amt")
    currency: str = Field(validation_alias=AliasChoices("cur", "currency"))


class Note(BaseModel):
    text: str


def build(verifier: Verifier) -> FastAPI:
    app = FastAPI()
    app.add_middleware(AgentSudoMiddleware, verifier=verifier)

    @app.post("/query")
    def query(agent: Refunds, amount: int = 5000, currency: str = "GBP") -> list[Any]:
        return [amount, currency]

    @app.post("/model")
    def model(refund: Refund, agent: Refunds) -> list[Any]:
        return [refund.amount, refund.currency]

    @app.post("/embedded")
    def embedded(agent: Refunds, refund: Annotated[Refund, Body(embed=True)]) -> list[Any]:
        return [refund.amount, refund.currency]

    @app.post("/two-bodies")
    def two_bodies(refund: Refund, note: Note, agent: Refunds) -> list[Any]:
        return [refund.amount, refund.currency]

    @app.post("/aliased-model")
    def aliased_model(refund: Aliased, agent: Refunds) -> list[Any]:
        return [refund.amount, refund.currency]

    @app.get("/alias")
    def alias(currency: Annotated[str, Query(alias="cur")], agent: Fx) -> str:
        return currency

    @app.get("/choices")
    def choices(
        currency: Annotated[str, Query(validation_alias=AliasChoices("cur", "currency"))],
        agent: Fx,
    ) -> str:
        return currency

    @app.get("/header")
    def header(currency: Annotated[str, Header()], agent: Fx) -> str:
        return currency

    @app.get("/cookie")
    def cookie(currency: Annotated[str, Cookie()], agent: Fx) -> str:
        return currency

    @app.post("/form")
    def form(
        path: Annotated[str, Form()], currency: Annotated[str, Form()] = "GBP", *, agent: Files
    ) -> list[str]:
        return [path, currency]

    @app.post("/undeclared")
    def undeclared(agent: Fx) -> str:
        return "ran"

    @app.post("/path/{currency}")
    def path(currency: str, agent: Fx) -> str:
        return currency

    def currency_of(currency: str = "GBP") -> str:  # a sub-dependency takes it from the query
        return currency

    @app.get("/dependency")
    def dependency(agent: Fx, currency: Annotated[str, Depends(currency_of)]) -> str:
        return currency

    app.state.currency_of = currency_of
    return app


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> tuple[Issuer, Verifier]:
    from agentsudo_tokens import JwksFile, KeyDirectory

    directory = KeyDirectory.init(tmp_path_factory.mktemp("decoys") / "keys")
    return Issuer(directory.signing_key()), Verifier(JwksFile(directory.jwks_path))


@pytest.fixture
def client(keys: tuple[Issuer, Verifier]) -> Iterator[httpx.Client]:
    issuer, verifier = keys
    grants = ["write:refunds", "write:fx", "write:files"]
    token = issuer.issue("SupportBot", grants, limits=Limits.parse(LIMITS)).token
    headers = {"Authorization": f"Bearer {token}"}
    with serve(build(verifier)) as base, httpx.Client(base_url=base, headers=headers) as client:
        yield client


def refused(answer: httpx.Response, words: str) -> None:
    assert answer.status_code == 403, (answer.status_code, answer.text)
    assert words in answer.json()["detail"], answer.json()
    assert answer.headers["www-authenticate"].startswith('Bearer error="insufficient_scope"')


def test_query_parameters_with_defaults_ignore_a_json_body_decoy(client: httpx.Client) -> None:
    refused(client.post("/query", json={"amount": 50, "currency": "USD"}), "amount is missing")
    answer = client.post("/query?amount=50&currency=USD", json={"amount": 5000})
    assert (answer.status_code, answer.json()) == (200, [50, "USD"])
    refused(client.post("/query?amount=500&currency=USD", json={"amount": 50}), "amount 500")


def test_a_body_model_with_defaults_ignores_a_query_decoy(client: httpx.Client) -> None:
    refused(client.post("/model?currency=USD", json={"amount": 50}), "currency is missing")
    refused(client.post("/model?amount=50&currency=USD", json={}), "amount is missing")
    answer = client.post("/model?currency=JPY", json={"amount": 50, "currency": "EUR"})
    assert (answer.status_code, answer.json()) == (200, [50, "EUR"])


@pytest.mark.parametrize("route", ["/embedded", "/two-bodies"])
def test_an_embedded_body_ignores_top_level_decoys(client: httpx.Client, route: str) -> None:
    note = {"note": {"text": "t"}} if route == "/two-bodies" else {}
    decoys = {"amount": 50, "currency": "EUR"}
    real = {"refund": {"amount": 999999, "currency": "JPY"}, **note}
    answer = client.post(route, json={**real, **decoys})
    refused(answer, "amount 999999 exceeds the token's limit 100")
    refused(client.post(route, json={"refund": {}, **decoys, **note}), "amount is missing")
    answer = client.post(route, json={"refund": {"amount": 50, "currency": "EUR"}, **note})
    assert (answer.status_code, answer.json()) == (200, [50, "EUR"])


def test_a_model_field_is_read_by_its_alias(client: httpx.Client) -> None:
    answer = client.post("/aliased-model", json={"amt": 5000, "amount": 50, "cur": "USD"})
    refused(answer, "amount 5000 exceeds")
    answer = client.post("/aliased-model", json={"amt": 50, "cur": "USD", "currency": "JPY"})
    refused(answer, "currency is given by two names (cur, currency)")
    answer = client.post("/aliased-model", json={"amt": 50, "currency": "EUR"})
    assert (answer.status_code, answer.json()) == (200, [50, "EUR"])


def test_a_query_alias_is_read_and_the_parameter_name_is_a_decoy(client: httpx.Client) -> None:
    refused(client.get("/alias?cur=JPY&currency=USD"), "currency 'JPY' is not one of")
    refused(client.get("/alias?currency=USD"), "currency is missing")
    assert client.get("/alias?cur=EUR&currency=JPY").json() == "EUR"


def test_alias_choices_given_twice_are_refused(client: httpx.Client) -> None:
    refused(client.get("/choices?cur=USD&currency=JPY"), "by two names (cur, currency)")
    assert client.get("/choices?currency=USD").json() == "USD"
    refused(client.get("/choices?cur=JPY"), "currency 'JPY' is not one of")


def test_header_and_cookie_parameters_ignore_query_decoys(client: httpx.Client) -> None:
    refused(client.get("/header?currency=USD", headers={"currency": "JPY"}), "'JPY'")
    refused(client.get("/header?currency=USD"), "currency is missing")
    assert client.get("/header", headers={"currency": "EUR"}).json() == "EUR"
    twice = httpx.Headers([("currency", "USD"), ("currency", "JPY")])
    refused(client.get("/header", headers=twice), "more than once in the header")
    client.cookies.set("currency", "JPY")
    refused(client.get("/cookie?currency=USD"), "'JPY'")
    client.cookies.set("currency", "USD")
    assert client.get("/cookie?currency=JPY").json() == "USD"


def test_a_sub_dependency_s_query_parameter_is_read_from_the_query(client: httpx.Client) -> None:
    refused(client.get("/dependency?currency=JPY"), "'JPY'")
    refused(client.request("GET", "/dependency", json={"currency": "USD"}), "currency is missing")
    assert client.get("/dependency?currency=USD").json() == "USD"


def test_an_overridden_dependency_s_parameters_are_not_read(
    keys: tuple[Issuer, Verifier],
) -> None:
    issuer, verifier = keys
    grants = ["write:refunds", "write:fx", "write:files"]
    token = issuer.issue("SupportBot", grants, limits=Limits.parse(LIMITS)).token
    app = build(verifier)

    def other(cur: str) -> str:  # what FastAPI now calls: it reads ?cur=
        return cur

    app.dependency_overrides[app.state.currency_of] = other
    headers = {"Authorization": f"Bearer {token}"}
    with serve(app) as base, httpx.Client(base_url=base, headers=headers) as client:
        refused(client.get("/dependency?currency=USD&cur=JPY"), "currency is missing")
        assert client.get("/alias?cur=USD").json() == "USD"  # other routes as before


def test_a_form_route_is_checked_on_its_form_never_a_500(client: httpx.Client) -> None:
    form = {"path": "/etc/shadow", "currency": "JPY"}
    refused(client.post("/form", data=form), "path '/etc/shadow' is not under")
    refused(client.post("/form?path=/srv/data/x", data=form), "path '/etc/shadow' is not under")
    answer = client.post("/form?path=/etc/shadow", data={"path": "/srv/data/x"})
    assert (answer.status_code, answer.json()) == (200, ["/srv/data/x", "GBP"])
    answer = client.post("/form", files={"path": (None, "/srv/data/y")})  # multipart
    assert (answer.status_code, answer.json()) == (200, ["/srv/data/y", "GBP"])
    # FastAPI takes the last of a repeated field, and "" as not given: both refused here
    twice = [("path", "/srv/data/x"), ("path", "/etc/shadow")]
    refused(client.post("/form", content=_form(twice), headers=_FORM), "more than once")
    refused(client.post("/form", data={"path": ""}), "path is missing")
    upload = client.post("/form", files={"path": ("a.txt", b"/srv/data/x")})
    assert upload.status_code in (403, 422), upload.text  # a file is not a path


_FORM = {"content-type": "application/x-www-form-urlencoded"}


def _form(pairs: list[tuple[str, str]]) -> bytes:
    from urllib.parse import urlencode

    return urlencode(pairs).encode()


def test_a_json_body_sent_as_another_type_is_not_read(client: httpx.Client) -> None:
    body = b'{"refund": {"amount": 50, "currency": "EUR"}}'
    for kind in ("text/plain", "application/x-www-form-urlencoded", ""):
        answer = client.post("/embedded", content=body, headers={"content-type": kind})
        assert answer.status_code in (403, 422), (kind, answer.text)
    answer = client.post("/embedded", content=body, headers={"content-type": "application/json"})
    assert (answer.status_code, answer.json()) == (200, [50, "EUR"])


def test_a_name_the_route_does_not_declare_is_missing_wherever_it_is_given(
    client: httpx.Client,
) -> None:
    for request in (
        client.build_request("POST", "/undeclared?currency=USD"),
        client.build_request("POST", "/undeclared", json={"currency": "USD"}),
        client.build_request("POST", "/undeclared", headers={"currency": "USD"}),
        client.build_request("POST", "/undeclared", data={"currency": "USD"}),
    ):
        refused(client.send(request), "currency is missing")
    refused(client.post("/path/JPY?currency=USD", json={"currency": "USD"}), "'JPY'")
    assert client.post("/path/USD?currency=JPY", json={"currency": "JPY"}).json() == "USD"
