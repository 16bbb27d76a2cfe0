"""A record of the tokens the broker minted, kept in the store until each expires.

    record_minted(store, minted.claims)         # at issuance, before the token is handed out
    live_tokens(store)                          # {agent: [MintedToken, ...]}, newest first

One entry a token, ``minted:<jti>`` (agent, scopes, ``iat``, ``exp``), expiring with the
token: the record is bounded by what the broker may issue (rate-limited per caller) over
a token's lifetime. ``live_tokens`` leaves out those revoked by ``jti`` or by the agent's
kill switch, and shows at most ``MAX_SHOWN`` an agent; ``MintedCache`` reads the records
at most once a second for the agents page (a caller minting at the rate limit leaves
tens of thousands of them).
"""

from __future__ import annotations

import json
import queue
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ...tokens.revocation import AGENT, REVOKED

if TYPE_CHECKING:
    from ...state import Store

__all__ = [
    "MAX_SHOWN",
    "MintedCache",
    "MintedToken",
    "kill_switches",
    "live_tokens",
    "minted_records",
    "record_minted",
]

MINTED = "minted:"
_BATCH = 500  # records written in one transaction at most
MAX_SHOWN = 200  # live tokens listed per agent, newest first
_MAX_SCOPES = 64


@dataclass(frozen=True)
class MintedToken:
    """A token the broker minted: its ``jti``, agent, scopes and lifetime (never the token)."""

    jti: str
    agent: str
    scopes: tuple[str, ...]
    issued_at: int
    expires_at: int


def _entry(claims: Mapping[str, Any]) -> tuple[str, str, float] | None:
    """The store entry recording a token just minted; ``None`` without jti or exp."""
    jti, exp = claims.get("jti"), claims.get("exp")
    if not isinstance(jti, str) or type(exp) is not int:
        return None  # our issuer always sets both; a record of nothing is no record
    scope = claims.get("scope")
    record = {
        "agent": claims.get("sub"),
        "scopes": scope.split() if isinstance(scope, str) else [],
        "iat": claims.get("iat"),
        "exp": exp,
    }
    return MINTED + jti, json.dumps(record), float(exp)


def record_minted(store: Store, claims: Mapping[str, Any]) -> None:
    """Keep ``jti``, agent, scopes, ``iat`` and ``exp`` of a token just minted.

    :raises StoreUnavailableError: the store cannot be written.
    """
    entry = _entry(claims)
    if entry is not None:
        store.put_many([entry])


class MintedWriter:
    """Keeps the records of tokens the broker mints off the request path: one thread writes
    them to the store in the order they came (a SQLite write waits on the disk: ~1 ms).

    The list is for looking, not for checking (revocation goes by ``jti`` whatever it
    lists): when the store lags by ``limit`` records, newer ones are dropped and counted
    (``dropped``), and the token is only missing from the console's list.
    """

    def __init__(self, store: Store, *, limit: int = 10_000) -> None:
        self.store = store
        self.dropped = 0
        self.failed = 0
        self._queue: queue.Queue[dict[str, Any] | None] = queue.Queue(maxsize=limit)
        self._thread = threading.Thread(target=self._run, name="agentsudo-minted", daemon=True)
        self._thread.start()

    def submit(self, claims: Mapping[str, Any]) -> None:
        """Record ``claims`` soon; never waits."""
        try:
            self._queue.put_nowait(dict(claims))
        except queue.Full:
            self.dropped += 1

    def _run(self) -> None:
        while True:
            claims = self._queue.get()
            batch, done = [claims], claims is None
            while not done and len(batch) < _BATCH:  # what came meanwhile: one write for all
                try:
                    claims = self._queue.get_nowait()
                except queue.Empty:
                    break
                batch.append(claims)
                done = claims is None
            entries = [e for c in batch if c is not None and (e := _entry(c)) is not None]
            try:
                self.store.put_many(entries)
            except Exception:  # the store is down: the list misses them, nothing else does
                self.failed += len(entries)
            if done:
                return

    def close(self, timeout: float = 5.0) -> None:
        """Write what is queued (waiting ``timeout`` seconds at most), then stop."""
        try:
            self._queue.put(None, timeout=timeout)
        except queue.Full:
            return
        self._thread.join(timeout=timeout)


