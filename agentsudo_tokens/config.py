"""Settings: the only place that reads ``AGENTSUDO_*`` environment variables.

    settings = Settings.from_env()
    settings.keys_dir, settings.issuer, settings.audience

Variables are read when ``from_env`` is called, never at import (one exception,
``AGENTSUDO_DPOP_KEY_FD``: the package's import marks that pipe close-on-exec).
A command-line flag beats a variable, a variable beats the default;
``Settings.replace`` puts flags on top. Defaults are chosen so that a token
minted with defaults verifies with defaults.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import ConfigError

__all__ = ["DEFAULT_ISSUER", "Settings", "child_environment", "dpop_origin", "parse_duration"]

DEFAULT_ISSUER = "agentsudo"
DEFAULT_AUDIENCE = "agentsudo"
DEFAULT_TTL = 15 * 60
DEFAULT_MAX_TTL = 24 * 60 * 60
DEFAULT_LEEWAY = 30
MAX_LEEWAY = 300

TOKEN = "AGENTSUDO_TOKEN"
KEYS_DIR = "AGENTSUDO_KEYS_DIR"
JWKS = "AGENTSUDO_JWKS"
ISSUER = "AGENTSUDO_ISSUER"
AUDIENCE = "AGENTSUDO_AUDIENCE"
STORE = "AGENTSUDO_STORE"
AUDIT_LOG = "AGENTSUDO_AUDIT_LOG"
REQUIRE_SIGNED = "AGENTSUDO_REQUIRE_SIGNED"
TTL = "AGENTSUDO_TTL"
MAX_TTL = "AGENTSUDO_MAX_TTL"
LEEWAY = "AGENTSUDO_LEEWAY"
JWKS_CACHE_TTL = "AGENTSUDO_JWKS_CACHE_TTL"
DEFAULT_JWKS_CACHE_TTL = 300
JWKS_MAX_STALE = "AGENTSUDO_JWKS_MAX_STALE"
DEFAULT_JWKS_MAX_STALE = 60 * 60
BROKER = "AGENTSUDO_BROKER"
BROKER_CREDENTIAL = "AGENTSUDO_BROKER_CREDENTIAL"  # over TCP: a credential the broker issued
REVOCATIONS = "AGENTSUDO_REVOCATIONS"
REVOCATIONS_PATH = "/v1/revocations"  # on the broker
JWKS_PATH = "/.well-known/jwks.json"  # on the broker
REVOCATIONS_REFRESH = "AGENTSUDO_REVOCATIONS_REFRESH"
DEFAULT_REVOCATIONS_REFRESH = 10
REVOCATIONS_MAX_STALE = "AGENTSUDO_REVOCATIONS_MAX_STALE"
DEFAULT_REVOCATIONS_MAX_STALE = 60  # then refuse: the list is what makes revocation work
DPOP_KEY_FD = "AGENTSUDO_DPOP_KEY_FD"  # FD:INODE, an inherited pipe holding a DPoP key
DPOP_ORIGIN = "AGENTSUDO_DPOP_ORIGIN"  # a service's public origin: what a DPoP proof's htu names
OTEL = "AGENTSUDO_OTEL"  # 1: decisions as OpenTelemetry spans and metrics (the `otel` extra)

_DURATION = re.compile(r"([0-9]{1,9})([smhd]?)")
_UNIT_SECONDS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"", "0", "false", "no", "off"}


def parse_duration(text: str | int, *, name: str = "duration") -> int:
    """Parse ``90``, ``90s``, ``15m``, ``2h`` or ``1d`` into whole seconds.

    :raises ConfigError: for anything else, or a duration of zero.
    """
    if isinstance(text, int) and not isinstance(text, bool):
        seconds = text
    else:
        match = _DURATION.fullmatch(str(text).strip())
        if match is None:
            raise ConfigError(
                f"{name}: expected a duration like 900, 90s, 15m, 2h or 1d, found {str(text)!r}",
                expected="duration",
                found=str(text),
            )
        seconds = int(match.group(1)) * _UNIT_SECONDS[match.group(2)]
    if seconds <= 0:
        raise ConfigError(
            f"{name}: expected a positive duration, found {seconds}s", expected=">0", found=seconds
        )
    return seconds


def _flag(name: str, raw: str) -> bool:
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ConfigError(f"{name}: expected 1 or 0, found {raw!r}", expected="1 or 0", found=raw)


def _name(name: str, raw: str) -> str:
    value = raw.strip()
    if not value or not value.isprintable() or not value.isascii():
        raise ConfigError(
            f"{name}: expected a non-empty printable ASCII name, found {raw!r}",
            expected="name",
            found=raw,
        )
    return value


def _origin(raw: str) -> str:
    """``http(s)://host[:port]``: an origin, with no path, query, fragment or user info."""
    from urllib.parse import urlsplit

    value = raw.strip().removesuffix("/")
    rule = "an origin such as https://billing.example"
    found = value[:80]
    bad = ConfigError(
        f"{DPOP_ORIGIN}: expected {rule}, found {found!r}", expected=rule, found=found
    )
    if not value.isascii() or not value.isprintable() or any(c in value for c in " ?#@"):
        raise bad
    try:
        parts = urlsplit(value)
        host, _port = parts.hostname, parts.port
    except ValueError as exc:
        raise bad from exc
    if parts.scheme.lower() not in ("http", "https") or not host or parts.path:
        raise bad
    return value


