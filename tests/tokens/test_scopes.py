"""Scope grammar and matching (DESIGN §2): example tables, then properties.

The properties check ``ScopeSet`` against ``_reference_allows``, a matcher small
enough to be obviously right, and the validators against ``_reference_valid``.
"""

from __future__ import annotations

import copy
import pickle

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agentsudo_tokens.errors import AgentSudoError, InvalidScopeError
from agentsudo_tokens.tokens.scopes import (
    _MEMO_LIMIT,
    MAX_SCOPE_LENGTH,
    MAX_SCOPES,
    MAX_SEGMENTS,
    ScopeSet,
    parse_scope_claim,
    validate_required_scope,
)

PROPERTY = settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)  # CI machines are shared: slow generation is load, not a bug
ALLOWED_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.-:*")
SEGMENT_CHARS = ALLOWED_CHARS - {":", "*"}


# --- the grammar: valid scopes ----------------------------------------------------------------

CONCRETE = [
    pytest.param("read", id="one-segment"),
    pytest.param("read:orders", id="two-segments"),
    pytest.param("read:orders:items", id="three-segments"),
    pytest.param("A_b-c.d:Z9", id="all-segment-characters"),
    pytest.param("0", id="digit"),
    pytest.param("x.y:z", id="dot-is-literal"),
    pytest.param("-:_:.:..", id="punctuation-only-segments"),
    pytest.param("a" * MAX_SCOPE_LENGTH, id="max-length"),
    pytest.param(":".join(["a"] * MAX_SEGMENTS), id="max-segments"),
]

WILDCARD = [
    pytest.param("*", id="star-alone"),
    pytest.param("**", id="double-star-alone"),
    pytest.param("read:*", id="trailing-star"),
    pytest.param("*:orders", id="leading-star"),
    pytest.param("read:*:items", id="middle-star"),
    pytest.param("read:**", id="trailing-double-star"),
    pytest.param("*:*:**", id="stars-then-double-star"),
]


@pytest.mark.parametrize("scope", CONCRETE + WILDCARD)
def test_valid_scope_is_accepted_everywhere_a_grant_goes(scope: str) -> None:
    granted = ScopeSet([scope])
    assert granted.scopes == (scope,)
    assert parse_scope_claim(scope) == (scope,)
    assert parse_scope_claim(f"{scope} other") == (scope, "other")


@pytest.mark.parametrize("scope", CONCRETE)
def test_concrete_scope_is_a_valid_requirement_and_allows_itself(scope: str) -> None:
    assert validate_required_scope(scope) == scope
    assert ScopeSet([scope]).allows(scope)
    assert scope in ScopeSet([scope]).exact


# --- the grammar: invalid scopes --------------------------------------------------------------

INVALID = [
    pytest.param("", id="empty"),
    pytest.param(":", id="colon-only"),
    pytest.param("read:", id="empty-last-segment"),
    pytest.param(":read", id="empty-first-segment"),
    pytest.param("read::x", id="empty-middle-segment"),
    pytest.param("read orders", id="inner-space"),
    pytest.param(" read", id="leading-space"),
    pytest.param("read ", id="trailing-space"),
    pytest.param("read\torders", id="tab"),
    pytest.param("read\n", id="trailing-newline"),
    pytest.param("read\x00", id="nul"),
    pytest.param("read\u00a0orders", id="nbsp"),
    pytest.param("r\u00e9ad", id="non-ascii-letter"),
    pytest.param("re\u0430d", id="cyrillic-lookalike"),
    pytest.param("\u212a", id="kelvin-sign"),
    pytest.param("read:\u0663", id="non-ascii-digit"),
    pytest.param("read\uff1aorders", id="fullwidth-colon"),
    pytest.param("read?", id="question-mark"),
    pytest.param("read:[a]", id="brackets"),
    pytest.param("read[", id="open-bracket"),
    pytest.param("read]", id="close-bracket"),
    pytest.param("read/orders", id="slash"),
    pytest.param("read,orders", id="comma"),
    pytest.param("re*d", id="star-inside-segment"),
    pytest.param("read:*s", id="star-prefix-segment"),
    pytest.param("***", id="triple-star"),
    pytest.param("**:x", id="double-star-first"),
    pytest.param("read:**:x", id="double-star-middle"),
    pytest.param("read:**:**", id="double-star-twice"),
    pytest.param("a" * (MAX_SCOPE_LENGTH + 1), id="over-long"),
    pytest.param(":".join(["a"] * (MAX_SEGMENTS + 1)), id="too-many-segments"),
]


