"""Approval requests in the store: what a waiting call asks, and how a human answers.

    pending(store)                       # requests waiting, oldest first
    lookup(store, "apr_Xb3...")          # one request, its arguments whole
    approve(store, "apr_Xb3...", by="alice")
    deny(store, "apr_Xb3...", reason="too large")

A request is ``approval:<id>`` (JSON: agent, token ``jti``, scope, function,
reason and the call's arguments, whole, as canonical JSON; ``chain``, who acts
for whom, when the broker filed it, absent in older requests); an answer is
``approval-answer:<id>``, written with an atomic add so the first answer wins,
and carrying the request's binding: a SHA-256 over the request id, agent,
``jti``, scope, function, the SHA-256 of the arguments' canonical JSON and, for
a sub-agent, the chain. So what a person reads is exactly what the approval is
bound to, and an answer to one request never releases another, even one with
identical arguments.

The canonical JSON (sorted keys, no spaces, ASCII with ``\\u`` escapes, no
NaN) is at most ``MAX_ARGUMENTS`` bytes: a call with larger arguments is
refused without asking, never shown shortened. A value JSON lacks is shown and
bound as ``{"$repr": repr(value), "$type": "module.Type"}``; a value whose
``repr`` fails cannot be shown, and the call is refused. Requests and answers
expire shortly after the request's deadline. The waiting side is
``guard.elevation`` (and ``guard.broker_elevation`` through the broker).
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from ..errors import UnknownApprovalError

if TYPE_CHECKING:
    from . import Store

__all__ = [
    "MAX_ARGUMENTS",
    "ApprovalRequest",
    "Verdict",
    "approve",
    "arguments_digest",
    "canonical_arguments",
    "deny",
    "lookup",
    "notify_webhook",
    "pending",
]

REQUEST = "approval:"
ANSWER = "approval-answer:"
KEEP = 60.0  # requests and answers outlive the request's deadline by this much, then expire
MAX_ARGUMENTS = 64 * 1024  # bytes of canonical JSON: a larger call is refused, never cut
_ID = re.compile(r"apr_[A-Za-z0-9_-]{22,86}")
_TEXT_FIELDS = ("id", "agent", "scope", "function", "reason", "arguments_sha256", "binding")


class _Unshowable(Exception):
    """A value whose ``repr`` raised: it cannot be shown to a person, so it cannot be asked."""


def _fallback(value: object) -> dict[str, str]:
    try:
        text = repr(value)
    except Exception as exc:
        raise _Unshowable(f"{type(value).__qualname__}: its repr raised") from exc
    return {"$type": f"{type(value).__module__}.{type(value).__qualname__}", "$repr": text}


def canonical_json(value: object) -> str:
    """Sorted keys, no spaces, ASCII only, no NaN; type and ``repr`` for values JSON lacks."""
    return json.dumps(
        value, sort_keys=True, separators=(",", ":"), allow_nan=False, default=_fallback
    )


def _canonical_value(value: object) -> str:
    try:
        return canonical_json(value)
    except (TypeError, ValueError, RecursionError):  # NaN, odd keys, cycles: the whole value
        return canonical_json(_fallback(value))


def canonical_arguments(arguments: Mapping[str, Any]) -> str:
    """The arguments as one canonical JSON object: what a person is shown and what is bound.

    :raises ValueError: an argument cannot be shown (its ``repr`` raised), or a name is
        not a string.
    """
    parts: list[str] = []
    for name in sorted(arguments):
        if not isinstance(name, str):
            raise ValueError(f"argument name {name!r} is not a string")
        try:
            parts.append(f"{canonical_json(name)}:{_canonical_value(arguments[name])}")
        except (_Unshowable, RecursionError) as exc:
            raise ValueError(f"argument {name!r} cannot be shown ({exc})") from None
    return "{" + ",".join(parts) + "}"


def text_digest(text: str) -> str:
    """SHA-256 (hex) of a text's UTF-8."""
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def arguments_digest(arguments: Mapping[str, Any]) -> str:
    """SHA-256 of ``canonical_arguments(arguments)``.

    :raises ValueError: an argument cannot be shown.
    """
    return text_digest(canonical_arguments(arguments))


def binding(
    request_id: str,
    agent: str,
    jti: str | None,
    scope: str,
    function: str,
    digest: str,
    chain: Sequence[str] = (),
) -> str:
    """What an approval is bound to: one request, agent (and token), scope, function,
    arguments, and a sub-agent's chain (a request of a root agent's own token, or one
    stored without a chain, binds as before)."""
    bound: list[Any] = [request_id, agent, jti, scope, function, digest]
    if len(chain) > 1:
        bound.append(list(chain))
    return text_digest(canonical_json(bound))


