"""A service forwards its audit events to the console's feed (``broker.forwarder``), with a
real broker: they show in the feed as forwarded by the service; a broker out of reach never
holds the service up."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from console_harness import ConsoleBroker

from agentsudo_tokens import Agent, sudo
from agentsudo_tokens.broker.client import BrokerClient
from agentsudo_tokens.broker.forwarder import EventForwarder

pytest.importorskip("uvicorn")


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[ConsoleBroker]:
    running = ConsoleBroker(tmp_path)
    yield running
    running.stop()


@pytest.fixture
def audit_logger() -> Iterator[logging.Logger]:
    logger = logging.getLogger("agentsudo")
    level = logger.level
    logger.setLevel(logging.INFO)
    yield logger
    logger.setLevel(level)


@sudo(scope="read:orders")
def list_orders(customer: str) -> list[str]:
    return [f"order of {customer}"]


def test_forwarded_decisions_show_in_the_feed(
    broker: ConsoleBroker, audit_logger: logging.Logger
) -> None:
    web = broker.logged_in()
    latest = web.get(web.base + "/feed/events", params={"after": 0}).json()["latest"]
    client = BrokerClient(broker.tcp, credential=broker.credential("orders-service"))
    forwarder = EventForwarder(client, interval=0.05)
    audit_logger.addHandler(forwarder)
    try:
        with Agent("OrdersBot", ["read:orders"]).start_session():
            assert list_orders("<b>c-42</b>") == ["order of <b>c-42</b>"]
        with Agent("OrdersBot", ["read:other"]).start_session(), pytest.raises(PermissionError):
            list_orders("c-43")
    finally:
        audit_logger.removeHandler(forwarder)
        forwarder.close()
    assert (forwarder.sent, forwarder.failed, forwarder.dropped) == (2, 0, 0)
    shown = web.get(web.base + "/feed/events", params={"after": latest}).json()["events"]
    forwarded = [e for e in shown if e["source"] == "forwarded by credential:orders-service"]
    assert [(e["outcome"], e["agent"], e["scope"]) for e in forwarded] == [
        ("allowed", "OrdersBot", "read:orders"),
        ("denied", "OrdersBot", "read:orders"),
    ]


def test_a_long_field_is_cut_to_what_the_broker_takes_not_lost(
    broker: ConsoleBroker, audit_logger: logging.Logger
) -> None:
    """The broker takes 256 characters of a field (1,000 of a reason): a longer one is cut
    here, where it used to get the whole batch refused."""
    web = broker.logged_in()
    latest = web.get(web.base + "/feed/events", params={"after": 0}).json()["latest"]
    client = BrokerClient(broker.tcp, credential=broker.credential("orders-service"))
    forwarder = EventForwarder(client, interval=0.05)
    audit_logger.addHandler(forwarder)
    try:
        record = logging.LogRecord("agentsudo", logging.INFO, __file__, 1, "x", None, None)
        record.agentsudo = {  # type: ignore[attr-defined]
            "time": "2026-01-01T00:00:00Z", "outcome": "denied", "agent": "OrdersBot",
            "scope": "read:orders", "function": "f" * 400, "reason": "r" * 900,
        }  # fmt: skip
        forwarder.handle(record)
    finally:
        audit_logger.removeHandler(forwarder)
        forwarder.close()
    assert (forwarder.sent, forwarder.failed) == (1, 0)
    shown = web.get(web.base + "/feed/events", params={"after": latest}).json()["events"]
    assert [e["function"] for e in shown if e["source"].startswith("forwarded")] == ["f" * 256]


def test_a_broker_out_of_reach_never_holds_the_service_up(
    tmp_path: Path, audit_logger: logging.Logger
) -> None:
    client = BrokerClient("http://127.0.0.1:9")  # nothing listens there
    forwarder = EventForwarder(client, queue_size=5, interval=0.05)
    audit_logger.addHandler(forwarder)
    try:
        started = time.monotonic()
        with Agent("OrdersBot", ["read:orders"]).start_session():
            for _ in range(50):
                list_orders("c-42")
        assert time.monotonic() - started < 2  # the calls never waited on the broker
    finally:
        audit_logger.removeHandler(forwarder)
        forwarder.close()
    assert forwarder.sent == 0
    assert forwarder.failed + forwarder.dropped == 50  # each counted, none lost unsaid


def test_the_readme_snippet_builds_its_client_from_the_environment(
    broker: ConsoleBroker, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AGENTSUDO_BROKER", broker.tcp)
    monkeypatch.setenv("AGENTSUDO_BROKER_CREDENTIAL", broker.credential("orders-service"))
    forwarder = EventForwarder(BrokerClient.from_settings())  # as the README prints it
    forwarder.close()
    assert forwarder.client.address == broker.tcp
