"""kill -9 an ingest at several moments: no duplicate, no reported item lost, a re-run completes."""
import os
import shutil
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from jointspace.index import Collection

N_FILES = 24
SCRIPT = textwrap.dedent("""
    import sys
    from jointspace.index import index_source
    def report(keys):
        for key in keys:
            print("indexed", key, flush=True)
    index_source(sys.argv[1], sys.argv[2], sys.argv[3], batch_size=4, on_commit=report,
                 delete_missing=len(sys.argv) > 4, device="cpu")
    print("done", flush=True)
""")


def _run(col, model, folder, *extra, kill_at=None, kill_after_lines=None):
    env = {**os.environ, "JOINTSPACE_QUIET": "1", "OMP_NUM_THREADS": "1"}
    if kill_at:
        env["JOINTSPACE_KILL_AT"] = kill_at
    proc = subprocess.Popen([sys.executable, "-c", SCRIPT, str(col), str(model), str(folder), *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    reported = []
    for line in proc.stdout:
        if line.startswith("indexed "):
            reported.append(line.split(" ", 1)[1].strip())
        if kill_after_lines and len(reported) >= kill_after_lines:
            proc.send_signal(signal.SIGKILL)  # a real kill -9 from outside, mid-run
            break
    proc.wait(timeout=120)
    return proc.returncode, reported, proc.stderr.read()


def _check_consistent(col_dir, folder, reported, deletions_pending=False):
    col = Collection.open(col_dir)
    keys = [r[0] for r in col.catalog.db.execute("SELECT key FROM items")]
    assert len(keys) == len(set(keys))  # no duplicate
    assert set(reported) <= set(keys)  # nothing reported was lost
    files = {str(p.resolve()) for p in folder.glob("*.png")}
    assert deletions_pending or set(keys) <= files
    ids, vectors = col.catalog.vectors("image")
    assert len(ids) == len(keys)
    if len(ids):  # every item is searchable, by its own vector, exactly once
        hits = col.search(vector=vectors[0], k=len(ids))
        assert sorted(h.item["id"] for h in hits) == sorted(ids.tolist())
        assert col.search(vector=vectors[-1], k=1)[0].item["id"] == ids[-1]
    return col, keys


@pytest.fixture
def folder(shapes_dir, tmp_path):
    out = tmp_path / "imgs"
    out.mkdir()
    for path in sorted((shapes_dir / "images" / "train").glob("*.png"))[:N_FILES]:
        shutil.copy(path, out / path.name)
    return out


@pytest.mark.parametrize("kill_at", ["encoded:3", "written:3", "store:1", "delete:1", "outside:9"])
def test_kill_and_rerun(kill_at, folder, trained_model_dir, tmp_path):
    col_dir = tmp_path / "col"
    if kill_at == "delete:1":  # a complete first run, then a delete-missing run killed
        code, _, err = _run(col_dir, trained_model_dir, folder)
        assert code == 0, err
        for path in sorted(folder.glob("*.png"))[:5]:
            path.unlink()
        code, reported, err = _run(col_dir, trained_model_dir, folder, "delete", kill_at=kill_at)
    elif kill_at.startswith("outside"):
        code, reported, err = _run(col_dir, trained_model_dir, folder, kill_after_lines=9)
    else:
        code, reported, err = _run(col_dir, trained_model_dir, folder, kill_at=kill_at)
    assert code == -signal.SIGKILL, err
    if kill_at == "encoded:3":
        assert len(reported) == 8  # two batches were committed before the kill
    if kill_at == "written:3":
        assert len(reported) == 8  # the third batch was committed but not yet reported
    if kill_at == "delete:1":
        assert reported == []  # nothing changed: only deletions were pending
    _check_consistent(col_dir, folder, reported, deletions_pending=kill_at == "delete:1")
    if kill_at == "written:3":
        assert len(Collection.open(col_dir)) == 12  # the unreported batch is there too
    # the re-run completes the collection: every file once, stores persisted and current
    extra = ("delete",) if kill_at == "delete:1" else ()
    code, again, err = _run(col_dir, trained_model_dir, folder, *extra)
    assert code == 0, err
    assert not set(again) & set(reported)  # what was indexed is not redone
    col, keys = _check_consistent(col_dir, folder, reported + again)
    assert sorted(keys) == sorted(str(p.resolve()) for p in folder.glob("*.png"))
    store = col.store("image")
    assert store.watermark == col.catalog.seq() and store.count() == len(keys)
    fresh_ids = np.sort(col.store("image").search(np.zeros((1, col.dim), np.float32) + 1,
                                                  len(keys))[1][0])
    assert fresh_ids.tolist() == sorted(col.catalog.vectors("image")[0].tolist())
