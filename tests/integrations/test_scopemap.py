"""The per-tool scope map: ``scope_map`` and ``agentsudo scopes``."""

from __future__ import annotations

import json
import sys
import types
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from agentsudo_cli.main import cli
from agentsudo_tokens import ConfigError, sudo
from agentsudo_tokens.integrations.fastapi import AgentSudoMiddleware
from agentsudo_tokens.integrations.scopemap import GuardEntry, ScopeMap, scope_map

HELPERS = """
from agentsudo_tokens import sudo

@sudo(scope="write:ledger")
def post_ledger(entry): ...
"""

SERVICE = """
from typing import Annotated
from fastapi import APIRouter, Depends, FastAPI
from agentsudo_tokens import Agent, sudo
from agentsudo_tokens.integrations.fastapi import AgentSudoMiddleware, require_scope
from shopmod_helpers import post_ledger          # guarded, but defined elsewhere

refunds = require_scope("write:refunds")         # a module-level dependency is no function


@sudo(scope="write:refunds")
def pay_out(order_id, amount): ...


@sudo(scope="read:orders")
async def list_orders(): ...


class Customers:
    @sudo(scope="delete:customers")
    def erase(self, customer_id): ...

    @staticmethod
    @sudo(scope="read:customers")
    def lookup(customer_id): ...

    def unguarded(self): ...


def helper(): ...


admin = APIRouter(prefix="/admin", dependencies=[Depends(require_scope("admin:access"))])


@admin.post("/purge")
def purge(agent: Annotated[Agent, Depends(require_scope("delete:customers"))]): ...


app = FastAPI()
app.add_middleware(AgentSudoMiddleware)
app.include_router(admin)


@app.get("/healthz")
def healthz(): ...


@app.post("/refunds")
def refund(agent: Annotated[Agent, Depends(refunds)]): ...


def caller(agent: Annotated[Agent, Depends(require_scope("read:orders"))]) -> Agent:
    return agent


@app.get("/orders", dependencies=[Depends(require_scope("read:audit"))])
async def orders(agent: Annotated[Agent, Depends(caller)]): ...


@app.get("/direct")
@sudo(scope="read:reports")
async def direct(): ...


sub = FastAPI()


@sub.delete("/accounts/{account_id}")
def close_account(agent: Annotated[Agent, Depends(require_scope("delete:accounts"))]): ...


app.mount("/v2", sub)
"""


@pytest.fixture
def shop(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """An importable service module ``shopmod`` (and its helpers) in a fresh directory."""
    (tmp_path / "shopmod.py").write_text(SERVICE)
    (tmp_path / "shopmod_helpers.py").write_text(HELPERS)
    monkeypatch.syspath_prepend(str(tmp_path))
    yield "shopmod"
    for name in ("shopmod", "shopmod_helpers"):
        sys.modules.pop(name, None)


EXPECTED_FUNCTIONS = {
    ("write:refunds", "shopmod.pay_out"),
    ("read:orders", "shopmod.list_orders"),
    ("delete:customers", "shopmod.Customers.erase"),
    ("read:customers", "shopmod.Customers.lookup"),
    ("read:reports", "shopmod.direct"),  # a guarded endpoint is a guarded function too
}
EXPECTED_ROUTES = {
    ("admin:access", "POST /admin/purge", "shopmod.purge"),
    ("delete:customers", "POST /admin/purge", "shopmod.purge"),
    ("write:refunds", "POST /refunds", "shopmod.refund"),
    ("read:audit", "GET /orders", "shopmod.orders"),
    ("read:orders", "GET /orders", "shopmod.orders"),
    ("read:reports", "GET /direct", "shopmod.direct"),
    ("delete:accounts", "DELETE /v2/accounts/{account_id}", "shopmod.close_account"),
}


def test_a_module_lists_its_functions_and_its_apps_routes(shop: str) -> None:
    found = scope_map(shop)
    functions = {(e.scope, e.name) for e in found.entries if e.kind == "function"}
    routes = {(e.scope, e.name, e.endpoint) for e in found.entries if e.kind == "route"}
    assert functions == EXPECTED_FUNCTIONS  # not the imported post_ledger, not `refunds`
    assert routes == EXPECTED_ROUTES  # not /healthz
    assert list(found.entries) == sorted(found.entries)


def test_an_app_alone_and_module_attribute_targets(shop: str) -> None:
    module = sys.modules[shop] if shop in sys.modules else __import__(shop)
    by_object = scope_map(module.app)
    by_string = scope_map(f"{shop}:app")
    assert by_object == by_string
    assert scope_map(AgentSudoMiddleware(module.app)) == by_object  # found through ASGI wrappers
    assert {(e.scope, e.name, e.endpoint) for e in by_object.entries} == EXPECTED_ROUTES
    assert scope_map(f"{shop}:Customers").by_scope() == {
        "delete:customers": ["shopmod.Customers.erase"],
        "read:customers": ["shopmod.Customers.lookup"],
    }
    assert scope_map(f"{shop}:pay_out").by_scope() == {"write:refunds": ["shopmod.pay_out"]}


def test_the_json_shape(shop: str) -> None:
    data = scope_map(shop).to_dict()
    assert data["scopes"]["delete:customers"] == ["shopmod.Customers.erase", "POST /admin/purge"]
    assert {
        "scope": "write:refunds",
        "kind": "route",
        "name": "POST /refunds",
        "endpoint": "shopmod.refund",
    } in data["guards"]
    assert {"scope": "write:refunds", "kind": "function", "name": "shopmod.pay_out"} in data[
        "guards"
    ]
    json.dumps(data)


def test_several_targets_merge_without_duplicates(shop: str) -> None:
    once = scope_map(shop)
    assert scope_map(shop, f"{shop}:app", f"{shop}_helpers") == ScopeMap(
        tuple(
            sorted(
                {
                    *once.entries,
                    GuardEntry("write:ledger", "function", "shopmod_helpers.post_ledger"),
                }
            )
        )
    )


def test_a_plain_function_and_a_module_object() -> None:
    @sudo(scope="read:things")
    def local() -> None: ...

    module = types.ModuleType("made_up")
    assert scope_map(local).by_scope() == {"read:things": [f"{__name__}.{local.__qualname__}"]}
    assert scope_map(module).entries == ()


@pytest.mark.parametrize(
    ("target", "message"),
    [("no_such_module_here", "cannot import"), ("json:nope", "'nope' not found")],
)
def test_a_bad_target_is_a_config_error(target: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        scope_map(target)


# --- the command ------------------------------------------------------------


def test_agentsudo_scopes_prints_json(shop: str, tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["scopes", shop, "--app-dir", str(tmp_path)])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data == scope_map(shop).to_dict()
    assert result.stderr == ""


def test_agentsudo_scopes_reports_a_bad_target_on_stderr() -> None:
    result = CliRunner().invoke(cli, ["scopes", "no_such_module_here"])
    assert result.exit_code == 2
    assert result.stdout == ""
    assert result.stderr.count("\n") == 1
    assert result.stderr.startswith("agentsudo: cannot import 'no_such_module_here'")


def test_agentsudo_scopes_reports_a_bad_target_as_json() -> None:
    result = CliRunner().invoke(cli, ["scopes", "no_such_module_here", "--json"])
    assert result.exit_code == 2
    error = json.loads(result.stdout)
    assert error["ok"] is False and error["error"] == "ConfigError"
    assert "cannot import" in error["message"]
