"""The frozen-feature cache: keys and features are one unit, shared safely between runs."""
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

from jointspace.train import feature_cache
from jointspace.train.feature_cache import FeatureCache

FAKE_TOWER = textwrap.dedent("""
    import torch

    class FakeTower(torch.nn.Module):
        '''Features of item "w<n>" are [n, n + 0.5, -n]: any mix-up shows.'''

        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(1))
            self.calls = 0

        def sort_key(self, item):
            return None

        def preprocess_one(self, item):
            n = float(item[1:])
            return torch.tensor([n, n + 0.5, -n])

        def collate(self, items):
            return torch.stack(list(items))

        def features(self, x):
            self.calls += len(x)
            return x.clone()
""")
exec(FAKE_TOWER)  # FakeTower, here and in the child processes alike


def expected(keys):
    n = np.array([float(k.split(":w")[1]) for k in keys], dtype=np.float32)
    return np.stack([n, n + 0.5, -n], axis=1)


def _on_disk(root, fingerprint):
    """What a later run would read for ``fingerprint`` (keys → features)."""
    cache = FeatureCache(FakeTower(), fingerprint, root)
    keys = sorted(cache.index, key=cache.index.__getitem__)
    return keys, cache.features


def test_features_are_reused_from_disk(tmp_path):
    tower = FakeTower()
    first = FeatureCache(tower, "fp", tmp_path).lookup(["w1", "w2", "w1"])
    assert torch.equal(first, torch.from_numpy(expected(["text:w1", "text:w2", "text:w1"])))
    again = FakeTower()
    assert torch.equal(FeatureCache(again, "fp", tmp_path).lookup(["w2", "w1"]), first[[1, 0]])
    assert again.calls == 0
    FeatureCache(again, "fp", tmp_path).lookup(["w3"])
    assert again.calls == 1 and _on_disk(tmp_path, "fp")[0] == ["text:w1", "text:w2", "text:w3"]


def test_a_damaged_cache_is_recomputed_not_trusted(tmp_path):
    """One byte flipped inside the stored features: the next run must notice, not train on it."""
    items = [f"w{i}" for i in range(64)]
    FeatureCache(FakeTower(), "fp", tmp_path).lookup(items)
    biggest = max((p for p in (tmp_path / "fp").iterdir() if p.is_file()),
                  key=lambda p: p.stat().st_size)
    data = bytearray(biggest.read_bytes())
    data[len(data) // 2] ^= 0x40
    biggest.write_bytes(bytes(data))
    tower = FakeTower()
    got = FeatureCache(tower, "fp", tmp_path).lookup(items)
    np.testing.assert_array_equal(got.numpy(), expected([f"text:{i}" for i in items]))
    assert tower.calls == len(items)
    keys, features = _on_disk(tmp_path, "fp")  # and the entry on disk is whole again
    np.testing.assert_array_equal(features, expected(keys))


def test_an_interrupted_save_leaves_the_last_entry(tmp_path, monkeypatch):
    FeatureCache(FakeTower(), "fp", tmp_path).lookup(["w1", "w2"])

    def killed(*args, **kwargs):
        raise KeyboardInterrupt("killed")
    monkeypatch.setattr(feature_cache.np, "savez", killed)
    with pytest.raises(KeyboardInterrupt):
        FeatureCache(FakeTower(), "fp", tmp_path).lookup(["w3"])
    monkeypatch.undo()
    keys, features = _on_disk(tmp_path, "fp")
    assert keys == ["text:w1", "text:w2"]
    np.testing.assert_array_equal(features, expected(keys))
    assert not list((tmp_path / "fp").glob(".*.tmp"))


def test_the_old_two_file_layout_is_not_trusted(tmp_path):
    """keys.json and features.npy could come from two different runs: recompute, then drop them."""
    (tmp_path / "fp").mkdir()
    np.save(tmp_path / "fp" / "features.npy", np.ones((2, 3), dtype=np.float32))
    (tmp_path / "fp" / "keys.json").write_text('["text:w1", "text:w2"]')
    got = FeatureCache(FakeTower(), "fp", tmp_path).lookup(["w1", "w2"])
    np.testing.assert_array_equal(got.numpy(), expected(["text:w1", "text:w2"]))
    assert sorted(p.name for p in (tmp_path / "fp").iterdir()) == [".lock", "entry.npz"]


CHILD = FAKE_TOWER + textwrap.dedent("""
    import os, random, sys, time
    from jointspace.train.feature_cache import FeatureCache

    root, seed, sync, rounds = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
    rng = random.Random(seed)
    real_replace = os.replace

    def slow_replace(src, dst):  # widen the windows in which the two processes interleave
        time.sleep(rng.uniform(0, 0.004))
        real_replace(src, dst)
        time.sleep(rng.uniform(0, 0.004))

    def together(r):  # both processes start each round at the same moment
        open(os.path.join(sync, f"{seed}-{r}"), "w").close()
        while not os.path.exists(os.path.join(sync, f"{3 - seed}-{r}")):
            time.sleep(0.0002)

    os.replace = slow_replace
    for r in range(rounds):
        together(r)
        items = rng.sample([f"w{i}" for i in range(12)], 6)   # overlapping, different sets
        got = FeatureCache(FakeTower(), f"round{r}", root).lookup(items)
        n = torch.tensor([float(i[1:]) for i in items])
        assert torch.equal(got, torch.stack([n, n + 0.5, -n], 1)), (r, items)
        print(" ".join(items), flush=True)
""")


def test_two_processes_filling_one_entry_leave_it_consistent(tmp_path):
    """Two runs fill the same entries at the same moment; whatever interleaving happens,
    every entry read back afterwards maps each key to its own features, and (taking turns
    under the lock) holds what both computed."""
    rounds, root, sync = 20, tmp_path / "cache", tmp_path / "sync"
    sync.mkdir()
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    procs = [subprocess.Popen([sys.executable, "-c", CHILD, str(root), str(seed), str(sync),
                               str(rounds)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
             for seed in (1, 2)]
    outputs = [p.communicate(timeout=240) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [err.decode()[-2000:] for _, err in outputs]
    items = [out.decode().splitlines() for out, _ in outputs]
    for r in range(rounds):
        keys, features = _on_disk(root, f"round{r}")
        np.testing.assert_array_equal(features, expected(keys), err_msg=f"round {r}")
        if feature_cache.fcntl is not None:
            assert set(keys) == {f"text:{i}" for out in items for i in out[r].split()}, r
