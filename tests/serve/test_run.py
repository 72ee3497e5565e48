"""Running the server: several worker processes behind one port answer as one process does."""
import http.client
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from jointspace.errors import JointspaceError
from jointspace.index import Collection
from jointspace.serve import serve
from jointspace.serve.run import SETTINGS_ENV, app_from_environment


def test_workers_get_their_settings_from_the_environment(col_dir, monkeypatch):
    import uvicorn

    monkeypatch.delenv(SETTINGS_ENV, raising=False)
    monkeypatch.setenv("JOINTSPACE_API_KEY", "the caller's own")
    ran = {}
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: ran.update(app=app, env=dict(os.environ), **kw))
    serve(col_dir, workers=2, api_key="k", max_k=5, port=8124)
    assert ran["app"] == "jointspace.serve.run:app_from_environment"
    assert ran["factory"] is True and ran["workers"] == 2 and ran["port"] == 8124
    # the workers' environment held the settings; the caller's is as it was
    assert SETTINGS_ENV not in os.environ and os.environ["JOINTSPACE_API_KEY"] == "the caller's own"
    settings = json.loads(ran["env"][SETTINGS_ENV])
    assert ran["env"]["JOINTSPACE_API_KEY"] == "k"
    monkeypatch.setenv(SETTINGS_ENV, ran["env"][SETTINGS_ENV])  # as a spawned worker sees it
    monkeypatch.setenv("JOINTSPACE_API_KEY", "k")
    assert settings == {"collection": str(col_dir), "threads": max(1, (os.cpu_count() or 1) // 2),
                        "max_k": 5}
    assert "k" not in settings.values()  # the key travels as JOINTSPACE_API_KEY only

    import torch

    threads = torch.get_num_threads()
    try:
        client = TestClient(app_from_environment())  # what each spawned worker builds
        assert torch.get_num_threads() == settings["threads"]  # the worker's share of the cores
    finally:
        torch.set_num_threads(threads)
    assert client.post("/search", json={"text": "a red circle"}).status_code == 401
    key = {"X-API-Key": "k"}
    assert client.post("/search", json={"text": "a red circle", "k": 6}, headers=key).status_code == 422
    hits = client.post("/search", json={"text": "a red circle", "k": 5}, headers=key).json()["hits"]
    assert [h["id"] for h in hits] == [h.item["id"] for h in Collection.open(col_dir).search(
        text="a red circle", k=5)]


def test_bad_settings_fail_before_any_worker_starts(col_dir, tmp_path, monkeypatch):
    import uvicorn

    monkeypatch.setattr(uvicorn, "run", lambda *a, **kw: pytest.fail("uvicorn started"))
    with pytest.raises(JointspaceError, match="workers must be"):
        serve(col_dir, workers=0)
    with pytest.raises(JointspaceError, match="threads must be"):
        serve(col_dir, threads=0)
    with pytest.raises(JointspaceError, match="not a collection"):
        serve(tmp_path, workers=2)
    with pytest.raises(JointspaceError, match="pass the collection's folder"):
        serve(Collection.open(col_dir), workers=2)  # its model and device would not reach them
    monkeypatch.delenv(SETTINGS_ENV, raising=False)
    with pytest.raises(JointspaceError, match="--workers"):
        app_from_environment()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _workers(pid: int) -> list[int]:
    """The worker processes uvicorn spawned under ``pid``."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            command = (stat.parent / "cmdline").read_bytes()
        except OSError:
            continue
        if int(fields[1]) == pid and b"spawn_main" in command:
            found.append(int(stat.parent.name))
    return found


def _running(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="counts worker processes in /proc")
def test_two_worker_processes_answer_like_the_python_api(col_dir):
    port = _free_port()
    env = {**os.environ, "JOINTSPACE_QUIET": "1"}
    env.pop("JOINTSPACE_API_KEY", None)
    server = subprocess.Popen([sys.executable, "-m", "jointspace.cli", "serve", "--collection",
                               str(col_dir), "--port", str(port), "--device", "cpu", "--workers", "2"],
                              env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
                conn.request("GET", "/healthz")
                if conn.getresponse().status == 200:
                    break
            except OSError:
                pass
            assert server.poll() is None, server.stderr.read()
            assert time.monotonic() < deadline, "the workers did not start"
            time.sleep(0.3)
        expected = Collection.open(col_dir)
        queries = ["a red circle", "a blue square", "a small green star", "a yellow triangle"] * 3
        for q in queries:  # fresh connections: the kernel spreads them over the workers
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
            conn.request("POST", "/search", body=json.dumps({"text": q, "k": 4}),
                         headers={"Content-Type": "application/json"})
            response = conn.getresponse()
            assert response.status == 200
            got = [(h["id"], round(h["score"], 4)) for h in json.loads(response.read())["hits"]]
            assert got == [(h.item["id"], round(h.score, 4)) for h in expected.search(text=q, k=4)]
        workers = _workers(server.pid)
        assert len(workers) == 2
    finally:
        server.terminate()
        assert server.wait(timeout=60) is not None
    deadline = time.monotonic() + 30
    while any(map(_running, workers)) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not any(map(_running, workers))  # the workers stopped with it


#: loaded by every Python process of the server (parent and spawned workers): their warm-up
#: says it has started (a file named by its pid), then waits for the gate file
GATED_WARM_UP = """
import os, pathlib, time
gate = os.environ.get("JOINTSPACE_TEST_WARM_GATE")
if gate:
    from jointspace.index import collection
    real = collection.Collection.warm_up

    def gated(self):
        pathlib.Path(f"{gate}.{os.getpid()}").touch()
        while not pathlib.Path(gate).exists():
            time.sleep(0.02)
        return real(self)
    collection.Collection.warm_up = gated
"""


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="counts worker processes in /proc")
def test_each_worker_is_warm_before_it_answers(col_dir, tmp_path):
    """Review of issue 20: each worker has its own model and ready flag, and the kernel hands
    a connection to any of them: a probe's 200 from a warm worker said nothing of the
    next. Each worker warms up in its startup, before it listens: while both warm up
    (held at a gate here) the port refuses connections, and every answer to /readyz,
    whichever worker gives it, is 200."""
    (tmp_path / "sitecustomize.py").write_text(GATED_WARM_UP)
    gate = tmp_path / "gate"
    port = _free_port()
    env = {**os.environ, "JOINTSPACE_QUIET": "1", "JOINTSPACE_TEST_WARM_GATE": str(gate),
           "PYTHONPATH": os.pathsep.join(filter(None, [str(tmp_path), os.environ.get("PYTHONPATH")]))}
    env.pop("JOINTSPACE_API_KEY", None)
    server = subprocess.Popen([sys.executable, "-m", "jointspace.cli", "serve", "--collection",
                               str(col_dir), "--port", str(port), "--device", "cpu", "--workers", "2"],
                              env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    answers = []

    def probe() -> bool:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
            conn.request("GET", "/readyz")
        except ConnectionRefusedError:
            return False
        response = conn.getresponse()
        answers.append((response.status, json.loads(response.read())))
        return True
    try:
        deadline = time.monotonic() + 120
        while len(list(tmp_path.glob("gate.*"))) < 2:  # both workers are warming up
            assert server.poll() is None, server.stderr.read()
            assert time.monotonic() < deadline, "the workers did not start"
            time.sleep(0.05)
        for _ in range(20):  # while they are held: refused (it was 503 from a worker serving)
            probe()
            time.sleep(0.05)
        assert answers == []
        gate.touch()
        while len(answers) < 12:  # fresh connections: the kernel spreads them over the workers
            assert server.poll() is None, server.stderr.read()
            if not probe():
                time.sleep(0.05)
        assert answers == [(200, {"ready": True})] * 12, answers
        assert len(_workers(server.pid)) == 2
    finally:
        gate.touch()
        server.terminate()
        assert server.wait(timeout=60) is not None
