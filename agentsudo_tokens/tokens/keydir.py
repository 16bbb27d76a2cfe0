"""The issuer's key directory: private keys, ``jwks.json``, and which key signs.

    keydir = KeyDirectory.init("keys")          # first key, EdDSA
    keydir.rotate()                              # a new active key; the old one still verifies
    keydir.retire(old_kid)                       # dropped from jwks.json, private key deleted
    keydir.signing_key()                         # the active SigningKey

Layout: ``<kid>.pem`` (PKCS#8, created 0600 with O_EXCL), ``jwks.json`` (public
keys still trusted), ``keys.json`` (each key's status), ``.gitignore`` (keeps
everything but itself and a README out of version control). Changes take a
file lock and replace files atomically, so concurrent commands never leave a
half-written directory.
"""

from __future__ import annotations

import builtins
import contextlib
import datetime
import fcntl
import json
import os
import re
import stat
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

from ..errors import ConfigError
from ..fileperms import check_not_writable_by_others, open_trusted
from .jwks import MAX_JWKS_BYTES, KeySet
from .keys import ALGORITHMS, PublicKey, SigningKey

__all__ = ["GITIGNORE", "KeyDirectory", "KeyInfo"]

GITIGNORE = "*\n!.gitignore\n!README.md\n"
_STATE = "keys.json"
_JWKS = "jwks.json"
_KID = re.compile(r"[A-Za-z0-9_-]{1,128}")
Status = Literal["staged", "active", "verifying", "retired"]
_STATUSES = ("staged", "active", "verifying", "retired")


@dataclass(frozen=True)
class KeyInfo:
    """One key's record: id, algorithm, status and when it was made (and retired)."""

    kid: str
    alg: str
    status: Status
    created: str
    retired: str | None = None


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _write_atomic(path: Path, text: str, mode: int = 0o644) -> None:
    import tempfile

    fd, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(temp, mode)
        os.replace(temp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temp)
        raise


