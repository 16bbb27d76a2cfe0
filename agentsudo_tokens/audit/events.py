"""Audit events: every guard decision and session start/end.

    import logging
    logging.getLogger("agentsudo").setLevel(logging.INFO)   # the app decides; we never configure
    # each record carries ``record.agentsudo``: the event as a dict

    set_audit_log("audit.jsonl")     # or AGENTSUDO_AUDIT_LOG: a hash-chained JSON-lines file

An event holds time (UTC), outcome, agent, token ``jti`` (never the token),
scope and function. Nothing is built unless the logger would emit it or an
audit file is configured.
"""

from __future__ import annotations

import datetime
import logging
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from .file import AuditFile

__all__ = ["AuditEvent", "LOGGER_NAME", "logger", "set_audit_log"]

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


class _Actor(Protocol):
    """What an event records of the acting agent (an ``Agent`` is one; audit never imports it)."""

    @property
    def name(self) -> str: ...

    @property
    def jti(self) -> str | None: ...

    @property
    def signed(self) -> bool: ...

    @property
    def chain(self) -> tuple[str, ...]: ...


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
    chain: tuple[str, ...] | None = None  # who acts for whom: (root agent, ..., agent)

    def to_dict(self) -> dict[str, Any]:
        """The event as a JSON-ready dict (by hand: ``dataclasses.asdict`` deep-copies, slowly).

        ``chain`` is ``[agent]`` for an agent acting for itself, ``[root agent, ...,
        agent]`` for a delegated one (``tokens.delegation``), ``None`` without an agent.
        """
        return {
            "time": self.time,
            "outcome": self.outcome,
            "agent": self.agent,
            "jti": self.jti,
            "scope": self.scope,
            "function": self.function,
            "signed": self.signed,
            "reason": self.reason,
            "chain": list(self.chain) if self.chain is not None else None,
        }


def _event(
    outcome: str,
    agent: _Actor | None,
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
        chain=agent.chain if agent is not None else None,
    )


class _Sinks:
    """Where events go besides the logger: the audit file, read from the settings once."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.file: AuditFile | None = None
        self.configured = False

    def configure_from_env(self) -> None:
        if self.configured:
            return
        from ..config import Settings

        path = Settings.from_env().audit_log
        with self.lock:
            if not self.configured:
                self.file = AuditFile(path) if path is not None else None
                self.configured = True

    def reset(self) -> None:
        with self.lock:
            if self.file is not None:
                self.file.close()
            self.file, self.configured = None, False


_sinks = _Sinks()


def set_audit_log(path: str | Path | None) -> None:
    """Append every event to this hash-chained JSON-lines file (``None``: stop).

    The same as ``AGENTSUDO_AUDIT_LOG``; this call wins over the variable.
    """
    with _sinks.lock:
        if _sinks.file is not None:
            _sinks.file.close()
        _sinks.file = AuditFile(path) if path is not None else None
        _sinks.configured = True


def _listening(level: int) -> bool:
    """True when a record at ``level`` would reach a real handler (not our NullHandler)."""
    if not logger.isEnabledFor(level):
        return False
    current: logging.Logger | None = logger
    while current is not None:
        for handler in current.handlers:
            if not isinstance(handler, logging.NullHandler) and level >= handler.level:
                return True
        if not current.propagate:
            return False
        current = current.parent
    return False


def record(
    outcome: str,
    agent: _Actor | None,
    scope: str | None = None,
    function: str | None = None,
    reason: str | None = None,
) -> None:
    """Build and send one event, if anyone listens.

    :raises ConfigError: an audit file is configured but cannot be written (fail closed).
    """
    if not _sinks.configured:
        _sinks.configure_from_env()
    level = _LEVELS[outcome]
    sink = _sinks.file
    listening = _listening(level)
    if sink is None and not listening:
        return
    event = _event(outcome, agent, scope, function, reason)
    if sink is not None:
        sink.append(event.to_dict())
    if not listening:
        return
    logger.log(
        level,
        "%s agent=%s scope=%s function=%s",
        outcome,
        event.agent,
        scope,
        function,
        extra={"agentsudo": event.to_dict()},
    )


def emit_session(outcome: str, agent: _Actor) -> None:
    """Record a session start or end."""
    record(outcome, agent)
