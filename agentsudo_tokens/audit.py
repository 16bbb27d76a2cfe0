"""Audit events: every guard decision and session start/end, for the ``agentsudo`` logger.

    import logging
    logging.getLogger("agentsudo").setLevel(logging.INFO)   # the app decides; we never configure
    # each record carries ``record.agentsudo``: the event as a dict

An event holds time (UTC), outcome, agent, token ``jti`` (never the token),
scope and function. Nothing is built unless the logger would emit it.
"""

from __future__ import annotations

import datetime
import logging
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .agent import Agent

__all__ = ["AuditEvent", "LOGGER_NAME", "logger"]

LOGGER_NAME = "agentsudo"
logger = logging.getLogger(LOGGER_NAME)
logger.addHandler(logging.NullHandler())

_LEVELS = {
    "allowed": logging.INFO,
    "denied": logging.WARNING,
    "audit_violation": logging.WARNING,
    "approved": logging.INFO,
    "refused": logging.WARNING,
    "session_start": logging.DEBUG,
    "session_end": logging.DEBUG,
}


@dataclass(frozen=True)
class AuditEvent:
    """One decision or session event. Never holds a token or a key."""

    time: str
    outcome: str
    agent: str | None
    jti: str | None
    scope: str | None
    function: str | None
    signed: bool
    reason: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """The event as a JSON-ready dict."""
        return asdict(self)


def _event(
    outcome: str,
    agent: Agent | None,
    scope: str | None,
    function: str | None,
    reason: str | None,
) -> AuditEvent:
    now = datetime.datetime.now(datetime.UTC).isoformat(timespec="microseconds")
    return AuditEvent(
        time=now.replace("+00:00", "Z"),
        outcome=outcome,
        agent=agent.name if agent is not None else None,
        jti=agent.jti if agent is not None else None,
        scope=scope,
        function=function,
        signed=agent.signed if agent is not None else False,
        reason=reason,
    )


def would_record(outcome: str) -> bool:
    """True when an event with this outcome would reach anyone (cheap)."""
    return logger.isEnabledFor(_LEVELS[outcome])


def record(
    outcome: str,
    agent: Agent | None,
    scope: str | None = None,
    function: str | None = None,
    reason: str | None = None,
) -> None:
    """Build and send one event, if anyone listens."""
    level = _LEVELS[outcome]
    if not logger.isEnabledFor(level):
        return
    event = _event(outcome, agent, scope, function, reason)
    logger.log(
        level,
        "%s agent=%s scope=%s function=%s",
        outcome,
        event.agent,
        scope,
        function,
        extra={"agentsudo": event.to_dict()},
    )


def emit_session(outcome: str, agent: Agent) -> None:
    """Record a session start or end."""
    record(outcome, agent)
