"""Quantizers head to head in one run: SQ8 (Floe's codes: one min/max per
dimension, not by residual) against RaBitQ at 1, 2 and 4 bits per dimension
(FAISS's IndexIVFRaBitQ, extended RaBitQ above 1 bit), on the same IVF
clusters, each followed by a full-precision re-rank of the best candidates
as Floe does (IndexRefineFlat). Recall@10, single-thread latency, bytes of
codes per vector and the bytes a cold query reads (the probed clusters'
codes plus the re-ranked vectors). Prints one JSON object per line."""
import argparse, json, time
import numpy as np
import faiss

from timing import time_queries

p = argparse.ArgumentParser()
p.add_argument("--data", required=True, help=".npy of vectors; the last --queries rows are held out")
p.add_argument("--queries", type=int, default=200)
p.add_argument("--metric", default="cosine")
p.add_argument("--nprobes", default="8,16,24,32,48,64")
p.add_argument("--rerank", default="100,200,400", help="candidates re-ranked (Floe's default is 100 for top 10)")
p.add_argument("--bits", default="1,2,4")
p.add_argument("--k", type=int, default=10)
a = p.parse_args()

x = np.load(a.data).astype(np.float32)
xb, xq = x[: -a.queries].copy(), x[-a.queries :].copy()
if a.metric == "cosine":
    faiss.normalize_L2(xb)
    faiss.normalize_L2(xq)
mt = faiss.METRIC_L2 if a.metric == "l2" else faiss.METRIC_INNER_PRODUCT
n, d = xb.shape
nlist = int(round(np.sqrt(n)))  # Floe's default
faiss.omp_set_num_threads(2)
flat = faiss.IndexFlat(d, mt)
flat.add(xb)
_, gt = flat.search(xq, a.k)

km = faiss.Kmeans(d, nlist, niter=20, seed=1, spherical=a.metric == "cosine")
km.train(xb)


def ivf(make):
    quant = faiss.IndexFlat(d, mt)
    quant.add(km.centroids)  # the same clusters for every quantizer
    index = make(quant)
    t = time.perf_counter()
    index.train(xb)
    index.add(xb)
    return index, quant, time.perf_counter() - t


def measure(label, index, nprobe, rerank, code_bytes, extra):
    refine = faiss.IndexRefineFlat(index, faiss.swig_ptr(xb))
    refine.k_factor = rerank / a.k
    index.nprobe = nprobe
    lat, found = time_queries(refine, xq, a.k)
    recall = float(np.mean([len(set(f) & set(g)) / a.k for f, g in zip(found, gt)]))
    cold = nprobe * (n / nlist) * code_bytes + rerank * d * 4
    print(json.dumps({"codes": label, "nprobe": nprobe, "rerank": rerank, "recall": round(recall, 4),
                      "p50_ms": round(lat[len(lat) // 2], 3), "p99_ms": round(lat[int(len(lat) * 0.99) - 1], 3),
                      "code_bytes_per_vector": code_bytes, "cold_kb_per_query": round(cold / 1024, 1), **extra}),
          flush=True)


variants = [("sq8", lambda q: faiss.IndexIVFScalarQuantizer(q, d, nlist, faiss.ScalarQuantizer.QT_8bit, mt, False))]
for b in [int(b) for b in a.bits.split(",") if b]:
    variants.append((f"rabitq-{b}bit", lambda q, b=b: faiss.IndexIVFRaBitQ(q, d, nlist, mt, True, b)))
print(json.dumps({"n": n, "d": d, "nlist": nlist, "queries": len(xq), "metric": a.metric}), flush=True)
for label, make in variants:
    index, quant, build_s = ivf(make)
    code_bytes = index.code_size
    for rerank in [int(r) for r in a.rerank.split(",")]:
        for nprobe in [int(v) for v in a.nprobes.split(",")]:
            measure(label, index, nprobe, rerank, code_bytes, {"encode_s": round(build_s, 1)})
