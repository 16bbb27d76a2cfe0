"""The store interface: a few atomic operations on string entries that expire.

    store.put("revoked:abc", "{...}", expires_at=exp)       # set, or overwrite
    store.add("used:abc", "1", expires_at=exp)             # set only if absent: True for the winner
    store.get("revoked:abc")                               # None when absent or expired
    store.take("approval-answer:xyz")                      # read and delete, atomically

Every entry has an expiry (epoch seconds), so the store never grows without
bound. Every failure to reach or use the backend is a ``StoreUnavailableError``:
callers fail closed on it. Backends: ``SqliteStore`` (one file, many
processes) and ``RedisStore`` (many machines).
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from types import TracebackType

__all__ = ["Store"]


class Store(abc.ABC):
    """Shared state for revocation, one-time tokens and approval requests.

    Keys and values are strings. Implementations are safe to share between
    threads, and many processes may use one store at once.
    """

    url: str  # where the store lives, any password masked
    _local_changes = 0

    @property
    def changes(self) -> int:
        """A number that changes whenever this process writes through the store.

        Verifiers reuse a store's answer about a token for a moment; a write in
        this process (a revocation, say) makes them ask again at once.
        """
        return self._local_changes

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.url!r})"

    @abc.abstractmethod
    def get_many(self, keys: Sequence[str]) -> list[str | None]:
        """The values of ``keys``, in order: ``None`` for an absent or expired entry.

        :raises StoreUnavailableError: the store cannot be reached.
        """

    def get(self, key: str) -> str | None:
        """The value of ``key``, or ``None`` when absent or expired.

        :raises StoreUnavailableError: the store cannot be reached.
        """
        return self.get_many((key,))[0]

    @abc.abstractmethod
    def put(self, key: str, value: str, *, expires_at: float) -> None:
        """Set ``key`` (replacing any value) until ``expires_at``, in epoch seconds.

        :raises StoreUnavailableError: the store cannot be reached.
        """

    @abc.abstractmethod
    def add(self, key: str, value: str, *, expires_at: float) -> bool:
        """Set ``key`` only if it is absent (or expired); True when this call set it.

        Atomic: of any number of concurrent callers, across processes and
        machines, exactly one gets True.

        :raises StoreUnavailableError: the store cannot be reached.
        """

    @abc.abstractmethod
    def take(self, key: str) -> str | None:
        """Delete ``key`` and return its value (``None`` if absent), atomically.

        Of concurrent callers, at most one gets the value.

        :raises StoreUnavailableError: the store cannot be reached.
        """

    @abc.abstractmethod
    def items(self, prefix: str) -> dict[str, str]:
        """Every live entry whose key starts with ``prefix``.

        :raises StoreUnavailableError: the store cannot be reached.
        """

    def purge(self) -> int:
        """Remove expired entries now; return how many. Backends also do it on their own."""
        return 0

    def close(self) -> None:  # noqa: B027 - an optional hook, not an abstract method
        """Release connections. The store reopens them if used again."""

    def __enter__(self) -> Store:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
