"""Approval requests in the store: what a waiting call asks, and how a human answers.

    pending(store)                       # requests waiting, oldest first
    approve(store, "apr_Xb3...", by="alice")
    deny(store, "apr_Xb3...", reason="too large")

A request is ``approval:<id>`` (JSON, shown to people: agent, token ``jti``,
scope, function, each argument's ``repr``); an answer is
``approval-answer:<id>``, written with an atomic add so the first answer wins,
and carrying the request's binding (a SHA-256 over agent, ``jti``, scope,
function and the arguments' canonical JSON). Both expire shortly after the
request's deadline. The waiting side is ``elevation``.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from .errors import UnknownApprovalError

if TYPE_CHECKING:
    from .store import Store

__all__ = [
    "ApprovalRequest",
    "Verdict",
    "approve",
    "arguments_digest",
    "deny",
    "notify_webhook",
    "pending",
]

REQUEST = "approval:"
ANSWER = "approval-answer:"
KEEP = 60.0  # requests and answers outlive the request's deadline by this much, then expire
_SHOWN = 200  # characters of each argument shown to the human
_ID = re.compile(r"apr_[A-Za-z0-9_-]{22,86}")


def _fallback(value: object) -> dict[str, str]:
    return {"$type": f"{type(value).__module__}.{type(value).__qualname__}", "$repr": repr(value)}


def canonical_json(value: object) -> str:
    """Sorted keys, no spaces, no NaN; ``repr`` (with the type) for values JSON lacks."""
    return json.dumps(
        value,
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
        allow_nan=False,
        default=_fallback,
    )


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def arguments_digest(arguments: Mapping[str, Any]) -> str:
    """SHA-256 of the arguments as canonical JSON (sorted keys; ``repr`` for other values)."""
    try:
        text = canonical_json(dict(arguments))
    except (TypeError, ValueError, RecursionError):  # odd keys, NaN, cycles: repr it all
        text = "repr:" + repr(sorted((str(k), repr(v)) for k, v in arguments.items()))
    return _sha256(text)


def binding(agent: str, jti: str | None, scope: str, function: str, digest: str) -> str:
    """What an approval is bound to: one agent (and token), scope, function and arguments."""
    return _sha256(canonical_json([agent, jti, scope, function, digest]))


def shown(value: object) -> str:
    """An argument as a person reads it: its ``repr``, shortened."""
    try:
        text = repr(value)
    except Exception:  # a repr that raises still gets shown as something
        text = f"<{type(value).__qualname__}>"
    return text if len(text) <= _SHOWN else text[: _SHOWN - 3] + "..."


@dataclass(frozen=True)
class ApprovalRequest:
    """One call waiting for a human: who, which scope, which function, with what."""

    id: str
    agent: str
    jti: str | None
    scope: str
    function: str
    arguments: Mapping[str, str]  # each argument's repr, shortened: for people to read
    arguments_sha256: str
    reason: str
    created_at: float
    expires_at: float
    binding: str = field(repr=False)

    def to_dict(self) -> dict[str, Any]:
        """The request as a JSON-ready dict."""
        data = {f.name: getattr(self, f.name) for f in fields(self)}
        data["arguments"] = dict(self.arguments)
        return data

    @classmethod
    def from_json(cls, text: str) -> ApprovalRequest:
        """Parse what ``to_dict`` wrote; ``ValueError`` for anything else."""
        try:
            data = json.loads(text)
            data["arguments"] = MappingProxyType(dict(data["arguments"]))
            return cls(**data)
        except (TypeError, KeyError, AttributeError) as exc:
            raise ValueError("not an approval request") from exc

    def call(self) -> str:
        """``function(name=value, ...)`` as the human sees it."""
        shown = ", ".join(f"{name}={value}" for name, value in self.arguments.items())
        return f"{self.function}({shown})"

    def describe(self) -> str:
        """One line: agent, scope, call."""
        return f"agent {self.agent!r} asks for {self.scope!r} to call {self.call()}"


@dataclass(frozen=True)
class Verdict:
    """How a request ended: approved (the call proceeds once) or not, and why."""

    approved: bool
    why: str
    request_id: str
    by: str | None = None


def _load(store: Store, request_id: str) -> ApprovalRequest:
    if not isinstance(request_id, str) or not _ID.fullmatch(request_id):
        raise UnknownApprovalError(
            f"expected an approval request id like apr_..., found {request_id!r}",
            expected="apr_<id>",
            found=request_id,
        )
    raw = store.get(REQUEST + request_id)
    try:
        request = None if raw is None else ApprovalRequest.from_json(raw)
    except ValueError:
        request = None
    if request is None or request.id != request_id:
        raise UnknownApprovalError(
            f"no approval request {request_id!r} is waiting (unknown, expired or answered)",
            found=request_id,
        )
    return request


def pending(store: Store) -> list[ApprovalRequest]:
    """Requests still waiting for an answer, oldest first.

    :raises StoreUnavailableError: the store cannot be reached.
    """
    now = time.time()
    found: list[ApprovalRequest] = []
    for raw in store.items(REQUEST).values():
        try:
            request = ApprovalRequest.from_json(raw)
        except ValueError:
            continue
        if request.expires_at > now:
            found.append(request)
    answers = store.get_many([ANSWER + r.id for r in found]) if found else []
    waiting = [r for r, answer in zip(found, answers, strict=True) if answer is None]
    return sorted(waiting, key=lambda r: (r.created_at, r.id))


def _answer(
    store: Store, request_id: str, approved: bool, by: str | None, reason: str | None
) -> ApprovalRequest:
    request = _load(store, request_id)
    now = time.time()
    if request.expires_at <= now:
        raise UnknownApprovalError(f"approval request {request_id!r} has expired", found="expired")
    answer = {"approved": approved, "binding": request.binding, "by": by, "reason": reason}
    if not store.add(
        ANSWER + request_id, canonical_json(answer), expires_at=request.expires_at + KEEP
    ):
        raise UnknownApprovalError(
            f"approval request {request_id!r} was already answered", found="answered"
        )
    return request


def approve(store: Store, request_id: str, *, by: str | None = None) -> ApprovalRequest:
    """Approve one waiting call. The first answer wins; the call proceeds once.

    :raises UnknownApprovalError: no such request waiting (unknown, expired, answered).
    :raises StoreUnavailableError: the store cannot be reached.
    """
    return _answer(store, request_id, True, by, None)


def deny(
    store: Store, request_id: str, *, by: str | None = None, reason: str | None = None
) -> ApprovalRequest:
    """Refuse one waiting call: it raises ``PermissionDeniedError``.

    :raises UnknownApprovalError: no such request waiting (unknown, expired, answered).
    :raises StoreUnavailableError: the store cannot be reached.
    """
    return _answer(store, request_id, False, by, reason)


def notify_webhook(url: str, request: ApprovalRequest, *, timeout: float = 5.0) -> None:
    """POST the request as JSON to ``url``; Slack-compatible (a ``text`` field).

    :raises OSError: the webhook could not be reached or answered with an error.
    """
    import urllib.request

    left = max(0, int(request.expires_at - time.time()))
    text = (
        f"agentsudo: {request.describe()}. "
        f"Answer with `agentsudo approve {request.id}` or `agentsudo deny {request.id}` "
        f"(no answer within {left}s denies)."
    )
    payload = {"text": text, "agentsudo": request.to_dict()}
    body = json.dumps(payload).encode()
    post = urllib.request.Request(
        url, data=body, headers={"Content-Type": "application/json"}, method="POST"
    )
    # http(s) only: ask() refuses other schemes
    with urllib.request.urlopen(post, timeout=timeout) as response:
        response.read(4096)
