"""Replay caches: "has this id been used before?", answered once, atomically, until it expires.

    cache = StoreReplayCache(open_store("redis://10.0.0.5:6379/0"))   # every process, every machine
    cache = MemoryReplayCache()                                       # this process alone
    cache.first_use("dpop:<hash>", expires_at=iat + 60)               # True once, then False

A DPoP proof is good for one request: its ``jti`` is recorded until the proof
would be too old anyway, so the cache holds at most one window of proofs. The
store-backed cache shares that record across the processes of a service (an
atomic ``Store.add``: of racing verifiers exactly one wins). The memory cache
is bounded; when full of live entries it refuses (``StoreUnavailableError``)
rather than forget one that could then be replayed.

A memory cache serves one process. In a worker of a multi-process server it
would let a proof be used once per worker, so there it refuses every proof
(``ReplayCacheNotSharedError``, a 503 at a service) rather than guard only a
part of the service: a process started by ``multiprocessing`` (``uvicorn
--workers N``; ``--reload`` too, which cannot be told apart), or one forked
after the cache was made. Workers forked otherwise (gunicorn without
``--preload``) cannot be seen; give those a ``StoreReplayCache``.
"""

from __future__ import annotations

import os
import sys
import threading
import time
import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

from ..config import STORE
from ..errors import StoreUnavailableError

if TYPE_CHECKING:
    from .base import Store

__all__ = ["MemoryReplayCache", "ReplayCache", "ReplayCacheNotSharedError", "StoreReplayCache"]

DEFAULT_MAX_ENTRIES = 1 << 20  # ~8,600 proofs a second over a 121 s record; ~150 MB when full


class ReplayCacheNotSharedError(StoreUnavailableError):
    """A replay cache in one process's memory, in a process that is one of several."""


def _other_processes() -> str | None:
    """Why this process may be one worker of several, or ``None``.

    ``multiprocessing`` is not imported here for this (5 ms): a process it started
    imported it before anything else, so it is in ``sys.modules`` when it matters.
    """
    process = sys.modules.get("multiprocessing.process")
    parent = getattr(process, "parent_process", None)
    found = parent() if callable(parent) else None
    if found is not None:
        return f"a process started by multiprocessing (its parent: {found.pid})"
    return None


_CACHES: weakref.WeakSet[MemoryReplayCache] = weakref.WeakSet()  # told when this process forks


def _after_fork() -> None:
    """In a forked child: every memory cache its parent made is no longer this process's alone."""
    for cache in list(_CACHES):
        cache._forked = True


if hasattr(os, "register_at_fork"):  # POSIX; elsewhere there is no fork to see
    os.register_at_fork(after_in_child=_after_fork)


class ReplayCache(Protocol):
    """Records ids until they expire."""

    def first_use(self, key: str, *, expires_at: float) -> bool:
        """True when ``key`` was not recorded (it is now, until ``expires_at``); False after.

        :raises StoreUnavailableError: the cache cannot answer (fail closed).
        """
        ...


class MemoryReplayCache:
    """A replay cache in this process's memory: bounded, thread-safe.

    :param max_entries: live entries kept at most; beyond, ``first_use`` refuses.
    :param clock: seconds since the epoch; for tests.
    """

    def __init__(
        self, max_entries: int = DEFAULT_MAX_ENTRIES, *, clock: Callable[[], float] = time.time
    ) -> None:
        self.max_entries = max_entries
        self._clock = clock
        self._seen: dict[str, float] = {}
        self._lock = threading.Lock()
        self._next_purge = 0.0
        self._pid = os.getpid()
        self._shared: str | None = _other_processes()
        # set in a forked child (register_at_fork): no getpid() system call per proof
        self._forked = False
        _CACHES.add(self)

    def __repr__(self) -> str:
        return f"MemoryReplayCache(max_entries={self.max_entries})"

    def __len__(self) -> int:
        return len(self._seen)

    def first_use(self, key: str, *, expires_at: float) -> bool:
        """As ``ReplayCache.first_use``; refuses when full of live entries, and in a
        process that may be one worker of several (``ReplayCacheNotSharedError``)."""
        if self._shared is not None or self._forked:
            self._refuse_unshared()
        now = self._clock()
        with self._lock:
            seen = self._seen
            known = seen.get(key)
            if known is not None:
                if known > now:
                    return False
                del seen[key]  # expired: recorded anew, at the end (see _purge)
            full = len(seen) >= self.max_entries
            if full or now >= self._next_purge:
                self._purge(now, everything=full)
                self._next_purge = now + 5.0
                if len(seen) >= self.max_entries:
                    raise StoreUnavailableError(
                        f"replay cache: {len(seen)} live entries, at most {self.max_entries}; "
                        "refusing rather than forgetting one",
                        expected=self.max_entries,
                        found=len(seen),
                    )
            seen[key] = expires_at
            return True

    def _purge(self, now: float, *, everything: bool) -> None:
        """Forget expired records: the oldest ones, up to the first still live; every one
        when the cache is full.

        Records are kept in the order they were made, which is about the order they
        expire (a proof's: within one window of it), so the oldest are the expired
        ones: a purge reads those, not the whole cache (up to a million records,
        ~30 ms here, every 5 s). One that lives longer than those after it holds
        them back a while: they go with it, or in the full purge before a refusal.
        """
        seen = self._seen
        stale = []
        for key, until in seen.items():
            if until <= now:
                stale.append(key)
            elif not everything:
                break
        for key in stale:
            del seen[key]

    def _refuse_unshared(self) -> None:
        why = self._shared or f"a process forked after its replay cache was made ({self._pid})"
        raise ReplayCacheNotSharedError(
            f"DPoP replay cache: in the memory of {why}: each worker of a multi-process server "
            f"would accept a proof once; set {STORE} (or give a StoreReplayCache) to share one",
            expected=STORE,
            found="memory",
        )


class StoreReplayCache:
    """A replay cache in a state store, shared by every process that uses it.

    :param store: SQLite for the processes of one machine, Redis for many machines.
    """

    def __init__(self, store: Store) -> None:
        self.store = store

    def __repr__(self) -> str:
        return f"StoreReplayCache({self.store!r})"

    def first_use(self, key: str, *, expires_at: float) -> bool:
        """As ``ReplayCache.first_use``: an atomic ``Store.add``."""
        return self.store.add(key, "1", expires_at=expires_at)
