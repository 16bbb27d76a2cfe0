"""Delegation chains in the token (issue 10 parts 1, 2, 4): ``act``, ``ancestors``, narrowing.

The narrowing rule for scopes is property-tested against a reference that
enumerates concrete scopes; hostile chains (forged, malformed, too deep,
``act`` without ``ancestors``) are each refused with their typed error.
"""

from __future__ import annotations

import time
from typing import Any

import jwt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agentsudo_tokens import Issuer, KeyDirectory, Verifier
from agentsudo_tokens.errors import (
    BadSignatureError,
    DelegationRefusedError,
    ExpiredTokenError,
    MalformedTokenError,
    RevokedTokenError,
)
from agentsudo_tokens.state import open_store
from agentsudo_tokens.tokens.claims import VerifiedClaims
from agentsudo_tokens.tokens.delegation import (
    MAX_DEPTH,
    Delegation,
    act_claim,
    narrow,
    scope_outside,
)
from agentsudo_tokens.tokens.jws import encode
from agentsudo_tokens.tokens.revocation import revoke, revoke_agent
from agentsudo_tokens.tokens.revocation_list import build_revocation_list, parse_revocation_list
from agentsudo_tokens.tokens.scopes import ScopeSet

# -- the scope rule, against a reference ---------------------------------------------------

_ALPHABET = ("a", "b", "zz")  # "zz": a segment no pattern names, which only `*` matches
_NAMED = st.sampled_from(("a", "b", "*"))


def _reference_matches(pattern: tuple[str, ...], scope: tuple[str, ...]) -> bool:
    """DESIGN §2, read literally: `*` one segment, `**` (last only) one or more."""
    if pattern and pattern[-1] == "**":
        head = pattern[:-1]
        return len(scope) > len(head) and _reference_matches(head, scope[: len(head)])
    return len(pattern) == len(scope) and all(
        p in ("*", s) for p, s in zip(pattern, scope, strict=True)
    )


def _concrete(max_len: int) -> list[tuple[str, ...]]:
    found: list[tuple[str, ...]] = [()]
    out = []
    for _ in range(max_len):
        found = [(*f, seg) for f in found for seg in _ALPHABET]
        out.extend(found)
    return out


_SCOPES = _concrete(5)  # patterns are at most 3 long (+ `**`): 5 covers every difference


def _reference_within(asked: str, held: list[str]) -> bool:
    mine = tuple(asked.split(":"))
    theirs = [tuple(h.split(":")) for h in held]
    return all(
        any(_reference_matches(t, scope) for t in theirs)
        for scope in _SCOPES
        if _reference_matches(mine, scope)
    )


@st.composite
def _pattern(draw: Any) -> str:
    segments = draw(st.lists(_NAMED, min_size=1, max_size=3))
    if draw(st.booleans()) and len(segments) < 3:
        segments.append("**")
    return ":".join(segments)


@settings(max_examples=600, deadline=None)
@given(asked=_pattern(), held=st.lists(_pattern(), min_size=1, max_size=4))
def test_scope_within_matches_the_reference(asked: str, held: list[str]) -> None:
    outside = scope_outside(ScopeSet([asked]), ScopeSet(held))
    assert (outside is None) == _reference_within(asked, held)


@pytest.mark.parametrize(
    ("asked", "held", "within"),
    [
        ("read:orders", ["read:*"], True),
        ("read:*", ["read:orders"], False),  # never the reverse
        ("read:*", ["read:*"], True),
        ("read:orders:items", ["read:*"], False),
        ("read:orders:items", ["read:**"], True),
        ("read:**", ["read:*"], False),
        ("read:**", ["read:*", "read:*:**"], True),
        ("**", ["read:**"], False),
        ("write:refunds", ["**"], True),
    ],
)
def test_scope_within_examples(asked: str, held: list[str], within: bool) -> None:
    assert (scope_outside(ScopeSet([asked]), ScopeSet(held)) is None) is within


# -- narrowing ----------------------------------------------------------------------------


