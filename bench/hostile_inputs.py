"""Hostile inputs to a live server on loopback, while another client queries (issue 20 §1).

Builds a small collection (``--n`` random audio vectors of an untrained model with a
text and an audio tower: the query path is real — decode, resample, tokenise, encode,
filter, search), starts ``jointspace serve`` in a subprocess, then:

1. **idle**: one client sends text queries in a closed loop for ``--seconds``: its
   median latency alone;
2. **hostile**: the same client keeps querying while a second one sends each hostile
   input ``--repeats`` times, one after another (bodies encoded beforehand):

   * a 244-byte WAV whose header says 655,331 Hz (refused: 400),
   * 96-sample WAVs at 44,101 Hz and 383,999 Hz, and 5 s and 10 s at 383,999 Hz
     (3.8 MB, 7.7 MB), the 10 s one also as a ``/search/upload`` file,
   * a 2 MB query text (413),
   * a filter on ``path`` (400: the server does not tell which paths it indexed),
   * ``where`` lists of 10,000 labels (the most a request may hold: 200), 10,001 (413,
     before its values are validated) and 1.3 M labels (14 MB: 413, before it is parsed),
   * a ``/search/upload`` ``where`` form field of 100,000 ``[`` (400; it was a 500).

Reported: each hostile input's status and slowest answer, the server's RSS
growth (``/proc/<pid>/status`` VmRSS after − before) and peak (VmHWM, reset
before the hostile phase where the kernel allows), and the querying client's
median latency during the hostile phase against its idle one. The targets: each
hostile answer < 0.5 s, RSS growth < 100 MB, the other client's median within 2×.
The clients run on the cores the server uses.

    python bench/hostile_inputs.py
    python bench/hostile_inputs.py --n 20000 --seconds 5 --repeats 5

``tests/serve/test_hostile_inputs.py`` runs the same code and checks the status codes
and the RSS bound (timings are this script's job).
"""
from __future__ import annotations

import argparse
import base64
import http.client
import io
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

LABELS = ["red", "green", "blue", "yellow", "purple", "orange", "white", "black"]
QUERIES = ["a red tone", "a low hum", "a high whistle", "a loud beep", "a soft chime"]


def build(work: Path, n: int = 2000, dim: int = 32) -> Path:
    """A collection of ``n`` random audio vectors (labels, a metadata key, server paths),
    made by an untrained model with a text tower and an audio tower."""
    import torch

    from jointspace.config import ModelConfig, PairSpec, TowerSpec
    from jointspace.index import Collection
    from jointspace.index.catalog import ItemRow
    from jointspace.model import JointModel

    col_dir = work / "collection"
    if (col_dir / "collection.json").is_file():
        return col_dir
    config = ModelConfig(embed_dim=dim, towers={
        "text": TowerSpec("transformer", {"vocab_size": 300, "width": 32, "layers": 1, "heads": 2}),
        "audio": TowerSpec("audio_conv", {"widths": [8, 16], "layers": 1, "heads": 2, "n_mels": 32,
                                          "clip_seconds": 1.0})},
        pairs=[PairSpec("text", "audio")])
    torch.manual_seed(0)
    model = JointModel(config)
    model.towers["text"].prepare(QUERIES * 4 + [f"a {c} sound" for c in LABELS])
    model_dir = model.save(work / "model")
    col = Collection.create(col_dir, model_dir, modalities=["audio"], store="exact")
    x = np.random.default_rng(0).normal(size=(n, dim)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    col.write([ItemRow(f"/srv/sounds/{i}.wav", "/srv/sounds", "audio", f"h{i}", {"audio": x[i]},
                       path=f"/srv/sounds/{i}.wav", label=LABELS[i % len(LABELS)], meta={"n": i})
               for i in range(n)])
    col.sync()
    return col_dir


def wav(rate: int, samples: int, hz: float = 300.0) -> bytes:
    import soundfile

    t = np.arange(samples) / rate
    buf = io.BytesIO()
    soundfile.write(buf, (0.3 * np.sin(2 * np.pi * hz * t)).astype(np.float32), rate,
                    format="WAV", subtype="PCM_16")
    return buf.getvalue()


@dataclass(frozen=True)
class Request:
    """A POST request's route, body and content type (encoded before it is sent)."""

    path: str
    body: bytes
    content_type: str = "application/json"


def as_json(body: dict) -> Request:
    return Request("/search", json.dumps(body).encode())


def as_form(fields: dict[str, str], file: bytes | None = None) -> Request:
    """A ``/search/upload`` multipart form (``curl -F``), the file named q.wav."""
    boundary = "jointspace-bench-boundary"
    parts = [f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode()
             for name, value in fields.items()]
    if file is not None:
        parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="q.wav"\r\n'
                     "Content-Type: application/octet-stream\r\n\r\n".encode() + file + b"\r\n")
    return Request("/search/upload", b"".join(parts) + f"--{boundary}--\r\n".encode(),
                   f"multipart/form-data; boundary={boundary}")


