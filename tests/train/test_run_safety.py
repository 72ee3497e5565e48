"""A run survives kills, Ctrl-C and re-runs into its folder without losing or mixing anything."""
import json
import os
import signal

import pytest
import torch
from safetensors.torch import load_file

from jointspace.errors import JointspaceError
from jointspace.train import trainer as trainer_module
from jointspace.train.checkpoint import CHECKPOINT_FILE, load_checkpoint
from jointspace.train.trainer import train


def _steps(folder):
    return [json.loads(line)["step"] for line in (folder / "log.jsonl").read_text().splitlines()]


def test_resume_after_a_kill_mid_write(shapes_dir, tiny_run, tmp_path):
    """A cut-off last log line and the temporary files of an interrupted save
    (what a kill mid-write leaves) must not break --resume."""
    data = shapes_dir / "train.csv"
    straight = tmp_path / "straight"
    train(tiny_run, data, straight)
    out = tmp_path / "m"
    train(tiny_run, data, out, stop_after=6)
    with open(out / "log.jsonl", "a") as f:
        f.write('{"step": 7, "loss": 2.3')  # the kill came in the middle of this line
    (out / ".save-abc123").mkdir()
    (out / ".save-abc123" / "model.safetensors").write_bytes(b"partial")
    (out / f".{CHECKPOINT_FILE}.tmp").write_bytes(b"partial")
    result = train(tiny_run, data, out, resume=True)
    assert result.finished and _steps(out) == _steps(straight)
    assert not list(out.glob(".save-*")) and not list(out.glob(".*.tmp"))
    a, b = load_file(str(straight / "model.safetensors")), load_file(str(out / "model.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("workers", [0, 2])
def test_ctrl_c_writes_a_checkpoint_and_resume_continues(shapes_dir, tiny_run, tmp_path, monkeypatch,
                                                        workers):
    """Ctrl-C at step 2 (before the first periodic checkpoint, every 4 steps) keeps the run,
    also when DataLoader workers get the signal too (as a terminal sends it to them all)."""
    import multiprocessing
    tiny_run.train.num_workers = workers
    data = shapes_dir / "train.csv"
    straight = tmp_path / "straight"
    train(tiny_run, data, straight)
    real_step = trainer_module.train_step
    calls = []

    def step_then_ctrl_c(*args, **kwargs):
        calls.append(1)
        out = real_step(*args, **kwargs)
        if len(calls) == 2:  # arrives while the loop runs, like a real Ctrl-C
            children = multiprocessing.active_children()
            assert len(children) == workers
            for child in children:
                os.kill(child.pid, signal.SIGINT)
            os.kill(os.getpid(), signal.SIGINT)
        return out

    monkeypatch.setattr(trainer_module, "train_step", step_then_ctrl_c)
    # a worker that dies of the signal while the main process waits for its batch would
    # end the run with "DataLoader worker exited unexpectedly": workers must ignore it
    real_getitem, seen = trainer_module.PairDataset.__getitem__, tmp_path / "worker-sigint"

    def getitem(self, i):
        if multiprocessing.parent_process() is not None:
            seen.write_text(str(signal.getsignal(signal.SIGINT) == signal.SIG_IGN))
        return real_getitem(self, i)
    monkeypatch.setattr(trainer_module.PairDataset, "__getitem__", getitem)
    out = tmp_path / "m"
    handler_before = signal.getsignal(signal.SIGINT)
    with pytest.raises(KeyboardInterrupt):
        train(tiny_run, data, out)
    assert load_checkpoint(out / CHECKPOINT_FILE)["step"] == 2
    assert (seen.read_text() == "True") if workers else not seen.exists()
    assert not (out / "model.safetensors").exists()
    assert signal.getsignal(signal.SIGINT) is handler_before  # handler restored
    monkeypatch.setattr(trainer_module, "train_step", real_step)
    train(tiny_run, data, out, resume=True)
    a, b = load_file(str(straight / "model.safetensors")), load_file(str(out / "model.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert _steps(out) == _steps(straight)


def test_rerun_into_a_used_folder_is_refused(shapes_dir, tiny_run, tmp_path):
    data = shapes_dir / "train.csv"
    out = tmp_path / "m"
    train(tiny_run, data, out, stop_after=2)
    (out / CHECKPOINT_FILE).unlink()  # as if killed before its first checkpoint
    log_before = (out / "log.jsonl").read_text()
    with pytest.raises(JointspaceError, match="stopped before its first checkpoint"):
        train(tiny_run, data, out)
    assert (out / "log.jsonl").read_text() == log_before  # nothing appended
    done = tmp_path / "done"
    train(tiny_run, data, done)
    with pytest.raises(JointspaceError, match="already holds a trained model"):
        train(tiny_run, data, done)


def test_a_run_that_never_trained_does_not_block_a_retry(shapes_dir, tiny_run, tmp_path):
    """Issue 20: a batch larger than the data failed after writing config.json, run.json and
    the card, and the same command with a good batch size was then refused."""
    data, out = shapes_dir / "train.csv", tmp_path / "m"
    tiny_run.train.batch_size = 500  # 96 rows
    with pytest.raises(JointspaceError, match="fewer than one batch"):
        train(tiny_run, data, out)
    assert (out / "config.json").is_file() and (out / "run.json").is_file()
    tiny_run.train.batch_size, tiny_run.train.max_steps = 16, 2
    result = train(tiny_run, data, out)
    assert result.finished and (out / "model.safetensors").is_file() and _steps(out) == [2]
    assert json.loads((out / "run.json").read_text())["train"]["batch_size"] == 16


def test_a_retried_run_that_never_trained_starts_clean(shapes_dir, tiny_run, tmp_path):
    """Review of issue 20: the failed run's quarantine of its manifest's bad rows stayed
    beside the retry's model, which read a fixed manifest (another file, or the same one)."""
    lines = (shapes_dir / "train.csv").read_text().splitlines()
    rows = [line.replace(",images/", f",{shapes_dir}/images/", 1) for line in lines[1:]]
    broken, fixed, out = tmp_path / "broken.csv", tmp_path / "fixed.csv", tmp_path / "m"
    broken.write_text("\n".join(lines[:1] + rows + [rows[0].replace(".png", "-gone.png", 1)
                                                   .replace(rows[0].split(",")[0], "gone", 1)]) + "\n")
    fixed.write_text("\n".join(lines[:1] + rows) + "\n")
    tiny_run.train.batch_size = 500  # 96 rows: fails after reading the data, before a step
    with pytest.raises(JointspaceError, match="fewer than one batch"):
        train(tiny_run, broken, out)
    assert [p.name for p in out.glob("quarantine-*")] and (out / "run.json").is_file()
    tiny_run.train.batch_size, tiny_run.train.max_steps = 16, 2
    assert train(tiny_run, fixed, out).finished
    assert not list(out.glob("quarantine-*"))
    # a manifest read again with no bad row: its earlier list is removed too
    from jointspace.data.manifest import read_manifest

    with_bad = read_manifest(broken, quarantine_dir=tmp_path / "q")
    assert with_bad.quarantine_path.is_file()
    broken.write_text(fixed.read_text())
    assert read_manifest(broken, quarantine_dir=tmp_path / "q").quarantine_path is None
    assert not with_bad.quarantine_path.exists()


def test_the_temperature_is_clamped_after_each_step(shapes_dir, tiny_run, tmp_path, monkeypatch):
    """A log scale pushed past log(100) is brought back by the clamp on the parameter."""
    real_init = trainer_module.JointModel.__init__

    def init_past_the_clamp(self, config):
        real_init(self, config)
        with torch.no_grad():
            self.logit_scale.fill_(6.0)

    monkeypatch.setattr(trainer_module.JointModel, "__init__", init_past_the_clamp)
    tiny_run.train.max_steps = 2
    train(tiny_run, shapes_dir / "train.csv", tmp_path / "m")
    scale = float(load_file(str(tmp_path / "m" / "model.safetensors"))["logit_scales.image-text"])
    assert scale <= torch.log(torch.tensor(100.0)).item() + 1e-6
    log = [json.loads(line) for line in (tmp_path / "m" / "log.jsonl").read_text().splitlines()]
    assert all(r["scale"] <= 100.0 + 1e-3 for r in log)  # the logged scale is the effective one


def test_all_rows_bad_names_the_quarantine(shapes_dir, tiny_run, tmp_path):
    manifest = tmp_path / "bad.csv"
    manifest.write_text("image,text\nmissing-1.png,a red circle\nmissing-2.png,a blue square\n")
    with pytest.raises(JointspaceError, match="0 valid rows.*quarantine"):
        train(tiny_run, manifest, tmp_path / "m")


def test_training_needs_two_towers(shapes_dir, tmp_path):
    from jointspace.config import load_run_config
    from jointspace.errors import ConfigError
    with pytest.raises(ConfigError, match="at least one pair"):
        train(load_run_config(overrides=["model.towers.text=null"]), shapes_dir / "train.csv",
              tmp_path / "m")
