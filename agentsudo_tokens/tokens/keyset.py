"""A fixed set of trusted public keys (an RFC 7517 JWK Set), and what a key source is.

    keys = KeySet.from_json(Path("keys/jwks.json").read_bytes())
    keys.get("some-kid")                       # PublicKey or None

The leaf that ``jwks`` (files, ``load_key_source``) and ``jwks_remote`` (URLs)
both build on; ``jwks`` re-exports every name here, where users import them.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from typing import Any, Protocol

from ..errors import ConfigError
from .keys import PublicKey

__all__ = ["MAX_JWKS_BYTES", "KeySet", "KeySource"]

MAX_JWKS_BYTES = 1 << 20


class KeySource(Protocol):
    """Anything a verifier can ask for a public key by ``kid``."""

    def get(self, kid: str) -> PublicKey | None:
        """The trusted key with this ``kid``, or ``None``."""
        ...


class KeySet(Mapping[str, PublicKey]):
    """An immutable set of trusted public keys, by ``kid``."""

    def __init__(self, keys: list[PublicKey] | tuple[PublicKey, ...] = ()) -> None:
        by_kid: dict[str, PublicKey] = {}
        for key in keys:
            if key.kid in by_kid:
                raise ConfigError(f"JWKS: key id {key.kid!r} appears twice", found=key.kid)
            by_kid[key.kid] = key
        self._keys = by_kid

    @classmethod
    def from_dict(cls, jwks: object) -> KeySet:
        """Parse a JWK Set. Keys not for signatures, or of other types, are ignored.

        :raises ConfigError: not a JWK Set, a duplicate ``kid``, or no usable key.
        """
        if not isinstance(jwks, dict) or not isinstance(jwks.get("keys"), list):
            raise ConfigError('JWKS: expected an object with a "keys" list')
        usable = []
        for jwk in jwks["keys"]:
            if not isinstance(jwk, dict):
                raise ConfigError("JWKS: expected every key to be an object")
            if jwk.get("use", "sig") != "sig":
                continue
            ops = jwk.get("key_ops")
            if ops is not None and (not isinstance(ops, list) or "verify" not in ops):
                continue
            if jwk.get("alg") not in ("EdDSA", "ES256"):
                continue
            usable.append(PublicKey.from_jwk(jwk))
        if not usable:
            raise ConfigError("JWKS: expected at least one EdDSA or ES256 signing key, found none")
        return cls(usable)

    @classmethod
    def from_json(cls, text: str | bytes) -> KeySet:
        """Parse JSON text holding a JWK Set.

        :raises ConfigError: as ``from_dict``, or for text that is not JSON.
        """
        if len(text) > MAX_JWKS_BYTES:
            raise ConfigError(f"JWKS: expected at most {MAX_JWKS_BYTES} bytes")
        try:
            data = json.loads(text)
        except (ValueError, UnicodeDecodeError) as exc:
            raise ConfigError("JWKS: not valid JSON") from exc
        return cls.from_dict(data)

    def to_dict(self) -> dict[str, Any]:
        """The JWK Set as a JSON-ready dict."""
        return {"keys": [key.to_jwk() for key in self._keys.values()]}

    def get(self, kid: str, default: Any = None) -> Any:
        """The key with this ``kid``, or ``default``."""
        return self._keys.get(kid, default)

    def __getitem__(self, kid: str) -> PublicKey:
        return self._keys[kid]

    def __iter__(self) -> Iterator[str]:
        return iter(self._keys)

    def __len__(self) -> int:
        return len(self._keys)

    def __repr__(self) -> str:
        return f"KeySet({list(self._keys)!r})"
