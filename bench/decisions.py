"""Benchmark the decision paths: audit mode, approvals, and the audit file sink.

    python bench/decisions.py [--quick]

Every row is ours next to a baseline measured in the same run (interleaved), so
the ratio is what to compare across machines. Informational: never fails.
"""

from __future__ import annotations

import argparse
import gc
import logging
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from agentsudo_tokens import Agent, PermissionDeniedError, sudo
from agentsudo_tokens.audit.events import set_audit_log
from agentsudo_tokens.audit.file import AuditFile


def per_call(func: Callable[[], Any], loops: int, repeats: int) -> float:
    """Minimum seconds per call over the repeats, gc off."""
    best = float("inf")
    gc.disable()
    try:
        for _ in range(repeats):
            start = time.perf_counter_ns()
            for _ in range(loops):
                func()
            best = min(best, (time.perf_counter_ns() - start) / loops)
    finally:
        gc.enable()
    return best / 1e9


def plain(order_id: str, amount: int) -> int:
    return amount


def approve(agent: Agent, scope: str, context: Any) -> bool:
    return bool(context.arguments["amount"] < 100)


def refuse(agent: Agent, scope: str, context: Any) -> bool:
    return False


def main() -> int:
    """Print the table."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="a short run for CI")
    quick = parser.parse_args().quick
    loops, repeats = (2_000, 5) if quick else (20_000, 15)
    logging.getLogger("agentsudo").propagate = False  # nobody listens: the usual production case

    allowed = sudo(scope="write:refunds")(plain)
    audit_mode = sudo(scope="write:refunds", on_deny="log")(plain)
    approved = sudo(scope="write:refunds", on_deny=approve)(plain)
    refused = sudo(scope="write:refunds", on_deny=refuse)(plain)
    holder = Agent("SupportBot", ["write:refunds"])
    lacking = Agent("AnalyticsBot", ["read:orders"])

    def refused_call() -> None:
        try:
            refused("o1", 5000)
        except PermissionDeniedError:
            pass

    rows: list[tuple[str, float, float, str]] = []
    with holder.start_session():
        base = per_call(lambda: allowed("o1", 50), loops, repeats)
    with lacking.start_session():
        rows.append(
            (
                "audit mode, violation (call proceeds)",
                per_call(lambda: audit_mode("o1", 50), loops, repeats),
                base,
                "allowed @sudo call",
            )
        )
        rows.append(
            (
                "approver says yes (sync, args bound)",
                per_call(lambda: approved("o1", 50), loops, repeats),
                base,
                "allowed @sudo call",
            )
        )
        rows.append(
            (
                "approver says no (refused, caught)",
                per_call(refused_call, loops, repeats),
                base,
                "allowed @sudo call",
            )
        )

    with tempfile.TemporaryDirectory() as work:
        sink = AuditFile(Path(work) / "sink.jsonl")
        event = {
            "time": "2026-11-24T00:00:00Z",
            "outcome": "allowed",
            "agent": "SupportBot",
            "jti": "x" * 22,
            "scope": "write:refunds",
            "function": "plain",
            "signed": True,
            "reason": None,
        }
        n = [0]

        def one_event() -> None:
            n[0] += 1
            sink.append(event)

        sink_cost = per_call(one_event, loops // 4, repeats)
        rows.append(
            (
                "audit file: append one event (flock+hash+write)",
                sink_cost,
                base,
                "allowed @sudo call",
            )
        )
        set_audit_log(Path(work) / "guard.jsonl")
        with holder.start_session():
            logged = per_call(lambda: allowed("o1", 50), loops // 4, repeats)
        set_audit_log(None)
        rows.append(
            ("allowed @sudo call with AGENTSUDO_AUDIT_LOG set", logged, base, "allowed @sudo call")
        )

    print(f"agentsudo-tokens decision benchmark ({'quick' if quick else 'full'} run)")
    print(f"{'measurement':<50} {'ours':>10} {'baseline':>10} {'ratio':>8}  baseline is")
    for label, ours, baseline, what in rows:
        us, base_us, ratio = ours * 1e6, baseline * 1e6, ours / baseline
        print(f"{label:<50} {us:8.2f}µs {base_us:8.2f}µs {ratio:7.1f}x  {what}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
