"""The broker's policy (agentsudo.toml): line-numbered errors, grants and refusals, and the CLI.

Wildcard containment is checked against a brute-force reference: every concrete
scope over a small alphabet that the request matches must be matched by a granted
scope (``ScopeSet.allows`` is the matcher of concrete scopes).
"""

from __future__ import annotations

import itertools
import json
import os
from pathlib import Path

import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st
from installed_cli import sh

from agentsudo_cli.main import cli
from agentsudo_tokens.broker.policy import (
    Caller,
    Grant,
    Policy,
    PolicyError,
    PolicyRefusal,
    Principal,
    RefusalReason,
    load_policy,
    parse_policy,
    scope_within,
)
from agentsudo_tokens.errors import ConfigError, InvalidScopeError, PermissionDeniedError
from agentsudo_tokens.tokens.scopes import ScopeSet

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "agentsudo.toml"

BASE = """\
[broker]
admins = ["uid:0", "group:root"]
default_ttl = "15m"

[agents.SupportBot]
scopes = ["read:orders", "write:refunds", "read:tickets:*"]
ask = ["delete:customer"]
max_ttl = "1h"
callers = ["uid:1001", "gid:2000", "credential:ci-runner"]
audiences = ["agentsudo", "billing"]

[agents.AnalyticsBot]
scopes = ["read:**"]
max_ttl = "30m"
callers = ["uid:1002"]
"""

SUPPORT = Caller(uid=1001, gids=frozenset({1001}), credential=None)
IN_GROUP = Caller(uid=3000, gids=frozenset({3000, 2000}), credential=None)
CI = Caller(uid=None, gids=frozenset(), credential="ci-runner")
STRANGER = Caller(uid=1002, gids=frozenset({1002}), credential=None)


@pytest.fixture(scope="module")
def policy() -> Policy:
    return parse_policy(BASE, source="agentsudo.toml")


def _edit(old: str, new: str) -> str:
    assert old in BASE, old
    return BASE.replace(old, new, 1)


