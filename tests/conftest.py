"""Test-wide safety: dummy credentials and a dead default endpoint, so no test can ever reach AWS."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from moto.server import ThreadedMotoServer

# Set before any test module imports app.py (which reads AUDIT_STREAM) or builds a boto3 client.
os.environ.update(
    AWS_ACCESS_KEY_ID="testing",
    AWS_SECRET_ACCESS_KEY="testing",
    AWS_DEFAULT_REGION="us-east-1",
    AWS_CONFIG_FILE=os.devnull,
    AWS_SHARED_CREDENTIALS_FILE=os.devnull,
    # Nothing listens on the discard port: a client that escapes the fixtures fails instead of reaching AWS.
    AWS_ENDPOINT_URL="http://127.0.0.1:9",
    AUDIT_STREAM="deutzia-audit-events-test",
    INGEST_FAILURE_QUEUE="deutzia-ingest-failures-test",
)
for variable in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN"):
    os.environ.pop(variable, None)

SHARED_FIXTURES = Path(__file__).resolve().parents[1].parent / "shared" / "fixtures"


@pytest.fixture
def shared_fixtures() -> Path:
    """../shared/fixtures, or a skip that says why (a user's clone has no ../shared)."""
    if not SHARED_FIXTURES.is_dir():
        pytest.skip(f"{SHARED_FIXTURES} is absent: the shared AWS fixtures come with CI's checkout, not a clone")
    return SHARED_FIXTURES


# moto logs every request it serves; the tests say what matters.
logging.getLogger("werkzeug").setLevel(logging.WARNING)


@pytest.fixture(scope="session")
def moto_endpoint() -> Iterator[str]:
    """moto in server mode on a free loopback port (DuckDB reads S3 over HTTP, so in-process mocks cannot serve it),
    patched as the local stack's (deutzia_local/moto_patches.py: a trail's logging times in UTC whatever the machine's
    zone, among others), whichever test comes first."""
    from deutzia_local import moto_patches

    moto_patches.apply()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()
