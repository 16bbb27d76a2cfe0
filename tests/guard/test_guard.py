"""@sudo: what it allows, what it refuses, and what it keeps of the wrapped callable."""

from __future__ import annotations

import asyncio
import inspect
import logging
import time

import pytest

from agentsudo_tokens import (
    Agent,
    ConfigError,
    InvalidScopeError,
    Issuer,
    PermissionDeniedError,
    Verifier,
    sudo,
)


@sudo(scope="write:refunds")
def process_refund(order_id: str, amount: int = 0) -> str:
    """Refund an order."""
    return f"refunded {amount} for {order_id}"


@sudo(scope="read:orders")
async def list_orders(limit: int = 2) -> list[str]:
    """List orders."""
    await asyncio.sleep(0)
    return [f"order_{i}" for i in range(limit)]


@sudo(scope="read:orders")
def iter_orders(limit: int) -> object:
    """Yield orders."""
    yield from (f"order_{i}" for i in range(limit))


@sudo(scope="read:orders")
async def aiter_orders(limit: int) -> object:
    """Yield orders asynchronously."""
    for i in range(limit):
        yield f"order_{i}"


class Orders:
    @sudo(scope="delete:orders")
    def delete(self, order_id: str) -> str:
        return f"deleted {order_id} via {type(self).__name__}"

    @staticmethod
    @sudo(scope="delete:orders")
    def purge_static() -> str:
        return "purged"

    @sudo(scope="delete:orders")
    @classmethod
    def purge(cls) -> str:
        return f"purged by {cls.__name__}"


SUPPORT = Agent(name="SupportBot", scopes=["read:orders", "write:refunds"])
ANALYTICS = Agent(name="AnalyticsBot", scopes=["read:orders"])


# --- the seed's story -------------------------------------------------------------------------


def test_the_seed_example_allows_support_and_refuses_analytics() -> None:
    with SUPPORT.start_session():
        assert process_refund("order_123", 50) == "refunded 50 for order_123"
    with ANALYTICS.start_session(), pytest.raises(PermissionDeniedError) as denied:
        process_refund("order_456", 25)
    assert denied.value.agent == "AnalyticsBot"
    assert denied.value.scope == "write:refunds"
    assert isinstance(denied.value, PermissionError)


def test_no_session_and_no_token_is_refused() -> None:
    with pytest.raises(PermissionDeniedError, match="no active agent session"):
        process_refund("order_1")


def test_denial_message_names_the_missing_scope_but_not_the_held_ones() -> None:
    bot = Agent("Bot", ["read:orders", "read:secret-customers", "send:email"])
    with bot.start_session(), pytest.raises(PermissionDeniedError) as denied:
        process_refund("order_1")
    message = str(denied.value)
    assert "write:refunds" in message
    for held in bot.scopes:
        assert held not in message


def test_the_function_body_does_not_run_when_refused() -> None:
    ran: list[int] = []

    @sudo(scope="delete:customer")
    def delete_customer(customer_id: int) -> None:
        ran.append(customer_id)

    with SUPPORT.start_session(), pytest.raises(PermissionDeniedError):
        delete_customer(1)
    assert ran == []


# --- scopes at decoration time ----------------------------------------------------------------


@pytest.mark.parametrize(
    "scope",
    ["read:*", "read:**", "**", "*", "", "read:", "read orders", "réad:orders", "read:order?"],
)
def test_required_scope_is_checked_when_decorating(scope: str) -> None:
    with pytest.raises(InvalidScopeError):
        sudo(scope=scope)


def test_unknown_on_deny_is_refused_when_decorating() -> None:
    with pytest.raises(ConfigError):
        sudo(scope="read:orders", on_deny="allow")  # type: ignore[arg-type]


# --- wildcard grants --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("granted", "required", "allowed"),
    [
        (["write:*"], "write:refunds", True),
        (["*:refunds"], "write:refunds", True),
        (["write:**"], "write:refunds", True),
        (["**"], "write:refunds", True),
        (["write:refund"], "write:refunds", False),
        (["write:refunds:partial"], "write:refunds", False),
        (["write"], "write:refunds", False),
        (["Write:refunds"], "write:refunds", False),
    ],
)
def test_wildcard_grants(granted: list[str], required: str, allowed: bool) -> None:
    @sudo(scope=required)
    def act() -> str:
        return "done"

    with Agent("Bot", granted).start_session():
        if allowed:
            assert act() == "done"
        else:
            with pytest.raises(PermissionDeniedError):
                act()


# --- what the wrapper keeps -------------------------------------------------------------------


def test_wrapper_keeps_name_signature_docstring() -> None:
    assert process_refund.__name__ == "process_refund"
    assert process_refund.__doc__ == "Refund an order."
    assert str(inspect.signature(process_refund)) == "(order_id: 'str', amount: 'int' = 0) -> 'str'"
    assert process_refund.__agentsudo_scope__ == "write:refunds"  # type: ignore[attr-defined]


def test_async_function_stays_a_coroutine_function_and_is_guarded() -> None:
    assert inspect.iscoroutinefunction(list_orders)
    assert list_orders.__name__ == "list_orders"

    async def main() -> list[str]:
        async with ANALYTICS.start_session():
            return await list_orders(3)

    assert asyncio.run(main()) == ["order_0", "order_1", "order_2"]
    with pytest.raises(PermissionDeniedError):
        asyncio.run(list_orders())


def test_generator_is_checked_when_iteration_starts() -> None:
    assert inspect.isgeneratorfunction(iter_orders)
    with ANALYTICS.start_session():
        assert list(iter_orders(2)) == ["order_0", "order_1"]
    gen = iter_orders(2)
    with pytest.raises(PermissionDeniedError):
        next(gen)


