"""The synchronous client against a real server."""

import math

import httpx
import numpy as np
import pytest

import floe


def test_quickstart_round_trip(client, name):
    docs = client.create_collection(name, dimension=3, metric="cosine",
                                    attributes={"year": "i64", "title": "string"})
    assert name in client.list_collections()
    w = docs.upsert([1, 2, 3], np.array([[1, 0, 0], [0, 1, 0], [0, 0, 1]]),
                    {"year": [2020, 2024, None], "title": ["a", "b", "c"]})
    assert (w.rows, w.duplicate) == (3, False)
    hits = docs.query([1, 0.1, 0], top_k=2, consistency=w)
    assert hits.ids == [1, 2]
    assert hits.lsn >= w.lsn
    assert hits[0].attributes == {"year": 2020, "title": "a"}
    assert math.isclose(hits[0].distance, 1 - 1 / math.sqrt(1.01), rel_tol=1e-4)
    filtered = docs.query([1, 0.1, 0], top_k=3, filter="year >= 2021")
    assert filtered.ids == [2]
    only_year = docs.query([1, 0, 0], top_k=1, include_attributes=["year"])
    assert only_year[0].attributes == {"year": 2020}
    info = docs.describe()
    assert (info.dimension, info.metric, info.id_type) == (3, "cosine", "u64")
    assert [a.name for a in info.attributes] == ["year", "title"]
    assert info.stats["rows"] == 3


def test_vectors_come_back_as_numpy_with_every_bit(client, name):
    c = client.create_collection(name, dimension=4, metric="l2")
    rng = np.random.default_rng(7)
    vectors = rng.standard_normal((50, 4)).astype(np.float32)
    c.upsert(np.arange(50, dtype=np.uint64), vectors)
    hit = c.query(vectors[17], top_k=1, include_vector=True)[0]
    assert hit.id == 17 and hit.distance == 0.0
    assert hit.vector.dtype == np.float32
    assert np.array_equal(hit.vector, vectors[17])
    row = c.get(17)
    assert np.array_equal(row.vector, vectors[17])
    assert c.get(10_000) is None
    # float64 input is sent as float32
    c.upsert_rows([{"id": 99, "vector": [0.1, 0.2, 0.3, 0.4]}])
    assert np.array_equal(c.get(99).vector, np.array([0.1, 0.2, 0.3, 0.4], dtype=np.float32))


def test_consistency_levels_and_deletes(client, name):
    c = client.create_collection(name, dimension=2, metric="l2")
    w = c.upsert([1, 2], [[0, 0], [1, 1]])
    assert c.query([0, 0], top_k=5, consistency="eventual").ids == []
    assert c.query([0, 0], top_k=5, consistency=w.lsn).ids == [1, 2]
    flushed = c.flush()
    assert flushed.rows_flushed == 2
    assert c.query([0, 0], top_k=5, consistency="eventual").ids == [1, 2]
    d = c.delete([1])
    assert c.query([0, 0], top_k=5, consistency=d).ids == [2]
    d = c.delete(filter="id >= 0")
    assert (d.rows, c.query([0, 0], top_k=5).ids) == (1, [])
    with pytest.raises(ValueError):
        c.query([0, 0], consistency="sometimes")
    with pytest.raises(ValueError):
        c.delete()


def test_scan_pages_through_every_match(client, name):
    c = client.create_collection(name, dimension=2, metric="l2", id_type="string",
                                 attributes={"n": "i64"})
    ids = [f"doc-{i:03}" for i in range(25)]
    c.upsert(ids, np.ones((25, 2)), {"n": list(range(25))})
    got = [r.id for r in c.scan("n >= 5", page_size=7)]
    assert got == ids[5:]
    assert c.get("doc-007").attributes == {"n": 7}


def test_errors_carry_status_kind_and_field(client, name):
    c = client.create_collection(name, dimension=3, metric="l2", attributes={"year": "i64"})
    with pytest.raises(floe.BadRequestError) as e:
        c.upsert([1], [[1, 2]])
    assert (e.value.status, e.value.kind, e.value.field) == (400, "bad_request", "columns.vectors")
    with pytest.raises(floe.BadRequestError) as e:
        c.upsert([1, 2], [[1, 2, 3], [1, np.nan, 3]])
    assert e.value.field == "columns.vectors[1][1]"
    with pytest.raises(floe.BadRequestError) as e:
        c.upsert([1], [[1, 2, 3]], {"year": ["nope"]})
    assert e.value.field == "columns.attributes.year[0]"
    with pytest.raises(floe.BadRequestError) as e:
        c.query([1, 2, 3], filter="colour == 'red'")
    assert e.value.field == "filter"
    with pytest.raises(floe.NotFoundError):
        client.collection(name + "-missing").query([1, 2, 3])
    with pytest.raises(floe.ConflictError):
        client.create_collection(name, dimension=4, metric="l2")
    # The same request_id with another body is refused, not written.
    c.upsert([5], [[1, 1, 1]], request_id="fixed-id")
    with pytest.raises(floe.ConflictError):
        c.upsert([6], [[1, 1, 1]], request_id="fixed-id")
    assert c.get(6) is None
    assert "400" in str(floe.BadRequestError("x", status=400, field="f"))
    with pytest.raises(ValueError):
        c.upsert([1, 2], [[1, 2, 3]])


class LoseFirstAnswer(httpx.BaseTransport):
    """Forwards requests to the server, but drops the answer of the first
    write: the write landed, the client saw a broken connection."""

    def __init__(self):
        self.inner = httpx.HTTPTransport()
        self.lost = 0
        self.bodies = []

    def handle_request(self, request):
        response = self.inner.handle_request(request)
        if request.url.path.endswith("/upsert"):
            self.bodies.append(request.content)
            if self.lost == 0:
                response.read()
                self.lost += 1
                raise httpx.ReadError("connection reset after the write", request=request)
        return response