# (id, policy text, line, dotted key or None, what the message must say)
BAD = [
    ("bad-duration", _edit('"1h"', '"forever"'), 8, "agents.SupportBot.max_ttl", "found 'forever'"),
    ("ttl-over-max", _edit('"1h"', '"2d"'), 8, "agents.SupportBot.max_ttl", "at most 1d"),
    ("ttl-zero", _edit('"1h"', "0"), 8, "agents.SupportBot.max_ttl", "found 0"),
    ("ttl-bool", _edit('"1h"', "true"), 8, "agents.SupportBot.max_ttl", "found true"),
    ("default-ttl", _edit('"15m"', '"soon"'), 3, "broker.default_ttl", "found 'soon'"),
    ("typo-key", _edit("max_ttl = ", "max_tll = "), 8, "agents.SupportBot.max_tll", "max_ttl"),
    ("unknown-section", BASE + "[brokers]\nx = 1\n", 16, "brokers", "expected one of broker"),
    ("unknown-broker-key", _edit("default_ttl", "defualt_ttl"), 3, "broker.defualt_ttl", "admins"),
    ("no-broker", BASE.replace("[broker]\n", "[other]\n"), 1, "other", "unknown key"),
    (
        "admins-empty",
        _edit('admins = ["uid:0", "group:root"]', "admins = []"),
        2,
        "broker.admins",
        "at least one admin",
    ),
    (
        "admins-missing",
        _edit('admins = ["uid:0", "group:root"]\n', ""),
        1,
        "broker.admins",
        "required",
    ),
    ("wildcard-principal", _edit('"group:root"', '"*"'), 2, "broker.admins[1]", "no wildcard"),
    ("group-wildcard", _edit('"group:root"', '"group:*"'), 2, "broker.admins[1]", "no wildcard"),
    (
        "unknown-group",
        _edit('"group:root"', '"group:no-such-group-x"'),
        2,
        "broker.admins[1]",
        "a group that exists",
    ),
    (
        "unknown-user",
        _edit('"uid:1001"', '"user:no-such-user-x"'),
        9,
        "agents.SupportBot.callers[0]",
        "a user that exists",
    ),
    ("bad-uid", _edit('"uid:1001"', '"uid:-1"'), 9, "agents.SupportBot.callers[0]", "uid:N"),
    (
        "uid-too-big",
        _edit('"uid:1001"', '"uid:4294967295"'),
        9,
        "agents.SupportBot.callers[0]",
        "4294967294",
    ),
    ("no-kind", _edit('"uid:1001"', '"alice"'), 9, "agents.SupportBot.callers[0]", "found 'alice'"),
    (
        "bad-credential",
        _edit('"credential:ci-runner"', '"credential:"'),
        9,
        "agents.SupportBot.callers[2]",
        "credential:NAME",
    ),
    (
        "caller-not-string",
        _edit('"gid:2000"', "2000"),
        9,
        "agents.SupportBot.callers[1]",
        "found 2000",
    ),
    (
        "callers-not-array",
        _edit('callers = ["uid:1001", "gid:2000", "credential:ci-runner"]', 'callers = "uid:1001"'),
        9,
        "agents.SupportBot.callers",
        "expected an array",
    ),
    (
        "bad-scope",
        _edit('"write:refunds"', '"write refunds"'),
        6,
        "agents.SupportBot.scopes[1]",
        "found 'write refunds'",
    ),
    (
        "inner-doublestar",
        _edit('"read:**"', '"**:read"'),
        13,
        "agents.AnalyticsBot.scopes[0]",
        "'**' may only be the last",
    ),
    (
        "scopes-empty",
        _edit('scopes = ["read:**"]', "scopes = []"),
        13,
        "agents.AnalyticsBot.scopes",
        "at least one",
    ),
    (
        "ask-wildcard",
        _edit('"delete:customer"', '"delete:*"'),
        7,
        "agents.SupportBot.ask[0]",
        "expected a concrete scope, found 'delete:*'",
    ),
    (
        "ask-also-granted",
        _edit('"delete:customer"', '"read:orders"'),
        7,
        "agents.SupportBot.ask[0]",
        "granted or asked for, not both",
    ),
    (
        "ask-under-wildcard",
        _edit('"delete:customer"', '"read:tickets:42"'),
        7,
        "agents.SupportBot.ask[0]",
        "not both",
    ),
    (
        "audiences-empty",
        _edit('audiences = ["agentsudo", "billing"]', "audiences = []"),
        10,
        "agents.SupportBot.audiences",
        "1 to 32",
    ),
    (
        "audience-control",
        _edit('"billing"', '"bill\\u0007ing"'),
        10,
        "agents.SupportBot.audiences[1]",
        "printable",
    ),
    (
        "agent-name",
        _edit("[agents.AnalyticsBot]", '[agents."Analytics Bot"]'),
        12,
        'agents."Analytics Bot"',
        "expected an agent name",
    ),
    ("agent-not-table", BASE + "[agents]\nX = 3\n", 17, "agents.X", "expected a table, found 3"),
    ("broker-not-table", 'broker = "yes"\n', 1, "broker", "expected a table, found 'yes'"),
    ("syntax", _edit('max_ttl = "1h"', 'max_ttl = "1h'), 8, None, "not valid TOML"),
    ("duplicate-table", BASE + "[agents.SupportBot]\n", 16, None, "not valid TOML"),
    (
        "multiline-item",
        _edit(
            'scopes = ["read:orders", "write:refunds", "read:tickets:*"]',
            'scopes = [\n  "read:orders",\n  "write:refund$",\n]',
        ),
        8,
        "agents.SupportBot.scopes[1]",
        "found 'write:refund$'",
    ),
    (
        "dotted-key",
        _edit(
            '[agents.AnalyticsBot]\nscopes = ["read:**"]\nmax_ttl = "30m"',
            '[agents]\nAnalyticsBot.scopes = ["read:**"]\nAnalyticsBot.max_ttl = "5x"',
        ),
        14,
        "agents.AnalyticsBot.max_ttl",
        "found '5x'",
    ),
]


@pytest.mark.parametrize(
    ("text", "line", "key", "fragment"), [case[1:] for case in BAD], ids=[case[0] for case in BAD]
)
def test_a_bad_policy_is_one_line_naming_file_line_and_key(
    text: str, line: int, key: str | None, fragment: str
) -> None:
    with pytest.raises(PolicyError) as caught:
        parse_policy(text, source="agentsudo.toml")
    err = caught.value
    message = str(err)
    assert "\n" not in message
    assert (err.file, err.line, err.key) == ("agentsudo.toml", line, key)
    prefix = f"agentsudo.toml:{line}: {key}: " if key else f"agentsudo.toml:{line}: "
    assert message.startswith(prefix), message
    assert fragment in message
    assert isinstance(err, ConfigError)


