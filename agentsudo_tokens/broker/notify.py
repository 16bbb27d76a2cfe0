"""The broker's notifier: each filed elevation request POSTed to the policy's webhook.

    notifier = Notifier(on_failure=lambda request, why: ...)
    notifier.submit("https://hooks.example/...", request)   # returns at once
    notifier.close()

The policy's ``[broker] notify`` URL gets what ``ask(notify=URL)`` sends
(``approvals.notify_webhook``: Slack-compatible JSON, a short ``text`` and the
request whole under ``agentsudo``). Filing never waits for it: requests are
queued and a few daemon threads post them, each within ``TIMEOUT`` seconds. A
webhook that fails, is slow, or a queue that is full only costs the
notification: it is logged (never the URL, whose path is often a secret) and
``on_failure`` is told; the request still waits for an admin.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable

from ..state.approvals import ApprovalRequest, notify_webhook

__all__ = ["MAX_QUEUED", "TIMEOUT", "WORKERS", "Notifier"]

TIMEOUT = 5.0  # seconds one webhook call may take (connect, send, answer)
WORKERS = 4  # webhook calls at once
MAX_QUEUED = 1000  # notifications waiting for a worker; more are dropped (and said so)
_log = logging.getLogger("agentsudo.broker")

_Job = tuple[str, ApprovalRequest] | None  # None: a worker's signal to stop


class Notifier:
    """Posts requests to webhooks from background threads (started at the first request).

    :param on_failure: called with the request and a one-line reason when a
        notification fails or is dropped (from a worker thread, or the submitter's).
    :param send: posts one request to a URL within a timeout (default ``notify_webhook``).
    """

    def __init__(
        self,
        on_failure: Callable[[ApprovalRequest, str], None] | None = None,
        *,
        workers: int = WORKERS,
        timeout: float = TIMEOUT,
        max_queued: int = MAX_QUEUED,
        send: Callable[[str, ApprovalRequest, float], None] | None = None,
    ) -> None:
        self.on_failure = on_failure
        self._send = send or _notify  # how one request is posted (broker.slack: Block Kit)
        self.timeout = timeout
        self._workers = workers
        self._jobs: queue.Queue[_Job] = queue.Queue(max_queued)
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        self._closed = False

    def submit(self, url: str, request: ApprovalRequest) -> None:
        """Queue ``request`` for ``url``; never blocks, never raises."""
        with self._lock:
            if self._closed:
                return
            if not self._threads:
                for number in range(self._workers):
                    thread = threading.Thread(
                        target=self._work, name=f"agentsudo-notify-{number}", daemon=True
                    )
                    thread.start()
                    self._threads.append(thread)
        try:
            self._jobs.put_nowait((url, request))
        except queue.Full:
            self._failed(request, f"the queue is full ({self._jobs.maxsize} waiting)")

    def _work(self) -> None:
        while True:
            job = self._jobs.get()
            if job is None:
                return
            url, request = job
            try:
                self._send(url, request, self.timeout)
            except Exception as exc:  # any failure costs the notification, never the broker
                self._failed(request, _reason(exc))

    def _failed(self, request: ApprovalRequest, why: str) -> None:
        _log.warning("approval request %s: the webhook was not notified: %s", request.id, why)
        if self.on_failure is None:
            return
        try:
            self.on_failure(request, why)
        except Exception:  # the audit logs its own failures
            _log.debug("approval request %s: on_failure failed", request.id, exc_info=True)

    def close(self) -> None:
        """Stop taking requests; the workers end after what they are posting (not waited for)."""
        with self._lock:
            self._closed = True
            threads, self._threads = self._threads, []
        for _ in threads:
            try:
                self._jobs.put_nowait(None)
            except queue.Full:
                break  # daemon threads: they end with the process


def _notify(url: str, request: ApprovalRequest, timeout: float) -> None:
    notify_webhook(url, request, timeout=timeout)


def _reason(exc: Exception) -> str:
    """One line about a failed POST, without the URL."""
    import urllib.error

    if isinstance(exc, urllib.error.HTTPError):
        return f"it answered HTTP {exc.code}"
    if isinstance(exc, TimeoutError):
        return "no answer in time"
    if isinstance(exc, urllib.error.URLError):
        inner = exc.reason
        if isinstance(inner, TimeoutError):
            return "no answer in time"
        if not isinstance(inner, OSError):
            return "unreachable"
        return f"unreachable ({type(inner).__name__})"
    return type(exc).__name__
