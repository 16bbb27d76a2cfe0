"""Budget debits in the store, on SQLite and on a real Redis: exact, all or nothing, expiring.

The multi-process race is in ``test_budget_race.py``.
"""

from __future__ import annotations

import json
import math
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
from conftest_store import free_port
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agentsudo_tokens.errors import StoreUnavailableError
from agentsudo_tokens.state import Store, open_store
from agentsudo_tokens.state.base import MAX_AMOUNT, MAX_COUNTERS, MAX_NAMES
from agentsudo_tokens.state.budgets import Balance, Budgets

KEY = "budget:tok:0"


def _later(seconds: float = 3600.0) -> float:
    return time.time() + seconds


def _spend(store: Store, amounts: Mapping[str, Any], limits: Mapping[str, Any]) -> Any:
    return store.spend(KEY, amounts, limits, expires_at=_later())


# -- the store operation ---------------------------------------------------------------------


def test_a_debit_adds_and_returns_every_total(store: Store) -> None:
    limits = {"amount": 500, "calls": 20}
    assert store.spent(KEY) is None
    assert _spend(store, {"amount": 50, "calls": 1}, limits) == {"amount": 50, "calls": 1}
    assert _spend(store, {"calls": 1}, limits) == {"amount": 50, "calls": 2}  # 0 for untouched
    assert store.spent(KEY) == (limits, {"amount": 50, "calls": 2})
    text = '{"limits":{"amount":500,"calls":20},"spent":{"amount":50,"calls":2}}'
    assert store.get(KEY) == text  # the same canonical JSON on both backends
    assert store.items("budget:") == {KEY: text}


def test_the_counters_a_token_budget_names_are_accepted(store: Store) -> None:
    from agentsudo_tokens import Limits

    (entry,) = Limits.parse(budgets=["write:refunds amount=500 calls=20"])
    assert entry.budget is not None
    limits = entry.budget.counters()  # "calls" and "sum:amount", as the guard debits them
    assert _spend(store, {"calls": 1, "sum:amount": 50 * 10**6}, limits) == {
        "calls": 1,
        "sum:amount": 50 * 10**6,
    }
    assert store.spent(KEY) == (limits, {"calls": 1, "sum:amount": 50 * 10**6})


def test_a_new_budget_starts_at_zero_for_every_counter(store: Store) -> None:
    assert _spend(store, {}, {"calls": 3, "amount": 9}) == {"amount": 0, "calls": 0}
    assert store.spent(KEY) == ({"amount": 9, "calls": 3}, {"amount": 0, "calls": 0})


def test_spending_exactly_to_the_limit_then_one_more_is_refused(store: Store) -> None:
    limits = {"amount": 100}
    assert _spend(store, {"amount": 99}, limits) == {"amount": 99}
    assert _spend(store, {"amount": 1}, limits) == {"amount": 100}  # exactly the limit: allowed
    assert _spend(store, {"amount": 1}, limits) is None  # one more: refused
    assert _spend(store, {"amount": 0}, limits) == {"amount": 100}  # nothing more: still fine
    assert store.spent(KEY) == (limits, {"amount": 100})


def test_several_counters_are_all_or_nothing(store: Store) -> None:
    limits = {"amount": 500, "calls": 3}
    assert _spend(store, {"amount": 400, "calls": 1}, limits) == {"amount": 400, "calls": 1}
    before = store.get(KEY)
    assert _spend(store, {"amount": 101, "calls": 1}, limits) is None  # amount would exceed
    assert store.get(KEY) == before  # calls not counted either
    assert _spend(store, {"amount": 100, "calls": 2}, limits) == {"amount": 500, "calls": 3}
    assert _spend(store, {"amount": 0, "calls": 1}, limits) is None  # calls would exceed
    assert store.spent(KEY) == (limits, {"amount": 500, "calls": 3})


def test_arithmetic_is_exact_beyond_doubles_up_to_2_62(store: Store) -> None:
    """Redis's Lua has only doubles (exact to 2**53): the script adds decimal strings."""
    limits = {"n": 2**53 + 2}
    assert _spend(store, {"n": 2**53}, limits) == {"n": 2**53}
    assert _spend(store, {"n": 1}, limits) == {"n": 2**53 + 1}  # a double would stay at 2**53
    assert _spend(store, {"n": 1}, limits) == {"n": 2**53 + 2}
    assert _spend(store, {"n": 1}, limits) is None
    store.spend("budget:big:0", {"n": MAX_AMOUNT - 1}, {"n": MAX_AMOUNT}, expires_at=_later())
    top = store.spend("budget:big:0", {"n": 1}, {"n": MAX_AMOUNT}, expires_at=_later())
    assert top == {"n": MAX_AMOUNT}
    assert store.spend("budget:big:0", {"n": 1}, {"n": MAX_AMOUNT}, expires_at=_later()) is None
    assert store.spent("budget:big:0") == ({"n": MAX_AMOUNT}, {"n": MAX_AMOUNT})


