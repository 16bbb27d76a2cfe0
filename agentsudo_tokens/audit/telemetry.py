"""The instruments behind ``audit.otel``; the one module that imports opentelemetry.

    telemetry = start(tracer_provider, meter_provider)   # also measures Verifier.verify
    telemetry.decision(event)                            # a span and a count

Names and attributes: see ``audit.otel``.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, Protocol

from ..errors import ConfigError

if TYPE_CHECKING:
    from opentelemetry.metrics import CallbackOptions, MeterProvider, Observation
    from opentelemetry.trace import TracerProvider

__all__ = ["DECISIONS", "INSTRUMENTATION", "Telemetry", "from_env", "start"]


class _Event(Protocol):
    """What a decision span shows of an event (``events.AuditEvent`` is one)."""

    @property
    def outcome(self) -> str: ...

    @property
    def agent(self) -> str | None: ...

    @property
    def jti(self) -> str | None: ...

    @property
    def scope(self) -> str | None: ...

    @property
    def function(self) -> str | None: ...

    @property
    def signed(self) -> bool: ...

    @property
    def reason(self) -> str | None: ...

    @property
    def chain(self) -> tuple[str, ...] | None: ...


INSTRUMENTATION = "agentsudo_tokens"  # the tracer's and the meter's name
DECISIONS = frozenset({"allowed", "denied", "audit_violation", "approved", "refused"})
_INSTALL = "the otel extra: pip install -e '.[otel]' in a checkout"


def _import_otel() -> tuple[Any, Any]:
    """The ``opentelemetry.trace`` and ``opentelemetry.metrics`` modules.

    :raises ConfigError: the ``otel`` extra is not installed.
    """
    try:
        from opentelemetry import metrics, trace
    except ImportError as exc:
        raise ConfigError(
            f"OpenTelemetry was asked for and is not installed: expected the opentelemetry-api "
            f"package ({_INSTALL}), found {exc.name or 'none'} missing",
            expected="opentelemetry-api",
            found="not installed",
        ) from None
    return trace, metrics


class Telemetry:
    """The tracer and the instruments decisions go to."""

    def __init__(
        self,
        tracer_provider: TracerProvider | None,
        meter_provider: MeterProvider | None,
    ) -> None:
        from .. import __version__

        trace, metrics = _import_otel()
        self._internal = trace.SpanKind.INTERNAL
        self._tracer = trace.get_tracer(
            INSTRUMENTATION, __version__, tracer_provider=tracer_provider
        )
        meter = metrics.get_meter(INSTRUMENTATION, __version__, meter_provider=meter_provider)
        self._decisions = meter.create_counter(
            "agentsudo.decisions",
            unit="{decision}",
            description="Guard decisions, by outcome",
        )
        self._verify = meter.create_histogram(
            "agentsudo.verify.duration",
            unit="s",
            description="Time to verify a token (Verifier.verify)",
        )
        self._pending_sources: list[Callable[[], int]] = []
        self._lock = threading.Lock()
        self._observation = metrics.Observation
        meter.create_observable_gauge(
            "agentsudo.approvals.pending",
            callbacks=[self._pending],
            unit="{request}",
            description="Approval requests waiting for a human",
        )

    def decision(self, event: _Event) -> None:
        """One decision: a short span and a count (session events are not decisions)."""
        if event.outcome not in DECISIONS:
            return
        attributes: dict[str, Any] = {"agentsudo.outcome": event.outcome}
        if event.agent is not None:
            attributes["enduser.id"] = event.agent
        if event.scope is not None:
            attributes["agentsudo.scope"] = event.scope
        counted = dict(attributes)
        if event.function is not None:
            attributes["code.function.name"] = event.function
        if event.jti is not None:
            attributes["agentsudo.jti"] = event.jti
        if event.chain is not None:
            attributes["agentsudo.chain"] = list(event.chain)
        attributes["agentsudo.signed"] = event.signed
        if event.reason is not None:
            attributes["agentsudo.reason"] = event.reason
        span = self._tracer.start_span(
            "agentsudo." + event.outcome, kind=self._internal, attributes=attributes
        )
        span.end()
        self._decisions.add(1, counted)

    def verified(self, seconds: float, error: BaseException | None) -> None:
        """One ``Verifier.verify``: its duration, and the error's class if it refused."""
        if error is None:
            self._verify.record(seconds)
        else:
            self._verify.record(seconds, {"error.type": type(error).__name__})

    def _pending(self, _options: CallbackOptions) -> Iterator[Observation]:
        with self._lock:
            sources = list(self._pending_sources)
        total, counted = 0, False
        for source in sources:
            try:
                total += source()
                counted = True
            except Exception:  # the store is down: no figure, rather than a wrong one
                continue
        if counted:
            yield self._observation(total)

    def watch(self, count: Callable[[], int]) -> Callable[[], None]:
        with self._lock:
            self._pending_sources.append(count)

        def stop() -> None:
            with self._lock:
                if count in self._pending_sources:
                    self._pending_sources.remove(count)

        return stop

    def close(self) -> None:
        """Stop measuring ``Verifier.verify`` (when this telemetry measures it)."""
        from ..tokens.verifier import measure_verify, verify_timing

        if verify_timing() == self.verified:
            measure_verify(None)
        with self._lock:
            self._pending_sources.clear()


def start(
    tracer_provider: TracerProvider | None, meter_provider: MeterProvider | None
) -> Telemetry:
    from ..tokens.verifier import measure_verify

    telemetry = Telemetry(tracer_provider, meter_provider)
    measure_verify(telemetry.verified)
    return telemetry


def from_env() -> Telemetry:
    """``AGENTSUDO_OTEL=1``: telemetry on the global providers (``events`` calls this)."""
    return start(None, None)