def test_a_retried_write_reuses_its_request_id_and_lands_once(url, name):
    transport = LoseFirstAnswer()
    with floe.Client(url, transport=transport, backoff=0.01) as client:
        c = client.create_collection(name, dimension=2, metric="l2")
        w = c.upsert([1], [[1, 2]])
        assert transport.lost == 1
        assert len(transport.bodies) == 2 and transport.bodies[0] == transport.bodies[1]
        assert w.duplicate, "the retry found the first attempt's write"
        assert c.describe().stats["log_lsn"] == w.lsn
        assert c.query([1, 2], top_k=5).ids == [1]


def test_unreachable_server_raises_after_retries(name):
    with floe.Client("http://127.0.0.1:9", max_retries=2, backoff=0.01) as client:
        with pytest.raises(floe.FloeConnectionError):
            client.list_collections()


def test_upsert_many_batches_and_reports_progress(client, name):
    c = client.create_collection(name, dimension=64, metric="ip", attributes={"tag": "string"})
    n = 3000
    vectors = np.random.default_rng(1).standard_normal((n, 64)).astype(np.float32)
    seen = []
    result = c.upsert_many(np.arange(n), vectors, {"tag": [f"t{i % 7}" for i in range(n)]},
                           max_request_bytes=100_000, on_progress=seen.append)
    assert result.rows == n and sum(seen) == n
    assert result.batches == len(seen) > 5
    assert c.describe().stats["rows"] == n
    hit = c.query(vectors[2345], top_k=1, include_vector=True, consistency=result.lsn)[0]
    assert hit.id == 2345 and np.array_equal(hit.vector, vectors[2345])
    assert hit.attributes == {"tag": f"t{2345 % 7}"}


def test_drop_is_final(client, name):
    c = client.create_collection(name, dimension=2, metric="l2")
    c.upsert([1], [[1, 1]])
    c.drop()
    assert name not in client.list_collections()
    with pytest.raises(floe.NotFoundError):
        c.query([1, 1])


def test_read_modify_write_with_versions_and_patches(client, name):
    c = client.create_collection(name, dimension=2, metric="l2",
                                 attributes={"stock": "i64", "title": "string"})
    first = c.upsert([1], [[1, 2]], {"stock": [5], "title": ["a"]}, if_versions=[0])
    with pytest.raises(floe.ConditionFailedError) as e:
        c.upsert([1], [[3, 4]], if_versions=[0])
    assert (e.value.status, e.value.field) == (409, "columns.if_versions[0]")
    row = c.get(1)
    assert row.version == first.lsn
    # Read, modify, write back only if nobody wrote in between.
    patched = c.patch(1, {"stock": row.attributes["stock"] - 1}, if_version=row.version)
    with pytest.raises(floe.ConditionFailedError):
        c.patch(1, {"stock": 0}, if_version=row.version)
    now = c.get(1)
    assert (now.version, now.attributes) == (patched.lsn, {"stock": 4, "title": "a"})
    assert np.array_equal(now.vector, np.array([1, 2], dtype=np.float32)), "the vector stays"
    with pytest.raises(floe.NotFoundError) as e:
        c.patch(2, {"stock": 1})
    assert e.value.field == "rows[0].id"
    c.patch_rows([{"id": 1, "attributes": {"title": None}}])
    assert c.get(1).attributes == {"stock": 4, "title": None}


def test_export_reports_its_files(client, name):
    c = client.create_collection(name, dimension=2, metric="l2")
    c.upsert(range(5), np.ones((5, 2)))
    report = c.export(f"{name}/snap", rows_per_file=2)
    assert report["rows"] == 5 and len(report["files"]) == 3
    assert report["location"].endswith(f"/exports/{name}/snap")
    with pytest.raises(floe.ConflictError):
        c.export(f"{name}/snap")


def test_bulk_import_of_an_export_and_added_attributes(client, name):
    src = client.create_collection(name, dimension=2, metric="l2", attributes={"year": "i64"})
    src.upsert(range(50), np.arange(100, dtype=np.float32).reshape(50, 2),
               {"year": list(range(1990, 2040))})
    src.export(f"{name}/all", rows_per_file=20)
    dst = client.create_collection(name + "-b", dimension=2, metric="l2",
                                   attributes={"year": "i64"})
    done = dst.import_files(f"exports/{name}/all/*.parquet", poll=0.1, timeout=60)
    assert (done.state, done.rows_imported, done.files) == ("done", 50, 3), done
    row = dst.get(49, consistency=done.lsn)
    assert row.version == done.lsn and row.attributes == {"year": 2039}
    np.testing.assert_array_equal(row.vector, np.array([98, 99], dtype=np.float32))
    # Bad sources are refused at once, naming the field.
    with pytest.raises(floe.BadRequestError) as e:
        dst.start_import("uploads/none-*.parquet")
    assert e.value.field == "source"
    with pytest.raises(floe.NotFoundError):
        dst.import_status("no-such-job")
    # A nullable attribute added later: old rows have none.
    info = dst.add_attributes({"color": "string"})
    assert [a.name for a in info.attributes] == ["year", "color"]
    dst.upsert([100], np.array([[0.5, 0.5]]), {"color": ["red"]})
    hits = dst.query(filter="color == 'red'", top_k=10)
    assert [r.id for r in hits] == [100]
    assert dst.get(1).attributes.get("color") is None
    with pytest.raises(floe.BadRequestError) as e:
        dst.add_attributes({"year": "string"})
    assert e.value.field == "attributes[0].type"
