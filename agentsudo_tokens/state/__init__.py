"""State for revocation, one-time tokens and approvals: SQLite by default, Redis to share.

    store = open_store("sqlite:///keys/agentsudo-state.db")   # a file: every process on a machine
    store = open_store("redis://10.0.0.5:6379/0")             # a server: every machine
    store = open_settings_store(Settings.from_env())          # AGENTSUDO_STORE, else the file

URLs follow SQLAlchemy: ``sqlite:///relative.db``, ``sqlite:////absolute.db``.
Verification needs no store; only the checks that need state use one, and
they fail closed (``StoreUnavailableError``) when it cannot be reached.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import ConfigError
from .base import Store

if TYPE_CHECKING:
    from ..config import Settings

__all__ = [
    "STATE_FILE",
    "Store",
    "default_state_file",
    "default_store_url",
    "open_settings_store",
    "open_store",
]

STATE_FILE = "agentsudo-state.db"
_REDIS_SCHEMES = ("redis://", "rediss://", "unix://")


def open_store(url: str, *, create: bool = True) -> Store:
    """The store at ``url``: ``sqlite:///path`` or ``redis://host:port/db``.

    Opening connects to nothing; the first operation does, and raises
    ``StoreUnavailableError`` if it cannot.

    :param create: ``False``: a SQLite file is not created until something is written
        (a missing file reads as empty).

    :raises ConfigError: not a store URL.
    :raises StoreUnavailableError: a Redis URL without the ``redis`` package installed.
    """
    text = url.strip() if isinstance(url, str) else ""
    if text.startswith("sqlite:///") and len(text) > len("sqlite:///"):
        from .sqlite import SqliteStore

        return SqliteStore(Path(text[len("sqlite:///") :]), create=create)
    if text.startswith(_REDIS_SCHEMES):
        from .redis import RedisStore

        return RedisStore(text)
    from .redis import redact

    raise ConfigError(
        f"AGENTSUDO_STORE: expected sqlite:///path or redis://host:port/db, found {redact(text)!r}",
        expected="sqlite:///path or redis://host:port/db",
        found=redact(text),
    )


def default_state_file(settings: Settings) -> Path:
    """Where the state lives when ``AGENTSUDO_STORE`` is not set: the key directory's file.

    ``--keys-dir``, else ``AGENTSUDO_KEYS_DIR``, else ``./keys``, as DESIGN §10 says. A
    service that verifies with a ``jwks.json`` from elsewhere sees the issuer's
    revocations only when told where they are: ``AGENTSUDO_STORE`` (or, with a
    broker, its signed revocation list). ``agentsudo run`` and ``agent_env()``
    tell their children.
    """
    return settings.keys_dir / STATE_FILE


def default_store_url(settings: Settings) -> str:
    """``AGENTSUDO_STORE``, else the key directory's SQLite file (``default_state_file``)."""
    if settings.store:
        return settings.store
    return f"sqlite:///{default_state_file(settings)}"


def open_settings_store(settings: Settings, *, reader: bool = False) -> Store:
    """The configured store: ``AGENTSUDO_STORE``, else the key directory's SQLite file.

    :param reader: for a verifier: a SQLite file (``AGENTSUDO_STORE``'s, else the key
        directory's) is read while it exists and not created until something is written
        (a one-time token's use), so a service with no state yet still sees the
        first revocation made after it started.
    :raises ConfigError: ``AGENTSUDO_STORE`` is not a store URL.
    """
    if not settings.store and reader:
        from .sqlite import SqliteStore

        return SqliteStore(default_state_file(settings).absolute(), create=False)
    return open_store(default_store_url(settings), create=not reader)