def dpop_origin(environ: Mapping[str, str] | None = None) -> str | None:
    """``AGENTSUDO_DPOP_ORIGIN`` alone (``os.environ`` unless given); ``None`` when unset.

    For a service's DPoP check, which needs this one setting: another variable's
    bad value is not its concern.

    :raises ConfigError: the value is not an origin.
    """
    raw = (os.environ if environ is None else environ).get(DPOP_ORIGIN, "").strip()
    return _origin(raw) if raw else None


def _key_pipe(raw: str) -> tuple[int, int]:
    """``FD:INODE``: a descriptor above 2 and a pipe's inode."""
    fd, _, inode = raw.strip().partition(":")
    numbers = fd.isascii() and fd.isdigit() and inode.isascii() and inode.isdigit()
    if not numbers or not 2 < int(fd) < 65536:
        raise ConfigError(
            f"{DPOP_KEY_FD}: expected FD:INODE, a pipe's descriptor (above 2) and "
            f"inode, found {raw[:40]!r}",
            expected="FD:INODE",
            found=raw[:40],
        )
    return int(fd), int(inode)


def _broker(raw: str) -> str:
    """``unix:///absolute/path`` or ``http(s)://host[:port]`` (no path, query or credentials)."""
    from urllib.parse import urlsplit

    value = raw.strip()
    rule = "unix:///path/to/broker.sock or http(s)://host:port"
    bad = ConfigError(f"{BROKER}: expected {rule}, found {value!r}", expected=rule, found=value)
    if not value.isascii() or not value.isprintable() or any(c.isspace() for c in value):
        raise bad
    if value.startswith("unix://"):
        path = value[len("unix://") :]
        if not path.startswith("/") or path.rstrip("/") == "" or "?" in path or "#" in path:
            raise bad
        return value
    try:
        parts = urlsplit(value)
        host, _port = parts.hostname, parts.port
    except ValueError as exc:
        raise bad from exc
    if (
        parts.scheme.lower() not in ("http", "https")
        or not host
        or parts.username is not None
        or parts.password is not None
        or parts.path not in ("", "/")
        or parts.query
        or parts.fragment
    ):
        raise bad
    return value.rstrip("/")