def test_the_base_policy_reads_as_written(policy: Policy) -> None:
    assert [str(admin) for admin in policy.admins] == ["uid:0", "group:root"]
    assert policy.admins[1] == Principal("gid", 0)
    support = policy.agents["SupportBot"]
    assert support.scopes == ("read:orders", "write:refunds", "read:tickets:*")
    assert (support.ask, support.max_ttl) == (("delete:customer",), 3600)
    assert support.audiences == ("agentsudo", "billing")
    assert policy.agents["AnalyticsBot"].audiences == ("agentsudo",)  # the default
    assert policy.default_ttl == 900 and policy.warnings == ()
    with pytest.raises(TypeError):
        policy.agents["X"] = support  # type: ignore[index]
    with pytest.raises(ValueError, match="frozen"):
        support.max_ttl = 1  # type: ignore[misc]


def test_max_ttl_defaults_to_the_brokers_default_ttl() -> None:
    text = _edit('max_ttl = "30m"\n', "")
    assert parse_policy(text).agents["AnalyticsBot"].max_ttl == 900
    text = _edit('default_ttl = "15m"', 'default_ttl = "5m"').replace('max_ttl = "30m"\n', "")
    assert parse_policy(text).agents["AnalyticsBot"].max_ttl == 300
    assert parse_policy(text).agents["SupportBot"].max_ttl == 3600
    text = _edit('default_ttl = "15m"\n', "").replace('max_ttl = "30m"\n', "")
    assert parse_policy(text).agents["AnalyticsBot"].max_ttl == 900  # DEFAULT_TTL
    with pytest.raises(PolicyError, match=r":3: broker.default_ttl: .* found 0$"):
        parse_policy(_edit('default_ttl = "15m"', "default_ttl = 0"))


def test_the_configured_maximum_ttl_and_audience_apply() -> None:
    with pytest.raises(PolicyError, match=r":8: agents.SupportBot.max_ttl: expected at most 30m"):
        parse_policy(BASE, source="agentsudo.toml", max_ttl=1800)
    other = parse_policy(BASE, audience="orders-api")
    assert other.agents["AnalyticsBot"].audiences == ("orders-api",)


def test_an_agent_nobody_may_call_is_a_warning_not_an_error() -> None:
    text = _edit('callers = ["uid:1002"]\n', "")
    loaded = parse_policy(text, source="p.toml")
    assert loaded.warnings == (
        "p.toml:12: agents.AnalyticsBot: no callers: nobody can obtain its tokens",
    )
    with pytest.raises(PolicyRefusal):
        loaded.grant(STRANGER, "AnalyticsBot", scopes=None, ttl=None, audience=None)
    assert (
        parse_policy('[broker]\nadmins = ["uid:0"]\n')
        .warnings[0]
        .endswith("no token can be obtained")
    )


def test_principals() -> None:
    assert Principal.parse("uid:0") == Principal("uid", 0)
    assert Principal.parse("user:root") == Principal("uid", 0)
    assert Principal.parse("group:root") == Principal("gid", 0) == Principal.parse("gid:0")
    assert Principal.parse("credential:ci") == Principal("credential", "ci")
    for bad in ("", "*", "uid:", "uid:01", "uid:1.5", "gid:x", "root", "user:", "host:a", 3):
        with pytest.raises(ConfigError):
            Principal.parse(bad)
    group = Principal("gid", 2000)
    assert group.matches(IN_GROUP) and not group.matches(SUPPORT)
    assert not Principal("uid", 0).matches(Caller(uid=None, gids=frozenset({0}), credential="0"))
    assert not Principal("credential", "ci-runner").matches(SUPPORT)
    assert Principal("credential", "ci-runner").matches(CI)


def test_admins(policy: Policy) -> None:
    assert policy.is_admin(Caller(uid=0, gids=frozenset({0}), credential=None))
    assert policy.is_admin(Caller(uid=5, gids=frozenset({5, 0}), credential=None))  # group root
    assert not policy.is_admin(SUPPORT)
    assert not policy.is_admin(Caller(uid=None, gids=frozenset(), credential="root"))


# --- grant ---------------------------------------------------------------------------------