def hostile_inputs() -> list[tuple[str, Request, int]]:
    """``(what, request, expected status)`` of each hostile input."""
    def audio(data: bytes) -> Request:
        return as_json({"audio": base64.b64encode(data).decode(), "k": 5})
    header = wav(655_331, 100)
    ten = wav(383_999, 10 * 383_999)
    labels = [f"label-{i}" for i in range(9_999)] + ["red"]
    many = [str(i) for i in range(1_300_000)]
    return [
        (f"WAV header 655,331 Hz ({len(header)} B)", audio(header), 400),
        ("WAV 44,101 Hz, 96 samples", audio(wav(44_101, 96)), 200),
        ("WAV 383,999 Hz, 96 samples", audio(wav(383_999, 96)), 200),
        ("WAV 383,999 Hz, 5 s (3.8 MB)", audio(wav(383_999, 5 * 383_999)), 200),
        ("WAV 383,999 Hz, 10 s (7.7 MB)", audio(ten), 200),
        ("upload: WAV 383,999 Hz, 10 s", as_form({"k": "5"}, ten), 200),
        ("query text of 2 MB", as_json({"text": "a red tone " * 190_651, "k": 5}), 413),
        ("filter on path", as_json({"text": "a red tone", "where": {"path": "/srv/sounds/1.wav"}}), 400),
        ("where list of 10,000 labels", as_json({"text": "a red tone", "k": 5, "where": {"label": labels}}), 200),
        ("where list of 10,001 labels", as_json({"text": "a red tone", "k": 5,
                                                 "where": {"label": labels + ["blue"]}}), 413),
        ("where list of 1.3 M labels (14 MB)", as_json({"text": "a red tone", "k": 5, "where": {"label": many}}),
         413),
        ("upload: where of 100,000 '['", as_form({"text": "a red tone", "where": "[" * 100_000}), 400),
    ]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def memory(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM of a process, bytes."""
    found = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            found[name] = int(value.split()[0]) * 1024
    return found


def reset_peak(pid: int) -> bool:
    """Reset a process's VmHWM to its VmRSS (Linux ≥ 4.0, a process of this user)."""
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
        return True
    except OSError:
        return False


class Server:
    """``jointspace serve`` on a free loopback port, in a subprocess (its own pid)."""

    def __init__(self, col_dir: Path, threads: int | None = None) -> None:
        self.port = free_port()
        env = {**os.environ, "JOINTSPACE_QUIET": "1"}
        env.pop("JOINTSPACE_API_KEY", None)
        command = [sys.executable, "-m", "jointspace.cli", "serve", "--collection", str(col_dir),
                   "--port", str(self.port), "--device", "cpu"]
        if threads:
            command += ["--threads", str(threads)]
        self.process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL,
                                        stderr=subprocess.PIPE, text=True)
        self.pid = self.process.pid

    def wait_ready(self, timeout: float = 180) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
                conn.request("GET", "/healthz")
                response = conn.getresponse()
                if response.status == 200 and json.loads(response.read()).get("ready", True):
                    return
            except OSError:
                pass
            if self.process.poll() is not None:
                raise RuntimeError(f"the server exited: {self.process.stderr.read()}")
            if time.monotonic() > deadline:
                raise RuntimeError("the server did not start")
            time.sleep(0.3)

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def __enter__(self) -> "Server":
        try:
            self.wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()


def post(conn: http.client.HTTPConnection, body: bytes | Request) -> tuple[int, float, bytes]:
    request = body if isinstance(body, Request) else Request("/search", body)
    t = time.perf_counter()
    conn.request("POST", request.path, body=request.body, headers={"Content-Type": request.content_type})
    response = conn.getresponse()
    payload = response.read()
    return response.status, time.perf_counter() - t, payload


def cpu_seconds(pid: int) -> float:
    """User + system CPU time so far of a process (Linux ``/proc``)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass
class Answer:
    """One hostile input's answers: alone, then while the other client queries."""

    what: str
    expected: int
    statuses: set[int] = field(default_factory=set)
    alone: list[float] = field(default_factory=list)      # seconds
    cpu: list[float] = field(default_factory=list)        # server CPU seconds, alone
    beside: list[float] = field(default_factory=list)     # seconds, with the other client
    rss: int = 0                                          # server VmRSS after it (bytes)
    detail: str = ""


@dataclass
class Figures:
    answers: list[Answer] = field(default_factory=list)
    idle: list[tuple[int, float]] = field(default_factory=list)   # (status, s) of the other client
    during: list[tuple[int, float]] = field(default_factory=list)
    rss_before: int = 0
    rss_after: int = 0
    peak: int | None = None  # VmHWM at the end, if it could be reset before the hostile inputs
    load: tuple[float, float] = (0.0, 0.0)  # 1-minute load average at the start and the end


