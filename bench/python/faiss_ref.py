"""FAISS reference for floe-bench: IVF-Flat and HNSW on the same data,
queries and ground truth. Prints one JSON object per line."""
import argparse, json, time
import numpy as np
import faiss

from timing import time_queries

p = argparse.ArgumentParser()
p.add_argument("--data", required=True)
p.add_argument("--queries")
p.add_argument("--gt")
p.add_argument("--build-only", action="store_true", help="only build IVF-Flat: time and peak RSS")
p.add_argument("--metric", default="l2")
p.add_argument("--nlist", type=int, required=True)
p.add_argument("--nprobes", default="1,2,4,8,16,32,64")
p.add_argument("--efs", default="16,32,64,128,256")
p.add_argument("--k", type=int, default=10)
a = p.parse_args()

import resource
xb = np.load(a.data).astype(np.float32)
if a.build_only:
    xq = np.zeros((0, xb.shape[1]), dtype=np.float32)
    gt = None
else:
    xq = np.load(a.queries).astype(np.float32)
    gt = np.load(a.gt)
if a.metric == "cosine":
    faiss.normalize_L2(xb); faiss.normalize_L2(xq)
rss_before_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
mt = faiss.METRIC_L2 if a.metric == "l2" else faiss.METRIC_INNER_PRODUCT
d = xb.shape[1]
faiss.omp_set_num_threads(2)

def recall(I):
    return float(np.mean([len(set(I[i][: a.k]) & set(gt[i][: a.k])) / a.k for i in range(len(xq))]))

def measure(index, label, knob, value):
    lat, found = time_queries(index, xq, a.k)
    print(json.dumps({"engine": label, knob: value, "recall": recall(np.array(found)),
                      "p50_ms": lat[len(lat) // 2], "p99_ms": lat[min(len(lat) - 1, int(len(lat) * 0.99))],
                      "qps": 1000.0 / (sum(lat) / len(lat))}), flush=True)

quant = faiss.IndexFlat(d, mt)
ivf = faiss.IndexIVFFlat(quant, d, a.nlist, mt)
t = time.perf_counter()
ivf.train(xb[np.random.default_rng(42).choice(len(xb), min(len(xb), 100_000), replace=False)])
ivf.add(xb)
print(json.dumps({"engine": "faiss-ivf-flat", "build_s": time.perf_counter() - t, "bytes_per_vector": 4 * d + 8,
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "rss_before_build_mb": rss_before_mb}), flush=True)
if a.build_only:
    raise SystemExit(0)
for n in [int(x) for x in a.nprobes.split(",")]:
    ivf.nprobe = n
    measure(ivf, "faiss-ivf-flat", "nprobe", n)

hnsw = faiss.IndexHNSWFlat(d, 32, mt)
hnsw.hnsw.efConstruction = 100
t = time.perf_counter()
hnsw.add(xb)
print(json.dumps({"engine": "faiss-hnsw", "build_s": time.perf_counter() - t, "bytes_per_vector": 4 * d + 32 * 2 * 4}), flush=True)
for ef in [int(x) for x in a.efs.split(",")]:
    hnsw.hnsw.efSearch = ef
    measure(hnsw, "faiss-hnsw", "ef", ef)
