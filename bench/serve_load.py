"""A bounded load test of ``jointspace serve`` on loopback.

Builds (or reuses, with ``--work``) a collection of ``--n`` clustered vectors
owned by a model whose text tower is the pretrained all-MiniLM-L6-v2 (with an
untrained projection: the vectors are synthetic, the query path is real —
tokenise, encode, search, look up items, serialise), starts the server in a
subprocess (``jointspace serve --workers N``, for each N of ``--workers``:
default 1 and 2), then:

1. one client, ``--sequential`` requests one after another: the service time;
2. for each of ``--clients`` (default 4 and 32), that many concurrent clients
   (keep-alive connections, one thread each, closed loop) for ``--seconds``,
   each sending at most ``--max-requests``: throughput and latency under load,
   and every error counted. In a closed loop, latency ≈ clients / throughput
   (Little's law) once the server is saturated. The clients run on the same
   cores as the server.

Text queries are drawn from a pool of distinct captions, so no answer is served
from a cache. There is no reference server to run beside it here (clip-retrieval's
back end needs its own model stack); the target is absolute: zero errors, p50
≤ 20 ms for text queries (issue 11).

    python bench/serve_load.py                        # 1,000,000 vectors, 32 clients × 30 s
    python bench/serve_load.py --n 100000 --clients 8 --seconds 10
"""
from __future__ import annotations

import argparse
import http.client
import itertools
import json
import os
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from search import clustered  # noqa: E402

COLOURS = ["red", "green", "blue", "yellow", "purple", "orange", "white", "black"]
SHAPES = ["circle", "square", "triangle", "star", "diamond", "hexagon"]
SIZES = ["small", "big", "tiny", "large", "medium"]
PLACES = ["on the left", "on the right", "at the top", "at the bottom", "in the middle"]


def captions(n: int, seed: int = 0) -> list[str]:
    combos = list(itertools.product(SIZES, COLOURS, SHAPES, PLACES))
    random.Random(seed).shuffle(combos)
    return [f"a {s} {c} {k} {p}" for s, c, k, p in combos[:n]]


def build(work: Path, n: int, dim: int) -> Path:
    from jointspace.config import load_run_config
    from jointspace.index import Collection
    from jointspace.index.catalog import ItemRow
    from jointspace.model import JointModel

    col_dir = work / "collection"
    if (col_dir / "collection.json").is_file():
        return col_dir
    config = load_run_config(overrides=[
        f"model.embed_dim={dim}", "model.towers={image: {name: convnet, options: {widths: [8]}}, "
        "text: {name: minilm, trainable: head}}"]).model
    model_dir = JointModel(config).save(work / "model")
    col = Collection.create(col_dir, model_dir, modalities=["image"])
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(2000, dim))
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    x = clustered(n, dim, centres, rng)
    t = time.perf_counter()
    for s in range(0, n, 20_000):
        col.write([ItemRow(f"v{i}", "bench", "image", "-", {"image": x[i]},
                           label=COLOURS[i % len(COLOURS)], meta={"cluster": int(i % 2000)})
                   for i in range(s, min(n, s + 20_000))])
    col.sync()
    print(f"built {n:,} vectors in {time.perf_counter() - t:.0f} s")
    return col_dir


def encoder_ceiling(model_dir: Path, pool: list[str], batch: int = 32) -> float:
    """Queries/s of the text tower alone at ``batch`` (no HTTP, no search): the most
    any number of concurrent clients can get from this machine."""
    from jointspace import load
    model = load(model_dir)
    model.encode("text", pool[:batch])  # warm-up (the bf16 copy is made here)
    done, t = 0, time.perf_counter()
    while time.perf_counter() - t < 5:
        start = done % (len(pool) - batch)
        model.encode("text", pool[start:start + batch])
        done += batch
    rate = done / (time.perf_counter() - t)
    del model
    return rate


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def request(conn: http.client.HTTPConnection, body: dict) -> tuple[int, float]:
    data = json.dumps(body).encode()
    t = time.perf_counter()
    conn.request("POST", "/search", body=data, headers={"Content-Type": "application/json"})
    response = conn.getresponse()
    payload = response.read()
    elapsed = time.perf_counter() - t
    if response.status == 200 and not json.loads(payload)["hits"]:
        return 599, elapsed  # an empty answer counts as an error
    return response.status, elapsed


def percentiles(latencies: list[float]) -> str:
    ms = np.asarray(latencies) * 1000
    return (f"p50 {np.percentile(ms, 50):.1f} ms, p90 {np.percentile(ms, 90):.1f} ms, "
            f"p99 {np.percentile(ms, 99):.1f} ms, max {ms.max():.1f} ms")