def test_the_policy_decides_when_nothing_is_asked(policy: Policy) -> None:
    grant = policy.grant(SUPPORT, "SupportBot", scopes=None, ttl=None, audience=None)
    assert grant == Grant(
        "SupportBot",
        ("read:orders", "write:refunds", "read:tickets:*"),
        900,
        ("agentsudo", "billing"),
    )
    analytics = parse_policy(_edit('max_ttl = "30m"', 'max_ttl = "5m"'))
    got = analytics.grant(STRANGER, "AnalyticsBot", scopes=None, ttl=None, audience=None)
    assert (got.ttl, got.audience) == (300, "agentsudo")  # min(default_ttl, max_ttl); one audience


@pytest.mark.parametrize(
    ("caller", "scopes", "ttl", "audience", "expected"),
    [
        (SUPPORT, ["read:orders"], 600, "billing", (("read:orders",), 600, "billing")),
        (
            IN_GROUP,
            ["read:tickets:7", "read:tickets:*"],
            3600,
            None,
            (("read:tickets:7", "read:tickets:*"), 3600, ("agentsudo", "billing")),
        ),
        (
            CI,
            "read:orders,write:refunds",
            None,
            ["billing", "agentsudo", "billing"],
            (("read:orders", "write:refunds"), 900, ("billing", "agentsudo")),
        ),
    ],
    ids=["uid", "group-and-wildcard", "credential"],
)
def test_grants_within_the_policy(
    policy: Policy,
    caller: Caller,
    scopes: list[str],
    ttl: int | None,
    audience: str | list[str] | None,
    expected: tuple[object, ...],
) -> None:
    grant = policy.grant(caller, "SupportBot", scopes=scopes, ttl=ttl, audience=audience)
    assert (grant.scopes, grant.ttl, grant.audience) == expected


REFUSED = [
    (
        "stranger",
        STRANGER,
        "SupportBot",
        {},
        RefusalReason.NOT_A_CALLER,
        "uid 1002 may not obtain tokens for agent 'SupportBot'",
    ),
    (
        "unknown-agent",
        SUPPORT,
        "NoSuchBot",
        {},
        RefusalReason.NOT_A_CALLER,
        "uid 1001 may not obtain tokens for agent 'NoSuchBot'",
    ),
    (
        "admin-is-no-caller",
        Caller(uid=0, gids=frozenset({0}), credential=None),
        "SupportBot",
        {},
        RefusalReason.NOT_A_CALLER,
        "uid 0 may not obtain",
    ),
    (
        "other-credential",
        Caller(uid=None, gids=frozenset(), credential="other"),
        "SupportBot",
        {},
        RefusalReason.NOT_A_CALLER,
        "credential 'other' may not obtain",
    ),
    (
        "uid-as-credential",
        Caller(uid=None, gids=frozenset({2000}), credential="uid:1001"),
        "SupportBot",
        {},
        RefusalReason.NOT_A_CALLER,
        "may not obtain",
    ),
    (
        "scope",
        SUPPORT,
        "SupportBot",
        {"scopes": ["write:orders"]},
        RefusalReason.SCOPE,
        "agent 'SupportBot' may not be granted 'write:orders'; its policy grants read:orders "
        "write:refunds read:tickets:*",
    ),
    (
        "wider-wildcard",
        SUPPORT,
        "SupportBot",
        {"scopes": ["read:*"]},
        RefusalReason.SCOPE,
        "may not be granted 'read:*'",
    ),
    (
        "deeper",
        SUPPORT,
        "SupportBot",
        {"scopes": ["read:tickets:7:notes"]},
        RefusalReason.SCOPE,
        "'read:tickets:7:notes'",
    ),
    ("everything", SUPPORT, "SupportBot", {"scopes": ["**"]}, RefusalReason.SCOPE, "'**'"),
    (
        "ask",
        SUPPORT,
        "SupportBot",
        {"scopes": ["read:orders", "delete:customer"]},
        RefusalReason.ASK,
        "'delete:customer' is granted one call at a time by a human (ask)",
    ),
    (
        "ttl",
        SUPPORT,
        "SupportBot",
        {"ttl": 3601},
        RefusalReason.TTL,
        "agent 'SupportBot' may not be granted a TTL of 3601s; its policy's max_ttl is 3600s (1h)",
    ),
    (
        "audience",
        SUPPORT,
        "SupportBot",
        {"audience": ["billing", "payroll"]},
        RefusalReason.AUDIENCE,
        "agent 'SupportBot' may not be granted audience 'payroll'; its policy allows 'agentsudo', "
        "'billing'",
    ),
]


