"""Elevation, the sudo moment: a human approves one call that an agent has no scope for.

    @sudo(scope="write:refunds", on_deny="ask")          # wait up to 5 minutes for a human
    def process_refund(order_id, amount): ...

    @sudo(scope="write:refunds", on_deny=ask(timeout=30, notify="https://hooks.slack.com/..."))
    async def refund_async(order_id, amount): ...

    $ agentsudo approvals              # waiting: agent, scope, function, arguments
    $ agentsudo approve apr_Xb3...     # that one call proceeds, once
    $ agentsudo deny apr_Xb3...        # it raises PermissionDeniedError

The waiting call writes a request into the store (``AGENTSUDO_STORE``, shared
by every process that uses it), optionally notifies a webhook, then polls for
the answer (``time.sleep`` in sync code, ``asyncio.sleep`` in async code:
the event loop never blocks). No answer before the timeout denies. The
request holds the call's arguments whole, as canonical JSON (``agentsudo
approvals show ID`` prints them); arguments over ``MAX_ARGUMENTS`` bytes, or
that cannot be shown, are refused without asking. An answer is taken
atomically, once, and bound to the request and the call: request id, agent,
token ``jti``, scope, function and the SHA-256 of the arguments' canonical
JSON, recomputed when the answer arrives, so it cannot serve another request
(even an identical one), another agent, or arguments changed while waiting.
Request ids carry 128 random bits.

With ``AGENTSUDO_BROKER`` set (and no ``store`` given) the request goes to the
broker instead, with the session's token: the broker files it, an admin
answers, and an approval comes back as a signed one-shot elevation token that
is checked against the broker's keys and this very call, and used once (see
``broker.elevation``). The agent writes nothing; a notification is still sent
from here.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..errors import ConfigError
from ..state.approvals import (
    ANSWER,
    KEEP,
    MAX_ARGUMENTS,
    REQUEST,
    ApprovalRequest,
    Verdict,
    binding,
    canonical_arguments,
    canonical_json,
    notify_webhook,
    text_digest,
)

if TYPE_CHECKING:
    from ..state import Store
    from .agent import Agent
    from .approval_context import ApprovalContext
    from .broker_elevation import ElevationWaiting

__all__ = ["Ask", "ask"]

DEFAULT_TIMEOUT = 300.0
DEFAULT_POLL_INTERVAL = 0.5
logger = logging.getLogger("agentsudo")


class _Waiting:
    """One call's request: submit, poll, settle. Never sleeps; the caller does."""

    def __init__(
        self, ask: Ask, store: Store, agent: Agent, scope: str, context: ApprovalContext
    ) -> None:
        self.ask, self.store, self.context = ask, store, context
        self.agent, self.jti, self.scope = agent.name, agent.jti, scope
        request_id = "apr_" + secrets.token_urlsafe(16)
        try:
            arguments, why = canonical_arguments(context.arguments), None
        except ValueError as exc:
            arguments, why = "{}", f"cannot ask a human: {exc}"
        if len(arguments) > MAX_ARGUMENTS:  # refused, never shown shortened
            why = (
                f"cannot ask a human: the arguments are {len(arguments)} bytes of canonical "
                f"JSON, over the {MAX_ARGUMENTS}-byte limit of what is shown whole"
            )
            arguments = "{}"
        # set when the call cannot be put to a human: the caller refuses without asking
        self.refusal = None if why is None else Verdict(False, why, request_id)
        digest = text_digest(arguments)
        now = time.time()
        self.request = ApprovalRequest(
            id=request_id,
            agent=self.agent,
            jti=self.jti,
            scope=scope,
            function=context.function,
            arguments_json=arguments,
            arguments_sha256=digest,
            reason=context.reason,
            created_at=now,
            expires_at=now + ask.timeout,
            binding=binding(request_id, self.agent, self.jti, scope, context.function, digest),
        )

    def start(self) -> None:
        request = self.request
        stored = json.dumps(request.to_dict())
        self.store.put(REQUEST + request.id, stored, expires_at=request.expires_at + KEEP)
        notify = self.ask.notify
        if notify is None:
            return
        try:
            if callable(notify):
                notify(request)
            else:
                notify_webhook(notify, request)
        except Exception as exc:  # the request stands; without an answer it times out: denied
            logger.warning(
                "approval request %s: notification failed: %s", request.id, type(exc).__name__
            )

    def poll(self) -> Verdict | None:
        if self.store.get(ANSWER + self.request.id) is None:
            return None
        return self.settle()

    def settle(self) -> Verdict:
        request_id = self.request.id
        raw = self.store.take(ANSWER + request_id)
        self.store.take(REQUEST + request_id)  # answered: no longer listed
        try:
            answer = json.loads(raw) if raw is not None else None
        except ValueError:
            answer = None
        if not isinstance(answer, dict):
            return Verdict(False, f"no usable answer to request {request_id}", request_id)
        by = answer.get("by") if isinstance(answer.get("by"), str) else None
        who = f" by {by}" if by else ""
        if answer.get("approved") is not True:
            why = answer.get("reason") if isinstance(answer.get("reason"), str) else None
            return Verdict(
                False, f"denied{who} ({why or 'no reason given'}; {request_id})", request_id, by
            )
        try:  # again: the arguments may have changed while waiting
            digest = text_digest(canonical_arguments(self.context.arguments))
        except ValueError:  # no longer showable: cannot be what was approved
            digest = ""
        bound = binding(request_id, self.agent, self.jti, self.scope, self.context.function, digest)
        if not digest or answer.get("binding") != bound or self.request.binding != bound:
            return Verdict(
                False, f"the approval does not match this call ({request_id})", request_id
            )
        return Verdict(True, f"approved{who} ({request_id})", request_id, by)

    def expire(self) -> Verdict:
        request = self.request
        timed_out = canonical_json({"approved": False, "reason": "timed out", "by": None})
        if self.store.add(ANSWER + request.id, timed_out, expires_at=request.expires_at + KEEP):
            self.store.take(REQUEST + request.id)
            why = f"no answer within {self.ask.timeout:g}s ({request.id})"
            return Verdict(False, why, request.id)
        return self.settle()  # answered at the last moment: that answer stands

    def cancel(self) -> None:
        """The caller gave up (interrupted, cancelled): best effort, close the request."""
        cancelled = canonical_json({"approved": False, "reason": "cancelled", "by": None})
        try:
            key = ANSWER + self.request.id
            if self.store.add(key, cancelled, expires_at=self.request.expires_at + KEEP):
                self.store.take(REQUEST + self.request.id)
        except Exception:  # the request expires on its own
            pass


