"""Exact-search reference for `floe-bench exact`: plain numpy brute force
(one BLAS matrix-vector product per query, then argpartition) and FAISS
IndexFlat, one thread each, on the same data and queries. Prints one JSON
object per line."""
import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")
import argparse, json, time
import numpy as np
import faiss

p = argparse.ArgumentParser()
p.add_argument("--data", required=True)
p.add_argument("--queries", required=True)
p.add_argument("--gt", required=True)
p.add_argument("--k", type=int, default=10)
a = p.parse_args()

xb = np.load(a.data).astype(np.float32)
xq = np.load(a.queries).astype(np.float32)
gt = np.load(a.gt)
faiss.omp_set_num_threads(1)


def report(label, search):
    lat, found = [], []
    for q in xq:
        t = time.perf_counter()
        ids = search(q)
        lat.append((time.perf_counter() - t) * 1000)
        found.append(ids)
    lat.sort()
    recall = float(np.mean([len(set(f[: a.k]) & set(g[: a.k])) / a.k for f, g in zip(found, gt)]))
    print(json.dumps({"engine": label, "recall": recall, "p50_ms": lat[len(lat) // 2],
                      "p99_ms": lat[min(len(lat) - 1, int(len(lat) * 0.99))]}), flush=True)


# L2 through the norm expansion, as a numpy server would write it.
norms = (xb * xb).sum(axis=1)


def numpy_search(q):
    d = norms - 2.0 * (xb @ q)
    top = np.argpartition(d, a.k)[: a.k]
    return top[np.argsort(d[top])]


report("numpy", numpy_search)
flat = faiss.IndexFlatL2(xb.shape[1])
flat.add(xb)
report("faiss-flat", lambda q: flat.search(q[None, :], a.k)[1][0])