@pytest.fixture
def parent(issuer: Issuer, verifier: Verifier) -> VerifiedClaims:
    minted = issuer.issue(
        "Orchestrator", ["read:*", "write:refunds"], ttl=600, audience=["agentsudo", "billing"]
    )
    return verifier.verify(minted.token)


def _narrow(parent: VerifiedClaims, **asked: Any) -> Any:
    options: dict[str, Any] = {
        "actor": "Summarizer",
        "scopes": None,
        "audience": None,
        "ttl": None,
        "now": int(time.time()),
        "default_ttl": 900,
        "max_depth": 2,
        "delegable": ScopeSet(["**"]),
    }
    options.update(asked)
    return narrow(parent, **options)


def test_narrow_keeps_everything_within_the_parent(parent: VerifiedClaims) -> None:
    child = _narrow(parent, scopes=ScopeSet(["read:orders"]), audience=["billing"], ttl=60)
    assert child.scopes.scopes == ("read:orders",)
    assert child.audience == ("billing",)
    assert child.ttl == 60
    assert child.chain == ("Orchestrator", "Summarizer")
    assert child.ancestors == (parent.jti,)


def test_by_default_a_child_gets_the_parent_scopes_it_may_pass_on(parent: VerifiedClaims) -> None:
    """A parent holding one scope it may not pass on used to make every exchange without
    named scopes fail; the child now gets the rest, and never a scope beyond delegable."""
    passable = [s for s in parent.scopes.scopes if s.startswith("read:")]
    assert passable and len(passable) < len(parent.scopes.scopes)
    child = _narrow(parent, delegable=ScopeSet(["read:**"]))
    assert child.scopes.scopes == tuple(passable)
    with pytest.raises(DelegationRefusedError) as refused:
        _narrow(parent, delegable=ScopeSet(["admin:**"]))
    assert refused.value.reason == "not_delegable" and "none of the parent" in str(refused.value)


def test_narrow_defaults_to_the_parent_cut_to_its_exp(parent: VerifiedClaims) -> None:
    child = _narrow(parent)
    assert child.scopes == parent.scopes
    assert child.audience == parent.audience
    assert child.issued_at + child.ttl <= parent.expires_at  # 900 s asked, 600 s left


@pytest.mark.parametrize(
    ("asked", "reason"),
    [
        ({"scopes": ScopeSet(["delete:customer"])}, "scope"),
        ({"scopes": ScopeSet(["**"])}, "scope"),
        ({"scopes": ScopeSet(["write:*"])}, "scope"),  # write:refunds does not cover write:*
        ({"audience": ["payments"]}, "audience"),
        ({"ttl": 601}, "ttl"),
        ({"ttl": 0}, "ttl"),
        ({"max_depth": 0}, "depth"),
        ({"delegable": ScopeSet(["read:orders"])}, "not_delegable"),  # read:* is not
        ({"delegable": ScopeSet([])}, "not_delegable"),
    ],
)
def test_narrow_refuses_more_than_the_parent(
    parent: VerifiedClaims, asked: dict[str, Any], reason: str
) -> None:
    with pytest.raises(DelegationRefusedError) as refused:
        _narrow(parent, **asked)
    assert refused.value.reason == reason
    assert "\n" not in str(refused.value)


def test_narrow_refuses_an_expired_parent(parent: VerifiedClaims) -> None:
    with pytest.raises(ExpiredTokenError):
        _narrow(parent, now=parent.expires_at)


# -- the chain in a token -----------------------------------------------------------------


def _child(issuer: Issuer, parent: VerifiedClaims, actor: str, **asked: Any) -> str:
    narrowed = _narrow(parent, actor=actor, **asked)
    return issuer.issue(
        narrowed.subject,
        narrowed.scopes,
        ttl=narrowed.ttl,
        audience=list(narrowed.audience),
        delegation=narrowed.delegation,
    ).token


