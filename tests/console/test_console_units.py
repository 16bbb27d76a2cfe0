"""The console's parts alone: escaping, links and sessions in a real store, the feed's tail."""

from __future__ import annotations

import html
import json
import os
import threading
import time
from pathlib import Path

import pytest

from agentsudo_tokens.broker.console import feed as feed_module
from agentsudo_tokens.broker.console.auth import (
    LoginRefused,
    csrf_ok,
    end_session,
    new_link,
    redeem_link,
    session_of,
)
from agentsudo_tokens.broker.console.feed import Feed, ForwardedEvent
from agentsudo_tokens.broker.console.html import Markup, esc, fill, join, url
from agentsudo_tokens.broker.console.minted import (
    MAX_SHOWN,
    MintedCache,
    live_tokens,
    record_minted,
)
from agentsudo_tokens.broker.policy import Caller
from agentsudo_tokens.state import Store, open_store
from agentsudo_tokens.tokens.revocation import revoke, revoke_agent

ADMIN = Caller(uid=None, credential="admin")


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return open_store(f"sqlite:///{tmp_path / 'state.db'}")


# --- html -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value", ["<script>alert(1)</script>", '"><img src=x>', "' onmouseover='x", "&amp;", "{x}"]
)
def test_every_value_is_escaped(value: str) -> None:
    made = fill('<a title="{v}">{v}</a>', v=value)
    escaped = html.escape(value, quote=True)
    assert made == f'<a title="{escaped}">{escaped}</a>'
    assert made.count("<") == 2 and made.count('"') == 2  # only the template's


def test_markup_is_not_escaped_twice_and_urls_are_encoded() -> None:
    inner = fill("<b>{v}</b>", v="<i>")
    assert fill("<p>{x}</p>", x=inner) == "<p><b>&lt;i&gt;</b></p>"
    assert join([Markup("<br>"), esc("<")]) == "<br>&lt;"
    assert url("/console/approvals/a/b?c/approve") == "/console/approvals/a/b%3Fc/approve"
    assert url("/console/revoke", jti='x"&y') == "/console/revoke?jti=x%22%26y"


# --- links and sessions ---------------------------------------------------------------------


def test_a_link_logs_in_once_and_only_its_hash_is_kept(store: Store) -> None:
    value, expires = new_link(store, ADMIN)
    assert len(value) == 43 and expires - time.time() == pytest.approx(300, abs=2)
    assert value not in json.dumps(store.items(""))
    session, cookie = redeem_link(store, value)
    assert session.admin == "credential:admin" and session.caller == ADMIN
    assert session.expires_at - session.created_at == 8 * 3600
    assert cookie not in json.dumps(store.items(""))
    secret = session.base.removeprefix("/console/s/")
    assert len(secret) == 32 and secret not in json.dumps(store.items(""))
    assert session_of(store, cookie, secret) == session
    other, _ = redeem_link(store, new_link(store, ADMIN)[0])
    assert session_of(store, cookie, other.base.removeprefix("/console/s/")) is None
    for wrong in (secret[:-1], secret + "A", None, "", cookie):
        assert session_of(store, cookie, wrong) is None
    with pytest.raises(LoginRefused):
        redeem_link(store, value)
    end_session(store, session)
    assert session_of(store, cookie, secret) is None