@dataclass(frozen=True, repr=False)
class Ask:
    """``on_deny`` that asks a human through the store; build it with ``ask()``."""

    timeout: float = DEFAULT_TIMEOUT
    notify: str | Callable[[ApprovalRequest], object] | None = None
    store: Store | str | None = None
    poll_interval: float = DEFAULT_POLL_INTERVAL

    def __post_init__(self) -> None:
        for name in ("timeout", "poll_interval"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
                raise ConfigError(
                    f"ask: expected {name} as a positive number of seconds, found {value!r}",
                    expected=">0",
                    found=value,
                )
        notify = self.notify
        if isinstance(notify, str):
            if not notify.startswith(("https://", "http://")):
                raise ConfigError(
                    "ask: expected notify as an http(s) URL or a callable",
                    expected="http(s) URL",
                    found=notify.split(":", 1)[0],
                )
        elif notify is not None and not callable(notify):
            raise ConfigError(
                "ask: expected notify as an http(s) URL or a callable",
                found=type(notify).__name__,
            )
        if self.store is not None and not isinstance(self.store, str):
            from ..state import Store

            if not isinstance(self.store, Store):
                raise ConfigError(
                    "ask: expected store as a Store or a URL", found=type(self.store).__name__
                )

    def __repr__(self) -> str:  # a webhook URL is a secret: never shown
        notify = None if self.notify is None else "<set>"
        return f"Ask(timeout={self.timeout!r}, notify={notify}, store={self.store!r})"

    def _open(self) -> tuple[Store, bool]:
        """The store to use and whether this call opened it (and so must close it)."""
        from ..state import Store, default_store_url, open_store

        if isinstance(self.store, Store):
            return self.store, False
        if self.store is None:
            from ..config import Settings

            return open_store(default_store_url(Settings.from_env())), True
        return open_store(self.store), True

    def _through_broker(
        self, agent: Agent, scope: str, context: ApprovalContext
    ) -> ElevationWaiting | None:
        """With ``AGENTSUDO_BROKER`` set (and no store given), the request goes to the broker."""
        if self.store is not None:
            return None
        from ..config import Settings

        settings = Settings.from_env()
        if settings.broker is None:
            return None
        from ..broker.client import BrokerClient
        from .broker_elevation import ElevationWaiting

        client = BrokerClient(settings.broker)
        return ElevationWaiting(
            client,
            agent,
            scope,
            context,
            timeout=self.timeout,
            issuer=settings.issuer,
            notify=self.notify,
        )

    def wait(self, agent: Agent, scope: str, context: ApprovalContext) -> Verdict:
        """Ask, then block this thread until the answer or the timeout.

        :raises StoreUnavailableError: the store cannot be reached (the caller refuses).
        """
        through = self._through_broker(agent, scope, context)
        if through is not None:
            return _drive(through, self.timeout, self.poll_interval)
        store, opened = self._open()
        try:
            waiting = _Waiting(self, store, agent, scope, context)
            if waiting.refusal is not None:
                return waiting.refusal
            waiting.start()
            deadline = time.monotonic() + self.timeout
            try:
                while (verdict := waiting.poll()) is None:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        return waiting.expire()
                    time.sleep(min(self.poll_interval, remaining))
                return verdict
            except BaseException:
                waiting.cancel()
                raise
        finally:
            if opened:
                store.close()

    async def wait_async(self, agent: Agent, scope: str, context: ApprovalContext) -> Verdict:
        """As ``wait``, never blocking the event loop: store calls run in a worker thread.

        :raises StoreUnavailableError: the store cannot be reached (the caller refuses).
        """
        through = await asyncio.to_thread(self._through_broker, agent, scope, context)
        if through is not None:
            return await _drive_async(through, self.timeout, self.poll_interval)
        store, opened = self._open()
        try:
            waiting = _Waiting(self, store, agent, scope, context)
            if waiting.refusal is not None:
                return waiting.refusal
            await asyncio.to_thread(waiting.start)
            deadline = time.monotonic() + self.timeout
            try:
                while (verdict := await asyncio.to_thread(waiting.poll)) is None:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        return await asyncio.to_thread(waiting.expire)
                    await asyncio.sleep(min(self.poll_interval, remaining))
                return verdict
            except BaseException:
                waiting.cancel()
                raise
        finally:
            if opened:
                store.close()


def _drive(waiting: ElevationWaiting, timeout: float, poll_interval: float) -> Verdict:
    """File the request with the broker and block this thread until the answer or the timeout."""
    if waiting.refusal is not None:
        return waiting.refusal
    waiting.start()
    deadline = time.monotonic() + timeout
    try:
        while (verdict := waiting.poll()) is None:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return waiting.expire()
            time.sleep(min(poll_interval, remaining))
        return verdict
    except BaseException:
        waiting.cancel()
        raise


async def _drive_async(waiting: ElevationWaiting, timeout: float, poll_interval: float) -> Verdict:
    """As ``_drive``, the broker's answers awaited in a worker thread."""
    if waiting.refusal is not None:
        return waiting.refusal
    await asyncio.to_thread(waiting.start)
    deadline = time.monotonic() + timeout
    try:
        while (verdict := await asyncio.to_thread(waiting.poll)) is None:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return await asyncio.to_thread(waiting.expire)
            await asyncio.sleep(min(poll_interval, remaining))
        return verdict
    except BaseException:
        waiting.cancel()
        raise


def ask(
    *,
    timeout: float = DEFAULT_TIMEOUT,
    notify: str | Callable[[ApprovalRequest], object] | None = None,
    store: Store | str | None = None,
    poll_interval: float = DEFAULT_POLL_INTERVAL,
) -> Ask:
    """``on_deny`` for ``@sudo``: ask a human, wait up to ``timeout`` seconds.

    :param notify: a webhook URL to POST each request to as JSON (Slack-compatible),
        or a callable given the ``ApprovalRequest``. A failed notification is
        logged; the request still waits (and times out: denied).
    :param store: a ``Store`` or a store URL; default ``AGENTSUDO_STORE`` (else the
        key directory's SQLite file), read at each call.
    :param poll_interval: seconds between looks at the store.
    :raises ConfigError: a bad timeout, poll interval, notify or store.
    """
    return Ask(timeout=timeout, notify=notify, store=store, poll_interval=poll_interval)
