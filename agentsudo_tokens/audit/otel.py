"""OpenTelemetry: each decision as a short span, with metrics (the optional ``otel`` extra).

    from agentsudo_tokens.audit.otel import enable_otel
    enable_otel()                                   # OpenTelemetry's global providers
    enable_otel(tracer_provider=tp, meter_provider=mp)
    # or AGENTSUDO_OTEL=1: the global providers, from the first decision on

A decision (``allowed``, ``denied``, ``audit_violation``, ``approved``,
``refused``; a limit hit is one of these, its reason naming the limit) is a
span named ``agentsudo.<outcome>``, a child of the span current where the
guard ran, started and ended at the decision. Its attributes: ``enduser.id``
(the agent), ``code.function.name``, and ``agentsudo.outcome``,
``agentsudo.scope``, ``agentsudo.jti``, ``agentsudo.chain`` (who acts for whom,
root first), ``agentsudo.signed``, ``agentsudo.reason``. Metrics: the counter
``agentsudo.decisions`` (by outcome, scope and agent), the histogram
``agentsudo.verify.duration`` (seconds per ``Verifier.verify``, with
``error.type`` for a refused token), and the gauge ``agentsudo.approvals.pending``
(the broker's waiting requests). Never a token or a key.

Nothing here imports ``opentelemetry`` until telemetry is enabled, and
without it a decision costs what it did before (one attribute read on the
guard's fast path). Telemetry never changes a decision: an exporter's failure
is OpenTelemetry's to log; the audit file stays the record.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from .events import _sinks
from .telemetry import DECISIONS, INSTRUMENTATION, Telemetry, start

if TYPE_CHECKING:
    from opentelemetry.metrics import MeterProvider
    from opentelemetry.trace import TracerProvider

__all__ = [
    "DECISIONS",
    "INSTRUMENTATION",
    "disable_otel",
    "enable_otel",
    "otel_enabled",
    "watch_pending",
]


def enable_otel(
    *,
    tracer_provider: TracerProvider | None = None,
    meter_provider: MeterProvider | None = None,
) -> None:
    """Send each decision, verify latency and pending approvals to OpenTelemetry.

    :param tracer_provider: where spans go (default: OpenTelemetry's global one).
    :param meter_provider: where metrics go (default: OpenTelemetry's global one).
    :raises ConfigError: the ``otel`` extra (opentelemetry-api) is not installed.
    """
    _sinks.use_telemetry(start(tracer_provider, meter_provider))


def disable_otel() -> None:
    """Stop sending anything to OpenTelemetry (until enabled again)."""
    _sinks.use_telemetry(None)


def otel_enabled() -> bool:
    """True when decisions go to OpenTelemetry (``enable_otel`` or ``AGENTSUDO_OTEL=1``)."""
    if not _sinks.configured:
        _sinks.configure_from_env()
    return _sinks.telemetry is not None


def watch_pending(count: Callable[[], int]) -> Callable[[], None]:
    """Report ``count()`` as ``agentsudo.approvals.pending`` while telemetry is on (the broker:
    its store's waiting requests); a failing ``count`` reports nothing that time.

    :returns: a function that stops watching (nothing to stop when telemetry is off).
    """
    telemetry = _sinks.telemetry
    if not isinstance(telemetry, Telemetry):
        return _nothing
    return telemetry.watch(count)


def _nothing() -> None:
    return None
