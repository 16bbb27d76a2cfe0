"""Rolling out permissions without breaking production: audit mode first, then enforce.

    python examples/audit_rollout.py

Week 1 runs with ``on_deny="log"``: nothing is blocked, every call the agent
would lose is recorded in a hash-chained audit file. Read the file, grant what
is legitimately needed, then switch to ``on_deny="raise"``.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from agentsudo_tokens import Agent, PermissionDeniedError, sudo
from agentsudo_tokens.audit import set_audit_log
from agentsudo_tokens.audit_file import read_events, verify_chain

bot = Agent("ReportingBot", ["read:orders"])


def tools(mode: str) -> tuple:  # type: ignore[type-arg]
    """The bot's tools, guarded in the given mode."""

    @sudo(scope="read:orders", on_deny=mode)  # type: ignore[arg-type]
    def read_orders() -> str:
        return "42 orders"

    @sudo(scope="write:database", on_deny=mode)  # type: ignore[arg-type]
    def update_record(record_id: int) -> str:
        return f"updated record {record_id}"

    return read_orders, update_record


def main() -> None:
    """Audit mode, then the audit file, then enforcement."""
    with tempfile.TemporaryDirectory() as work:
        log = Path(work) / "audit.jsonl"
        set_audit_log(log)

        print("week 1: audit mode (on_deny='log'): nothing is blocked")
        read_orders, update_record = tools("log")
        with bot.start_session():
            print(" ", read_orders())
            print(" ", update_record(7))

        violations = [e for e in read_events(log) if e["outcome"] == "audit_violation"]
        print(f"the audit file says {len(violations)} call(s) would have been refused:")
        for event in violations:
            print("  ", json.dumps({k: event[k] for k in ("agent", "scope", "function")}))
        report = verify_chain(log)
        print(f"chain intact: {report.ok} ({report.events} events)")

        print("week 2: enforce (on_deny='raise')")
        read_orders, update_record = tools("raise")
        with bot.start_session():
            print(" ", read_orders())
            try:
                update_record(7)
            except PermissionDeniedError as exc:
                print(f"  blocked: {exc}")
        set_audit_log(None)


if __name__ == "__main__":
    main()