@pytest.mark.parametrize("scope", INVALID)
def test_invalid_scope_is_rejected_everywhere(scope: str) -> None:
    with pytest.raises(InvalidScopeError) as granted:
        ScopeSet([scope])
    with pytest.raises(InvalidScopeError):
        validate_required_scope(scope)
    if " " not in scope:  # in a claim a space separates scopes: see the claim tables
        with pytest.raises(InvalidScopeError):
            parse_scope_claim(scope)
        with pytest.raises(InvalidScopeError):
            parse_scope_claim(f"ok {scope}")
    err = granted.value
    assert isinstance(err, ValueError)
    assert isinstance(err, AgentSudoError)
    assert err.expected is not None
    assert "\n" not in str(err)


@pytest.mark.parametrize(
    "scope", [None, 1, b"read", ["read"]], ids=["none", "int", "bytes", "list"]
)
def test_non_string_scope_is_rejected(scope: object) -> None:
    with pytest.raises(InvalidScopeError) as err:
        ScopeSet([scope])  # type: ignore[list-item]
    assert err.value.expected == "str"
    assert err.value.found == type(scope).__name__
    with pytest.raises(InvalidScopeError):
        validate_required_scope(scope)


def test_over_long_error_says_what_was_expected_and_found() -> None:
    with pytest.raises(InvalidScopeError) as err:
        validate_required_scope("a" * (MAX_SCOPE_LENGTH + 5))
    assert err.value.found == MAX_SCOPE_LENGTH + 5


# --- wildcard semantics (DESIGN §2) -----------------------------------------------------------

