"""One query at a time, one thread (as Floe's sequential loop runs them):
each query's latency in ms, sorted, and the ids found."""
import time

import faiss


def time_queries(index, xq, k):
    lat, found = [], []
    faiss.omp_set_num_threads(1)
    for q in xq:
        t = time.perf_counter()
        _, I = index.search(q[None, :], k)
        lat.append((time.perf_counter() - t) * 1000)
        found.append(I[0])
    faiss.omp_set_num_threads(2)
    lat.sort()
    return lat, found