@pytest.mark.parametrize(
    ("caller", "agent", "asked", "reason", "message"),
    [case[1:] for case in REFUSED],
    ids=[case[0] for case in REFUSED],
)
def test_refusals_say_what_was_asked_and_what_is_allowed(
    policy: Policy,
    caller: Caller,
    agent: str,
    asked: dict[str, object],
    reason: RefusalReason,
    message: str,
) -> None:
    request: dict[str, object] = {"scopes": None, "ttl": None, "audience": None} | asked
    with pytest.raises(PolicyRefusal) as caught:
        policy.grant(caller, agent, **request)  # type: ignore[arg-type]
    err = caught.value
    assert isinstance(err, PermissionDeniedError) and isinstance(err, PermissionError)
    assert err.reason is reason and err.agent == agent
    assert message in str(err) and "\n" not in str(err)
    assert "AnalyticsBot" not in str(err) and "read:**" not in str(err)  # never another's policy


def test_unknown_agent_and_not_a_caller_read_the_same(policy: Policy) -> None:
    def refusal(agent: str) -> str:
        with pytest.raises(PolicyRefusal) as caught:
            policy.grant(STRANGER, agent, scopes=None, ttl=None, audience=None)
        return str(caught.value).replace(agent, "X")

    assert refusal("SupportBot") == refusal("NoSuchBot")


@pytest.mark.parametrize(
    ("agent", "asked", "error"),
    [
        ("Support Bot", {}, ConfigError),
        ("SupportBot", {"scopes": []}, InvalidScopeError),
        ("SupportBot", {"scopes": ["read orders!"]}, InvalidScopeError),
        ("SupportBot", {"ttl": 0}, ConfigError),
        ("SupportBot", {"ttl": "1h"}, ConfigError),
        ("SupportBot", {"ttl": True}, ConfigError),
        ("SupportBot", {"audience": []}, ConfigError),
        ("SupportBot", {"audience": [3]}, ConfigError),
    ],
)
def test_malformed_requests_are_input_errors_not_refusals(
    policy: Policy, agent: str, asked: dict[str, object], error: type[Exception]
) -> None:
    request: dict[str, object] = {"scopes": None, "ttl": None, "audience": None} | asked
    with pytest.raises(error) as caught:
        policy.grant(SUPPORT, agent, **request)  # type: ignore[arg-type]
    assert not isinstance(caught.value, PermissionDeniedError)


def test_needs_human(policy: Policy) -> None:
    assert policy.needs_human("SupportBot", "delete:customer")
    assert not policy.needs_human("SupportBot", "read:orders")
    assert not policy.needs_human("AnalyticsBot", "delete:customer")
    assert not policy.needs_human("NoSuchBot", "delete:customer")


# --- wildcards: scope_within against a brute-force reference ---------------------------------

_LITERALS = ("a", "b")
_FRESH = "fresh"  # a segment no pattern names: stands for every other name


def _reference(asked: str, granted: list[str]) -> bool:
    """Every concrete scope ``asked`` matches is matched by some granted scope.

    Words over the patterns' literals and one fresh segment, one segment longer
    than the longest pattern, decide it: a longer word matches the same patterns
    as its prefix of that length, and the fresh segment stands for all others.
    """
    patterns = [scope.split(":") for scope in [asked, *granted]]
    literals = {segment for pattern in patterns for segment in pattern} - {"*", "**"}
    alphabet = sorted(literals | {_FRESH})
    wanted = ScopeSet([asked])
    allowed = ScopeSet(granted)
    for size in range(1, max(map(len, patterns)) + 2):
        for word in itertools.product(alphabet, repeat=size):
            scope = ":".join(word)
            if wanted.allows(scope) and not allowed.allows(scope):
                return False
    return True


_segment = st.sampled_from([*_LITERALS, "*"])


@st.composite
def _patterns(draw: st.DrawFn) -> str:
    segments = draw(st.lists(_segment, min_size=1, max_size=4))
    if draw(st.booleans()):
        segments[-1] = "**"
    return ":".join(segments)