_BIG = st.one_of(
    st.integers(0, 20),
    st.integers(2**53 - 3, 2**53 + 3),  # where doubles stop being exact
    st.integers(MAX_AMOUNT - 3, MAX_AMOUNT),
)
_STEPS = st.lists(st.dictionaries(st.sampled_from("abc"), _BIG, max_size=3), max_size=8)


_ONE_STORE = [HealthCheck.function_scoped_fixture]  # one store for every example: keys differ


@settings(max_examples=60, deadline=None, suppress_health_check=_ONE_STORE)
@given(limits=st.dictionaries(st.sampled_from("abc"), _BIG, min_size=3), steps=_STEPS)
def test_debits_match_a_model_of_exact_integers(
    store: Store, limits: dict[str, int], steps: list[dict[str, int]]
) -> None:
    """Any sequence of debits: each succeeds exactly when Python's integers say it fits."""
    key = f"budget:model-{time.monotonic_ns()}:0"
    spent = dict.fromkeys(limits, 0)
    for step in steps:
        fits = all(spent[name] + amount <= limits[name] for name, amount in step.items())
        if fits:
            spent = {name: spent[name] + step.get(name, 0) for name in spent}
        got = store.spend(key, step, limits, expires_at=_later())
        assert got == (spent if fits else None), (step, spent)
    assert store.spent(key) in (None, (limits, spent))  # None: no step at all


def test_the_entry_keeps_the_latest_limits_and_every_count(store: Store) -> None:
    _spend(store, {"a": 5, "b": 1}, {"a": 10, "b": 10})
    assert _spend(store, {"a": 1}, {"a": 5}) is None  # 6 > 5: a lower limit binds at once
    assert _spend(store, {"a": 2}, {"a": 20}) == {"a": 7}
    assert store.spent(KEY) == ({"a": 20}, {"a": 7, "b": 1})  # b's spending is not forgotten
    assert _spend(store, {"b": 9}, {"a": 20, "b": 10}) == {"a": 7, "b": 10}