def _parsed(jti: str, raw: str) -> MintedToken | None:
    try:
        data = json.loads(raw)
    except ValueError:
        return None
    if not isinstance(data, dict):
        return None
    agent, scopes, iat, exp = (data.get(k) for k in ("agent", "scopes", "iat", "exp"))
    if (
        not isinstance(agent, str)
        or not isinstance(scopes, list)
        or not all(isinstance(s, str) for s in scopes)
        or type(iat) is not int
        or type(exp) is not int
    ):
        return None
    return MintedToken(jti, agent, tuple(scopes[:_MAX_SCOPES]), iat, exp)


def _cutoff(raw: str | None) -> float | None:
    """An agent's kill switch: tokens issued until then are refused (unreadable: all)."""
    if raw is None:
        return None
    try:
        before = json.loads(raw)["before"]
    except (ValueError, TypeError, KeyError):
        return float("inf")
    return float(before) if type(before) is int else float("inf")


def minted_records(store: Store) -> list[MintedToken]:
    """Every ``minted:`` record readable, newest first (expired ones too, until the store
    drops them).

    :raises StoreUnavailableError: the store cannot be reached.
    """
    found = [
        token
        for key, raw in store.items(MINTED).items()
        if (token := _parsed(key[len(MINTED) :], raw)) is not None
    ]
    found.sort(key=lambda t: (-t.issued_at, t.jti))
    return found


def live_tokens(
    store: Store, *, now: float | None = None, records: list[MintedToken] | None = None
) -> dict[str, list[MintedToken]]:
    """Tokens minted and neither expired nor revoked, by agent, newest first, at most
    ``MAX_SHOWN`` an agent; ``records`` (``minted_records``, e.g. cached) saves reading them.

    Revocations and kill switches are read now, for the newest of each agent only (in
    rounds of ``MAX_SHOWN``, until enough are live).

    :raises StoreUnavailableError: the store cannot be reached.
    """
    moment = time.time() if now is None else now
    every = minted_records(store) if records is None else records
    by_agent: dict[str, list[MintedToken]] = {}
    for token in every:
        if token.expires_at > moment:
            by_agent.setdefault(token.agent, []).append(token)
    if not by_agent:
        return {}
    agents = sorted(by_agent)
    cutoffs = dict(zip(agents, store.get_many([AGENT + a for a in agents]), strict=True))
    live: dict[str, list[MintedToken]] = {}
    for agent in agents:
        cutoff = _cutoff(cutoffs[agent])
        candidates = [t for t in by_agent[agent] if cutoff is None or t.issued_at > cutoff]
        shown: list[MintedToken] = []
        for start in range(0, len(candidates), MAX_SHOWN):
            batch = candidates[start : start + MAX_SHOWN]
            marks = store.get_many([REVOKED + token.jti for token in batch])
            shown += [t for t, revoked in zip(batch, marks, strict=True) if revoked is None]
            if len(shown) >= MAX_SHOWN:
                break
        if shown:
            live[agent] = shown[:MAX_SHOWN]
    return live


class MintedCache:
    """``minted_records`` read at most once in ``ttl`` seconds (the agents page's view);
    revocations, kill switches and expiry are still checked on every view."""

    def __init__(self, ttl: float = 1.0) -> None:
        self.ttl = ttl
        self._lock = threading.Lock()
        self._read: tuple[float, list[MintedToken]] | None = None

    def live(self, store: Store) -> dict[str, list[MintedToken]]:
        """``live_tokens`` from records at most ``ttl`` seconds old.

        :raises StoreUnavailableError: the store cannot be reached.
        """
        with self._lock:  # one reader at a time; the others wait for its records
            if self._read is None or time.monotonic() - self._read[0] >= self.ttl:
                self._read = (time.monotonic(), minted_records(store))
            records = self._read[1]
        return live_tokens(store, records=records)


def kill_switches(store: Store, agents: list[str]) -> dict[str, float | None]:
    """Each agent's kill switch: until when its tokens are refused (``inf``: unreadable, all).

    :raises StoreUnavailableError: the store cannot be reached.
    """
    if not agents:
        return {}
    found = store.get_many([AGENT + agent for agent in agents])
    return {agent: _cutoff(raw) for agent, raw in zip(agents, found, strict=True)}
