"""``Store.put_many``: several entries at once (one SQLite transaction), on both backends."""

from __future__ import annotations

import time

from agentsudo_tokens.broker.console.minted import MintedWriter, live_tokens
from agentsudo_tokens.state import Store


def test_put_many_sets_every_entry_and_replaces_old_values(store: Store) -> None:
    later = time.time() + 60
    store.put("k1", "old", expires_at=later)
    store.put_many([("k1", "v1", later), ("k2", "v2", later), ("k3", "v3", time.time() - 1)])
    assert store.get_many(["k1", "k2", "k3"]) == ["v1", "v2", None]  # k3 was already expired
    store.put_many([])  # nothing to write: no error


def test_the_minted_writer_records_in_batches_and_writes_all_on_close(store: Store) -> None:
    writer = MintedWriter(store)
    now = int(time.time())
    for n in range(1200):
        writer.submit(
            {"jti": f"jti-{n:04}", "sub": "SupportBot", "scope": "read:orders",
             "iat": now, "exp": now + 600}
        )  # fmt: skip
    writer.close()
    assert (writer.dropped, writer.failed) == (0, 0)
    listed = live_tokens(store)["SupportBot"]
    assert len(listed) >= 200 and listed[0].agent == "SupportBot"
    assert len(store.items("minted:")) == 1200