def test_debits_from_many_threads_never_overspend(store: Store) -> None:
    wins: list[int] = []
    barrier = threading.Barrier(12)

    def spender() -> None:
        barrier.wait()
        mine = 0
        while _spend(store, {"calls": 1}, {"calls": 50}) is not None:
            mine += 1
        wins.append(mine)

    threads = [threading.Thread(target=spender) for _ in range(12)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sum(wins) == 50 and len(wins) == 12
    assert store.spent(KEY) == ({"calls": 50}, {"calls": 50})


def test_a_debit_is_not_a_change_verifiers_must_notice(store: Store) -> None:
    """Verifiers re-ask the store after a local write (``changes``): a debit is none of theirs."""
    before = store.changes
    _spend(store, {"calls": 1}, {"calls": 5})
    assert store.changes == before
    store.put("revoked:x", "{}", expires_at=_later())
    assert store.changes != before  # the counter does move for a real change


# -- bad input: refused before anything is written -------------------------------------------

BAD: list[tuple[str, Any, Any, str]] = [
    ("negative amount", {"a": -1}, {"a": 5}, "amount 'a': expected 0 to 2\\*\\*62, found -1"),
    ("bool amount", {"a": True}, {"a": 5}, "amount 'a': expected an int, found bool"),
    ("float amount", {"a": 1.0}, {"a": 5}, "amount 'a': expected an int, found float"),
    ("str amount", {"a": "1"}, {"a": 5}, "amount 'a': expected an int, found str"),
    ("huge amount", {"a": 2**62 + 1}, {"a": 5}, "amount 'a': expected 0 to 2\\*\\*62"),
    ("enormous", {"a": 10**5000}, {"a": 5}, "found an int of 16610 bits"),
    ("unknown name", {"b": 1}, {"a": 5}, "amount 'b': expected one of \\['a'\\], found no limit"),
    ("bool limit", {}, {"a": False}, "limit 'a': expected an int, found bool"),
    ("negative limit", {}, {"a": -5}, "limit 'a': expected 0 to 2\\*\\*62"),
    ("huge limit", {}, {"a": 2**62 + 1}, "limit 'a': expected 0 to 2\\*\\*62"),
    ("float limit", {}, {"a": math.inf}, "limit 'a': expected an int, found float"),
    ("no limits", {}, {}, "limits: expected 1 to 16 counters, found 0"),
    ("too many", {}, {f"c{i}": 1 for i in range(17)}, "expected 1 to 16 counters, found 17"),
    ("quote in name", {}, {'a"b': 1}, "counter name: expected 1 to 64 of"),
    ("brace in name", {}, {"a}": 1}, "counter name"),
    ("empty name", {}, {"": 1}, "counter name"),
    ("long name", {}, {"n" * 65: 1}, "counter name"),
    ("unicode name", {}, {"montant€": 1}, "counter name"),
    ("dash first", {}, {"-a": 1}, "counter name"),
    ("int name", {}, {1: 1}, "counter name: .* found int"),
    ("a list", [("a", 1)], {"a": 5}, "expected mappings of names to integers, found list"),
]


@pytest.mark.parametrize(
    ("amounts", "limits", "message"),
    [case[1:] for case in BAD],
    ids=[case[0] for case in BAD],
)
def test_bad_amounts_and_limits_are_refused(
    store: Store, amounts: Any, limits: Any, message: str
) -> None:
    with pytest.raises(ValueError, match=message) as refused:
        store.spend(KEY, amounts, limits, expires_at=_later())
    assert "\n" not in str(refused.value) and len(str(refused.value)) < 300
    assert store.items("budget:") == {}


@pytest.mark.parametrize(
    ("expires_at", "message"),
    [
        (-1.0, "expected a time in the future, found -1.0"),
        (1.0, "expected a time in the future"),
        (math.nan, "expected a time in the future, found nan"),
        (math.inf, "expected a time in the future, found inf"),
        (True, "expected epoch seconds, found bool"),
        ("9999999999", "expected epoch seconds, found str"),
    ],
)
def test_an_expiry_not_in_the_future_is_refused(
    store: Store, expires_at: Any, message: str
) -> None:
    """An entry that expires at once would forget every debit: unlimited spending."""
    with pytest.raises(ValueError, match=message):
        store.spend(KEY, {"a": 1}, {"a": 5}, expires_at=expires_at)
    assert store.items("budget:") == {}


# -- expiry ----------------------------------------------------------------------------------


def test_a_budget_expires_and_then_starts_afresh(store: Store) -> None:
    assert store.spend(KEY, {"a": 5}, {"a": 5}, expires_at=time.time() + 0.3) == {"a": 5}
    assert store.spend(KEY, {"a": 1}, {"a": 5}, expires_at=time.time() + 0.3) is None
    time.sleep(0.45)
    assert store.spent(KEY) is None and store.items("budget:") == {}
    assert Budgets(store).balance("tok", "0") is None
    assert store.spend(KEY, {"a": 1}, {"a": 5}, expires_at=_later()) == {"a": 1}


def test_a_later_debit_never_shortens_the_entry(store: Store) -> None:
    store.spend(KEY, {"a": 5}, {"a": 5}, expires_at=_later())
    assert store.spend(KEY, {"a": 0}, {"a": 5}, expires_at=time.time() + 0.2) == {"a": 5}
    time.sleep(0.35)
    assert store.spent(KEY) == ({"a": 5}, {"a": 5})  # still there: still spent
    assert store.spend(KEY, {"a": 1}, {"a": 5}, expires_at=time.time() + 0.2) is None


# -- failing closed --------------------------------------------------------------------------


@pytest.fixture(params=("sqlite", "redis"))
def unreachable(request: pytest.FixtureRequest, tmp_path: Path) -> Store:
    """A store that cannot be reached: a path under a regular file, or a closed port."""
    if request.param == "sqlite":
        (tmp_path / "a-file").write_text("not a directory")
        return open_store(f"sqlite:///{tmp_path / 'a-file' / 'state.db'}")
    return open_store(f"redis://127.0.0.1:{free_port()}/0")


def test_an_unreachable_store_refuses_every_budget_operation(unreachable: Store) -> None:
    budgets = Budgets(unreachable)
    operations = [
        lambda: unreachable.spend(KEY, {"a": 1}, {"a": 5}, expires_at=_later()),
        lambda: unreachable.spent(KEY),
        lambda: budgets.spend("tok", "0", {"a": 1}, {"a": 5}, expires_at=_later()),
        lambda: budgets.balance("tok", "0"),
        lambda: budgets.balances("tok"),
    ]
    for operation in operations:
        started = time.monotonic()
        with pytest.raises(StoreUnavailableError, match="is unavailable"):
            operation()
        assert time.monotonic() - started < 3  # fast: no long back-off


JUNK = [
    "garbage", "[]", '{"limits":{"a":5}}', '{"limits":{"a":5},"spent":{"a":-1}}',
    '{"limits":{"a":5},"spent":{"a":1.5}}', '{"limits":{"a":true},"spent":{}}',
    '{"limits":{"a\\"":5},"spent":{}}', '{"limits":{"a":5},"spent":{"a":007}}',
    '{"limits":{"a":5},"spent":{,"a":1}}', '{"limits":{"a":5},"spent":{"a":1,,"b":1}}',
    '{"limits":{"a":5},"spent":{"a":1,}}', '{"limits":{"a":5},"spent":{"a":"1"}}',
    '{"limits":{"a":5},"spent":{"-a":1}}',
    '{"limits":{"a":5},"spent":{"a":' + str(2**62 + 1) + "}}",
    '{"limits":{"a":5},"spent":{' + ",".join(f'"n{i}":1' for i in range(65)) + "}}",
    '{"limits":{"a":5},"spent":{"a":1},"more":{}}',
]  # fmt: skip


def test_an_entry_that_is_not_a_budget_is_refused(store: Store) -> None:
    for junk in JUNK:
        store.put(KEY, junk, expires_at=_later())
        for operation in (
            lambda: _spend(store, {"a": 1}, {"a": 5}),
            lambda: store.spent(KEY),
            lambda: Budgets(store).balances("tok"),
        ):
            with pytest.raises(StoreUnavailableError, match="'budget:tok:0' is not a budget entry"):
                operation()
        assert store.get(KEY) == junk, junk  # left as found


def test_an_entry_never_keeps_more_counts_than_it_can_read_back(store: Store) -> None:
    """Counts are never forgotten, so limits named anew each time would grow it: refused."""
    for batch in range(4):
        _spend(store, {}, {f"c{batch}_{i}": 1 for i in range(MAX_COUNTERS)})
    assert len(store.spent(KEY)[1]) == MAX_NAMES  # type: ignore[index]
    with pytest.raises(StoreUnavailableError, match="budget"):
        _spend(store, {}, {"one_more": 1})
    assert len(store.spent(KEY)[1]) == MAX_NAMES  # type: ignore[index]


def test_a_redis_key_of_another_type_is_refused(redis_url: str) -> None:
    import redis

    client = redis.Redis.from_url(redis_url)
    client.flushdb()
    client.hset("agentsudo:" + KEY, "a", "1")
    client.close()
    with open_store(redis_url) as store:
        with pytest.raises(StoreUnavailableError, match="is not a budget entry"):
            _spend(store, {"a": 1}, {"a": 5})


def test_redis_reloads_the_script_when_the_server_forgot_it(redis_url: str) -> None:
    """EVALSHA first; after SCRIPT FLUSH (or a restart) the script is sent again."""
    import redis

    client = redis.Redis.from_url(redis_url)
    client.flushdb()
    with open_store(redis_url) as store:
        assert _spend(store, {"a": 1}, {"a": 5}) == {"a": 1}
        client.script_flush()
        assert _spend(store, {"a": 1}, {"a": 5}) == {"a": 2}
    assert client.script_exists(_spend_sha())[0]
    client.close()


def _spend_sha() -> str:
    import hashlib

    from agentsudo_tokens.state.redis import _SPEND

    return hashlib.sha1(_SPEND.encode()).hexdigest()


class _Plain(Store):
    """A store with the basic operations only (a real SQLite store inside): no debits."""

    def __init__(self, inner: Store) -> None:
        self.inner, self.url = inner, "plain://"

    def get_many(self, keys: Sequence[str]) -> list[str | None]:
        return self.inner.get_many(keys)

    def put(self, key: str, value: str, *, expires_at: float) -> None:
        self.inner.put(key, value, expires_at=expires_at)

    def add(self, key: str, value: str, *, expires_at: float) -> bool:
        return self.inner.add(key, value, expires_at=expires_at)

    def take(self, key: str) -> str | None:
        return self.inner.take(key)

    def items(self, prefix: str) -> dict[str, str]:
        return self.inner.items(prefix)


def test_a_store_that_cannot_debit_refuses(tmp_path: Path) -> None:
    plain = _Plain(open_store(f"sqlite:///{tmp_path / 'state.db'}"))
    with pytest.raises(StoreUnavailableError, match="plain:// cannot keep budgets"):
        Budgets(plain).spend("tok", "0", {"a": 1}, {"a": 5}, expires_at=_later())
    with pytest.raises(ValueError, match="amount 'a'"):  # input is still checked first
        plain.spend(KEY, {"a": -1}, {"a": 5}, expires_at=_later())


# -- Budgets ---------------------------------------------------------------------------------


def test_budgets_spend_and_show_each_entry_of_a_token(store: Store) -> None:
    budgets = Budgets(store)
    first = budgets.spend("j1", "0", {"amount": 50, "calls": 1}, {"amount": 500, "calls": 20},
                          expires_at=_later())  # fmt: skip
    assert first == Balance({"amount": 500, "calls": 20}, {"amount": 50, "calls": 1})
    assert first.left("amount") == 450 and first.left("calls") == 19
    budgets.spend("j1", "1", {"calls": 1}, {"calls": 2}, expires_at=_later())
    budgets.spend("j10", "0", {"calls": 1}, {"calls": 9}, expires_at=_later())  # another token
    assert budgets.spend("j1", "1", {"calls": 2}, {"calls": 2}, expires_at=_later()) is None
    assert budgets.balance("j1", "1") == Balance({"calls": 2}, {"calls": 1})
    assert budgets.balance("j1", "2") is None
    assert budgets.balances("j1") == {
        "0": Balance({"amount": 500, "calls": 20}, {"amount": 50, "calls": 1}),
        "1": Balance({"calls": 2}, {"calls": 1}),
    }
    assert budgets.balances("j2") == {}
    assert set(store.items("budget:")) == {"budget:j1:0", "budget:j1:1", "budget:j10:0"}
    assert json.loads(store.get("budget:j1:1") or "") == {"limits": {"calls": 2},
                                                          "spent": {"calls": 1}}  # fmt: skip


def test_left_never_goes_below_zero_and_names_a_known_counter() -> None:
    balance = Balance({"a": 5}, {"a": 7})  # a limit lowered after spending
    assert balance.left("a") == 0
    with pytest.raises(KeyError):
        balance.left("b")


@pytest.mark.parametrize(
    ("jti", "entry", "message"),
    [
        ("a:b", "0", "jti: expected no ':', found 'a:b'"),
        ("", "0", "jti: expected 1 to 256 printable ASCII characters, found '' \\(0"),
        ("j" * 257, "0", "jti: expected 1 to 256 .* \\(257 characters\\)"),
        ("jé", "0", "jti: expected 1 to 256 printable ASCII"),
        ("j\n", "0", "jti: expected 1 to 256 printable ASCII"),
        ("j\x00", "0", "jti: expected"),
        (b"j", "0", "jti: expected a string, found bytes"),
        ("j", "", "entry: expected 1 to 64 printable ASCII characters"),
        ("j", "e" * 65, "entry: expected 1 to 64"),
        ("j", "\t", "entry: expected"),
        ("j", 0, "entry: expected a string, found int"),
    ],
)
def test_budgets_refuse_bad_ids(store: Store, jti: Any, entry: Any, message: str) -> None:
    budgets = Budgets(store)
    with pytest.raises(ValueError, match=message) as refused:
        budgets.spend(jti, entry, {"a": 1}, {"a": 5}, expires_at=_later())
    assert "\n" not in str(refused.value)
    with pytest.raises(ValueError, match=message):
        budgets.balance(jti, entry)
    if entry == "0":
        with pytest.raises(ValueError, match=message):
            budgets.balances(jti)
    assert store.items("") == {}


def test_ids_may_hold_any_printable_ascii_but_a_colon_in_the_jti(store: Store) -> None:
    budgets = Budgets(store)
    jti, entry = "A-z_0 ~!*?[]\\'\"{}", "write:refunds*"  # globs and quotes: taken literally
    assert budgets.spend(jti, entry, {"a": 1}, {"a": 5}, expires_at=_later()) is not None
    assert budgets.balances(jti) == {entry: Balance({"a": 5}, {"a": 1})}
    assert budgets.balances("A-z_0 ~!*?") == {}
