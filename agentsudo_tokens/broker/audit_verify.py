"""Checking the broker's audit with the public keys alone: the chain, every signed head, and
a head kept outside the file.

    report = verify_audit("broker-audit.jsonl", keys)               # the chain and its heads
    report = verify_audit(path, keys, anchor=parse_head(kept, keys))  # and not cut back

The format is ``broker.audit``'s.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..audit.file import verify_chain
from ..errors import (
    BadSignatureError,
    ConfigError,
    InvalidTokenError,
    MalformedTokenError,
    UnknownKeyError,
)
from ..tokens.jws import decode_json_part, split
from ..tokens.signed import AlgMismatch, SignatureMismatch, UnknownKid, verify_by_kid

if TYPE_CHECKING:
    from ..tokens.jwks import KeySource

__all__ = [
    "GAP",
    "HEAD_TYPE",
    "MAX_HEAD_BYTES",
    "REPLACED",
    "AuditReport",
    "SignedHead",
    "parse_head",
    "verify_audit",
]

HEAD_TYPE = "audit-head+jwt"
GAP = "audit_gap"  # the outcome of a line saying the log was found cut on start
REPLACED = "not the line the kept signed head covers: the log was replaced"
MAX_HEAD_BYTES = 4096
_HEADER = frozenset({"alg", "typ", "kid"})
_CLAIMS = frozenset({"iss", "iat", "chain", "lines"})


@dataclass(frozen=True)
class SignedHead:
    """A head's verified claims: who signed it, when, and the chain it covers."""

    kid: str
    issuer: str
    iat: int
    chain: str
    lines: int


def _malformed(message: str) -> MalformedTokenError:
    return MalformedTokenError(f"audit head: {message}")


def parse_head(text: object, keys: KeySource) -> SignedHead:
    """Verify a head's signature and shape strictly.

    :raises MalformedTokenError: not a compact JWS of at most ``MAX_HEAD_BYTES``, a header
        other than ``alg``/``typ``/``kid``, ``typ`` not ``audit-head+jwt``, ``alg`` not the
        key's, claims other than ``iss iat chain lines``.
    :raises UnknownKeyError: ``kid`` names no key in ``keys``.
    :raises BadSignatureError: the signature does not verify.
    :raises KeysUnavailableError: ``keys`` cannot be had now.
    """
    if not isinstance(text, str) or len(text) > MAX_HEAD_BYTES:
        raise _malformed(f"expected a JWS of at most {MAX_HEAD_BYTES} characters")
    parts = split(text)
    header = decode_json_part(parts.header, "audit head header")
    if set(header) != _HEADER:
        raise _malformed("expected a header of exactly alg, typ and kid")
    typ, kid, alg = header["typ"], header["kid"], header["alg"]
    if typ != HEAD_TYPE:
        raise _malformed(f"expected typ {HEAD_TYPE!r}")
    if not isinstance(kid, str) or not 0 < len(kid) <= 128:
        raise _malformed("expected kid as a short string")
    try:
        verify_by_kid(parts, kid, alg, keys)
    except UnknownKid:
        raise UnknownKeyError(
            f"audit head: signed by key {kid!r}, which the JWKS does not hold",
            expected="a known kid",
            found=kid,
        ) from None
    except AlgMismatch as refusal:
        raise _malformed(f"expected alg {refusal.key_alg!r} for key {kid!r}") from None
    except SignatureMismatch:
        raise BadSignatureError(
            f"audit head: the signature by key {kid!r} does not verify",
            expected=kid,
            found="invalid signature",
        ) from None
    claims = decode_json_part(parts.payload, "audit head payload")
    if set(claims) != _CLAIMS:
        raise _malformed("expected exactly the claims iss, iat, chain, lines")
    issuer, iat, chain, lines = claims["iss"], claims["iat"], claims["chain"], claims["lines"]
    if not isinstance(issuer, str) or not isinstance(chain, str):
        raise _malformed("expected iss and chain as strings")
    if type(iat) is not int or type(lines) is not int or iat < 0 or lines < 0:
        raise _malformed("expected iat and lines as whole numbers")
    return SignedHead(kid, issuer, iat, chain, lines)


@dataclass(frozen=True)
class AuditReport:
    """What ``verify_audit`` found: the chain's report plus its signed heads.

    ``unsigned`` counts the lines after the last signed head (every line when there
    is none): they are chained, but nothing signed vouches for them yet.
    """

    ok: bool
    events: int
    head: str
    bad_line: int | None = None
    problem: str | None = None
    signed_heads: int = 0
    last_signed_line: int | None = None
    last_signed_at: int | None = None  # the head's iat (seconds since the epoch)
    unsigned: int = 0

    def to_dict(self) -> dict[str, Any]:
        """The report as a JSON-ready dict."""
        return dict(self.__dict__)


def verify_audit(
    path: str | os.PathLike[str],
    keys: KeySource | None = None,
    *,
    load_keys: Callable[[], KeySource] | None = None,
    anchor: SignedHead | None = None,
    check_heads: bool = True,
) -> AuditReport:
    """Check the chain and every signed head in it against ``keys``.

    ``load_keys`` instead of ``keys`` is called at the first head, so a file
    without heads (the guard's audit) needs no keys. With neither, a head is a
    ``ConfigError``.

    ``anchor``, a head kept outside the file (``audit_anchor``: the broker's store,
    or its ``GET /v1/audit/head``), must be in the file at its place: a log cut
    back to an earlier signed head, or replaced, fails. An ``audit_gap`` line (the
    broker found its log cut or replaced) fails too. ``check_heads=False`` checks the
    chain and the anchor's place alone (the broker's look on start).

    :raises ConfigError: the file cannot be read or trusted, or the keys cannot be had.
    """
    source: list[KeySource] = []
    heads: list[tuple[int, SignedHead]] = []

    def key_source() -> KeySource:
        if not source:
            if keys is not None:
                source.append(keys)
            elif load_keys is not None:
                source.append(load_keys())
            else:
                raise ConfigError("the audit log has signed heads: give the JWKS to check them")
        return source[0]

    def check(number: int, fields: dict[str, Any]) -> str | None:
        if anchor is not None and number == anchor.lines + 1 and fields.get("prev") != anchor.chain:
            return REPLACED
        if not check_heads:
            return None
        if fields.get("outcome") == GAP:
            return f"the broker found this log cut or replaced: {fields.get('problem')}"
        if fields.get("outcome") != "head":
            return None
        try:
            head = parse_head(fields.get("head"), key_source())
        except InvalidTokenError as exc:
            return f"a signed head that does not verify: {exc}"
        if head.chain != fields.get("prev"):
            return "a signed head that does not match the chain: lines before it were rewritten"
        if head.lines != number - 1:
            return (
                f"a signed head for {head.lines} lines at line {number}: "
                "lines before it were added or removed"
            )
        heads.append((number, head))
        return None

    chain = verify_chain(path, check=check)
    last_line, last = heads[-1] if heads else (None, None)
    ok, problem = chain.ok, chain.problem
    if ok and anchor is not None and chain.events < anchor.lines + 1:
        ok, problem = (
            False,
            (
                f"the log ends at line {chain.events}, before the kept signed head of line "
                f"{anchor.lines + 1}: it was cut"
            ),
        )
    return AuditReport(
        ok=ok,
        events=chain.events,
        head=chain.head,
        bad_line=chain.bad_line,
        problem=problem,
        signed_heads=len(heads),
        last_signed_line=last_line,
        last_signed_at=last.iat if last is not None else None,
        unsigned=chain.events - (last_line or 0),
    )
