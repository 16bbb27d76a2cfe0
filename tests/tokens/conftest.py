"""Fixtures of the token tests: a JWKS endpoint and a clock."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from jwks_endpoint import Endpoint, FakeClock


@pytest.fixture
def endpoint() -> Iterator[Endpoint]:
    server = Endpoint()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()
