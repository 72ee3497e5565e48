"""The vector stores against brute force, and their persistence."""
import json

import numpy as np
import pytest

from jointspace.errors import JointspaceError
from jointspace.index import STORES, open_store
from jointspace.index.faiss_store import default_lists


def clustered(n, dim=32, centres=50, seed=0):
    """Unit vectors around random centres, like real embeddings (not uniform noise)."""
    rng = np.random.default_rng(seed)
    c = rng.normal(size=(centres, dim))
    c /= np.linalg.norm(c, axis=1, keepdims=True)
    x = c[rng.integers(0, centres, n)] + rng.normal(size=(n, dim)) * 1.2 / np.sqrt(dim)
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def brute_force(ids, vectors, queries, k, allowed=None):
    if allowed is not None:
        keep = np.isin(ids, allowed)
        ids, vectors = ids[keep], vectors[keep]
    scores = queries @ vectors.T
    order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(scores, order, 1), ids[order]


@pytest.mark.parametrize("name", ["exact", "faiss"])
def test_small_store_is_exact_and_upserts(name, tmp_path):
    x = clustered(500)
    ids = np.arange(500, dtype=np.int64) * 3 + 7  # ids need not be dense
    store = open_store(name, tmp_path / "s", 32)
    store.add(ids[:300], x[:300])
    store.add(ids[300:], x[300:])
    assert store.count() == 500
    q = clustered(20, seed=1)
    scores, found = store.search(q, 10)
    ref_scores, ref_ids = brute_force(ids, x, q, 10)
    np.testing.assert_array_equal(found, ref_ids)
    np.testing.assert_allclose(scores, ref_scores, atol=1e-5)
    # upsert: the same id with a new vector replaces it, count unchanged
    store.add(ids[:1], -x[:1])
    assert store.count() == 500
    s, f = store.search(-x[:1], 1)
    assert f[0, 0] == ids[0] and s[0, 0] == pytest.approx(1, abs=1e-5)
    # delete, then filters
    store.delete(ids[:100])
    assert store.count() == 400 and not np.isin(store.search(q, 50)[1], ids[:100]).any()
    allowed = ids[100::7]
    s, f = store.search(q, 5, allowed=allowed)
    x2 = x.copy()
    _, ref = brute_force(ids[100:], x2[100:], q, 5, allowed)
    np.testing.assert_array_equal(f, ref)
    # fewer than k qualify: padded with -1 / -inf
    s, f = store.search(q[:1], 5, allowed=ids[100:102])
    assert list(f[0, 2:]) == [-1, -1, -1] and np.isneginf(s[0, 2:]).all()


@pytest.mark.parametrize("name", ["exact", "faiss"])
def test_store_persists_at_commit_only(name, tmp_path):
    x = clustered(200)
    store = open_store(name, tmp_path / "s", 32)
    store.add(np.arange(200), x)
    store.commit(5)
    store.add(np.arange(200, 210), x[:10])  # not committed: a crash loses it
    again = open_store(name, tmp_path / "s", 32)
    assert again.count() == 200 and again.watermark == 5
    np.testing.assert_array_equal(again.search(x[:3], 4)[1], brute_force(np.arange(200), x, x[:3], 4)[1])


def test_ivf_recall_and_the_nprobe_knob(tmp_path):
    both = clustered(20_200, dim=32, centres=100)
    x, q = both[:20_000], both[20_000:]  # queries from the same clusters
    ids = np.arange(20_000, dtype=np.int64)
    store = open_store("faiss", tmp_path / "s", 32, exact_below=5_000, nprobe=8)
    store.add(ids, x)
    assert store.kind == "flat"
    store.commit(1)  # passes the threshold: becomes IVF
    assert store.kind == "ivf" and store.count() == 20_000
    assert json.loads((tmp_path / "s" / "store.json").read_text())["lists"] == default_lists(20_000)
    _, truth = brute_force(ids, x, q, 10)

    def recall(found):
        return np.mean([len(set(a) & set(b)) / 10 for a, b in zip(found, truth)])
    low, high = recall(store.search(q, 10, nprobe=1)[1]), recall(store.search(q, 10, nprobe=256)[1])
    assert low < 0.5 < 0.97 <= high, (low, high)  # the knob trades recall for speed
    assert recall(store.search(q, 10, nprobe=store._ivf().nlist)[1]) == 1.0  # every cell: exact
    # deletes and upserts work on the IVF index without a rebuild
    store.delete(ids[:10])
    store.add(ids[10:11], x[0:1])
    assert store.count() == 19_990
    assert store.search(x[:1], 1, nprobe=256)[1][0, 0] == 10
    # persisted and reopened as IVF, ids and vectors read back from the index
    store.commit(2)
    again = open_store("faiss", tmp_path / "s", 32, exact_below=5_000)
    assert again.kind == "ivf" and again.count() == 19_990
    got_ids, got = again.vectors()
    order = np.argsort(got_ids)
    np.testing.assert_array_equal(got_ids[order], ids[10:])
    np.testing.assert_allclose(got[order][1:], x[11:], atol=0)


def test_bad_batches_are_clear_errors(tmp_path):
    for name in STORES.names():
        store = open_store(name, tmp_path / name, 8)
        with pytest.raises(JointspaceError, match="8-dim"):
            store.add(np.arange(2), np.zeros((2, 9), np.float32))
        with pytest.raises(JointspaceError, match="repeats an id"):
            store.add(np.array([1, 1]), np.ones((2, 8), np.float32))
        with pytest.raises(JointspaceError, match="NaN"):
            store.add(np.array([1]), np.full((1, 8), np.nan, np.float32))
        with pytest.raises(JointspaceError, match="8-dim"):
            store.search(np.ones(5, np.float32), 3)


def test_kill_between_index_file_and_pointer_keeps_the_last_commit(tmp_path):
    """The new index file is written, the pointer not yet switched: the old state opens."""
    import subprocess
    import sys
    import textwrap
    code = textwrap.dedent(f"""
        import numpy as np
        from jointspace.index import open_store
        s = open_store("faiss", {str(tmp_path / 's')!r}, 4)
        s.add(np.arange(3), np.eye(3, 4, dtype=np.float32))
        s.commit(1)
        s.add(np.arange(3, 4), np.eye(1, 4, k=3, dtype=np.float32))
        s.commit(2)
    """)
    proc = subprocess.run([sys.executable, "-c", code], env={**__import__("os").environ,
                          "JOINTSPACE_KILL_AT": "store:2"}, capture_output=True, timeout=60)
    assert proc.returncode == -9, proc.stderr
    again = open_store("faiss", tmp_path / "s", 4)
    assert again.watermark == 1 and again.count() == 3