MATCHING = [
    # `*` is exactly one segment
    pytest.param(["read:*"], "read:orders", True, id="star-one-segment"),
    pytest.param(["read:*"], "read:orders:items", False, id="star-not-two-segments"),
    pytest.param(["read:*"], "read", False, id="star-not-zero-segments"),
    pytest.param(["read:*"], "write:orders", False, id="star-other-prefix"),
    pytest.param(["*:orders"], "read:orders", True, id="leading-star-read"),
    pytest.param(["*:orders"], "write:orders", True, id="leading-star-write"),
    pytest.param(["*:orders"], "orders", False, id="leading-star-needs-a-segment"),
    pytest.param(["*:orders"], "read:items", False, id="leading-star-other-suffix"),
    pytest.param(["*:orders"], "read:orders:items", False, id="leading-star-too-long"),
    pytest.param(["*"], "orders", True, id="star-alone-one-segment"),
    pytest.param(["*"], "read:orders", False, id="star-alone-not-two"),
    pytest.param(["*:*"], "a:b", True, id="two-stars-two-segments"),
    pytest.param(["*:*"], "a", False, id="two-stars-not-one"),
    pytest.param(["*:*"], "a:b:c", False, id="two-stars-not-three"),
    pytest.param(["read:*:items"], "read:orders:items", True, id="middle-star"),
    pytest.param(["read:*:items"], "read:orders:other", False, id="middle-star-other-tail"),
    pytest.param(["read:*:items"], "read:items", False, id="middle-star-needs-a-segment"),
    # `**` (last) is one or more segments
    pytest.param(["read:**"], "read:orders", True, id="double-star-one"),
    pytest.param(["read:**"], "read:orders:items", True, id="double-star-two"),
    pytest.param(["read:**"], "read:a:b:c:d:e", True, id="double-star-many"),
    pytest.param(["read:**"], "read", False, id="double-star-not-zero"),
    pytest.param(["read:**"], "write:orders", False, id="double-star-other-prefix"),
    pytest.param(["read:**"], "reading:orders", False, id="double-star-no-prefix-match"),
    pytest.param(["*:**"], "a:b", True, id="star-double-star-two"),
    pytest.param(["*:**"], "a:b:c", True, id="star-double-star-three"),
    pytest.param(["*:**"], "a", False, id="star-double-star-not-one"),
    pytest.param(["**"], "read", True, id="everything-one"),
    pytest.param(["**"], "read:orders:items", True, id="everything-three"),
    pytest.param(["**"], ":".join(["z"] * MAX_SEGMENTS), True, id="everything-max-segments"),
    # no prefix, substring, glob or regex matching
    pytest.param(["read:order"], "read:orders", False, id="no-prefix-match"),
    pytest.param(["read:orders"], "read:order", False, id="no-truncation-match"),
    pytest.param(["read:orders"], "read:orders:items", False, id="exact-not-children"),
    pytest.param(["read"], "read:orders", False, id="segment-not-a-namespace"),
    pytest.param(["orders"], "read:orders", False, id="no-suffix-match"),
    pytest.param(["x.y"], "xzy", False, id="dot-not-regex"),
    pytest.param(["x.y"], "x.y", True, id="dot-literal"),
    # case-sensitive
    pytest.param(["read:orders"], "Read:orders", False, id="case-first-segment"),
    pytest.param(["read:orders"], "READ:ORDERS", False, id="case-upper"),
    pytest.param(["read:*"], "Read:orders", False, id="case-under-star"),
    pytest.param(["Read:**"], "read:orders", False, id="case-under-double-star"),
    # several grants: exact scopes and a trie that needs backtracking
    pytest.param(["write:refunds", "read:*"], "write:refunds", True, id="mixed-exact"),
    pytest.param(["write:refunds", "read:*"], "read:refunds", True, id="mixed-wildcard"),
    pytest.param(["write:refunds", "read:*"], "write:orders", False, id="mixed-neither"),
    pytest.param(["a:b:d", "a:*:c"], "a:b:c", True, id="literal-branch-fails-star-wins"),
    pytest.param(["a:b:**", "a:*:c"], "a:x:c", True, id="star-branch"),
    pytest.param(["a:b:**", "a:*:c"], "a:b:z:z", True, id="double-star-branch"),
    pytest.param(["a:b:**", "a:*:c"], "a:x:d", False, id="no-branch"),
    pytest.param([], "read", False, id="empty-grant"),
]


@pytest.mark.parametrize(("granted", "required", "expected"), MATCHING)
def test_matching(granted: list[str], required: str, expected: bool) -> None:
    scopes = ScopeSet(granted)
    assert scopes.allows(required) is expected
    assert scopes.allows(required) is expected  # the memoised answer is the same
    assert (required in scopes) is expected
    assert _reference_allows_any(granted, required) is expected  # the reference agrees


def test_contains_refuses_non_strings() -> None:
    assert 1 not in ScopeSet(["**"])
    assert None not in ScopeSet(["**"])


# --- required scopes --------------------------------------------------------------------------


@pytest.mark.parametrize("scope", WILDCARD)
def test_required_scope_must_be_concrete(scope: str) -> None:
    with pytest.raises(InvalidScopeError) as err:
        validate_required_scope(scope)
    assert err.value.expected == "concrete scope"
    assert err.value.found == scope


# --- the scope claim --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("claim", "scopes"),
    [
        pytest.param("read", ("read",), id="one"),
        pytest.param("read:orders write:*", ("read:orders", "write:*"), id="two"),
        pytest.param("a b **", ("a", "b", "**"), id="three"),
        pytest.param("a a", ("a", "a"), id="duplicates-kept-in-order"),
    ],
)
def test_parse_scope_claim(claim: str, scopes: tuple[str, ...]) -> None:
    assert parse_scope_claim(claim) == scopes