@dataclass(frozen=True)
class Settings:
    """Every setting, resolved. Build with ``from_env``; override with ``replace``."""

    token: str | None = None
    keys_dir: Path = Path("keys")
    jwks: str | None = None
    issuer: str = DEFAULT_ISSUER
    audience: str = DEFAULT_AUDIENCE
    store: str | None = None
    audit_log: Path | None = None
    require_signed: bool = False
    ttl: int = DEFAULT_TTL
    max_ttl: int = DEFAULT_MAX_TTL
    leeway: int = DEFAULT_LEEWAY
    jwks_cache_ttl: int = DEFAULT_JWKS_CACHE_TTL
    jwks_max_stale: int = DEFAULT_JWKS_MAX_STALE  # seconds past the cache TTL, then refuse
    broker: str | None = None  # unix:///path or http(s)://host:port
    broker_credential: str | None = None  # over TCP, a token the broker issued for itself
    revocations: str | None = None  # the signed revocation list: a URL, unix:///path or a file
    revocations_refresh: int = DEFAULT_REVOCATIONS_REFRESH  # seconds between fetches
    revocations_max_stale: int = DEFAULT_REVOCATIONS_MAX_STALE  # since the last good list
    dpop_key_pipe: tuple[int, int] | None = None  # (fd, inode) from `agentsudo run --dpop`
    dpop_origin: str | None = None  # a service's public origin, for DPoP proofs' htu
    otel: bool = False  # decisions to OpenTelemetry's global providers (audit.otel)

    def __post_init__(self) -> None:
        # ttl against max_ttl is the issuer's check: a --ttl flag may still override AGENTSUDO_TTL
        if not 0 <= self.leeway <= MAX_LEEWAY:
            raise ConfigError(
                f"leeway: expected 0 to {MAX_LEEWAY} seconds, found {self.leeway}",
                expected=f"0..{MAX_LEEWAY}",
                found=self.leeway,
            )

    def __repr__(self) -> str:
        shown = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        shown["token"] = "<set>" if self.token else None
        shown["broker_credential"] = "<set>" if self.broker_credential else None
        inner = ", ".join(f"{k}={v!r}" for k, v in shown.items())
        return f"Settings({inner})"

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Read every ``AGENTSUDO_*`` variable (``os.environ`` unless given).

        :raises ConfigError: a variable holds a value that cannot be used.
        """
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        if token := env.get(TOKEN, "").strip():
            values["token"] = token
        if keys_dir := env.get(KEYS_DIR, "").strip():
            values["keys_dir"] = Path(keys_dir)
        if jwks := env.get(JWKS, "").strip():
            values["jwks"] = jwks
        if ISSUER in env:
            values["issuer"] = _name(ISSUER, env[ISSUER])
        if AUDIENCE in env:
            values["audience"] = _name(AUDIENCE, env[AUDIENCE])
        if store := env.get(STORE, "").strip():
            values["store"] = store
        if audit_log := env.get(AUDIT_LOG, "").strip():
            values["audit_log"] = Path(audit_log)
        if REQUIRE_SIGNED in env:
            values["require_signed"] = _flag(REQUIRE_SIGNED, env[REQUIRE_SIGNED])
        if OTEL in env:
            values["otel"] = _flag(OTEL, env[OTEL])
        if env.get(TTL, "").strip():
            values["ttl"] = parse_duration(env[TTL], name=TTL)
        if env.get(MAX_TTL, "").strip():
            values["max_ttl"] = parse_duration(env[MAX_TTL], name=MAX_TTL)
        if env.get(JWKS_CACHE_TTL, "").strip():
            values["jwks_cache_ttl"] = parse_duration(env[JWKS_CACHE_TTL], name=JWKS_CACHE_TTL)
        if env.get(JWKS_MAX_STALE, "").strip():
            raw = env[JWKS_MAX_STALE].strip()
            values["jwks_max_stale"] = (
                0 if raw in ("0", "0s") else parse_duration(raw, name=JWKS_MAX_STALE)
            )
        if broker := env.get(BROKER, "").strip():
            values["broker"] = _broker(broker)
        if credential := env.get(BROKER_CREDENTIAL, "").strip():
            values["broker_credential"] = credential
        if revocations := env.get(REVOCATIONS, "").strip():
            values["revocations"] = revocations
        for variable, field in (
            (REVOCATIONS_REFRESH, "revocations_refresh"),
            (REVOCATIONS_MAX_STALE, "revocations_max_stale"),
        ):
            if env.get(variable, "").strip():
                values[field] = parse_duration(env[variable], name=variable)
        if pipe := env.get(DPOP_KEY_FD, "").strip():
            values["dpop_key_pipe"] = _key_pipe(pipe)
        if origin := dpop_origin(env):
            values["dpop_origin"] = origin
        if env.get(LEEWAY, "").strip():
            raw = env[LEEWAY].strip()
            leeway = 0 if raw in ("0", "0s") else parse_duration(raw, name=LEEWAY)
            if leeway > MAX_LEEWAY:  # named by its variable here; Settings(leeway=...) checks too
                raise ConfigError(
                    f"{LEEWAY}: expected 0 to {MAX_LEEWAY} seconds, found {leeway}",
                    expected=f"0..{MAX_LEEWAY}",
                    found=leeway,
                )
            values["leeway"] = leeway
        return cls(**values)

    def replace(self, **changes: Any) -> Settings:
        """Return a copy with the given settings changed; ``None`` values are ignored."""
        return dataclasses.replace(self, **{k: v for k, v in changes.items() if v is not None})

    @property
    def jwks_source(self) -> str:
        """Where a verifier finds public keys: ``AGENTSUDO_JWKS``, else the broker's (its
        socket, or its URL + ``/.well-known/jwks.json``), else the key directory's file."""
        if self.jwks:
            return self.jwks
        if self.broker is None:
            return str(self.keys_dir / "jwks.json")
        if self.broker.startswith("unix://"):
            return self.broker  # the socket; the keys are at JWKS_PATH on it
        return self.broker.rstrip("/") + JWKS_PATH

    @property
    def revocations_source(self) -> str | None:
        """Where a verifier gets the signed revocation list: ``AGENTSUDO_REVOCATIONS``, else
        the broker's (its socket, or its URL + ``/v1/revocations``), else ``None``."""
        if self.revocations:
            return self.revocations
        if self.broker is None:
            return None
        if self.broker.startswith("unix://"):
            return self.broker  # the socket; the list is at REVOCATIONS_PATH on it
        return self.broker.rstrip("/") + REVOCATIONS_PATH


