"""The broker's audit: every issuance, refusal, revocation, elevation and policy reload, chained,
with the chain's head signed by the broker's key.

    audit = BrokerAudit(keys_dir / "broker-audit.jsonl", signing_key, issuer="agentsudo")
    audit.issued(caller, grant, minted.claims, once=False)   # one line in the hash chain
    audit.seal()                                             # a signed head over it all
    report = verify_audit("broker-audit.jsonl", keys)        # with the public keys alone

Events are lines of ``audit.file``'s chain (the same format, so ``agentsudo
audit verify`` and ``audit show`` read them), with broker ``outcome`` values:
``broker_started``, ``broker_stopped``, ``issued``, ``broker_refused``,
``revoked``, ``policy_reloaded``, ``policy_reload_failed``,
``elevation_requested``, ``elevation_answered``, ``elevation_issued``,
``elevation_notify_failed`` (the policy's webhook was not told),
``audit_gap`` (on start, the log was shorter than the head kept in the store:
see ``audit_anchor``), and ``head``. ``caller`` is ``uid:N`` (the socket's
peer) or ``credential:NAME`` (over TCP); no event holds a token or a key (an
elevation's arguments appear by their hash).

A ``head`` line carries ``head``: a compact JWS, header ``{"alg", "typ":
"audit-head+jwt", "kid"}``, claims ``{"iss", "iat", "chain", "lines"}``:
the hash of the line before it (its ``prev``) and how many lines precede it,
signed with the broker's token key. The broker writes one after starting,
every ``HEAD_EVERY`` events, every ``HEAD_INTERVAL`` seconds with events
unsigned, and when it stops. ``verify_audit`` checks every head's signature
against the JWKS and that it matches the chain at its place: a line changed,
added or removed before a signed head is detected even if every hash after it
was recomputed (that needs the key). Lines after the last signed head are only
chained: the report counts them. A file cut back to an earlier signed head
looks whole by itself; the head kept outside it (``audit_anchor``: in the
store, and served at ``GET /v1/audit/head``) shows the cut.
"""

from __future__ import annotations

import asyncio
import datetime
import hashlib
import logging
import os
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..audit.file import AuditFile
from ..errors import (
    AgentSudoError,
    StoreUnavailableError,
)
from ..tokens.jws import encode
from .audit_verify import (
    GAP,
    HEAD_TYPE,
    MAX_HEAD_BYTES,
    AuditReport,
    SignedHead,
    parse_head,
    verify_audit,
)

if TYPE_CHECKING:
    from ..state.approvals import ApprovalRequest
    from ..tokens.keys import SigningKey
    from .policy import Caller, Grant

__all__ = [
    "AUDIT_FILE",
    "GAP",
    "MAX_HEAD_BYTES",
    "HEAD_EVERY",
    "HEAD_INTERVAL",
    "HEAD_TYPE",
    "AuditReport",
    "BrokerAudit",
    "SignedHead",
    "parse_head",
    "clipped",
    "principal",
    "verify_audit",
]

AUDIT_FILE = "broker-audit.jsonl"  # in the key directory unless --audit-log says otherwise
HEAD_EVERY = 100  # events between signed heads, at most
HEAD_INTERVAL = 60.0  # seconds an event waits for a signed head, at most (while serving)
_MAX_ACTION = 200
_MAX_ECHO = 256  # characters of a caller's words kept in a refusal's event
_log = logging.getLogger("agentsudo.broker")


def _now() -> str:
    now = datetime.datetime.now(datetime.UTC).isoformat(timespec="microseconds")
    return now.replace("+00:00", "Z")


def clipped(value: Any, depth: int = 0) -> Any:
    """A caller's words, at most ``_MAX_ECHO`` characters a string and 32 items a list: a
    refusal is audited, and the audit must not be a way to write much."""
    if isinstance(value, str):
        if len(value) <= _MAX_ECHO:
            return value
        return f"{value[:_MAX_ECHO]}... ({len(value)} characters)"
    if isinstance(value, list | tuple) and depth < 2:
        return [clipped(item, depth + 1) for item in value[:32]]
    if isinstance(value, dict) and depth < 2:
        return {str(k)[:64]: clipped(v, depth + 1) for k, v in list(value.items())[:16]}
    return value if isinstance(value, bool | int | float | type(None)) else repr(value)[:64]


def principal(caller: Caller | None) -> str | None:
    """The caller as the policy names it: ``uid:N``, ``credential:NAME``, or ``None``."""
    if caller is None:
        return None
    if caller.uid is not None:
        return f"uid:{caller.uid}"
    if caller.credential is not None:
        return f"credential:{caller.credential}"
    return None


