"""Inputs that cost a server more than they hold (issue 20 §1): query texts are capped and
cut before tokenising, filters name only fields a client sees and take lists of any
length, and a live server answers every hostile input of ``bench/hostile_inputs.py``
as it should, with bounded memory (the timings are the benchmark's)."""
import importlib.util
import json
import sqlite3
import sys
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

import jointspace.model
from jointspace.index import Collection
from jointspace.index.collection import MAX_QUERY_TEXT
from jointspace.index.filters import MAX_FILTER_FIELDS
from jointspace.serve import create_app
from jointspace.serve.schemas import MAX_QUERY_CHARS

BENCH = Path(__file__).resolve().parents[2] / "bench" / "hostile_inputs.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("hostile_inputs", BENCH)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop(spec.name, None)


@pytest.fixture(scope="module")
def col_dir(bench, tmp_path_factory):
    """300 audio vectors of an untrained text + audio model, with server paths and labels."""
    return bench.build(tmp_path_factory.mktemp("hostile"), n=300)


@pytest.fixture(scope="module")
def client(col_dir):
    return TestClient(create_app(col_dir))


def test_filters_on_fields_that_name_server_paths_are_refused_over_http(client, col_dir):
    upload = lambda w: client.post("/search/upload", data={"text": "a tone", "where": json.dumps(w)})
    search = lambda w: client.post("/search", json={"text": "a tone", "where": w})
    for send in (search, upload):
        for where in ({"path": "/srv/sounds/1.wav"}, {"source": "/srv/sounds"},
                      {"key": "/srv/sounds/1.wav", "label": "red"}):
            r = send(where)
            assert r.status_code == 400, r.text
            detail = r.json()["detail"]
            assert detail == (f"cannot filter on {next(iter(where))!r}: this server does not "
                              "filter on it; filter on modality, label, text or a metadata key (n)")
    # the Python API (and the CLI) keep them: the user owns the server's files
    hits = Collection.open(col_dir).search(text="a tone", where={"path": "/srv/sounds/1.wav"})
    assert [h.item["path"] for h in hits] == ["/srv/sounds/1.wav"]


@pytest.fixture
def sqlite_default_limit(monkeypatch):
    """New SQLite connections take at most 32,766 parameters, SQLite's default (Debian's
    build allows 250,000; Python's own builds and most others keep the default)."""
    real = sqlite3.connect

    def connect(*args, **kwargs):
        db = real(*args, **kwargs)
        db.setlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER, 32_766)
        return db
    monkeypatch.setattr(sqlite3, "connect", connect)


def test_a_where_list_longer_than_sqlite_takes_parameters_works(col_dir, sqlite_default_limit):
    client = TestClient(create_app(col_dir))  # its connections are made with the limit
    labels = [f"label-{i}" for i in range(40_000)] + ["red"]
    r = client.post("/search", json={"text": "a tone", "k": 50, "where": {"label": labels}})
    assert r.status_code == 200, r.text
    hits = r.json()["hits"]
    assert len(hits) == 38 and {h["label"] for h in hits} == {"red"}  # 300 items, 8 labels
    col = Collection.open(col_dir)
    keys = [f"/srv/sounds/{i}.wav" for i in range(0, 40_000, 7)]
    assert len(col.catalog.filter_ids({"key": keys, "n": list(range(0, 300, 2))})) == 22
    too_many = {f"f{i}": "x" for i in range(MAX_FILTER_FIELDS + 1)}
    r = client.post("/search", json={"text": "a tone", "where": too_many})
    assert r.status_code == 400 and f"at most {MAX_FILTER_FIELDS} fields" in r.json()["detail"]


def test_query_texts_over_the_cap_are_a_413(client, col_dir):
    long = "a red tone " * 190_651  # 2 MB
    for r in (client.post("/search", json={"text": long}),
              client.post("/search", json={"terms": [{"modality": "text", "text": "a"},
                                                     {"modality": "text", "text": long}]}),
              client.post("/search", json={"text": "x" * (MAX_QUERY_CHARS + 1)})):
        assert r.status_code == 413, r.text
        assert f"at most {MAX_QUERY_CHARS} are accepted" in r.json()["detail"]
        assert "red tone" not in r.text  # the text is not echoed
    assert client.post("/search", json={"text": "x" * MAX_QUERY_CHARS}).status_code == 200
    small = TestClient(create_app(col_dir, max_query_chars=10))
    assert small.post("/search", json={"text": "a red tone!"}).status_code == 413
    r = small.post("/search/upload", data={"text": "a red tone!"})
    assert r.status_code == 413 and "term 1's text is 11 characters long" in r.json()["detail"]


def test_a_long_query_text_is_cut_before_tokenising(col_dir, monkeypatch):
    seen = []
    real = jointspace.model.JointModel.encode

    def spy(self, modality, items, **kwargs):
        seen.extend(len(item) for item in items if isinstance(item, str))
        return real(self, modality, items, **kwargs)
    monkeypatch.setattr(jointspace.model.JointModel, "encode", spy)
    col = Collection.open(col_dir)
    text = "a red tone " * 190_651
    long = col.search(text=text, k=5)
    assert seen == [MAX_QUERY_TEXT]
    cut = col.search(text=text[:MAX_QUERY_TEXT], k=5)
    assert [(h.item["id"], h.score) for h in long] == [(h.item["id"], h.score) for h in cut]


def test_a_live_server_answers_each_hostile_input_with_bounded_memory(bench, col_dir):
    with bench.Server(col_dir, threads=1) as server:
        figures = bench.measure(server, seconds=0.5, repeats=1)
    got = {a.what: (a.statuses, a.expected, a.detail) for a in figures.answers}
    assert all(statuses == {expected} for statuses, expected, _ in got.values()), got
    assert "sample rate of 655331 Hz" in got["WAV header 655,331 Hz (244 B)"][2]
    assert figures.rss_after - figures.rss_before < 100 * 2**20
    assert figures.peak is None or figures.peak - figures.rss_before < 100 * 2**20
    assert figures.during and all(status == 200 for status, _ in figures.idle + figures.during)