@pytest.mark.parametrize(
    "claim",
    [
        pytest.param("", id="empty"),
        pytest.param(" ", id="single-space"),
        pytest.param("a  b", id="double-space"),
        pytest.param(" a", id="leading-space"),
        pytest.param("a ", id="trailing-space"),
        pytest.param("a\tb", id="tab-separator"),
        pytest.param("a\nb", id="newline-separator"),
        pytest.param("a\u00a0b", id="nbsp-separator"),
        pytest.param("a,b", id="comma-separator"),
        pytest.param("a, b", id="comma-space-separator"),
        pytest.param("a b:", id="bad-second-scope"),
    ],
)
def test_parse_scope_claim_rejects(claim: str) -> None:
    with pytest.raises(InvalidScopeError):
        parse_scope_claim(claim)


def test_parse_scope_claim_scope_count_limit() -> None:
    at_limit = " ".join(f"s{i}" for i in range(MAX_SCOPES))
    assert len(parse_scope_claim(at_limit)) == MAX_SCOPES
    with pytest.raises(InvalidScopeError) as err:
        parse_scope_claim(at_limit + " extra")
    assert err.value.found == MAX_SCOPES + 1


# --- ScopeSet ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("read:orders,write:*", id="comma"),
        pytest.param("read:orders write:*", id="space"),
        pytest.param("read:orders, write:*", id="comma-space"),
        pytest.param(" read:orders,,write:*  ", id="stray-separators"),
    ],
)
def test_parse_string(text: str) -> None:
    scopes = ScopeSet.parse(text)
    assert scopes.scopes == ("read:orders", "write:*")
    assert scopes.claim() == "read:orders write:*"
    assert scopes.allows("write:refunds")
    assert not scopes.allows("read:refunds")


def test_parse_iterables() -> None:
    expected = ScopeSet(["a", "b:*"])
    assert ScopeSet.parse(["a", "b:*"]) == expected
    assert ScopeSet.parse(("a", "b:*")) == expected
    assert ScopeSet.parse(s for s in ["a", "b:*"]) == expected


@pytest.mark.parametrize(
    "text", ["read\torders", "read;orders", "r\u00e9ad", "read:"], ids=["tab", "semi", "e", "colon"]
)
def test_parse_string_rejects(text: str) -> None:
    with pytest.raises(InvalidScopeError):
        ScopeSet.parse(text)


def test_dedup_keeps_first_order() -> None:
    scopes = ScopeSet.parse("b a,b a:* a:*")
    assert scopes.scopes == ("b", "a", "a:*")
    assert list(scopes) == ["b", "a", "a:*"]
    assert len(scopes) == 3
    assert scopes.exact == frozenset({"a", "b"})
    assert scopes.claim() == "b a a:*"


def test_scope_count_limit_counts_distinct_scopes() -> None:
    distinct = [f"s{i}" for i in range(MAX_SCOPES)]
    assert len(ScopeSet(distinct + distinct)) == MAX_SCOPES
    with pytest.raises(InvalidScopeError):
        ScopeSet([*distinct, "one-more"])


@pytest.mark.parametrize("name", ["scopes", "exact", "_trie", "_memo", "new_attribute"])
def test_immutable(name: str) -> None:
    scopes = ScopeSet(["read:*"])
    with pytest.raises(AttributeError):
        setattr(scopes, name, None)
    if name != "new_attribute":
        with pytest.raises(AttributeError):
            delattr(scopes, name)
    assert scopes.scopes == ("read:*",)
    assert scopes.allows("read:orders")


@pytest.mark.parametrize(
    "clone",
    [copy.copy, copy.deepcopy, lambda s: pickle.loads(pickle.dumps(s))],
    ids=["copy", "deepcopy", "pickle"],
)
def test_copies_are_equal_and_work(clone: object) -> None:
    original = ScopeSet(["write:refunds", "read:*", "admin:**"])
    twin = clone(original)  # type: ignore[operator]
    assert twin == original
    assert twin.scopes == original.scopes
    assert twin.allows("read:orders") and twin.allows("admin:a:b")
    assert not twin.allows("read:orders:items")


