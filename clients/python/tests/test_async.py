"""The asyncio client against a real server."""

import asyncio

import numpy as np
import pytest

import floe


async def test_async_round_trip_and_concurrent_queries(aclient, name):
    c = await aclient.create_collection(name, dimension=8, metric="l2", attributes={"even": "bool"})
    vectors = np.random.default_rng(3).standard_normal((200, 8)).astype(np.float32)
    w = await c.upsert_many(range(200), vectors, {"even": [i % 2 == 0 for i in range(200)]},
                            max_request_bytes=10_000)
    assert w.rows == 200 and w.batches > 1
    results = await asyncio.gather(*(c.query(vectors[i], top_k=1, consistency=w) for i in range(20)))
    assert [r.ids[0] for r in results] == list(range(20))
    evens = [r.id async for r in c.scan("even", page_size=30)]
    assert evens == list(range(0, 200, 2))
    row = await c.get(5)
    assert np.array_equal(row.vector, vectors[5]) and row.attributes == {"even": False}
    assert (await c.flush()).rows_flushed == 200
    assert (await c.describe()).stats["segments"] >= 1
    with pytest.raises(floe.BadRequestError) as e:
        await c.query([1.0] * 7)
    assert e.value.field == "vector"
    await c.drop()
    assert name not in await aclient.list_collections()
