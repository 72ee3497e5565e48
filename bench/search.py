"""Vector search at scale: a jointspace collection against raw faiss and exact search.

One run, one process per measured query engine for memory, the same data for all:

* data: ``--n`` vectors of ``--dim`` dims clustered like real embeddings (unit
  centres plus Gaussian noise of norm ≈ 1.4, normalised; BASELINES.md's recipe),
  and ``--queries`` held-out vectors drawn the same way;
* jointspace: ingest through ``Collection.write`` (catalog + vectors, in batches
  of 20,000), then ``sync`` (the automatic IVF build and the index write);
  bytes per vector on disk; queries through the Python API, one at a time
  with items looked up (``Collection.search``; a first pass reads the
  catalog's pages from disk, the second, reported, finds them cached) and ids
  only (``search_vectors``), and batched (``search_vectors``);
* raw faiss: ``IndexIVFFlat`` with the same lists, training sample and nprobe,
  built and queried directly (single and batched);
* exact: ``IndexFlatIP``, the ground truth for recall@10 (its speed reported too).

Targets (issue 11): recall@10 ≥ 0.95, queries/s through the Python API ≥ 0.8×
raw faiss, build of 1M ≤ 5 minutes on 2 cores.

    python bench/search.py                       # 1,000,000 × 256
    python bench/search.py --n 200000 --nprobe 16 64
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np



def clustered(n: int, dim: int, centres: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    out = np.empty((n, dim), np.float32)
    for s in range(0, n, 100_000):
        m = min(100_000, n - s)
        x = centres[rng.integers(0, len(centres), m)] + rng.normal(size=(m, dim)) * (1.4 / np.sqrt(dim))
        out[s:s + m] = x / np.linalg.norm(x, axis=1, keepdims=True)
    return out


def recall_at(found: np.ndarray, truth: np.ndarray, k: int = 10) -> float:
    return float(np.mean([len(set(a[:k]) & set(b[:k])) / k for a, b in zip(found, truth)]))


def model_folder(dim: int, out: Path) -> Path:
    """A model whose only use here is to own the collection (queries are vectors)."""
    from jointspace.config import load_run_config
    from jointspace.model import JointModel

    config = load_run_config(overrides=[f"model.embed_dim={dim}", "model.towers={image: {name: "
                                        "convnet, options: {widths: [8]}, trainable: none}}"]).model
    return JointModel(config).save(out / "model")


def folder_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


QUERY_PROCESS = """
import json, sys, time, numpy as np
sys.path.insert(0, {bench!r})
from _machine import rss_now
from jointspace.index import Collection
q = np.load({queries!r})
base = rss_now()
col = Collection.open({col!r})
store = col.store("image")
col.search_vectors(q[:5], 10, nprobe={nprobe})
loaded = rss_now()
rounds = []
for _ in range(2):  # the first pass reads the catalog's pages from disk; the second is warm
    t = time.perf_counter()
    for v in q:
        hits = col.search(vector=v, k=10, nprobe={nprobe})
    rounds.append(time.perf_counter() - t)
cold, single = rounds
t = time.perf_counter()
for v in q:
    col.search_vectors(v, 10, nprobe={nprobe})
single_ids = time.perf_counter() - t
t = time.perf_counter()
scores, ids = col.search_vectors(q, 10, nprobe={nprobe})
batch = time.perf_counter() - t
np.save({ids_out!r}, ids)
print(json.dumps({{"single_qps": len(q) / single, "single_cold_qps": len(q) / cold,
                  "single_ids_qps": len(q) / single_ids,
                  "batch_qps": len(q) / batch,
                  "open_rss": loaded - base, "kind": store.kind}}))
