"""ScopedModel: every way of making an instance needs the scope; nothing runs before the check."""

from __future__ import annotations

import copy
import logging
import pickle
import time
from collections.abc import Callable, Iterator
from typing import Any, ClassVar

import pytest
from pydantic import BaseModel, Field, TypeAdapter, field_validator, model_validator

from agentsudo_tokens import (
    Agent,
    ConfigError,
    InvalidScopeError,
    Issuer,
    KeyDirectory,
    PermissionDeniedError,
    Verifier,
)
from agentsudo_tokens.integrations.pydantic import ScopedModel

SIDE_EFFECTS: list[str] = []


def _note() -> str:
    SIDE_EFFECTS.append("default_factory")
    return "none"


class RefundRequest(ScopedModel, scope="write:refunds"):
    order_id: str
    amount: float
    note: str = Field(default_factory=_note)

    @field_validator("order_id")
    @classmethod
    def _order_id_seen(cls, value: str) -> str:
        SIDE_EFFECTS.append("field_validator")
        return value


class LegacyRefund(ScopedModel):
    """The original library's spelling."""

    _required_scope: ClassVar[str] = "write:refunds"
    order_id: str


class Envelope(BaseModel):
    """A plain model that holds scoped ones."""

    refund: RefundRequest | None = None
    refunds: list[RefundRequest] = []


SUPPORT = Agent("SupportBot", ["read:orders", "write:refunds"])
ANALYTICS = Agent("AnalyticsBot", ["read:orders", "read:secret-payroll"])
DATA = {"order_id": "order_123", "amount": 50.0}
JSON = '{"order_id": "order_123", "amount": 50.0}'

MAKERS: dict[str, Callable[[], object]] = {
    "init": lambda: RefundRequest(order_id="order_123", amount=50.0),
    "model_validate": lambda: RefundRequest.model_validate(DATA),
    "model_validate_json": lambda: RefundRequest.model_validate_json(JSON),
    "model_validate_strings": lambda: RefundRequest.model_validate_strings(
        {"order_id": "order_123", "amount": "50"}
    ),
    "model_construct": lambda: RefundRequest.model_construct(order_id="order_123", amount=1.0),
    "nested_field": lambda: Envelope(refund=DATA),  # type: ignore[arg-type]
    "nested_list_json": lambda: Envelope.model_validate_json(f'{{"refunds": [{JSON}]}}'),
    "type_adapter": lambda: TypeAdapter(list[RefundRequest]).validate_python([DATA]),
    "legacy_spelling": lambda: LegacyRefund(order_id="order_123"),
}


@pytest.fixture(autouse=True)
def _no_side_effects_yet() -> Iterator[None]:
    SIDE_EFFECTS.clear()
    yield
    SIDE_EFFECTS.clear()


def _made() -> RefundRequest:
    with SUPPORT.start_session():
        return RefundRequest(order_id="order_123", amount=50.0)


COPIERS: dict[str, Callable[[RefundRequest], object]] = {
    "model_copy": lambda m: m.model_copy(),
    "model_copy_deep": lambda m: m.model_copy(deep=True),
    "model_copy_update": lambda m: m.model_copy(update={"amount": 10_000.0}),
    "model_copy_update_deep": lambda m: m.model_copy(update={"amount": 1.0}, deep=True),
    "copy.copy": copy.copy,
    "copy.deepcopy": copy.deepcopy,
    "pickle": lambda m: pickle.loads(pickle.dumps(m)),
    "revalidate_instance": lambda m: Envelope(refund=m),
}


# --- declaring the scope -------------------------------------------------------------------------


def test_both_spellings_declare_the_scope() -> None:
    class Annotated(ScopedModel):
        _required_scope: str = "write:refunds"  # pydantic makes this a private attribute

    class Bare(ScopedModel):
        _required_scope = "write:refunds"

    for model in (RefundRequest, LegacyRefund, Annotated, Bare):
        assert model.__agentsudo_scopes__ == ("write:refunds",), model
        assert model._required_scope == "write:refunds", model
    assert set(RefundRequest.model_fields) == {"order_id", "amount", "note"}


