"""OpenTelemetry: decisions as spans, metrics, and nothing at all when it is not asked for.

Spans and metrics are read back with the SDK's in-memory span exporter and
metric reader, from real guarded calls with real tokens.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("opentelemetry.sdk")

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from agentsudo_tokens import Agent, Issuer, KeyDirectory, Verifier, sudo
from agentsudo_tokens.audit.events import _sinks, set_audit_log
from agentsudo_tokens.audit.file import read_events
from agentsudo_tokens.audit.otel import disable_otel, enable_otel, otel_enabled, watch_pending
from agentsudo_tokens.errors import (
    ConfigError,
    ExpiredTokenError,
    LimitExceededError,
    PermissionDeniedError,
)
from agentsudo_tokens.guard.approval_context import ApprovalContext
from agentsudo_tokens.tokens.delegation import Delegation
from agentsudo_tokens.tokens.limits import Limits
from agentsudo_tokens.tokens.verifier import _UNTIMED, verify_timing


class Otel:
    """An SDK tracer provider and meter provider, read back in memory."""

    def __init__(self) -> None:
        self.spans = InMemorySpanExporter()
        self.tracer_provider = TracerProvider()
        self.tracer_provider.add_span_processor(SimpleSpanProcessor(self.spans))
        self.reader = InMemoryMetricReader()
        self.meter_provider = MeterProvider(metric_readers=[self.reader])

    def finished(self) -> list[ReadableSpan]:
        return list(self.spans.get_finished_spans())

    def metric(self, name: str) -> list[Any]:
        """The data points of metric ``name`` now."""
        data = self.reader.get_metrics_data()
        points: list[Any] = []
        if data is None:
            return points
        for resource in data.resource_metrics:
            for scope in resource.scope_metrics:
                for metric in scope.metrics:
                    if metric.name == name:
                        points.extend(metric.data.data_points)
        return points

    def decisions(self) -> dict[tuple[str, str | None], int]:
        return {
            (p.attributes["agentsudo.outcome"], p.attributes.get("agentsudo.scope")): p.value
            for p in self.metric("agentsudo.decisions")
        }


@pytest.fixture
def otel() -> Iterator[Otel]:
    telemetry = Otel()
    enable_otel(tracer_provider=telemetry.tracer_provider, meter_provider=telemetry.meter_provider)
    yield telemetry
    disable_otel()
    telemetry.tracer_provider.shutdown()
    telemetry.meter_provider.shutdown()


@sudo(scope="read:orders")
def read_orders(order_id: str) -> str:
    return f"order {order_id}"


@sudo(scope="delete:customer", on_deny="log")
def delete_customer(customer_id: str) -> str:
    return f"deleted {customer_id}"


@sudo(scope="read:payroll")
def read_payroll() -> str:
    return "payroll"


def _small_refunds(agent: Agent, scope: str, context: ApprovalContext) -> bool:
    return int(context.arguments["amount"]) <= 100


@sudo(scope="write:refunds", on_deny=_small_refunds)
def refund(order_id: str, amount: int) -> str:
    return f"refunded {amount} on {order_id}"


@sudo(scope="write:refunds")
def limited_refund(order_id: str, amount: int) -> str:
    return f"refunded {amount} on {order_id}"


def _agent(issuer: Issuer, verifier: Verifier, scopes: list[str], **extra: Any) -> Agent:
    token = issuer.issue("SupportBot", scopes, **extra).token
    return Agent.from_token(token, verifier=verifier)


def test_each_decision_is_a_span_named_for_it_with_its_attributes(
    otel: Otel, issuer: Issuer, verifier: Verifier
) -> None:
    agent = _agent(issuer, verifier, ["read:orders"])
    with agent.start_session():
        assert read_orders("o1") == "order o1"  # the fast path
        assert delete_customer("c1") == "deleted c1"  # audit mode
        with pytest.raises(PermissionDeniedError):
            read_payroll()
        assert refund("o1", 50) == "refunded 50 on o1"  # approved
        with pytest.raises(PermissionDeniedError, match="refused by approver"):
            refund("o2", 5000)
    spans = otel.finished()
    assert [s.name for s in spans] == [
        "agentsudo.allowed",
        "agentsudo.audit_violation",
        "agentsudo.denied",
        "agentsudo.approved",
        "agentsudo.refused",
    ]  # session start and end are no decisions
    allowed = dict(spans[0].attributes or {})
    assert allowed == {
        "agentsudo.outcome": "allowed",
        "enduser.id": "SupportBot",
        "agentsudo.scope": "read:orders",
        "code.function.name": "read_orders",
        "agentsudo.jti": agent.jti,
        "agentsudo.chain": ("SupportBot",),
        "agentsudo.signed": True,
    }
    denied = dict(spans[2].attributes or {})
    assert denied["agentsudo.scope"] == "read:payroll"
    assert denied["agentsudo.reason"] == "not granted"
    assert spans[4].attributes is not None and spans[4].attributes["agentsudo.reason"] == "said no"
    assert all(s.end_time is not None and s.end_time >= (s.start_time or 0) for s in spans)
    assert otel.decisions() == {
        ("allowed", "read:orders"): 1,
        ("audit_violation", "delete:customer"): 1,
        ("denied", "read:payroll"): 1,
        ("approved", "write:refunds"): 1,
        ("refused", "write:refunds"): 1,
    }


def test_a_limit_hit_is_a_denial_whose_reason_names_the_limit(
    otel: Otel, issuer: Issuer, verifier: Verifier
) -> None:
    limits = Limits.parse(["write:refunds amount<=100"])
    agent = _agent(issuer, verifier, ["write:refunds"], limits=limits)
    with agent.start_session():
        assert limited_refund("o1", 50) == "refunded 50 on o1"
        with pytest.raises(LimitExceededError):
            limited_refund("o1", 5000)
    names = [(s.name, dict(s.attributes or {}).get("agentsudo.reason")) for s in otel.finished()]
    assert names == [
        ("agentsudo.allowed", None),
        ("agentsudo.denied", "amount 5000 exceeds the token's limit 100 for write:refunds"),
    ]


def test_a_delegated_agent_carries_its_actor_chain(
    otel: Otel, issuer: Issuer, verifier: Verifier
) -> None:
    parent = issuer.issue("Planner", ["read:orders"])
    child = issuer.issue(  # the subject is the root; act, the sub-agent acting for it
        "Planner",
        ["read:orders"],
        delegation=Delegation(("Summarizer",), (parent.claims["jti"],)),
    )
    with Agent.from_token(child.token, verifier=verifier).start_session():
        read_orders("o1")
    (span,) = otel.finished()
    assert span.attributes is not None
    assert span.attributes["agentsudo.chain"] == ("Planner", "Summarizer")
    assert span.attributes["enduser.id"] == "Summarizer"


def test_the_decision_span_is_a_child_of_the_span_the_guard_ran_in(
    otel: Otel, issuer: Issuer, verifier: Verifier
) -> None:
    tracer = otel.tracer_provider.get_tracer("the app")
    with _agent(issuer, verifier, ["read:orders"]).start_session():
        with tracer.start_as_current_span("GET /orders") as request:
            read_orders("o1")
    decision, outer = otel.finished()
    assert outer.name == "GET /orders"
    assert decision.parent is not None
    assert decision.parent.span_id == request.get_span_context().span_id
    assert decision.context is not None
    assert decision.context.trace_id == request.get_span_context().trace_id


def test_async_and_generator_guards_are_counted_too(
    otel: Otel, issuer: Issuer, verifier: Verifier
) -> None:
    @sudo(scope="read:orders")
    async def fetch() -> str:
        return "fetched"

    @sudo(scope="read:orders")
    def each() -> Iterator[int]:
        yield from (1, 2)

    with _agent(issuer, verifier, ["read:orders"]).start_session():
        assert asyncio.run(fetch()) == "fetched"
        assert list(each()) == [1, 2]
    assert otel.decisions() == {("allowed", "read:orders"): 2}


def test_telemetry_and_the_audit_file_both_see_every_decision(
    otel: Otel, issuer: Issuer, verifier: Verifier, tmp_path: Path
) -> None:
    log = tmp_path / "audit.jsonl"
    set_audit_log(log)
    with _agent(issuer, verifier, ["read:orders"]).start_session():
        read_orders("o1")
        delete_customer("c1")
    decisions = [e["outcome"] for e in read_events(log) if e["outcome"] != "session_start"]
    assert decisions[:2] == ["allowed", "audit_violation"]
    assert [s.name for s in otel.finished()] == ["agentsudo.allowed", "agentsudo.audit_violation"]


def test_verify_latency_is_measured_with_the_error_of_a_refused_token(
    otel: Otel, issuer: Issuer, verifier: Verifier
) -> None:
    verifier.verify(issuer.issue("SupportBot", ["read:orders"]).token)
    expired = issuer.issue("SupportBot", ["read:orders"], ttl=60, now=1_000_000).token
    with pytest.raises(ExpiredTokenError):
        verifier.verify(expired)
    points = {p.attributes.get("error.type"): p for p in otel.metric("agentsudo.verify.duration")}
    assert set(points) == {None, "ExpiredTokenError"}
    assert points[None].count == 1 and points["ExpiredTokenError"].count == 1
    assert 0 < points[None].sum < 1.0


def test_verify_is_not_measured_once_telemetry_is_off(issuer: Issuer, verifier: Verifier) -> None:
    telemetry = Otel()
    enable_otel(tracer_provider=telemetry.tracer_provider, meter_provider=telemetry.meter_provider)
    assert verify_timing() is not None and otel_enabled()
    disable_otel()
    assert verify_timing() is None and not otel_enabled()
    assert Verifier.verify is _UNTIMED  # the method as it was: nothing measured, no cost
    verifier.verify(issuer.issue("SupportBot", ["read:orders"]).token)
    with Agent("SupportBot", ["read:orders"]).start_session():
        read_orders("o1")
    assert telemetry.finished() == []
    assert telemetry.metric("agentsudo.verify.duration") == []


def test_the_broker_reports_its_waiting_approvals_as_a_gauge(
    otel: Otel, key_dir: KeyDirectory, issuer: Issuer, verifier: Verifier
) -> None:
    from starlette.testclient import TestClient

    from agentsudo_tokens.broker.app import BrokerConfig, create_app
    from agentsudo_tokens.broker.elevation import file_elevation
    from agentsudo_tokens.state.approvals import approve

    def pending() -> list[Any]:
        return [p.value for p in otel.metric("agentsudo.approvals.pending")]

    claims = verifier.verify(issuer.issue("SupportBot", ["read:orders"]).token)
    app = create_app(BrokerConfig(keys_dir=key_dir.path, policy_path=None))
    with TestClient(app):  # the broker's lifespan: started, then stopped
        store = app.state.broker.store

        def ask(amount: int) -> str:
            filed = file_elevation(
                store,
                claims,
                scope="write:refunds",
                function="refund",
                arguments=f'{{"amount":{amount}}}',
                reason=None,
                timeout=None,
                may_ask=True,
            )
            return filed.id

        assert pending() == [0]
        first = ask(5)
        ask(7)
        assert pending() == [2]
        approve(store, first, by="alice")
        assert pending() == [1]
    assert pending() == []  # a stopped broker is no longer watched


def test_a_store_that_fails_reports_no_figure_rather_than_a_wrong_one(otel: Otel) -> None:
    def broken() -> int:
        raise OSError("the store is down")

    stop = watch_pending(broken)
    assert otel.metric("agentsudo.approvals.pending") == []
    stop()


def test_watching_pending_without_telemetry_does_nothing() -> None:
    stop = watch_pending(lambda: 1)
    stop()
    assert _sinks.telemetry is None


_GUARDED_CALL = textwrap.dedent(
    """
    import sys
    from agentsudo_tokens import Agent, sudo
    from agentsudo_tokens.audit.events import set_audit_log

    @sudo(scope="read:orders")
    def read_orders():
        return "ok"

    set_audit_log(sys.argv[1])
    with Agent("SupportBot", ["read:orders"]).start_session():
        assert read_orders() == "ok"
    leaked = sorted(m for m in sys.modules if m.split(".")[0] == "opentelemetry")
    print(",".join(leaked) or "none")
    """
)


def _python(
    code: str, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("AGENTSUDO_")}
    environment.update(env or {})
    return subprocess.run(
        [sys.executable, "-c", code, *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=environment,
    )


@pytest.mark.parametrize("setting", [None, "0", "off"])
def test_without_telemetry_opentelemetry_is_never_imported(
    tmp_path: Path, setting: str | None
) -> None:
    env = {} if setting is None else {"AGENTSUDO_OTEL": setting}
    done = _python(_GUARDED_CALL, str(tmp_path / "audit.jsonl"), env=env)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "none"


def test_agentsudo_otel_1_sends_decisions_to_the_global_providers(tmp_path: Path) -> None:
    code = textwrap.dedent(
        """
        from opentelemetry import trace
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import SimpleSpanProcessor
        from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
        exporter = InMemorySpanExporter()
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        trace.set_tracer_provider(provider)
        """
    ) + _GUARDED_CALL.replace(
        'print(",".join(leaked) or "none")',
        "print([s.name for s in exporter.get_finished_spans()])",
    )
    done = _python(code, str(tmp_path / "audit.jsonl"), env={"AGENTSUDO_OTEL": "1"})
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "['agentsudo.allowed']"


def test_agentsudo_otel_1_without_the_extra_fails_closed(tmp_path: Path) -> None:
    absent = "import sys; sys.modules['opentelemetry'] = None  # as if not installed\n"
    done = _python(
        absent + _GUARDED_CALL.replace("set_audit_log(sys.argv[1])", ""),
        env={"AGENTSUDO_OTEL": "1"},
    )
    assert done.returncode == 1
    last = done.stderr.strip().splitlines()[-1]
    assert "ConfigError: OpenTelemetry was asked for and is not installed" in last
    assert "the otel extra: pip install -e '.[otel]'" in last


def test_a_bad_agentsudo_otel_value_is_a_config_error() -> None:
    from agentsudo_tokens.config import Settings

    with pytest.raises(ConfigError, match="AGENTSUDO_OTEL: expected 1 or 0, found 'maybe'"):
        Settings.from_env({"AGENTSUDO_OTEL": "maybe"})
    assert Settings.from_env({"AGENTSUDO_OTEL": "1"}).otel is True
