"""Forwarding a service's audit events to the broker's console feed, in the background.

    import logging
    from agentsudo_tokens.broker.client import BrokerClient
    from agentsudo_tokens.broker.forwarder import EventForwarder

    audit_log = logging.getLogger("agentsudo")
    audit_log.setLevel(logging.INFO)                  # allowed calls are INFO events
    audit_log.addHandler(EventForwarder(BrokerClient.from_settings()))

Every audit event this process records (``audit.events``: the ``agentsudo``
logger) is queued and posted in batches to ``POST /v1/console/events``, as an
admin or a principal in the policy's ``[broker] forwarders``. The service never
waits on the broker: a full queue drops the newest events and counts them
(``dropped``), a failed post drops its batch and counts it (``failed``). The
library attaches nothing by itself; the handler is yours to add.
"""

from __future__ import annotations

import logging
import queue
import threading
from typing import TYPE_CHECKING, Any

from .console.feed import FIELD_TEXT, MAX_FORWARDED, REASON_TEXT, ForwardedEvent

if TYPE_CHECKING:
    from .client import BrokerClient

__all__ = ["EventForwarder"]

# what POST /v1/console/events takes of an event (ForwardedEvent), but a chained file's links
FIELDS = tuple(name for name in ForwardedEvent.model_fields if name not in ("prev", "hash"))
MAX_BATCH = MAX_FORWARDED


def _clipped(name: str, value: Any) -> Any:
    """``value`` cut to what the broker takes, so one long field never costs a batch."""
    if isinstance(value, str):
        return value[: REASON_TEXT if name == "reason" else FIELD_TEXT]
    if isinstance(value, list):
        return [str(item)[:FIELD_TEXT] for item in value[:16]]
    return value


class EventForwarder(logging.Handler):
    """A logging handler that posts audit events to the broker's console feed.

    :param client: the broker (``BrokerClient.from_settings()``, a credential over TCP).
    :param queue_size: events held while the broker is slow; more are dropped.
    :param interval: seconds to gather a batch before posting it.
    """

    def __init__(
        self, client: BrokerClient, *, queue_size: int = 10_000, interval: float = 0.5
    ) -> None:
        super().__init__(logging.INFO)
        self.client = client
        self.interval = interval
        self.dropped = 0
        self.failed = 0
        self.sent = 0
        self._queue: queue.Queue[dict[str, Any] | None] = queue.Queue(maxsize=queue_size)
        self._thread = threading.Thread(target=self._run, name="agentsudo-forwarder", daemon=True)
        self._thread.start()

    def emit(self, record: logging.LogRecord) -> None:
        event = getattr(record, "agentsudo", None)
        if not isinstance(event, dict) or not isinstance(event.get("outcome"), str):
            return
        given = ((name, event.get(name)) for name in FIELDS)
        shown = {name: _clipped(name, value) for name, value in given if value is not None}
        if not isinstance(shown.get("time"), str):
            return
        try:
            self._queue.put_nowait(shown)
        except queue.Full:
            self.dropped += 1

    def _run(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            batch = [first]
            try:
                while len(batch) < MAX_BATCH:
                    item = self._queue.get(timeout=self.interval)
                    if item is None:
                        self._post(batch)
                        return
                    batch.append(item)
            except queue.Empty:
                pass
            self._post(batch)

    def _post(self, batch: list[dict[str, Any]]) -> None:
        try:
            self.client.request("POST", "/v1/console/events", {"events": batch})
            self.sent += len(batch)
        except Exception:  # the broker is down or refuses: the service goes on
            self.failed += len(batch)

    def close(self) -> None:
        """Post what is queued, then stop (waits a few seconds at most)."""
        try:
            self._queue.put(None, timeout=1)
        except queue.Full:
            pass
        self._thread.join(timeout=5)
        super().close()