@settings(max_examples=400, deadline=None)
@given(asked=_patterns(), granted=st.lists(_patterns(), min_size=1, max_size=5))
def test_scope_within_matches_the_brute_force_reference(asked: str, granted: list[str]) -> None:
    assert scope_within(asked, granted) == _reference(asked, granted)


@st.composite
def _covers_in_parts(draw: st.DrawFn) -> tuple[str, list[str]]:
    """``P:**`` and a cover of it by parts (``P:*``, ``P:*:*``, ``P:*:*:**``), perhaps one short."""
    prefix = draw(st.lists(st.sampled_from(["a", "*"]), max_size=2))
    size = draw(st.integers(min_value=1, max_value=3))
    parts = [":".join([*prefix, *["*"] * n]) for n in range(1, size)]
    parts.append(":".join([*prefix, *["*"] * (size - 1), "**"]))
    if draw(st.booleans()):
        parts.pop(draw(st.integers(min_value=0, max_value=len(parts) - 1)))
    noise = draw(st.lists(_patterns(), max_size=2))
    granted = draw(st.permutations(parts + noise))
    return ":".join([*prefix, "**"]), granted or ["b"]


@settings(max_examples=300, deadline=None)
@given(case=_covers_in_parts())
def test_scope_within_sees_a_cover_made_of_parts(case: tuple[str, list[str]]) -> None:
    asked, granted = case
    assert scope_within(asked, granted) == _reference(asked, granted)


@settings(max_examples=200, deadline=None)
@given(asked=_patterns(), granted=st.lists(_patterns(), min_size=1, max_size=5))
def test_grant_allows_exactly_what_is_within(asked: str, granted: list[str]) -> None:
    text = (
        '[broker]\nadmins = ["uid:0"]\n[agents.A]\n'
        f'scopes = {json.dumps(granted)}\nmax_ttl = 60\ncallers = ["uid:7"]\n'
    )
    caller = Caller(uid=7, gids=frozenset(), credential=None)
    rules = parse_policy(text)
    try:
        rules.grant(caller, "A", scopes=[asked], ttl=None, audience=None)
        allowed = True
    except PolicyRefusal:
        allowed = False
    assert allowed == _reference(asked, granted)
    concrete = asked.replace("**", "b").replace("*", "a")
    assert scope_within(concrete, granted) == ScopeSet(granted).allows(concrete)


@pytest.mark.parametrize(
    ("asked", "granted", "within"),
    [
        ("read:orders", ["read:*"], True),
        ("read:*", ["read:*"], True),
        ("read:*", ["read:**"], True),
        ("read:*", ["**"], True),
        ("read:*", ["read:orders", "read:customers"], False),
        ("read:**", ["read:*"], False),
        ("read:**", ["read:*", "read:*:**"], True),  # together, not alone
        ("read:**", ["read:*", "read:*:*"], False),
        ("*:orders", ["read:orders", "*:orders"], True),
        ("read:orders", ["read:orders:*"], False),
        ("**", ["*", "*:**"], True),
    ],
)
def test_scope_within_examples(asked: str, granted: list[str], within: bool) -> None:
    assert scope_within(asked, granted) is within
    assert _reference(asked, granted) is within


# --- the file ------------------------------------------------------------------------------


def test_load_policy_reads_a_file_and_names_it(tmp_path: Path) -> None:
    path = tmp_path / "agentsudo.toml"
    path.write_text(_edit('"1h"', '"forever"'))
    with pytest.raises(PolicyError, match=rf"^{path}:8: agents.SupportBot.max_ttl: "):
        load_policy(path)
    path.write_text(BASE)
    assert set(load_policy(path).agents) == {"SupportBot", "AnalyticsBot"}


def test_an_unusable_file_is_a_policy_error(tmp_path: Path) -> None:
    with pytest.raises(PolicyError, match=r"cannot read the policy: No such file"):
        load_policy(tmp_path / "missing.toml")
    path = tmp_path / "agentsudo.toml"
    path.write_bytes(BASE.encode() + b"# caf\xe9\n")
    with pytest.raises(PolicyError, match=rf"^{path}:16: expected UTF-8 text$"):
        load_policy(path)
    path.write_text(BASE)
    os.chmod(path, 0o664)  # a group member could grant itself anything
    with pytest.raises(PolicyError, match="writable by others"):
        load_policy(path)
    os.chmod(path, 0o644)
    path.write_text(BASE + "#" * (1 << 20))
    with pytest.raises(PolicyError, match="expected at most"):
        load_policy(path)


