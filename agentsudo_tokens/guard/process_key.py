"""The DPoP key this process was handed by ``agentsudo run --dpop``, read once from its pipe.

    key = process_key()        # a DPoPKey, or None when none was handed over

The key comes through an inherited pipe named by ``AGENTSUDO_DPOP_KEY_FD``
(descriptor and inode): read once, the pipe closed, never written anywhere.
A module of its own, below the agent and the guard, so whatever signs with the
key (``possession``, a budget debit at the broker) needs nothing else.
"""

from __future__ import annotations

import json
import os
import stat
import threading

from ..config import DPOP_KEY_FD, Settings
from ..errors import ConfigError
from ..tokens.dpop import DPoPKey

__all__ = ["process_key"]

_MAX_KEY_BYTES = 4096


class _InheritedKey:
    """The key in ``AGENTSUDO_DPOP_KEY_FD``'s pipe, read once per process."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.read = False
        self.key: DPoPKey | None = None
        self.error: ConfigError | None = None

    def get(self) -> DPoPKey | None:
        if not self.read:
            with self.lock:
                if not self.read:
                    try:
                        self.key = _read_key(Settings.from_env().dpop_key_pipe)
                    except ConfigError as exc:
                        self.error = exc
                    self.read = True
        if self.error is not None:
            raise self.error
        return self.key


def _read_key(pipe: tuple[int, int] | None) -> DPoPKey | None:
    """Read a private JWK from the pipe (all of it, without waiting), then close it.

    ``pipe`` is the descriptor and the pipe's inode: a descriptor of that number that
    is closed or another file (a child of the child has the variable, not the pipe) is
    left alone, and this process holds no key.
    """
    if pipe is None:
        return None
    fd, inode = pipe

    def bad(why: str) -> ConfigError:
        return ConfigError(f"{DPOP_KEY_FD}: {why}", expected="a pipe holding a DPoP key")

    try:
        info = os.fstat(fd)
    except OSError:
        return None  # closed: the variable was inherited, the pipe was not
    if not stat.S_ISFIFO(info.st_mode) or info.st_ino != inode:
        return None  # another file or pipe of this process: never read (or close) it
    chunks: list[bytes] = []
    try:
        os.set_blocking(fd, False)
        size = 0
        while size <= _MAX_KEY_BYTES:
            chunk = os.read(fd, _MAX_KEY_BYTES + 1)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
        else:
            raise bad("the pipe holds more than a key")
    except BlockingIOError:
        raise bad("the pipe's writer has not closed it: not a key handed over") from None
    except OSError as exc:
        raise bad(f"descriptor {fd} cannot be read ({exc.strerror})") from None
    finally:
        os.close(fd)
    try:
        jwk = json.loads(b"".join(chunks))
    except ValueError:
        raise bad("the pipe does not hold a JSON key") from None
    return DPoPKey.from_private_jwk(jwk)


_inherited = _InheritedKey()


def process_key() -> DPoPKey | None:
    """The DPoP key this process was handed (``agentsudo run --dpop``), or ``None``.

    :raises ConfigError: the pipe ``AGENTSUDO_DPOP_KEY_FD`` names does not hold a key.
    """
    return _inherited.get()