def _write_private(path: Path, pem: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(pem)
        handle.flush()
        os.fsync(handle.fileno())


class KeyDirectory:
    """A key directory on disk. Construct for an existing one; ``init`` makes one."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"KeyDirectory({str(self.path)!r})"

    @property
    def jwks_path(self) -> Path:
        """Where the public key set lives."""
        return self.path / _JWKS

    @classmethod
    def init(cls, path: str | os.PathLike[str], *, alg: str = "EdDSA") -> KeyDirectory:
        """Create the directory (mode 0700) with a ``.gitignore`` and a first active key.

        :raises ConfigError: the directory already holds keys, or cannot be written.
        """
        keydir = cls(path)
        if alg not in ALGORITHMS:
            raise ConfigError(
                f"expected an algorithm in {', '.join(ALGORITHMS)}, found {alg!r}",
                expected=ALGORITHMS,
                found=alg,
            )
        try:
            keydir.path.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(f"cannot create key directory {keydir.path}: {exc.strerror}") from exc
        keydir._check_directory()
        with keydir._locked():
            if (keydir.path / _STATE).exists():
                raise ConfigError(
                    f"{keydir.path} already holds keys; use 'agentsudo keys rotate' for a new one",
                    found=str(keydir.path),
                )
            gitignore = keydir.path / ".gitignore"
            if not gitignore.exists():
                _write_atomic(gitignore, GITIGNORE)
            keydir._add_key(SigningKey.generate(alg), [])
        return keydir

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        try:
            fd = os.open(self.path / ".lock", os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
        except OSError as exc:
            raise ConfigError(f"cannot lock key directory {self.path}: {exc.strerror}") from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def _read_state(self) -> list[KeyInfo]:
        path = self.path / _STATE
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError as exc:
            raise ConfigError(
                f"no keys in {self.path}; run 'agentsudo keys init' first", found=str(self.path)
            ) from exc
        except (OSError, ValueError) as exc:
            raise ConfigError(f"cannot read {path}: not a key directory state file") from exc
        try:
            infos = [KeyInfo(**entry) for entry in data["keys"]]
        except (KeyError, TypeError) as exc:
            raise ConfigError(f"cannot read {path}: unexpected content") from exc
        for info in infos:
            if not _KID.fullmatch(info.kid) or info.status not in _STATUSES:
                raise ConfigError(f"cannot read {path}: bad key record {info.kid!r}")
        if sum(info.status == "active" for info in infos) != 1:
            raise ConfigError(f"cannot read {path}: expected exactly one active key")
        return infos

    def _write_state(self, infos: list[KeyInfo], publics: dict[str, PublicKey]) -> None:
        trusted = [publics[i.kid] for i in infos if i.status != "retired" and i.kid in publics]
        jwks = json.dumps(KeySet(trusted).to_dict(), indent=2) + "\n"
        state = json.dumps({"version": 1, "keys": [asdict(i) for i in infos]}, indent=2) + "\n"
        _write_atomic(self.jwks_path, jwks)
        _write_atomic(self.path / _STATE, state, 0o600)

    def _trusted_publics(self) -> dict[str, PublicKey]:
        return dict(self.public_keys()) if self.jwks_path.exists() else {}

    def _add_key(self, key: SigningKey, infos: list[KeyInfo], *, stage: bool = False) -> KeyInfo:
        _write_private(self.path / f"{key.kid}.pem", key.to_pem())
        if stage:  # published for verifiers, not signing yet
            kept, info = infos, KeyInfo(key.kid, key.alg, "staged", _now())
        else:
            kept = [
                KeyInfo(i.kid, i.alg, "verifying", i.created) if i.status == "active" else i
                for i in infos
            ]
            info = KeyInfo(key.kid, key.alg, "active", _now())
        publics = self._trusted_publics() if infos else {}
        publics[key.kid] = key.public
        self._write_state([*kept, info], publics)
        return info

    def _check_directory(self) -> None:
        """Refuse a key directory others may write to: they could swap keys or jwks.json."""
        check_not_writable_by_others(self.path, what="key directory")

    def _load(self, kid: str) -> SigningKey:
        if not _KID.fullmatch(kid):
            raise ConfigError(f"not a key id: {kid!r}")
        self._check_directory()
        path = self.path / f"{kid}.pem"
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
        except OSError as exc:
            raise ConfigError(f"cannot read private key {path}: {exc.strerror}") from exc
        with os.fdopen(fd, "rb") as handle:
            mode = stat.S_IMODE(os.fstat(handle.fileno()).st_mode)
            if mode & 0o077:
                raise ConfigError(
                    f"private key {path} is accessible to others (mode {mode:04o}); "
                    "expected 0600: run chmod 600 on it",
                    expected="0600",
                    found=f"{mode:04o}",
                )
            pem = handle.read(64 * 1024)
        key = SigningKey.from_pem(pem)
        if key.kid != kid:
            raise ConfigError(
                f"private key {path} does not match its key id", expected=kid, found=key.kid
            )
        return key

    def list(self) -> list[KeyInfo]:
        """Every key's record, oldest first.

        :raises ConfigError: no key directory here, or it cannot be read.
        """
        return self._read_state()

    def active(self) -> KeyInfo:
        """The record of the key that signs now."""
        return next(info for info in self._read_state() if info.status == "active")

    def signing_key(self) -> SigningKey:
        """Load the active private key (refused if others can read it).

        :raises ConfigError: missing directory, missing key, loose permissions.
        """
        return self._load(self.active().kid)

    def public_keys(self) -> KeySet:
        """The public keys still trusted (active and verifying), read from ``jwks.json``.

        :raises ConfigError: ``jwks.json`` is missing or broken, or others may write it.
        """
        try:
            with open_trusted(self.jwks_path, what="JWKS file") as handle:
                return KeySet.from_json(handle.read(MAX_JWKS_BYTES + 1))
        except OSError as exc:
            raise ConfigError(f"cannot read {self.jwks_path}: {exc.strerror}") from exc

    def rotate(self, *, alg: str | None = None, stage: bool = False) -> KeyInfo:
        """Make a new active key; the previous one keeps verifying until retired.

        :param stage: publish the new key in ``jwks.json`` without signing with it
            yet; ``activate`` it once every verifier has fetched the new key set.
        :raises ConfigError: no key directory, or an unsupported algorithm.
        """
        with self._locked():
            infos = self._read_state()
            current = next(info for info in infos if info.status == "active")
            return self._add_key(SigningKey.generate(alg or current.alg), infos, stage=stage)

    def activate(self, kid: str) -> KeyInfo:
        """Start signing with a staged key; the previous active key keeps verifying.

        :raises ConfigError: unknown key, or a key that is not staged.
        """
        with self._locked():
            infos = self._read_state()
            match = [info for info in infos if info.kid == kid]
            if not match or match[0].status != "staged":
                found = match[0].status if match else "no such key"
                raise ConfigError(
                    f"key {kid!r} is not staged ({found}); stage one with 'keys rotate --stage'",
                    expected="staged",
                    found=found,
                )
            self._load(kid)  # its private key is there and sound before anything changes
            updated = []
            for info in infos:
                if info.kid == kid:
                    info = KeyInfo(info.kid, info.alg, "active", info.created)
                elif info.status == "active":
                    info = KeyInfo(info.kid, info.alg, "verifying", info.created)
                updated.append(info)
            self._write_state(updated, self._trusted_publics())
            return next(info for info in updated if info.kid == kid)

    def retire(self, kid: str) -> KeyInfo:
        """Stop trusting a key: drop it from ``jwks.json`` and delete its private key.

        :raises ConfigError: unknown key, the active key, or already retired.
        """
        with self._locked():
            infos = self._read_state()
            match = [info for info in infos if info.kid == kid]
            if not match:
                raise ConfigError(
                    f"no key {kid!r} in {self.path}", expected="a known kid", found=kid
                )
            info = match[0]
            if info.status == "active":
                raise ConfigError(
                    f"key {kid!r} is the active key; rotate first, then retire it", found=kid
                )
            if info.status == "retired":
                raise ConfigError(f"key {kid!r} is already retired", found=kid)
            retired = KeyInfo(info.kid, info.alg, "retired", info.created, _now())
            publics = self._trusted_publics()
            publics.pop(kid, None)
            self._write_state([retired if i.kid == kid else i for i in infos], publics)
            with contextlib.suppress(FileNotFoundError):
                (self.path / f"{kid}.pem").unlink()
            return retired

    def describe(self) -> builtins.list[dict[str, Any]]:
        """The key records as JSON-ready dicts."""
        return [asdict(info) for info in self._read_state()]
