"""API keys: the server under test requires them ($FLOE_API_KEY is its
admin key, which every other test's client picks up from the environment)."""

import os

import pytest

import floe


def test_keys_grant_roles_and_collections(client, url, name):
    if not os.environ.get("FLOE_API_KEY"):
        pytest.fail("FLOE_API_KEY (the server's admin key) is not set")
    c = client.create_collection(name, dimension=2, metric="l2")
    c.upsert([1], [[1, 1]])
    key = client.create_key("py reader", "read", collections=[name])
    assert key.key and key.role == "read" and key.collections == [name]
    with floe.Client(url, api_key=key.key) as reader:
        assert reader.list_collections() == [name]
        assert reader.collection(name).query([1, 1], top_k=1).ids == [1]
        with pytest.raises(floe.PermissionDeniedError) as e:
            reader.collection(name).upsert([2], [[0, 0]])
        assert e.value.status == 403
        with pytest.raises(floe.PermissionDeniedError):
            reader.create_key("nope", "admin")
    with floe.Client(url, api_key="floe_not_a_real_key") as stranger:
        with pytest.raises(floe.AuthenticationError) as e:
            stranger.list_collections()
        assert e.value.status == 401
    listed = {k.id: k for k in client.list_keys()}
    assert listed[key.id].key is None, "secrets are never listed"
    revoked = client.revoke_key(key.id)
    assert revoked.revoked_at_ms is not None