@pytest.mark.parametrize(
    "scope",
    ["write:*", "**", "write:**", "", "write refunds", "write::refunds", "write:réfunds", 42],
)
def test_a_bad_or_wildcard_scope_is_refused_when_the_class_is_defined(scope: Any) -> None:
    with pytest.raises(InvalidScopeError):

        class Keyword(ScopedModel, scope=scope):
            x: int

    with pytest.raises(InvalidScopeError):

        class Legacy(ScopedModel):
            _required_scope: ClassVar[Any] = scope


def test_two_spellings_that_disagree_are_refused() -> None:
    with pytest.raises(TypeError, match="disagree"):

        class Both(ScopedModel, scope="write:refunds"):
            _required_scope: ClassVar[str] = "read:orders"


def test_a_subclass_inherits_the_scope_and_may_add_one_but_never_drop_it() -> None:
    class BigRefund(RefundRequest):
        reason: str = "goodwill"

    class ApprovedRefund(RefundRequest, scope="approve:refunds"):
        pass

    assert BigRefund.__agentsudo_scopes__ == ("write:refunds",)
    assert ApprovedRefund.__agentsudo_scopes__ == ("write:refunds", "approve:refunds")
    with pytest.raises(PermissionDeniedError):
        BigRefund(**DATA)
    with SUPPORT.start_session():
        assert BigRefund(**DATA).reason == "goodwill"
        with pytest.raises(PermissionDeniedError, match="approve:refunds"):
            ApprovedRefund(**DATA)
    with Agent("Approver", ["approve:refunds"]).start_session():  # the added scope alone
        with pytest.raises(PermissionDeniedError, match="write:refunds"):
            ApprovedRefund(**DATA)
    with Agent("Both", ["write:refunds", "approve:refunds"]).start_session():
        assert ApprovedRefund(**DATA).amount == 50.0

    with pytest.raises(TypeError, match="may not drop"):

        class Dropped(RefundRequest):
            _required_scope = None


def test_a_subclass_may_not_replace_the_check() -> None:
    with pytest.raises(TypeError, match="may not override"):

        class Sneaky(RefundRequest):
            @classmethod
            def _agentsudo_scope_check(cls, data: Any, handler: Any) -> Any:
                return handler(data)

    with pytest.raises(TypeError, match="may not override"):

        class Blunt(RefundRequest):
            _agentsudo_scope_check = None


def test_a_scoped_model_without_a_scope_is_never_constructed() -> None:
    class Base(ScopedModel):  # an abstract base may be defined
        x: int = 0

    with SUPPORT.start_session():
        with pytest.raises(ConfigError, match="declares no scope"):
            Base()
        with pytest.raises(ConfigError):
            Base.model_construct()
        with pytest.raises(ConfigError):
            ScopedModel()


# --- making instances ----------------------------------------------------------------------------


@pytest.mark.parametrize("make", MAKERS.values(), ids=MAKERS.keys())
def test_every_way_of_making_an_instance_is_allowed_with_the_scope(
    make: Callable[[], object],
) -> None:
    with SUPPORT.start_session():
        assert make()


@pytest.mark.parametrize("make", MAKERS.values(), ids=MAKERS.keys())
@pytest.mark.parametrize("situation", ["no_session", "missing_scope", "expired_session"])
def test_every_way_of_making_an_instance_is_refused_otherwise(
    make: Callable[[], object], situation: str
) -> None:
    if situation == "no_session":
        with pytest.raises(PermissionDeniedError, match="no active agent session"):
            make()
    elif situation == "missing_scope":
        with ANALYTICS.start_session(), pytest.raises(PermissionDeniedError) as caught:
            make()
        assert caught.value.scope == "write:refunds" and caught.value.agent == "AnalyticsBot"
        assert "read:secret-payroll" not in str(caught.value)
    else:
        with Agent("TempBot", ["write:refunds"], session_ttl=0.05).start_session():
            time.sleep(0.06)
            with pytest.raises(PermissionDeniedError, match="expired"):
                make()
    assert SIDE_EFFECTS == []  # no field validator, no default_factory ran


