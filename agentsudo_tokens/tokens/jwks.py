"""Public key sets (RFC 7517 JWK Sets) and where a verifier gets them.

    keys = KeySet.from_dict(json.load(open("keys/jwks.json")))
    keys.get("some-kid")                       # PublicKey or None
    source = JwksFile("keys/jwks.json")        # re-read when the file changes
    source = load_key_source(url_or_path)      # JwksUrl (jwks_remote.py) or JwksFile

A verifier asks its key source for one ``kid`` at a time. ``KeySet`` is fixed
(it lives in ``keyset``, shared with ``jwks_remote``, and is re-exported here);
``JwksFile`` re-reads its file at most once a ``check_interval`` and re-parses
it when it changed, so a rotation is picked up by running verifiers and a
retired key stops verifying. ``JwksUrl`` (in ``jwks_remote``) fetches a JWKS
by URL with a bounded cache lifetime.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

from ..errors import ConfigError
from ..fileperms import open_trusted
from .keys import PublicKey
from .keyset import MAX_JWKS_BYTES as MAX_JWKS_BYTES
from .keyset import KeySet, KeySource

__all__ = ["JwksFile", "KeySet", "KeySource", "load_key_source"]


class JwksFile:
    """A JWKS file, re-read at most once a ``check_interval`` and re-parsed when it changed.

    Changes are found by content, not by modification time and size: a rewrite
    can keep the size and land within one coarse timestamp tick. The first
    read happens at construction, so a missing or broken file is reported at
    once. A later broken read keeps the last good key set.
    """

    def __init__(self, path: str | os.PathLike[str], *, check_interval: float = 1.0) -> None:
        self.path = Path(path)
        self.check_interval = check_interval
        self._lock = threading.Lock()
        self._data = self._read_bytes()
        self._keys = KeySet.from_json(self._data)
        self._checked = time.monotonic()

    def _read_bytes(self) -> bytes:
        try:
            with open_trusted(self.path, what="JWKS file") as handle:  # refused if others may write
                return handle.read(MAX_JWKS_BYTES + 1)
        except OSError as exc:
            raise ConfigError(
                f"cannot read the public keys at {self.path}: {exc.strerror or exc}",
                expected="a JWKS file",
                found=str(self.path),
            ) from exc

    def _refresh(self) -> None:
        now = time.monotonic()
        if now - self._checked < self.check_interval:
            return
        with self._lock:
            if now - self._checked < self.check_interval:
                return
            self._checked = now
            try:
                data = self._read_bytes()
                if data != self._data:
                    self._keys, self._data = KeySet.from_json(data), data
            except ConfigError:
                return  # keep the last good key set

    def get(self, kid: str) -> PublicKey | None:
        """The key with this ``kid`` from the file as it is now (checked once a check_interval)."""
        self._refresh()
        key: PublicKey | None = self._keys.get(kid)
        return key

    @property
    def keys(self) -> KeySet:
        """The key set as last read."""
        self._refresh()
        return self._keys

    def __repr__(self) -> str:
        return f"JwksFile({str(self.path)!r})"


def load_key_source(
    source: str,
    *,
    max_age: float | None = None,
    min_refetch_interval: float | None = None,
    max_stale: float | None = None,
) -> KeySource:
    """A key source for ``AGENTSUDO_JWKS``: a ``JwksUrl`` for a URL, else a ``JwksFile``.

    A URL must be ``https://`` (``http://`` only for a loopback host) or a
    broker's socket ``unix:///path``; it is fetched once now. ``max_age``,
    ``min_refetch_interval`` and ``max_stale`` tune a URL's cache (see ``JwksUrl``;
    ``None`` keeps its defaults) and are ignored for a file.

    :raises ConfigError: the source cannot be read or fetched, or holds no usable key.
    """
    if source.partition(":")[0].lower() in ("http", "https", "unix"):
        from . import jwks_remote

        return jwks_remote.JwksUrl(
            source,
            max_age=jwks_remote.DEFAULT_MAX_AGE if max_age is None else max_age,
            min_refetch_interval=(
                jwks_remote.DEFAULT_MIN_REFETCH_INTERVAL
                if min_refetch_interval is None
                else min_refetch_interval
            ),
            max_stale=jwks_remote.DEFAULT_MAX_STALE if max_stale is None else max_stale,
        )
    try:
        return JwksFile(source)
    except ConfigError as exc:
        if not isinstance(exc.__cause__, FileNotFoundError):
            raise
        raise ConfigError(  # say how to get there from a fresh checkout
            f"{exc}; run 'agentsudo keys init', or set AGENTSUDO_JWKS",
            expected=exc.expected,
            found=exc.found,
        ) from exc.__cause__