"""


def jointspace_queries(col: Path, queries_file: Path, nprobe: int, work: Path) -> dict:
    ids_out = work / f"js-ids-{nprobe}.npy"
    code = QUERY_PROCESS.format(bench=str(Path(__file__).resolve().parent), queries=str(queries_file),
                                col=str(col), nprobe=nprobe, ids_out=str(ids_out))
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env={**os.environ, "JOINTSPACE_QUIET": "1"})
    if proc.returncode:
        raise SystemExit(proc.stderr)
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    result["ids"] = np.load(ids_out)
    return result


def main() -> None:
    from jointspace.index.faiss_store import FaissStore, default_lists

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--n", type=int, default=1_000_000)
    p.add_argument("--dim", type=int, default=256)
    p.add_argument("--centres", type=int, default=2000)
    p.add_argument("--queries", type=int, default=1000)
    p.add_argument("--nprobe", type=int, nargs="+", help="default: jointspace's default")
    p.add_argument("--work", type=Path, help="folder for the collection (default: a temporary one)")
    p.add_argument("--out", type=Path, help="write the results as JSON here")
    args = p.parse_args()

    import faiss

    default_nprobe = FaissStore.__init__.__kwdefaults__["nprobe"]
    nprobes = args.nprobe or [default_nprobe]
    lists = default_lists(args.n)
    work = args.work or Path(tempfile.mkdtemp(prefix="bench-search-"))
    work.mkdir(parents=True, exist_ok=True)
    print(f"{args.n:,} vectors × {args.dim}, {args.centres} clusters, {args.queries} queries, "
          f"IVF {lists} lists, nprobe {nprobes}, faiss {faiss.__version__}, "
          f"{faiss.omp_get_max_threads()} threads; work in {work}")
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(args.centres, args.dim))
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    x = clustered(args.n, args.dim, centres, rng)
    q = clustered(args.queries, args.dim, centres, rng)
    np.save(work / "queries.npy", q)
    results: dict = {"n": args.n, "dim": args.dim, "lists": lists, "queries": args.queries}

    # -- exact ground truth ---------------------------------------------------------
    flat = faiss.IndexFlatIP(args.dim)
    flat.add(x)
    t = time.perf_counter()
    _, truth = flat.search(q, 10)
    results["exact"] = {"batch_qps": len(q) / (time.perf_counter() - t), "recall@10": 1.0}
    del flat

    # -- jointspace -----------------------------------------------------------------
    from jointspace.index import Collection
    from jointspace.index.catalog import ItemRow

    col_dir = work / "collection"
    shutil.rmtree(col_dir, ignore_errors=True)
    col = Collection.create(col_dir, model_folder(args.dim, work), modalities=["image"])
    t = time.perf_counter()
    for s in range(0, args.n, 20_000):
        col.write([ItemRow(f"v{i}", "bench", "image", "-", {"image": x[i]}, meta={"cluster": 0})
                   for i in range(s, min(args.n, s + 20_000))])
    ingest = time.perf_counter() - t
    t = time.perf_counter()
    col.sync()
    build = time.perf_counter() - t
    disk = folder_bytes(col_dir)
    kind = col.store("image").kind
    del col
    js = {"ingest_per_s": args.n / ingest, "ingest_s": ingest, "build_s": build,
          "disk_bytes_per_vector": disk / args.n, "index_kind": kind}
    print(f"jointspace: ingest {args.n / ingest:,.0f} vectors/s ({ingest:.0f} s), build "
          f"{build:.0f} s ({kind}), {disk / args.n:,.0f} bytes/vector on disk")
    for nprobe in nprobes:
        r = jointspace_queries(col_dir, work / "queries.npy", nprobe, work)
        # catalog ids start at 1 in insertion order: id - 1 is the row of x
        r["recall@10"] = recall_at(r.pop("ids") - 1, truth)
        r["memory_bytes_per_vector"] = r.pop("open_rss") / args.n
        js[f"nprobe={nprobe}"] = r
    results["jointspace"] = js

    # -- raw faiss IVF, same parameters ---------------------------------------------
    t = time.perf_counter()
    ivf = faiss.IndexIVFFlat(faiss.IndexFlatIP(args.dim), args.dim, lists, faiss.METRIC_INNER_PRODUCT)
    sample = min(args.n, lists * 40)
    ivf.train(x[np.sort(np.random.default_rng(0).choice(args.n, sample, replace=False))])
    ivf.add(x)
    raw = {"build_s": time.perf_counter() - t}
    for nprobe in nprobes:
        ivf.nprobe = nprobe
        passes = []
        for _ in range(2):  # as for jointspace: the second pass counts
            t = time.perf_counter()
            for v in q:
                ivf.search(v[None, :], 10)
            passes.append(time.perf_counter() - t)
        single = len(q) / passes[-1]
        t = time.perf_counter()
        _, found = ivf.search(q, 10)
        raw[f"nprobe={nprobe}"] = {"single_qps": single, "batch_qps": len(q) / (time.perf_counter() - t),
                                   "recall@10": recall_at(found, truth)}
    results["faiss_ivf"] = raw

    print(f"\n{'engine':<28} {'recall@10':>9} {'q/s 1+items':>11} {'q/s 1':>8} {'q/s batch':>10} "
          f"{'build s':>8}")
    print(f"{'exact (faiss IndexFlatIP)':<28} {1.0:9.3f} {'':>11} {'':>8} "
          f"{results['exact']['batch_qps']:10.0f}")
    for nprobe in nprobes:
        a, b = js[f"nprobe={nprobe}"], raw[f"nprobe={nprobe}"]
        print(f"{'jointspace nprobe=' + str(nprobe):<28} {a['recall@10']:9.3f} {a['single_qps']:11.0f} "
              f"{a['single_ids_qps']:8.0f} {a['batch_qps']:10.0f} {js['build_s']:8.0f}")
        print(f"{'faiss IVFFlat nprobe=' + str(nprobe):<28} {b['recall@10']:9.3f} {'':>11} "
              f"{b['single_qps']:8.0f} {b['batch_qps']:10.0f} {raw['build_s']:8.0f}")
        print(f"  ratio jointspace/faiss: one query with item lookup {a['single_qps'] / b['single_qps']:.2f}× "
              f"(first, cold pass {a['single_cold_qps'] / b['single_qps']:.2f}×; ids only "
              f"{a['single_ids_qps'] / b['single_qps']:.2f}×), batch {a['batch_qps'] / b['batch_qps']:.2f}×")
    print(f"memory of a query process holding the collection: "
          f"{js[f'nprobe={nprobes[0]}']['memory_bytes_per_vector']:,.0f} bytes/vector (the vectors "
          f"alone: {4 * args.dim:,}); on disk {js['disk_bytes_per_vector']:,.0f} (catalog + index)")
    if args.out:
        args.out.write_text(json.dumps(results, indent=2))
    if not args.work:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