def test_the_shipped_example_passes() -> None:
    loaded = load_policy(EXAMPLE)
    assert set(loaded.agents) == {"SupportBot", "AnalyticsBot"} and not loaded.warnings
    assert loaded.agents["SupportBot"].ask == ("delete:customer",)


# --- agentsudo policy check ------------------------------------------------------------------


def _check(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, ["policy", "check", *args], env=env, prog_name="agentsudo")
    assert not isinstance(result.exception, Exception) or isinstance(result.exception, SystemExit)
    assert "Traceback" not in result.stdout + result.stderr
    return result.exit_code, result.stdout, result.stderr


def test_policy_check_ok_bad_and_usage(tmp_path: Path) -> None:
    good = tmp_path / "good.toml"
    good.write_text(BASE)
    assert _check(str(good)) == (0, "ok: 2 agents, 2 admins\n", "")
    code, out, err = _check("--json", str(good))
    assert code == 0 and json.loads(out) == {"ok": True, "agents": 2, "admins": 2, "warnings": []}

    bad = tmp_path / "bad.toml"
    bad.write_text(_edit('"group:root"', '"group:no-such-group-x"'))
    code, out, err = _check(str(bad))
    assert (code, out) == (1, "")
    assert err == (
        f"agentsudo: {bad}:2: broker.admins[1]: expected a group that exists on this system "
        "(or gid:N), found 'group:no-such-group-x'\n"
    )
    code, out, err = _check("--json", str(bad))
    assert code == 1 and json.loads(out)["message"].startswith(f"{bad}:2: broker.admins[1]")

    lonely = tmp_path / "lonely.toml"
    lonely.write_text(_edit('callers = ["uid:1002"]\n', ""))
    code, out, err = _check(str(lonely))
    assert (code, out) == (0, "ok: 2 agents, 2 admins\n")
    warning = f"{lonely}:12: agents.AnalyticsBot: no callers: nobody can obtain its tokens"
    assert err == f"agentsudo: warning: {warning}\n"

    assert _check(str(tmp_path / "missing.toml"))[0] == 1
    assert _check()[0] == 2


def test_policy_check_through_the_installed_cli(tmp_path: Path) -> None:
    done = sh("policy", "check", str(EXAMPLE), cwd=tmp_path)
    assert (done.returncode, done.stdout, done.stderr) == (0, "ok: 2 agents, 2 admins\n", "")

    env = {**os.environ, "AGENTSUDO_MAX_TTL": "30m"}  # the example's SupportBot asks for 1h
    done = sh("policy", "check", str(EXAMPLE), cwd=tmp_path, env=env)
    assert done.returncode == 1 and done.stdout == ""
    line = (
        EXAMPLE.read_text()
        .splitlines()
        .index('max_ttl = "1h"                               # the longest TTL it may be granted')
        + 1
    )
    assert done.stderr == (
        f"agentsudo: {EXAMPLE}:{line}: agents.SupportBot.max_ttl: expected at most 30m "
        "(the broker's maximum TTL), found 1h\n"
    )

    bad = tmp_path / "agentsudo.toml"
    bad.write_text(_edit('max_ttl = "1h"', 'max_ttl = "1h'))
    done = sh("policy", "check", str(bad), cwd=tmp_path)
    assert done.returncode == 1 and done.stdout == ""
    assert done.stderr.startswith(f"agentsudo: {bad}:8: not valid TOML: ")
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr

    done = sh("policy", "check", cwd=tmp_path)
    assert done.returncode == 2 and "Missing argument 'FILE'" in done.stderr


def test_a_policy_in_a_shared_sticky_directory_is_not_told_to_chmod_it(tmp_path: Path) -> None:
    """/tmp's kind (mode 1777) is shared by design: the advice is to move the file, not chmod."""
    shared = tmp_path / "tmp"
    shared.mkdir()
    shared.chmod(0o1777)
    (shared / "agentsudo.toml").write_text('[broker]\nadmins = ["uid:0"]\n')
    done = sh("policy", "check", str(shared / "agentsudo.toml"), cwd=tmp_path)
    assert done.returncode == 1 and "writable by others (mode 1777)" in done.stderr
    assert "chmod" not in done.stderr and "a directory of its own" in done.stderr
