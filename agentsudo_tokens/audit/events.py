"""Audit events: every guard decision and session start/end.

    import logging
    logging.getLogger("agentsudo").setLevel(logging.INFO)   # the app decides; we never configure
    # each record carries ``record.agentsudo``: the event as a dict

    set_audit_log("audit.jsonl")     # or AGENTSUDO_AUDIT_LOG: a hash-chained JSON-lines file
    # AGENTSUDO_OTEL=1 or audit.otel.enable_otel(): decisions as OpenTelemetry spans and metrics

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


class _Telemetry(Protocol):
    """Where decisions go when OpenTelemetry is on (``audit.otel``; audit never imports it)."""

    def decision(self, event: AuditEvent) -> None: ...

    def close(self) -> None: ...


class _Sinks:
    """Where events go besides the logger: the audit file and telemetry, read from the
    settings once. ``active``: one of them is set (the guard's fast path reads it)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.file: AuditFile | None = None
        self.telemetry: _Telemetry | None = None
        self.active = False
        self.configured = False
        self.file_given = False  # set_audit_log was called: it wins over AGENTSUDO_AUDIT_LOG

    def configure_from_env(self) -> None:
        if self.configured:
            return
        from ..config import Settings

        settings = Settings.from_env()
        telemetry = None
        if settings.otel and self.telemetry is None:
            from .telemetry import from_env  # imports opentelemetry: only when asked for

            telemetry = from_env()
        with self.lock:
            if not self.configured:
                if not self.file_given:
                    self.file = AuditFile(settings.audit_log) if settings.audit_log else None
                if telemetry is not None:
                    self.telemetry = telemetry
                self._refresh()
                self.configured = True

    def use_telemetry(self, telemetry: _Telemetry | None) -> None:
        """Send decisions to ``telemetry`` (``None``: stop); the one before is closed."""
        with self.lock:
            previous, self.telemetry = self.telemetry, telemetry
            self._refresh()
        if previous is not None and previous is not telemetry:
            previous.close()

    def _refresh(self) -> None:
        self.active = self.file is not None or self.telemetry is not None

    def reset(self) -> None:
        with self.lock:
            if self.file is not None:
                self.file.close()
            telemetry = self.telemetry
            self.file, self.telemetry, self.configured = None, None, False
            self.file_given = False
            self._refresh()
        if telemetry is not None:
            telemetry.close()


_sinks = _Sinks()


def set_audit_log(path: str | Path | None) -> None:
    """Append every event to this hash-chained JSON-lines file (``None``: stop).

    The same as ``AGENTSUDO_AUDIT_LOG``; this call wins over the variable.
    """
    with _sinks.lock:
        if _sinks.file is not None:
            _sinks.file.close()
        _sinks.file = AuditFile(path) if path is not None else None
        _sinks.file_given = True
        _sinks._refresh()


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
    """Build and send one event, if anyone listens (the logger, the file, telemetry).

    :raises ConfigError: an audit file is configured but cannot be written (fail closed).
    """
    if not _sinks.configured:
        _sinks.configure_from_env()
    level = _LEVELS[outcome]
    sink = _sinks.file
    telemetry = _sinks.telemetry
    listening = _listening(level)
    if sink is None and telemetry is None and not listening:
        return
    event = _event(outcome, agent, scope, function, reason)
    if sink is not None:
        sink.append(event.to_dict())
    if telemetry is not None:
        telemetry.decision(event)
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