def test_equality_and_hash_ignore_order_and_duplicates() -> None:
    one = ScopeSet(["a", "b:*"])
    other = ScopeSet(["b:*", "a", "a"])
    assert one == other
    assert hash(one) == hash(other)
    assert len({one, other}) == 1
    assert one != ScopeSet(["a"])
    assert one != ScopeSet(["a", "b:**"])
    assert one != ["a", "b:*"]
    assert one != frozenset({"a", "b:*"})


@pytest.mark.parametrize(
    ("granted", "everything", "wildcards"),
    [
        pytest.param(["**"], True, True, id="double-star"),
        pytest.param(["read", "**"], True, True, id="double-star-among-others"),
        pytest.param(["read:**"], False, True, id="scoped-double-star"),
        pytest.param(["*"], False, True, id="star"),
        pytest.param(["*:**"], False, True, id="star-double-star"),
        pytest.param(["read"], False, False, id="exact"),
        pytest.param([], False, False, id="empty"),
    ],
)
def test_grants_everything(granted: list[str], everything: bool, wildcards: bool) -> None:
    scopes = ScopeSet(granted)
    assert scopes.grants_everything is everything
    assert scopes.has_wildcards is wildcards


def test_repr_names_the_scopes() -> None:
    assert repr(ScopeSet(["a", "b:*"])) == "ScopeSet(['a', 'b:*'])"


def test_memo_is_bounded_and_answers_stay_right() -> None:
    scopes = ScopeSet(["read:*", "admin:**"])
    count = 3 * _MEMO_LIMIT
    for i in range(count):
        assert scopes.allows(f"read:o{i}")
        assert not scopes.allows(f"write:o{i}")
        assert not scopes.allows(f"read:o{i}:items")
        assert scopes.allows(f"admin:o{i}:items")
    assert len(scopes._memo) <= _MEMO_LIMIT
    for i in reversed(range(count)):  # remembered and forgotten scopes alike
        assert scopes.allows(f"read:o{i}")
        assert not scopes.allows(f"write:o{i}")
    assert len(scopes._memo) <= _MEMO_LIMIT


def test_memo_keeps_each_scope_apart() -> None:
    scopes = ScopeSet(["read:*"])
    for _ in range(2):
        assert not scopes.allows("read")
        assert scopes.allows("read:orders")
        assert not scopes.allows("read:orders:items")
        assert scopes.allows("read:items")
        assert not scopes.allows("write:items")


def test_exact_only_set_never_memoises() -> None:
    scopes = ScopeSet(["read:orders"])
    assert scopes.allows("read:orders")
    assert not scopes.allows("read:items")
    assert scopes._memo == {}


# --- properties -------------------------------------------------------------------------------


def _reference_allows(granted: list[str], required: list[str]) -> bool:
    """Does one granted scope (as segments) cover the required segments?"""
    if not granted:
        return not required
    head, rest = granted[0], granted[1:]
    if head == "**":  # only ever last: one or more segments
        return len(required) >= 1
    if not required:
        return False
    if head == "*" or head == required[0]:
        return _reference_allows(rest, required[1:])
    return False


def _reference_allows_any(granted: list[str], required: str) -> bool:
    return any(_reference_allows(g.split(":"), required.split(":")) for g in granted)


def _reference_valid(scope: str, *, wildcards: bool) -> bool:
    """The grammar, spelled out."""
    if not 1 <= len(scope) <= MAX_SCOPE_LENGTH:
        return False
    segments = scope.split(":")
    if len(segments) > MAX_SEGMENTS:
        return False
    for index, segment in enumerate(segments):
        if segment in ("*", "**"):
            if not wildcards or (segment == "**" and index != len(segments) - 1):
                return False
        elif not segment or not set(segment) <= SEGMENT_CHARS:
            return False
    return True


