"""The JWS compact serialization, written and read strictly (RFC 7515).

    token = encode(header, claims, signing_key)
    parts = split(token)          # raises MalformedTokenError early

Reading is stricter than most JWT libraries: a length bound before any
decoding, canonical base64url without padding, UTF-8 JSON objects without
duplicate keys or non-finite numbers, and I-JSON strings (RFC 7493: no lone
surrogate such as ``"\\ud800"``, no noncharacter, in any key or value, however
deep). Signatures are checked by the key found by ``kid`` (see ``verifier``),
never by an algorithm the token names.
"""

from __future__ import annotations

import binascii
import json
import re
from dataclasses import dataclass
from typing import Any

from ..errors import MalformedTokenError
from .keys import SigningKey, b64url_encode

__all__ = ["MAX_TOKEN_BYTES", "CompactParts", "decode_json_part", "encode", "split"]

MAX_TOKEN_BYTES = 8192
_DUMPS = json.JSONEncoder(separators=(",", ":"), ensure_ascii=True, allow_nan=False).encode


def _reject_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result = dict(pairs)
    if len(result) != len(pairs):
        seen: set[str] = set()
        duplicate = next(key for key, _ in pairs if key in seen or seen.add(key))  # type: ignore[func-returns-value]
        raise MalformedTokenError(
            f"expected unique JSON keys, found {duplicate!r} twice",
            expected="unique",
            found=duplicate,
        )
    return result


def _reject_constant(name: str) -> Any:
    raise MalformedTokenError(f"expected finite JSON numbers, found {name}", found=name)


_DECODER = json.JSONDecoder(
    object_pairs_hook=_reject_duplicates, parse_constant=_reject_constant, strict=True
)
_SCAN = _DECODER.scan_once  # type: ignore[attr-defined]  # the C scanner: no whitespace, no copy


# I-JSON (RFC 7493 §2.1): no string, key or value, may hold a surrogate code point (only
# reachable through a \u escape: strict UTF-8 refuses encoded ones) or a noncharacter.
_NOT_IJSON = re.compile(
    "[\ud800-\udfff\ufdd0-\ufdef"
    + "".join(
        f"{chr(plane + 0xFFFE)}{chr(plane + 0xFFFF)}" for plane in range(0, 0x110000, 0x10000)
    )
    + "]"
)


def _check_ijson(value: Any, part: str) -> None:
    """Refuse a surrogate or a noncharacter in any string of ``value``, however deep."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            strings: Any = (item,)
        elif isinstance(item, dict):
            strings = item.keys()
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
            continue
        else:
            continue
        for text in strings:
            bad = None if text.isascii() else _NOT_IJSON.search(text)
            if bad is not None:
                kind = "a surrogate" if "\ud800" <= bad[0] <= "\udfff" else "a noncharacter"
                raise MalformedTokenError(
                    f"{part}: expected I-JSON strings (RFC 7493), found {kind} U+{ord(bad[0]):04X}",
                    expected="I-JSON",
                    found=f"U+{ord(bad[0]):04X}",
                )


# With 2 or 3 characters in the last quantum, the unused low bits must be zero (canonical).
_CANONICAL_LAST = {
    2: frozenset("AQgw"),
    3: frozenset("AEIMQUYcgkosw048"),
}


# base64url to the standard alphabet for binascii; "+", "/" and "=" are not base64url, so
# they become "!", which the strict decoder refuses like any other stray character.
_TO_STANDARD = bytes.maketrans(b"-_+/=", b"+/!!!")
_PADDING = {0: b"", 2: b"==", 3: b"="}


def _b64url_decode(text: str, part: str) -> bytes:
    """Decode canonical base64url with no padding; anything else is malformed."""
    rest = len(text) % 4
    if text and rest != 1 and (not rest or text[-1] in _CANONICAL_LAST[rest]):
        try:  # strict: a character outside the alphabet is an error, never skipped
            return binascii.a2b_base64(
                text.encode("ascii").translate(_TO_STANDARD) + _PADDING[rest], strict_mode=True
            )
        except (binascii.Error, UnicodeEncodeError):
            pass
    raise MalformedTokenError(
        f"{part}: expected canonical base64url without padding",
        expected="base64url",
        found="other characters, padding or length",
    )


def decode_json_part(text: str, part: str) -> dict[str, Any]:
    """Decode one base64url part holding a UTF-8 JSON object (no surrounding whitespace).

    :raises MalformedTokenError: bad encoding, invalid UTF-8, not an object, duplicate keys,
        a surrogate or noncharacter code point in any string (I-JSON, RFC 7493).
    """
    raw = _b64url_decode(text, part)
    try:
        document = raw.decode("utf-8", errors="strict")
        value, end = _SCAN(document, 0)
    except MalformedTokenError as exc:
        raise MalformedTokenError(f"{part}: {exc}", expected=exc.expected, found=exc.found) from exc
    except (ValueError, RecursionError, StopIteration) as exc:
        raise MalformedTokenError(
            f"{part}: expected UTF-8 JSON", expected="JSON", found="invalid"
        ) from exc
    if not isinstance(value, dict) or end != len(document):
        raise MalformedTokenError(
            f"{part}: expected exactly one JSON object, found {type(value).__name__}",
            expected="object",
            found=type(value).__name__,
        )
    if "\\u" in document or not document.isascii():  # else no string can hold one
        _check_ijson(value, part)
    return value


@dataclass(frozen=True, slots=True)
class CompactParts:
    """A token split at its dots, nothing decoded yet but the size check."""

    header: str
    payload: str
    signature: str

    @property
    def signing_input(self) -> bytes:
        """The bytes the signature covers: ``header.payload``."""
        return f"{self.header}.{self.payload}".encode("ascii")

    def signature_bytes(self) -> bytes:
        """The decoded signature.

        :raises MalformedTokenError: bad base64url.
        """
        return _b64url_decode(self.signature, "signature")


def split(token: object) -> CompactParts:
    """Check size and shape before anything is decoded.

    :raises MalformedTokenError: not a string, too long, not three non-empty parts.
    """
    if not isinstance(token, str):
        raise MalformedTokenError(
            f"expected a token string, found {type(token).__name__}",
            expected="str",
            found=type(token).__name__,
        )
    if len(token) > MAX_TOKEN_BYTES:
        raise MalformedTokenError(
            f"expected a token of at most {MAX_TOKEN_BYTES} bytes, found {len(token)}",
            expected=MAX_TOKEN_BYTES,
            found=len(token),
        )
    if not token.isascii():
        raise MalformedTokenError("expected an ASCII token", expected="ASCII", found="non-ASCII")
    parts = token.split(".")
    if len(parts) != 3 or not all(parts):
        raise MalformedTokenError(
            f"expected a JWS in compact form (3 non-empty parts), found {len(parts)} part(s)",
            expected=3,
            found=len(parts),
        )
    return CompactParts(parts[0], parts[1], parts[2])


def encode(header: dict[str, Any], claims: dict[str, Any], key: SigningKey) -> str:
    """Serialize and sign: ``b64(header).b64(claims).b64(signature)``."""
    head = b64url_encode(_DUMPS(header).encode("ascii"))
    body = b64url_encode(_DUMPS(claims).encode("ascii"))
    signing_input = f"{head}.{body}"
    signature = key.sign(signing_input.encode("ascii"))
    return f"{signing_input}.{b64url_encode(signature)}"