def test_a_delegated_token_names_its_actor_and_its_chain(
    issuer: Issuer, verifier: Verifier, parent: VerifiedClaims
) -> None:
    first = verifier.verify(_child(issuer, parent, "Summarizer"))
    second = verifier.verify(_child(issuer, first, "Helper"))
    assert second.subject == "Orchestrator"  # on whose behalf (RFC 8693 §4.1)
    assert second.agent == "Helper"  # the current actor: the outermost act
    assert second.chain == ("Orchestrator", "Summarizer", "Helper")
    assert dict(second.claims)["act"] == {"sub": "Helper", "act": {"sub": "Summarizer"}}
    assert second.delegation == Delegation(("Summarizer", "Helper"), (parent.jti, first.jti))
    assert parent.agent == "Orchestrator" and parent.chain == ("Orchestrator",)
    assert parent.delegation is None


def test_pyjwt_verifies_a_delegated_token(
    issuer: Issuer, key_dir: KeyDirectory, parent: VerifiedClaims
) -> None:
    token = _child(issuer, parent, "Summarizer")
    jwk = key_dir.public_keys()[issuer.key.kid].to_jwk()
    key = jwt.PyJWK(jwk).key
    claims = jwt.decode(token, key, algorithms=["EdDSA"], audience="agentsudo")
    assert claims["act"] == {"sub": "Summarizer"}


def _signed(issuer: Issuer, **extra: Any) -> str:
    now = int(time.time())
    claims = {
        "iss": "agentsudo", "sub": "Orchestrator", "aud": "agentsudo", "iat": now, "nbf": now,
        "exp": now + 300, "jti": "j-child-0123456789abcdef", "scope": "read:orders", **extra,
    }  # fmt: skip
    header = {"alg": issuer.key.alg, "typ": "at+jwt", "kid": issuer.key.kid}
    return encode(header, claims, issuer.key)


@pytest.mark.parametrize(
    "extra",
    [
        pytest.param({"act": {"sub": "Helper"}}, id="act-without-ancestors"),
        pytest.param({"ancestors": ["j-root"]}, id="ancestors-without-act"),
        pytest.param({"act": "Helper", "ancestors": ["j-root"]}, id="act-a-string"),
        pytest.param({"act": {"name": "Helper"}, "ancestors": ["j-root"]}, id="act-without-sub"),
        pytest.param(
            {"act": {"sub": "Helper", "iss": "x"}, "ancestors": ["j-root"]}, id="act-extra-member"
        ),
        pytest.param({"act": {"sub": "Help er"}, "ancestors": ["j-root"]}, id="act-bad-name"),
        pytest.param({"act": {"sub": "Helper"}, "ancestors": []}, id="too-few-ancestors"),
        pytest.param(
            {"act": {"sub": "Helper", "act": None}, "ancestors": ["j-root"]}, id="nested-act-null"
        ),
        pytest.param(
            {"act": {"sub": "Helper", "act": ["A"]}, "ancestors": ["a", "b"]}, id="nested-act-list"
        ),
        pytest.param({"act": None, "ancestors": ["j-root"]}, id="act-null"),
        pytest.param({"act": {"sub": "Helper"}, "ancestors": ["a", "b"]}, id="too-many-ancestors"),
        pytest.param({"act": {"sub": "Helper"}, "ancestors": "j-root"}, id="ancestors-a-string"),
        pytest.param({"act": {"sub": "Helper"}, "ancestors": [7]}, id="ancestors-not-strings"),
        pytest.param(
            {"act": act_claim(["A", "B"]), "ancestors": ["same", "same"]}, id="repeated-ancestor"
        ),
        pytest.param(
            {"act": {"sub": "Helper"}, "ancestors": ["j-child-0123456789abcdef"]},
            id="own-jti-as-ancestor",
        ),
        pytest.param(
            {
                "act": act_claim([f"A{i}" for i in range(MAX_DEPTH + 1)]),
                "ancestors": [f"j{i}" for i in range(MAX_DEPTH + 1)],
            },
            id="too-deep",
        ),
    ],
)
def test_a_malformed_chain_is_refused(
    issuer: Issuer, verifier: Verifier, extra: dict[str, Any]
) -> None:
    """Signed by the issuer's own key (a hand-made token in dev mode): still parsed strictly."""
    with pytest.raises(MalformedTokenError) as refused:
        verifier.verify(_signed(issuer, **extra))
    assert "\n" not in str(refused.value)