def _is_url(source: str) -> bool:
    return source.lower().startswith(("http://", "https://", "unix://"))


def child_environment(
    token: str, *, jwks: str | None = None, store: str | None = None, broker: str | None = None
) -> dict[str, str]:
    """This process's environment plus ``AGENTSUDO_TOKEN`` (and where to verify it) for a child.

    Dev mode: an ``AGENTSUDO_JWKS`` or ``AGENTSUDO_STORE`` already set wins over
    ``jwks`` and ``store``; relative paths are made absolute so the child finds
    the keys and the state (revocations) from any directory.

    Broker mode (``broker``, or ``AGENTSUDO_BROKER`` set here): the child gets the
    broker's address, where it finds the public keys and the revocation list, and
    never a path into a key directory or a state store: ``AGENTSUDO_KEYS_DIR``,
    ``AGENTSUDO_STORE`` and an ``AGENTSUDO_JWKS`` file path are removed (a JWKS URL
    set here stays), and so is ``AGENTSUDO_BROKER_CREDENTIAL``.

    :raises ConfigError: the broker's address is not one.
    """
    env = dict(os.environ)
    env[TOKEN] = token
    env.pop(DPOP_KEY_FD, None)  # this process's key pipe is not the child's
    env.pop(BROKER_CREDENTIAL, None)  # the launcher's credential is not the child's
    address = broker or env.get(BROKER, "").strip()
    if address:
        env[BROKER] = _broker(address)
        env.pop(KEYS_DIR, None)
        env.pop(STORE, None)
        source = env.pop(JWKS, "").strip() or jwks
        if source and _is_url(source) and source != Settings(broker=env[BROKER]).jwks_source:
            env[JWKS] = source
        return env
    source = env.get(JWKS, "").strip() or jwks
    if source:
        env[JWKS] = source if _is_url(source) else str(Path(source).resolve())
    state = env.get(STORE, "").strip() or store
    if state:
        prefix = "sqlite:///"
        is_file = state.startswith(prefix)
        env[STORE] = f"{prefix}{Path(state[len(prefix) :]).resolve()}" if is_file else state
    return env