def cpu_seconds(pid: int, children: bool = True) -> float:
    """User + system CPU time so far of a process and (``children``) its live children
    (Linux ``/proc``: a server with workers is their parent)."""
    total = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if stat.parent.name == str(pid) or (children and int(fields[1]) == pid):
            total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def loaded(port: int, pool: list[str], clients: int, args: argparse.Namespace, server_pid: int) -> None:
    """``clients`` closed-loop clients for ``args.seconds``: throughput, latency, errors."""
    results: list[tuple[int, float]] = []
    failures: list[str] = []
    lock = threading.Lock()
    stop = time.monotonic() + args.seconds

    def client(index: int) -> None:
        rng = random.Random(index)
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        mine = []
        for _ in range(args.max_requests):
            if time.monotonic() > stop:
                break
            try:
                mine.append(request(c, {"text": rng.choice(pool), "k": 10}))
            except Exception as e:  # a dropped connection is an error, not a crash
                with lock:
                    failures.append(f"{type(e).__name__}: {e}")
                c = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        with lock:
            results.extend(mine)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    server_cpu, own_cpu = cpu_seconds(server_pid), cpu_seconds(os.getpid(), children=False)
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    server_cpu, own_cpu = cpu_seconds(server_pid) - server_cpu, cpu_seconds(os.getpid(), children=False) - own_cpu
    errors = sum(status != 200 for status, _ in results) + len(failures)
    print(f"{clients} clients × {args.seconds:.0f} s: {len(results)} requests, "
          f"{len(results) / wall:.0f} requests/s, {percentiles([t for _, t in results])}; "
          f"errors {errors}" + (f" (first: {failures[0]})" if failures else ""))
    # the clients share the cores: how much each side used says what bounds the throughput
    n = max(len(results), 1)
    print(f"  CPU per request: server {server_cpu / n * 1000:.2f} ms, clients {own_cpu / n * 1000:.2f} ms; "
          f"cores busy: server {server_cpu / wall:.2f}, clients {own_cpu / wall:.2f} (of {os.cpu_count()})")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--n", type=int, default=1_000_000)
    p.add_argument("--dim", type=int, default=256)
    p.add_argument("--clients", type=int, nargs="+", default=[4, 32],
                   help="concurrent clients of each loaded phase")
    p.add_argument("--seconds", type=float, default=30.0)
    p.add_argument("--max-requests", type=int, default=2000, help="per client (bounds the test)")
    p.add_argument("--sequential", type=int, default=200)
    p.add_argument("--work", type=Path, help="keep the collection here and reuse it")
    p.add_argument("--workers", type=int, nargs="+", default=[1, 2],
                   help="server processes of each run (jointspace serve --workers)")
    args = p.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="bench-serve-"))
    work.mkdir(parents=True, exist_ok=True)
    col_dir = build(work, args.n, args.dim)
    pool = captions(1200)
    ceiling = encoder_ceiling(work / "model", pool)
    print(f"the text tower alone (no HTTP, no search) encodes {ceiling:.0f} queries/s in batches "
          f"of 32: {max(args.clients)} closed-loop clients cannot see a p50 below "
          f"{max(args.clients) / ceiling * 1000:.0f} ms (Little's law) however lean the server")
    try:
        for workers in args.workers:
            run_server(col_dir, pool, workers, args)
    finally:
        if not args.work:
            shutil.rmtree(work, ignore_errors=True)


def run_server(col_dir: Path, pool: list[str], workers: int, args: argparse.Namespace) -> None:
    """Start ``jointspace serve --workers N``, measure it alone, then under each load."""
    port = free_port()
    print(f"\n== jointspace serve --workers {workers}")
    server = subprocess.Popen([sys.executable, "-m", "jointspace.cli", "serve", "--collection",
                               str(col_dir), "--port", str(port), "--device", "cpu",
                               "--workers", str(workers)],
                              env={**os.environ, "JOINTSPACE_QUIET": "1"},
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 300
        while True:
            try:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
                conn.request("GET", "/healthz")
                if conn.getresponse().status == 200:
                    break
            except OSError:
                pass
            if server.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"server did not start: {server.stderr.read()}")
            time.sleep(0.5)
        for i in range(4 * workers):  # warm up every worker (fresh connections spread over them)
            request(http.client.HTTPConnection("127.0.0.1", port, timeout=60), {"text": pool[i], "k": 10})
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        seq = [request(conn, {"text": pool[i % len(pool)], "k": 10}) for i in range(args.sequential)]
        seq_errors = sum(status != 200 for status, _ in seq)
        print(f"1 client, {len(seq)} requests: {percentiles([t for _, t in seq])}; errors {seq_errors}")

        for clients in args.clients:
            loaded(port, pool, clients, args, server.pid)
        health = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        health.request("GET", "/healthz")
        print(f"healthz after the load: {health.getresponse().status}")
    finally:
        server.terminate()
        server.wait(timeout=60)

if __name__ == "__main__":
    main()