def test_a_hand_made_chain_signed_by_the_issuer_is_held_to_its_ancestors(
    issuer: Issuer, key_dir: KeyDirectory
) -> None:
    """A well-formed act minted outside the broker (dev mode's key holder can) is treated as
    a chain: it names its agent, and dies with the ancestors it names."""
    store = open_store(f"sqlite:///{key_dir.path / 'state.db'}")
    checked = Verifier(key_dir.public_keys(), store=store)
    token = _signed(issuer, act={"sub": "Helper"}, ancestors=["j-root-of-it"])
    assert checked.verify(token).agent == "Helper"
    revoke(store, "j-root-of-it")
    with pytest.raises(RevokedTokenError, match="ancestor"):
        checked.verify(token)


def test_a_chain_edited_after_signing_is_refused(
    issuer: Issuer, verifier: Verifier, parent: VerifiedClaims
) -> None:
    import base64
    import json

    token = _child(issuer, parent, "Summarizer")
    head, payload, signature = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=="))
    claims["act"] = {"sub": "Admin"}
    forged = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    with pytest.raises(BadSignatureError):
        verifier.verify(f"{head}.{forged}.{signature}")


def test_a_chain_signed_by_another_key_is_refused(verifier: Verifier, tmp_path: Any) -> None:
    from agentsudo_tokens.errors import UnknownKeyError

    other = Issuer(KeyDirectory.init(tmp_path / "other").signing_key())
    with pytest.raises(UnknownKeyError):
        verifier.verify(_signed(other, act={"sub": "Helper"}, ancestors=["j-root"]))


# -- cascade revocation: store and signed list, no list of descendants --------------------


@pytest.fixture
def tree(issuer: Issuer, verifier: Verifier, parent: VerifiedClaims) -> dict[str, Any]:
    first = verifier.verify(_child(issuer, parent, "Summarizer"))
    second_token = _child(issuer, first, "Helper", scopes=ScopeSet(["read:orders"]))
    sibling_token = _child(issuer, parent, "Other")
    return {"root": parent, "first": first, "second": second_token, "sibling": sibling_token}


@pytest.mark.parametrize(
    ("revoked", "second_refused", "sibling_refused"),
    [
        ("root", True, True),
        ("first", True, False),
        ("agent:Orchestrator", True, True),  # the kill switch of the root agent
        ("agent:Summarizer", True, False),  # of an actor in the chain
        ("agent:Helper", True, False),  # of the current actor
        ("agent:Other", False, True),
    ],
)
@pytest.mark.parametrize("where", ["store", "list"])
def test_revoking_an_ancestor_refuses_every_descendant(
    key_dir: KeyDirectory,
    tree: dict[str, Any],
    revoked: str,
    second_refused: bool,
    sibling_refused: bool,
    where: str,
) -> None:
    store = open_store(f"sqlite:///{key_dir.path / 'state.db'}")
    if revoked.startswith("agent:"):
        revoke_agent(store, revoked.removeprefix("agent:"))
    else:
        revoke(store, tree[revoked].jti)
    keys = key_dir.public_keys()
    if where == "store":
        checked = Verifier(keys, store=store)
    else:
        text = build_revocation_list(store, key_dir.signing_key(), issuer="agentsudo")
        listed = parse_revocation_list(text, keys, issuer="agentsudo")

        class _Listed:
            def check(self, claims: VerifiedClaims) -> None:
                listed.check(claims)

            def needs_fetch(self) -> bool:
                return False

        checked = Verifier(keys, revocations=_Listed())
    for name, refused in (("second", second_refused), ("sibling", sibling_refused)):
        if refused:
            with pytest.raises(RevokedTokenError):
                checked.verify(tree[name])
        else:
            assert checked.verify(tree[name]).jti