@pytest.mark.parametrize("make_copy", COPIERS.values(), ids=COPIERS.keys())
def test_copies_need_the_scope_too(make_copy: Callable[[RefundRequest], object]) -> None:
    original = _made()
    with pytest.raises(PermissionDeniedError):
        make_copy(original)
    with ANALYTICS.start_session(), pytest.raises(PermissionDeniedError):
        make_copy(original)
    with SUPPORT.start_session():
        assert make_copy(original)


def test_the_deprecated_copy_method_is_guarded() -> None:
    original = _made()
    with pytest.raises(PermissionDeniedError):
        original.copy()  # refused before pydantic's deprecation warning
    with SUPPORT.start_session(), pytest.deprecated_call():
        assert original.copy(update={"amount": 1.0}).amount == 1.0


def test_the_check_runs_before_the_subclass_own_before_validator() -> None:
    seen: list[str] = []

    class Audited(RefundRequest):
        @model_validator(mode="before")
        @classmethod
        def _record(cls, data: Any) -> Any:
            seen.append("before")
            return data

    with pytest.raises(PermissionDeniedError):
        Audited(**DATA)
    assert seen == [] and SIDE_EFFECTS == []
    with SUPPORT.start_session():
        Audited(**DATA)
    assert seen == ["before"]


def test_a_verified_token_session_allows_and_refuses(issuer: Issuer, verifier: Verifier) -> None:
    support = Agent.from_token(issuer.issue("SupportBot", "write:refunds").token, verifier=verifier)
    analytics = Agent.from_token(
        issuer.issue("AnalyticsBot", ["read:*", "read:secret-payroll"]).token, verifier=verifier
    )
    with support.start_session():
        assert RefundRequest.model_validate_json(JSON).amount == 50.0
    with analytics.start_session(), pytest.raises(PermissionDeniedError) as caught:
        RefundRequest.model_validate_json(JSON)
    assert "read:secret-payroll" not in str(caught.value)


def test_the_ambient_token_is_the_agent_when_no_session_is_open(
    monkeypatch: pytest.MonkeyPatch, issuer: Issuer, key_dir: KeyDirectory
) -> None:
    monkeypatch.setenv("AGENTSUDO_TOKEN", issuer.issue("SupportBot", "write:**").token)
    monkeypatch.setenv("AGENTSUDO_JWKS", str(key_dir.jwks_path))
    assert RefundRequest(**DATA).order_id == "order_123"


def test_each_decision_is_audited_under_the_model_name(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="agentsudo")
    with SUPPORT.start_session():
        RefundRequest(**DATA)
    with ANALYTICS.start_session(), pytest.raises(PermissionDeniedError):
        RefundRequest(**DATA)
    events = [r.agentsudo for r in caplog.records if hasattr(r, "agentsudo")]  # type: ignore[attr-defined]
    decisions = [(e["outcome"], e["agent"], e["function"]) for e in events if e["scope"]]
    assert decisions == [
        ("allowed", "SupportBot", "RefundRequest"),
        ("denied", "AnalyticsBot", "RefundRequest"),
    ]


def test_schemas_need_no_session() -> None:
    schema = RefundRequest.model_json_schema()
    assert set(schema["properties"]) == {"order_id", "amount", "note"}
    assert "RefundRequest" in Envelope.model_json_schema()["$defs"]


# --- as a FastAPI request body -------------------------------------------------------------------


def _refund_service(verifier: Verifier) -> Any:
    """A FastAPI app whose middleware opens a session for the request's verified token."""
    from fastapi import FastAPI, Request
    from fastapi.responses import JSONResponse, Response

    from agentsudo_tokens import InvalidTokenError

    app = FastAPI()

    @app.middleware("http")
    async def agent_session(request: Request, call_next: Any) -> Response:
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not token:
            return await call_next(request)  # no session: scoped bodies are refused
        try:
            agent = Agent.from_token(token, verifier=verifier)
        except InvalidTokenError as exc:
            return JSONResponse({"detail": str(exc)}, status_code=401)
        async with agent.start_session():
            response: Response = await call_next(request)
            return response

    @app.exception_handler(PermissionDeniedError)
    async def forbidden(request: Request, exc: PermissionDeniedError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=403)

    @app.post("/refunds")
    async def create_refund(refund: RefundRequest) -> dict[str, Any]:
        return {"refunded": refund.amount, "order": refund.order_id}

    return app