_granted_scope = st.builds(
    lambda head, tail: ":".join(head + tail),
    st.lists(st.sampled_from(["a", "b", "read", "x.y", "*"]), min_size=0, max_size=4),
    st.sampled_from([[], ["**"]]),
).filter(bool)
_required_scope = st.lists(
    st.sampled_from(["a", "b", "read", "x.y", "c"]), min_size=1, max_size=5
).map(":".join)
_segment = st.text(alphabet=sorted(SEGMENT_CHARS), min_size=1, max_size=8)
_any_segment = st.one_of(_segment, st.just("*"))
_valid_scope = st.builds(
    lambda head, tail: ":".join(head + tail),
    st.lists(_any_segment, min_size=0, max_size=5),
    st.sampled_from([[], ["**"]]),
).filter(bool)
_concrete_scope = st.lists(_segment, min_size=1, max_size=5).map(":".join)


@PROPERTY
@given(
    granted=st.lists(_granted_scope, max_size=6),
    required=st.lists(_required_scope, min_size=1, max_size=8),
)
def test_allows_matches_reference(granted: list[str], required: list[str]) -> None:
    """One ScopeSet asked several scopes in turn, twice: memoised answers never leak."""
    expected = [_reference_allows_any(granted, scope) for scope in required]
    scopes = ScopeSet(granted)
    assert [scopes.allows(scope) for scope in required] == expected
    assert [scopes.allows(scope) for scope in reversed(required)] == expected[::-1]
    if granted:  # what claims.py builds from a verified token
        from_claim = ScopeSet(parse_scope_claim(" ".join(granted)), _checked=True)
        assert from_claim == scopes
        assert [from_claim.allows(scope) for scope in required] == expected


@PROPERTY
@given(granted=st.lists(_granted_scope, min_size=1, max_size=6), data=st.data())
def test_instance_of_a_grant_is_allowed(granted: list[str], data: st.DataObject) -> None:
    """Fill one grant's wildcards with concrete segments: the result is always allowed."""
    grant = data.draw(st.sampled_from(granted))
    segments: list[str] = []
    for segment in grant.split(":"):
        if segment == "*":
            segments.append(data.draw(_segment))
        elif segment == "**":
            segments.extend(data.draw(st.lists(_segment, min_size=1, max_size=3)))
        else:
            segments.append(segment)
    assert ScopeSet(granted).allows(":".join(segments))


@PROPERTY
@given(st.lists(_valid_scope, min_size=1, max_size=20))
def test_valid_scopes_round_trip_through_the_claim(scopes: list[str]) -> None:
    claim = " ".join(scopes)
    assert parse_scope_claim(claim) == tuple(scopes)
    compiled = ScopeSet(scopes)
    assert parse_scope_claim(compiled.claim()) == compiled.scopes
    assert ScopeSet(parse_scope_claim(compiled.claim())) == compiled


@PROPERTY
@given(_concrete_scope)
def test_concrete_scopes_are_valid_requirements(scope: str) -> None:
    assert validate_required_scope(scope) == scope
    assert ScopeSet([scope]).allows(scope)


@PROPERTY
@given(
    scope=_valid_scope,
    bad=st.characters(exclude_characters=sorted(ALLOWED_CHARS)),
    position=st.integers(min_value=0),
)
def test_any_character_outside_the_alphabet_is_rejected(
    scope: str, bad: str, position: int
) -> None:
    position %= len(scope) + 1
    tainted = scope[:position] + bad + scope[position:]
    with pytest.raises(InvalidScopeError):
        ScopeSet([tainted])
    with pytest.raises(InvalidScopeError):
        validate_required_scope(tainted)
    if bad != " ":  # a space separates scopes in a claim
        with pytest.raises(InvalidScopeError):
            parse_scope_claim(tainted)


@PROPERTY
@given(st.text(alphabet="ab.-:*", max_size=24))
def test_validation_matches_reference_grammar(scope: str) -> None:
    for wildcards, check in ((True, lambda s: ScopeSet([s])), (False, validate_required_scope)):
        if _reference_valid(scope, wildcards=wildcards):
            check(scope)
        else:
            with pytest.raises(InvalidScopeError):
                check(scope)
    if _reference_valid(scope, wildcards=True):
        assert parse_scope_claim(scope) == (scope,)
    else:
        with pytest.raises(InvalidScopeError):
            parse_scope_claim(scope)
