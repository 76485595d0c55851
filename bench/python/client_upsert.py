"""Upsert throughput of the Python client (Collection.upsert_many) against a
running server: python client_upsert.py [URL] (default http://127.0.0.1:7700),
with the client installed (clients/python/venv.sh prints a python that has it)."""

import sys
import time

import numpy as np

import floe

url = sys.argv[1] if len(sys.argv) > 1 else "http://127.0.0.1:7700"
n, dim = 300_000, 128
vectors = np.random.default_rng(1).standard_normal((n, dim)).astype(np.float32)
with floe.Client(url) as client:
    c = client.create_collection(f"client-bench-{int(time.time())}", dimension=dim, metric="l2")
    start = time.perf_counter()
    result = c.upsert_many(np.arange(n), vectors)
    seconds = time.perf_counter() - start
    print(f"upsert_many: {n} x {dim}-d in {seconds:.2f} s = {n / seconds:.0f} vectors/s, "
          f"{result.batches} requests")
    c.drop()