@pytest.fixture
def service(verifier: Verifier) -> Any:
    from fastapi.testclient import TestClient

    with TestClient(_refund_service(verifier)) as client:
        yield client


def test_fastapi_body_parses_for_an_agent_with_the_scope(service: Any, issuer: Issuer) -> None:
    token = issuer.issue("SupportBot", ["read:orders", "write:refunds"]).token
    response = service.post("/refunds", json=DATA, headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 200
    assert response.json() == {"refunded": 50.0, "order": "order_123"}


def test_fastapi_body_is_refused_with_403_otherwise(service: Any, issuer: Issuer) -> None:
    token = issuer.issue("AnalyticsBot", ["read:orders", "read:secret-payroll"]).token
    response = service.post("/refunds", json=DATA, headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 403
    detail = response.json()["detail"]
    assert "write:refunds" in detail and "AnalyticsBot" in detail
    assert "read:secret-payroll" not in detail

    anonymous = service.post("/refunds", json=DATA)
    assert anonymous.status_code == 403 and "no active agent session" in anonymous.json()["detail"]
    assert SIDE_EFFECTS == []


def test_fastapi_checks_the_scope_before_the_body_is_validated(
    service: Any, issuer: Issuer
) -> None:
    bad_body = {"order_id": ["not", "a", "string"]}
    analytics = issuer.issue("AnalyticsBot", "read:orders").token
    refused = service.post(
        "/refunds", json=bad_body, headers={"Authorization": f"Bearer {analytics}"}
    )
    assert refused.status_code == 403  # not 422: no validation details for the unauthorised
    support = issuer.issue("SupportBot", "write:refunds").token
    invalid = service.post(
        "/refunds", json=bad_body, headers={"Authorization": f"Bearer {support}"}
    )
    assert invalid.status_code == 422


def test_fastapi_rejects_a_bad_token_and_documents_the_body_without_one(service: Any) -> None:
    assert (
        service.post("/refunds", json=DATA, headers={"Authorization": "Bearer x.y.z"}).status_code
        == 401
    )
    schemas = service.get("/openapi.json").json()["components"]["schemas"]
    assert "RefundRequest" in schemas


# --- as a LangChain tool's args_schema -----------------------------------------------------------


def _refund_tool() -> Any:
    from langchain_core.tools import tool

    ran: list[str] = []

    @tool(args_schema=RefundRequest)
    def issue_refund(order_id: str, amount: float, note: str = "") -> str:
        """Refund part of an order."""
        ran.append(order_id)
        return f"refunded {amount} on {order_id}"

    issue_refund.metadata = {"ran": ran}
    return issue_refund


def test_langchain_args_schema_is_checked_when_the_tool_parses_its_input() -> None:
    import asyncio

    from langchain_core.utils.function_calling import convert_to_openai_tool

    refund = _refund_tool()
    ran = refund.metadata["ran"]
    spec = convert_to_openai_tool(refund)  # describing the tool to a model needs no session
    assert spec["function"]["name"] == "issue_refund"
    assert {"order_id", "amount"} <= set(spec["function"]["parameters"]["properties"])

    with SUPPORT.start_session():
        assert refund.invoke(DATA) == "refunded 50.0 on order_123"
        assert asyncio.run(refund.ainvoke(DATA)) == "refunded 50.0 on order_123"
    with ANALYTICS.start_session():
        with pytest.raises(PermissionDeniedError, match="write:refunds"):
            refund.invoke(DATA)
        with pytest.raises(PermissionDeniedError, match="write:refunds"):
            asyncio.run(refund.ainvoke(DATA))
    with pytest.raises(PermissionDeniedError):
        refund.invoke(DATA)
    assert ran == ["order_123", "order_123"]