def test_async_generator_is_guarded() -> None:
    assert inspect.isasyncgenfunction(aiter_orders)

    async def collect() -> list[str]:
        return [item async for item in aiter_orders(2)]

    async def allowed() -> list[str]:
        with ANALYTICS.start_session():
            return await collect()

    assert asyncio.run(allowed()) == ["order_0", "order_1"]
    with pytest.raises(PermissionDeniedError):
        asyncio.run(collect())


def test_methods_static_and_class_methods() -> None:
    admin = Agent("Admin", ["delete:orders"])
    with admin.start_session():
        assert Orders().delete("o1") == "deleted o1 via Orders"
        assert Orders.purge_static() == "purged"
        assert Orders.purge() == "purged by Orders"
    with SUPPORT.start_session():
        for call in (lambda: Orders().delete("o1"), Orders.purge_static, Orders.purge):
            with pytest.raises(PermissionDeniedError):
                call()


def test_exceptions_from_the_function_pass_through_unchanged() -> None:
    @sudo(scope="read:orders")
    def broken() -> None:
        raise KeyError("boom")

    with ANALYTICS.start_session(), pytest.raises(KeyError):
        broken()


# --- sessions from verified tokens ------------------------------------------------------------


def test_token_session_allows_and_refuses_by_the_tokens_scopes(
    issuer: Issuer, verifier: Verifier
) -> None:
    token = issuer.issue("SupportBot", ["read:orders", "write:refunds"]).token
    agent = Agent.from_token(token, verifier=verifier)
    assert agent.signed and agent.name == "SupportBot"
    with agent.start_session():
        assert process_refund("order_123", 50) == "refunded 50 for order_123"

    narrow = Agent.from_token(issuer.issue("AnalyticsBot", "read:*").token, verifier=verifier)
    with narrow.start_session(), pytest.raises(PermissionDeniedError):
        process_refund("order_456", 25)


def test_token_session_ends_at_the_tokens_expiry(issuer: Issuer, key_dir: object) -> None:
    from agentsudo_tokens import JwksFile

    verifier = Verifier(JwksFile(key_dir.jwks_path), leeway=0)  # type: ignore[attr-defined]
    token = issuer.issue("SupportBot", "write:refunds", ttl=60, now=time.time() - 59).token
    agent = Agent.from_token(token, verifier=verifier)
    with agent.start_session():
        assert process_refund("o1") == "refunded 0 for o1"
        time.sleep(1.05)
        with pytest.raises(PermissionDeniedError, match="expired"):
            process_refund("o1")


# --- session ttl ------------------------------------------------------------------------------


def test_session_ttl_expires_the_session() -> None:
    bot = Agent("TempBot", ["write:refunds"], session_ttl=0.2)
    with bot.start_session():
        assert process_refund("o1")
        time.sleep(0.25)
        with pytest.raises(PermissionDeniedError, match="expired"):
            process_refund("o1")
    with bot.start_session():  # a new session has a new clock
        assert process_refund("o2")


def test_two_sessions_of_one_agent_keep_their_own_clocks() -> None:
    bot = Agent("TempBot", ["write:refunds"], session_ttl=0.3)
    first = bot.start_session()
    first.__enter__()
    time.sleep(0.2)
    with bot.start_session():  # a second, later session of the same agent object
        time.sleep(0.15)
        # the first session's clock ran out; exiting the inner session must not revive it
    assert first.expired
    with pytest.raises(PermissionDeniedError, match="expired"):
        process_refund("o1")
    first.__exit__(None, None, None)


@pytest.mark.parametrize("ttl", [0, -1])
def test_session_ttl_must_be_positive(ttl: float) -> None:
    with pytest.raises(ConfigError):
        Agent("Bot", ["read:orders"], session_ttl=ttl)


# --- require signed ---------------------------------------------------------------------------


def test_require_signed_refuses_in_process_agents(
    monkeypatch: pytest.MonkeyPatch, issuer: Issuer, verifier: Verifier
) -> None:
    monkeypatch.setenv("AGENTSUDO_REQUIRE_SIGNED", "1")
    with pytest.raises(PermissionDeniedError, match="signed"):
        with SUPPORT.start_session():
            pass
    token = issuer.issue("SupportBot", "write:refunds").token
    with Agent.from_token(token, verifier=verifier).start_session():
        assert process_refund("o1")


# --- audit events -----------------------------------------------------------------------------


def test_decisions_reach_the_agentsudo_logger(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="agentsudo")
    with SUPPORT.start_session():
        process_refund("o1")
    with ANALYTICS.start_session(), pytest.raises(PermissionDeniedError):
        process_refund("o2")
    events = [r.agentsudo for r in caplog.records if hasattr(r, "agentsudo")]  # type: ignore[attr-defined]
    outcomes = [(e["outcome"], e["agent"], e["scope"]) for e in events]
    assert ("allowed", "SupportBot", "write:refunds") in outcomes
    assert ("denied", "AnalyticsBot", "write:refunds") in outcomes
    assert all(e["time"].endswith("Z") for e in events)


def test_audit_events_never_hold_the_token(
    caplog: pytest.LogCaptureFixture, issuer: Issuer, verifier: Verifier
) -> None:
    caplog.set_level(logging.DEBUG, logger="agentsudo")
    minted = issuer.issue("SupportBot", "write:refunds")
    with Agent.from_token(minted.token, verifier=verifier).start_session():
        process_refund("o1")
    assert caplog.records
    for record in caplog.records:
        assert minted.token not in record.getMessage()
        assert minted.token not in repr(getattr(record, "agentsudo", ""))
    jtis = {r.agentsudo["jti"] for r in caplog.records if hasattr(r, "agentsudo")}  # type: ignore[attr-defined]
    assert jtis == {minted.claims["jti"]}