def measure(server: Server, seconds: float = 3.0, repeats: int = 3) -> Figures:
    """Three phases: the other client alone; each hostile input alone (latency, server CPU,
    RSS); the hostile inputs again while the other client queries."""
    figures = Figures(load=(os.getloadavg()[0], 0.0))
    inputs = [(Answer(what, expected), request) for what, request, expected in hostile_inputs()]
    figures.answers = [answer for answer, _ in inputs]
    other = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
    queries = [json.dumps({"text": q, "k": 10}).encode() for q in QUERIES]
    for body in queries:  # no audio query first: the server's warm-up (it was ready before
        post(other, body)  # this began) must have loaded the decoding of a 44.1 kHz WAV
    stop = time.monotonic() + seconds
    while time.monotonic() < stop:
        status, took, _ = post(other, queries[len(figures.idle) % len(queries)])
        figures.idle.append((status, took))

    figures.rss_before = memory(server.pid)["VmRSS"]
    peak_known = reset_peak(server.pid)
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
    for answer, body in inputs:
        for _ in range(repeats):
            cpu = cpu_seconds(server.pid)
            status, took, payload = post(conn, body)
            answer.cpu.append(cpu_seconds(server.pid) - cpu)
            answer.alone.append(took)
            answer.statuses.add(status)
            if status != 200 and not answer.detail:
                answer.detail = str(json.loads(payload).get("detail", ""))
        answer.rss = memory(server.pid)["VmRSS"]

    done = threading.Event()

    def querying() -> None:
        c = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
        while not done.is_set():
            status, took, _ = post(c, queries[len(figures.during) % len(queries)])
            figures.during.append((status, took))

    loop = threading.Thread(target=querying)
    loop.start()
    try:
        time.sleep(0.2)  # the loop is running before the first hostile request
        for answer, body in inputs:
            for _ in range(repeats):
                status, took, _ = post(conn, body)
                answer.beside.append(took)
                answer.statuses.add(status)
        time.sleep(0.2)
    finally:
        done.set()
        loop.join()
    after = memory(server.pid)
    figures.rss_after = after["VmRSS"]
    figures.peak = after["VmHWM"] if peak_known else None
    figures.load = (figures.load[0], os.getloadavg()[0])
    return figures


def report(figures: Figures) -> bool:
    """Print the figures; True if every target holds."""
    ok = True
    mb = 2**20
    print(f"{'hostile input':36} {'status':>9} {'alone':>13} {'CPU':>6} {'beside':>13} {'RSS':>7}  detail")
    for a in figures.answers:
        status = a.statuses.pop() if len(a.statuses) == 1 else -1
        good = status == a.expected and max(a.alone + a.beside) < 0.5
        ok &= good
        ms = lambda ts: f"{statistics.median(ts) * 1000:5.0f} /{max(ts) * 1000:5.0f}"  # noqa: E731
        print(f"{a.what:36} {status:>3} ({a.expected}) {ms(a.alone)} {max(a.cpu) * 1000:5.0f} "
              f"{ms(a.beside)} {a.rss / mb:5.0f}MB  {a.detail[:60]}" + ("" if good else "  <-- FAIL"))
    growth = (figures.rss_after - figures.rss_before) / mb
    peak = None if figures.peak is None else (figures.peak - figures.rss_before) / mb
    ok &= growth < 100 and (peak is None or peak < 100)
    print(f"server RSS: {figures.rss_before / mb:.0f} MB before, {figures.rss_after / mb:.0f} MB after "
          f"(growth {growth:+.1f} MB" + ("" if peak is None else f", peak {peak:+.1f} MB")
          + "; target < 100 MB)")
    idle = statistics.median(t for _, t in figures.idle) * 1000
    during = statistics.median(t for _, t in figures.during) * 1000
    errors = sum(s != 200 for s, _ in figures.idle + figures.during)
    ok &= during < 2 * idle and errors == 0
    print(f"other client: median {idle:.1f} ms idle ({len(figures.idle)} queries), {during:.1f} ms "
          f"beside the hostile inputs ({len(figures.during)} queries): {during / idle:.2f}× "
          f"(target < 2×); errors {errors}")
    print(f"load average (1 min): {figures.load[0]:.1f} at the start, {figures.load[1]:.1f} at the end "
          f"({os.cpu_count()} cores)")
    return ok


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--n", type=int, default=2000, help="items in the collection")
    p.add_argument("--seconds", type=float, default=3.0, help="of the idle phase")
    p.add_argument("--repeats", type=int, default=3, help="of each hostile input")
    p.add_argument("--threads", type=int, default=1,
                   help="the server's math threads (default 1: the clients share its cores, and "
                        "two spinning math threads on two busy cores slow every query)")
    p.add_argument("--work", type=Path, help="keep the collection here and reuse it")
    args = p.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="bench-hostile-"))
    col_dir = build(work, args.n)
    with Server(col_dir, args.threads) as server:
        figures = measure(server, args.seconds, args.repeats)
    print(f"{args.n} items; each hostile input sent {args.repeats}× alone, then {args.repeats}× "
          "beside the other client. alone, beside: median / slowest answer (ms); CPU: the "
          "server's CPU time for the costliest answer alone (ms); RSS: the server's after it")
    sys.exit(0 if report(figures) else 1)


if __name__ == "__main__":
    main()