class BrokerAudit:
    """The broker's events, appended to its hash-chained file, with signed heads.

    :param every: at most this many events between two signed heads.
    :param on_head: told each new signed head (a compact JWS), e.g. to keep it elsewhere
        (``audit_anchor``); its failure is logged, never raised.
    :raises ConfigError: the file cannot be opened or trusted (``audit.file``'s rules).
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        key: SigningKey,
        *,
        issuer: str,
        every: int = HEAD_EVERY,
        interval: float = HEAD_INTERVAL,
        on_head: Callable[[str], None] | None = None,
    ) -> None:
        self.path = Path(path)
        self.file = AuditFile(self.path)
        self.file.open()  # a bad path stops the broker before it serves
        self.every = every
        self.interval = interval
        self._key = key
        self._issuer = issuer
        self._lock = threading.Lock()
        self._unsigned = 0
        self._on_head = on_head
        self.latest_head: str | None = None  # the last head this process signed

    def __repr__(self) -> str:
        return f"BrokerAudit({str(self.path)!r})"

    def use_key(self, key: SigningKey) -> None:
        """Sign the next heads with ``key`` (the key directory's active key changed)."""
        with self._lock:
            self._key = key

    # -- writing ------------------------------------------------------------------

    def record(self, outcome: str, **fields: Any) -> None:
        """Append one event (``None`` fields left out); a signed head follows every ``every``.

        :raises StoreUnavailableError: the file cannot be written: the request fails closed.
        """
        event = {"time": _now(), "outcome": outcome}
        event.update((name, value) for name, value in fields.items() if value is not None)
        try:
            self._check_last_line()
            self.file.append(event)
        except AgentSudoError as exc:
            _log.error("audit: %s", exc)
            raise StoreUnavailableError(
                "the broker cannot write its audit log; see its log"
            ) from exc
        with self._lock:
            self._unsigned += 1
            due = self._unsigned >= self.every
        if due:
            self.seal()

    def _sign(self, chain: str, lines: int) -> dict[str, Any]:
        header = {"alg": self._key.alg, "typ": HEAD_TYPE, "kid": self._key.kid}
        claims = {"iss": self._issuer, "iat": int(time.time()), "chain": chain, "lines": lines}
        self.latest_head = encode(header, claims, self._key)
        return {"head": self.latest_head}

    def _digest_at(self, start: int, end: int) -> bytes | None:
        """The SHA-256 of the file's bytes ``start:end`` now (``None``: not there)."""
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError:
            return None
        try:
            data = os.pread(fd, end - start, start)
        except OSError:
            return None
        finally:
            os.close(fd)
        return hashlib.sha256(data).digest() if len(data) == end - start else None

    def _check_last_line(self) -> None:
        """Before writing: the last line this broker wrote must still be where it wrote it.

        A log cut or replaced while the broker runs would otherwise go on as if whole,
        and the next head would vouch for it; an ``audit_gap`` line says what was found.

        :raises ConfigError: the file cannot be written.
        """
        mine = self.file.last_line
        if mine is None:
            return
        start, end, digest = mine
        if self._digest_at(start, end) == digest:
            return
        problem = (
            f"the line this broker wrote at bytes {start}-{end} is gone: the log was cut or "
            "replaced while the broker ran"
        )
        _log.error("audit: %s", problem)
        self.file.append({"time": _now(), "outcome": GAP, "problem": problem})

    def seal(self) -> None:
        """Append a head signing the chain so far (after an ``audit_gap`` line if the
        last line this broker wrote is gone).

        :raises StoreUnavailableError: the file cannot be written.
        """
        with self._lock:
            unsigned, self._unsigned = self._unsigned, 0
        try:
            self._check_last_line()
            self.file.append({"time": _now(), "outcome": "head"}, seal=self._sign)
        except AgentSudoError as exc:
            with self._lock:
                self._unsigned += unsigned
            _log.error("audit: %s", exc)
            raise StoreUnavailableError(
                "the broker cannot write its audit log; see its log"
            ) from exc
        if self._on_head is not None and self.latest_head is not None:
            try:
                self._on_head(self.latest_head)
            except Exception as exc:  # the head is in the file; keeping it elsewhere is extra
                _log.warning("audit: the signed head was not kept elsewhere: %s", exc)

    def seal_if_unsigned(self) -> None:
        """A signed head, if any event came since the last one."""
        with self._lock:
            pending = self._unsigned > 0
        if pending:
            self.seal()

    async def keep_signing(self) -> None:
        """Every ``interval`` seconds, sign the head if events came (until cancelled)."""
        while True:
            await asyncio.sleep(self.interval)
            try:
                self.seal_if_unsigned()
            except AgentSudoError:
                pass  # logged by seal; tried again next time

    def _quietly(self, outcome: str, **fields: Any) -> None:
        """An event no request waits on: a failure is logged (by ``record``), not raised."""
        try:
            self.record(outcome, **fields)
        except AgentSudoError:
            pass

    # -- the broker's events ---------------------------------------------------------

    def started(self, policy: Path | None) -> None:
        """The broker starts serving: an event, and a head signing everything before it."""
        self.record(
            "broker_started",
            pid=os.getpid(),
            uid=os.geteuid(),
            policy=str(policy.absolute()) if policy is not None else "dev",
            kid=self._key.kid,
        )
        self.seal()

    def stopped(self) -> None:
        """The broker stops: an event, and the last signed head."""
        self._quietly("broker_stopped", pid=os.getpid())
        try:
            self.seal()
        except AgentSudoError:
            pass

    def issued(
        self, caller: Caller, grant: Grant, claims: Mapping[str, Any], *, once: bool
    ) -> None:
        """A token was minted for ``caller`` (recorded before it is handed out)."""
        audience = grant.audience if isinstance(grant.audience, str) else list(grant.audience)
        self.record(
            "issued",
            agent=grant.agent,
            jti=claims.get("jti"),
            scopes=list(grant.scopes),
            ttl=grant.ttl,
            audience=audience,
            once=once or None,
            jkt=(claims.get("cnf") or {}).get("jkt"),  # bound to this key (DPoP)
            limits=[entry.text() for entry in grant.limits] if grant.limits else None,
            budgets=_budgets_text(grant.limits),
            caller=principal(caller),
        )

    def refused(
        self,
        caller: Caller | None,
        action: str,
        reason: str,
        *,
        agent: str | None = None,
        asked: Mapping[str, Any] | None = None,
    ) -> None:
        """A request refused: who asked (``None``: not identified), what, and the one-line why."""
        if agent is None and asked is not None and isinstance(asked.get("agent"), str):
            agent = asked["agent"]
        self.record(
            "broker_refused",
            action=action[:_MAX_ACTION],
            agent=clipped(agent),
            asked=clipped(dict(asked)) if asked else None,
            reason=clipped(reason),
            caller=principal(caller),
        )

    def revoked(self, caller: Caller, kind: str, target: str, reason: str | None) -> None:
        """A revocation by an admin: of an ``agent`` (``kind``), else of one token's ``jti``."""
        self.record(
            "revoked",
            kind=kind,
            agent=target if kind == "agent" else None,
            jti=None if kind == "agent" else target,
            reason=reason,
            caller=principal(caller),
        )

    def reloaded(self, policy: Path | None, problem: str | None = None) -> None:
        """The policy was read again (``problem``: refused, the previous one stays)."""
        where = str(policy.absolute()) if policy is not None else "dev"
        if problem is None:
            self._quietly("policy_reloaded", policy=where)
        else:
            self._quietly("policy_reload_failed", policy=where, reason=problem)

    def elevation(
        self, outcome: str, caller: Caller | None, request_id: str, **fields: Any
    ) -> None:
        """An event of elevation request ``request_id``: ``elevation_requested``,
        ``elevation_answered``, ``elevation_issued`` (its one-shot token handed out)."""
        self.record(outcome, request=request_id, caller=principal(caller), **fields)

    def requested(self, filed: ApprovalRequest, chain: list[str] | None = None) -> None:
        """An agent's token asked for one call (the arguments by their hash); ``chain``: who
        acts for whom, for a delegated token."""
        self.elevation(
            "elevation_requested",
            None,
            filed.id,
            agent=filed.agent,
            chain=chain,
            jti=filed.jti,
            scope=filed.scope,
            function=filed.function,
            arguments_sha256=filed.arguments_sha256,
            reason=filed.reason or None,
        )

    def answered(
        self,
        caller: Caller,
        request: ApprovalRequest,
        *,
        approved: bool,
        by: str,
        reason: str | None,
    ) -> None:
        """An admin approved or denied elevation request ``request``."""
        self.elevation(
            "elevation_answered",
            caller,
            request.id,
            approved=approved,
            agent=request.agent,
            scope=request.scope,
            function=request.function,
            arguments_sha256=request.arguments_sha256,
            by=by,
            reason=reason,
        )

    def close(self) -> None:
        """Close the file."""
        self.file.close()


def _budgets_text(limits: Any) -> list[str] | None:
    """The budgets of a token's limits as grammar lines, for the audit (``None``: none)."""
    if not limits:
        return None
    lines = [f"{e.scope} {e.budget.text()}" for e in limits if e.budget is not None]
    return lines or None
