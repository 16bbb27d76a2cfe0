"""The billing example behind a careless access log: every request's headers go to a file.

    CARELESS_LOG=/tmp/access.jsonl uvicorn careless_billing:app --app-dir tests/e2e

For ``test_dpop_e2e``: whoever reads such a log holds every token (and proof)
the service was sent. With tokens bound to the agent's key, that is not enough.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "examples" / "services"))

from billing_service import app as billing  # noqa: E402

LOG = Path(os.environ["CARELESS_LOG"])


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "http":
        headers = {k.decode(): v.decode("latin-1") for k, v in scope["headers"]}
        line = {"method": scope["method"], "path": scope["path"], "headers": headers}
        with LOG.open("a") as log:
            log.write(json.dumps(line) + "\n")
    await billing(scope, receive, send)
