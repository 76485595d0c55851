"""The client's tests run against a real `floe serve` whose URL is in
$FLOE_URL (and admin key in $FLOE_API_KEY, if it has one). `./test.sh` starts
one per mode (embedded, and S3 + NATS) through functions/tests/python_client.rs."""

import os
import uuid

import pytest

import floe


@pytest.fixture(scope="session")
def url() -> str:
    value = os.environ.get("FLOE_URL")
    if not value:
        pytest.fail("FLOE_URL is not set: run these tests through ./test.sh, or start "
                    "`floe serve` and export FLOE_URL=http://127.0.0.1:7700")
    return value


@pytest.fixture
def client(url):
    with floe.Client(url) as c:
        yield c


@pytest.fixture
async def aclient(url):
    async with floe.AsyncClient(url) as c:
        yield c


@pytest.fixture
def name() -> str:
    """A fresh collection name per test."""
    return f"py-{uuid.uuid4().hex[:12]}"