def test_racing_uses_of_one_link_log_in_once(store: Store) -> None:
    value, _ = new_link(store, ADMIN)
    won: list[str] = []
    lost: list[Exception] = []

    def use() -> None:
        try:
            won.append(redeem_link(store, value)[1])
        except LoginRefused as exc:
            lost.append(exc)

    threads = [threading.Thread(target=use) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(won) == 1 and len(lost) == 7


@pytest.mark.parametrize("value", [None, "", "x", "a" * 65, "é" * 43, "a b" * 15, 12, ["a"]])
def test_values_not_ours_are_not_even_looked_up(store: Store, value: object) -> None:
    with pytest.raises(LoginRefused):
        redeem_link(store, value)
    assert session_of(store, value, value) is None


def test_expired_and_tampered_records_are_no_session(store: Store) -> None:
    old, _ = new_link(store, ADMIN, now=time.time() - 301)
    with pytest.raises(LoginRefused):
        redeem_link(store, old)
    session, cookie = redeem_link(store, new_link(store, ADMIN)[0])
    record = json.loads(store.get(session.key) or "{}")
    assert session_of(store, cookie, session.base.removeprefix("/console/s/")) == session
    changes = [
        {"path": None},  # a session of no path (or of an older broker)
        {"expires_at": time.time() + 10 * 3600},  # longer than a session may last
        {"caller": {"uid": "0"}},
        {"csrf": 5},
        {"caller": {"uid": None, "gids": [], "credential": None}},
    ]
    for change in changes:
        store.put(session.key, json.dumps({**record, **change}), expires_at=time.time() + 60)
        assert session_of(store, cookie, session.base.removeprefix("/console/s/")) is None, change


def test_csrf_is_compared_whole() -> None:
    from agentsudo_tokens.broker.console.auth import Session

    session = Session("k", ADMIN, "A" * 43, 0.0, 1.0, "/console/s/x")
    assert csrf_ok(session, "A" * 43)
    for wrong in ("A" * 42, "A" * 44, "", None, "B" + "A" * 42, "Ä" * 43, 5):
        assert not csrf_ok(session, wrong)


# --- live tokens ----------------------------------------------------------------------------


def test_live_tokens_leave_out_revoked_killed_and_expired(store: Store) -> None:
    now = int(time.time())
    minted = [
        ("j1", "A", now - 5, now + 60),
        ("j2", "A", now - 5, now + 60),
        ("j3", "B", now - 5, now + 60),
        ("j4", "A", now - 90, now + 1),  # expired by then
    ]
    for jti, agent, iat, exp in minted:
        record_minted(store, {"jti": jti, "sub": agent, "scope": "read:x", "iat": iat, "exp": exp})
    revoke(store, "j2", max_ttl=3600)
    live = live_tokens(store, now=now + 2)
    assert [t.jti for t in live["A"]] == ["j1"] and [t.jti for t in live["B"]] == ["j3"]
    revoke_agent(store, "B", max_ttl=3600, leeway=0)
    assert "B" not in live_tokens(store, now=now + 2)


def test_the_agents_view_reads_minted_records_once_a_second_and_revocations_always(
    store: Store,
) -> None:
    """Thousands of records (a caller minting at the rate limit): read once per ``ttl``;
    a revocation is out at once, the newest 200 an agent shown, the rest never looked at."""
    now = int(time.time())
    for n in range(3000):
        jti = f"j{n:05d}"
        record_minted(store, {"jti": jti, "sub": "A", "scope": "r", "iat": now - 3000 + n,
                              "exp": now + 600})  # fmt: skip
    cache = MintedCache(ttl=60)
    first = cache.live(store)["A"]
    assert len(first) == MAX_SHOWN and first[0].jti == "j02999" and first[-1].jti == "j02800"
    record_minted(store, {"jti": "new", "sub": "A", "scope": "r", "iat": now, "exp": now + 600})
    revoke(store, "j02999", max_ttl=3600)
    started = time.perf_counter()
    cached = cache.live(store)["A"]
    took = time.perf_counter() - started
    assert [t.jti for t in cached][:2] == ["j02998", "j02997"]  # revoked: out at once
    assert len(cached) == MAX_SHOWN and "new" not in {t.jti for t in cached}  # not read again
    assert took < 0.5
    cache.ttl = 0  # as when a second has passed
    assert cache.live(store)["A"][0].jti == "new"  # read again


# --- the feed -------------------------------------------------------------------------------


def _line(outcome: str, **fields: object) -> bytes:
    return json.dumps({"time": "t", "outcome": outcome, **fields}).encode() + b"\n"


def test_the_feed_reads_whole_lines_only_and_skips_heads(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    path.write_bytes(_line("issued", agent="A") + _line("head") + b'{"outcome": "par')
    feed = Feed(path)
    assert feed.refresh() == 1
    with path.open("ab") as out:
        out.write(b'tial"}\n' + _line("revoked", kind="agent"))
    assert feed.refresh() == 2
    latest, events = feed.since(0)
    assert latest == 3 and [e["outcome"] for e in events] == ["issued", "partial", "revoked"]
    assert feed.since(3) == (3, [])


def test_a_replaced_or_cut_file_is_followed_again(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    path.write_bytes(_line("a") * 10)
    feed = Feed(path)
    assert feed.refresh() == 10
    path.write_bytes(_line("b"))  # cut
    assert feed.refresh() == 1
    other = tmp_path / "new.jsonl"
    other.write_bytes(_line("c") * 2)
    os.replace(other, path)  # replaced
    assert feed.refresh() == 2


def test_the_feed_stays_bounded_however_far_behind(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(feed_module, "MAX_BEHIND", 64 * 1024)
    monkeypatch.setattr(feed_module, "START_BACK", 4 * 1024)
    path = tmp_path / "audit.jsonl"
    path.write_bytes(b"")
    feed = Feed(path, keep=50)
    feed.refresh()
    with path.open("ab") as out:
        out.write(_line("x", reason="r" * 100) * 5000)  # ~650 KB behind
    read = feed.refresh()
    assert 0 < read < 100 and feed.skipped_bytes > 500_000
    latest, events = feed.since(0)
    assert len(events) == read == latest
    feed.forward([ForwardedEvent(time="t", outcome="y")] * 200, source="s")
    latest, events = feed.since(0)
    assert len(events) == 50 and latest == read + 200  # the ring keeps the newest


def test_forwarded_events_are_checked_and_clipped(tmp_path: Path) -> None:
    feed = Feed(tmp_path / "none.jsonl")
    event = ForwardedEvent(time="t", outcome="denied", agent="A", reason="r" * 900)
    assert feed.forward([event], source="credential:svc") == 1
    shown = feed.since(0)[1][0]
    assert shown["source"] == "forwarded by credential:svc" and len(shown["reason"]) < 300
    with pytest.raises(ValueError):
        ForwardedEvent.model_validate({"time": "t", "outcome": "x", "token": "eyJ..."})


# --- a request that cannot be shown ---------------------------------------------------------


def test_a_request_whose_arguments_cannot_be_parsed_is_a_card_saying_so() -> None:
    """Arguments nested past the parser's limit (a store written before the cap, or by
    another broker): that card says so and offers no Approve; the others are whole."""
    from agentsudo_tokens.broker.console.auth import Session
    from agentsudo_tokens.broker.console.html import Markup
    from agentsudo_tokens.broker.console.pages import approvals_body
    from agentsudo_tokens.state.approvals import ApprovalRequest, text_digest

    def request(rid: str, arguments: str) -> ApprovalRequest:
        now = time.time()
        return ApprovalRequest(
            id=rid, agent="SupportBot", jti=None, scope="delete:customer",
            function="delete_customer", arguments_json=arguments,
            arguments_sha256=text_digest(arguments), reason="r", created_at=now,
            expires_at=now + 60, binding="b",
        )  # fmt: skip

    deep = '{"a":' + "[" * 5000 + "]" * 5000 + "}"
    session = Session("k", ADMIN, "A" * 43, 0.0, 1.0, "/console/s/" + "S" * 32)
    waiting = [request("apr_deep", deep), request("apr_fine", '{"customer_id":"c-1"}')]
    page = approvals_body(waiting, session, Markup("ok"), None)
    assert page.count('class="card approval"') == 2
    assert "cannot be shown" in page and "[[[[" not in page
    assert page.count('value="approve"') == 1 and page.count('value="deny"') == 2
    assert "/apr_fine/approve" in page and "/apr_deep/approve" not in page
    assert "&quot;customer_id&quot;: &quot;c-1&quot;" in page