@dataclass(frozen=True)
class ApprovalRequest:
    """One call waiting for a human: who, which scope, which function, with what (whole)."""

    id: str
    agent: str
    jti: str | None
    scope: str
    function: str
    arguments_json: str  # canonical JSON of every argument, whole: what is shown and bound
    arguments_sha256: str
    reason: str
    created_at: float
    expires_at: float
    binding: str = field(repr=False)
    # Who acts for whom, root agent first (VerifiedClaims.chain), when the broker filed it;
    # () in a request filed in-process or before chains were kept.
    chain: tuple[str, ...] = ()

    @property
    def delegated(self) -> bool:
        """Whether a sub-agent asks, for the root agent first in ``chain``."""
        return len(self.chain) > 1

    @property
    def root(self) -> str:
        """The agent on whose behalf the request is made: first in the chain, else ``agent``."""
        return self.chain[0] if self.chain else self.agent

    @property
    def arguments(self) -> Mapping[str, str]:
        """Each argument's canonical JSON, by name (sorted), whole."""
        parsed = json.loads(self.arguments_json)
        return MappingProxyType({name: canonical_json(parsed[name]) for name in parsed})

    def consistent(self) -> bool:
        """Whether the hash and the binding are those of what this request shows."""
        digest = text_digest(self.arguments_json)
        bound = binding(
            self.id, self.agent, self.jti, self.scope, self.function, digest, self.chain
        )
        return self.arguments_sha256 == digest and self.binding == bound

    def to_dict(self) -> dict[str, Any]:
        """The request as a JSON-ready dict; ``arguments`` is the parsed canonical JSON."""
        data = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "arguments_json"}
        data["arguments"] = json.loads(self.arguments_json)
        data["chain"] = list(self.chain)
        return data

    @classmethod
    def from_json(cls, text: str) -> ApprovalRequest:
        """Parse what ``to_dict`` wrote and check it is consistent; ``ValueError`` otherwise."""
        try:
            data = json.loads(text)
            arguments = data.pop("arguments")
            if not isinstance(arguments, dict):
                raise TypeError("arguments")
            data["arguments_json"] = canonical_arguments(arguments)
            chain = data.pop("chain", [])  # absent in a request stored before chains were kept
            if not isinstance(chain, list) or not all(isinstance(name, str) for name in chain):
                raise TypeError("chain")
            request = cls(**data, chain=tuple(chain))
        except (TypeError, KeyError, AttributeError, RecursionError) as exc:
            raise ValueError("not an approval request") from exc
        texts = [getattr(request, name) for name in _TEXT_FIELDS]
        times = (request.created_at, request.expires_at)
        if (
            not all(isinstance(value, str) for value in texts)
            or not isinstance(request.jti, str | None)
            or not all(isinstance(t, int | float) and not isinstance(t, bool) for t in times)
            or len(request.arguments_json) > MAX_ARGUMENTS
            or (request.chain and request.chain[-1] != request.agent)
            or not request.consistent()
        ):
            raise ValueError("not a consistent approval request")
        return request

    def call(self, limit: int | None = None) -> str:
        """``function(name=value, ...)``, whole, or cut at ``limit`` characters and saying so."""
        shown = ", ".join(f"{name}={value}" for name, value in self.arguments.items())
        text = f"{self.function}({shown})"
        if limit is None or len(text) <= limit:
            return text
        return f"{text[:limit]}... (shortened; agentsudo approvals show {self.id})"

    def describe(self, limit: int | None = None) -> str:
        """One line: agent (and its chain), scope, call (the call cut at ``limit``, saying so)."""
        who = f"agent {self.agent!r}"
        if self.delegated:
            who += f" (chain {' > '.join(self.chain)})"
        return f"{who} asks for {self.scope!r} to call {self.call(limit)}"


@dataclass(frozen=True)
class Verdict:
    """How a request ended: approved (the call proceeds once) or not, and why."""

    approved: bool
    why: str
    request_id: str
    by: str | None = None


def lookup(store: Store, request_id: str) -> ApprovalRequest:
    """The request ``request_id``, arguments whole, while it has not expired or been settled.

    :raises UnknownApprovalError: a malformed id, or no such request (unknown, expired,
        settled, or a record that is not consistent).
    :raises StoreUnavailableError: the store cannot be reached.
    """
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
    if request is None or request.id != request_id or request.expires_at <= time.time():
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
    request = lookup(store, request_id)  # consistent: its binding is that of what it shows
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

    The text shows the call cut at 500 characters (saying so); the ``agentsudo``
    field carries the request whole.

    :raises OSError: the webhook could not be reached or answered with an error.
    """
    import urllib.request

    left = max(0, int(request.expires_at - time.time()))
    text = (
        f"agentsudo: {request.describe(500)}. "
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
