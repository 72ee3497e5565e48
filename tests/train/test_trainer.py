import json

import pytest
import torch
from safetensors.torch import load_file

import jointspace
from jointspace.errors import JointspaceError
from jointspace.train.checkpoint import CHECKPOINT_FILE, load_checkpoint, save_checkpoint
from jointspace.train.sampler import StepBatchSampler
from jointspace.train.schedule import warmup_cosine
from jointspace.train.trainer import train


def _weights(folder):
    return load_file(str(folder / "model.safetensors"))


def test_resume_reaches_the_same_weights(shapes_dir, tiny_run, tmp_path):
    data, val = shapes_dir / "train.csv", shapes_dir / "val.csv"
    straight = train(tiny_run, data, tmp_path / "a", val_data=val)
    assert straight.finished and straight.steps == 12
    stopped = train(tiny_run, data, tmp_path / "b", val_data=val, stop_after=5)
    assert not stopped.finished and stopped.steps == 5
    assert not (tmp_path / "b" / "model.safetensors").exists()  # no half-trained weights to mistake
    assert load_checkpoint(tmp_path / "b" / CHECKPOINT_FILE)["step"] == 5
    resumed = train(tiny_run, data, tmp_path / "b", val_data=val, resume=True)
    assert resumed.finished and resumed.steps == 12
    a, b = _weights(tmp_path / "a"), _weights(tmp_path / "b")
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    # the resumed log has each step once, like the straight one
    steps = lambda p: [json.loads(l)["step"] for l in (p / "log.jsonl").read_text().splitlines()]  # noqa: E731
    assert steps(tmp_path / "a") == steps(tmp_path / "b")


def test_training_learns(shapes_dir, tiny_run, tmp_path):
    tiny_run.train.max_steps = 30
    train(tiny_run, shapes_dir / "train.csv", tmp_path / "m")
    log = [json.loads(l) for l in (tmp_path / "m" / "log.jsonl").read_text().splitlines()]
    first, last = log[0]["loss"], log[-1]["loss"]
    assert last < 0.8 * first, (first, last)
    assert {"step", "loss", "lr", "grad_norm", "scale", "samples_per_s"} <= set(log[0])


def test_refuses_to_overwrite_a_run(shapes_dir, tiny_run, tmp_path):
    train(tiny_run, shapes_dir / "train.csv", tmp_path / "m", stop_after=2)
    with pytest.raises(JointspaceError, match="already holds a training run; pass --resume"):
        train(tiny_run, shapes_dir / "train.csv", tmp_path / "m")
    with pytest.raises(JointspaceError, match="no checkpoint to resume from"):
        train(tiny_run, shapes_dir / "train.csv", tmp_path / "other", resume=True)


def test_bad_rows_are_quarantined_next_to_the_model(shapes_dir, tiny_run, tmp_path):
    rows = (shapes_dir / "train.csv").read_text().splitlines()
    rows[0] = rows[0]  # header
    bad = rows + ["bad-1,images/train/missing.png,a red circle,red circle",
                  f"{rows[1].split(',')[0]},images/train/train-000001.png,dup id,red circle"]
    manifest = shapes_dir / "with_bad.csv"
    manifest.write_text("\n".join(bad) + "\n")
    result = train(tiny_run, manifest, tmp_path / "m", stop_after=1)
    assert result.quarantined == 2
    [quarantine] = (tmp_path / "m").glob("quarantine-with_bad*.jsonl")
    reasons = [json.loads(l)["reason"] for l in quarantine.read_text().splitlines()]
    assert "image file not found" in reasons[0] and "duplicate id" in reasons[1]


def test_too_few_rows_for_a_batch(shapes_dir, tiny_run, tmp_path):
    tiny_run.train.batch_size = 1000
    with pytest.raises(JointspaceError, match="fewer than one batch"):
        train(tiny_run, shapes_dir / "train.csv", tmp_path / "m")


def test_checkpoint_write_is_atomic(tmp_path, monkeypatch):
    path = tmp_path / CHECKPOINT_FILE
    save_checkpoint(path, {"step": 1})

    def crash(obj, f):
        f.write(b"partial")
        raise KeyboardInterrupt("killed mid-write")
    monkeypatch.setattr(torch, "save", crash)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(path, {"step": 2})
    monkeypatch.undo()
    assert load_checkpoint(path)["step"] == 1


def test_sampler_resumes_mid_epoch():
    full = list(StepBatchSampler(50, 8, seed=1, max_steps=20))
    assert list(StepBatchSampler(50, 8, seed=1, max_steps=20, start_step=7)) == full[7:]
    assert all(len(b) == 8 for b in full) and len(full) == 20
    first_epoch = [i for b in full[:6] for i in b]
    assert len(set(first_epoch)) == 48  # no repeats within an epoch


def test_schedule():
    assert warmup_cosine(0, 10, 100) == pytest.approx(0.1)
    assert warmup_cosine(9, 10, 100) == pytest.approx(1.0)
    assert warmup_cosine(55, 10, 100) == pytest.approx(0.5)
    assert warmup_cosine(100, 10, 100) == pytest.approx(0.0)


def test_loaded_model_matches_trained_weights(trained_model_dir):
    model = jointspace.load(trained_model_dir)
    saved = _weights(trained_model_dir)
    for k, v in model.state_dict().items():
        assert torch.equal(v, saved[k])


def test_validation_loss_weights_batches_by_size(trained_model_dir, shapes_dir):
    """10 rows in batches of 4, 4, 2: the loss is the row-weighted mean of batch losses."""
    from jointspace.data.manifest import read_manifest
    from jointspace.data.pairs import PairDataset
    from jointspace.train.step import embeddings_loss, training_objective
    from jointspace.train.trainer import validate
    model = jointspace.load(trained_model_dir)
    objective = training_objective(model.config)
    records = read_manifest(shapes_dir / "train.csv").records[:10]
    dataset = PairDataset(records, model.towers)
    out = validate(model, objective, dataset, batch_size=4)
    model.eval()
    with torch.no_grad():
        losses = []
        for i in range(0, 10, 4):
            batch = dataset.collate([dataset[j] for j in range(i, min(10, i + 4))])
            losses.append((float(embeddings_loss(model, objective, model(batch))), len(batch["text"])))
    weighted = sum(l * n for l, n in losses) / 10
    assert out["val_loss"] == pytest.approx(weighted, rel=1e-5)
    assert out["val_loss"] != pytest.approx(sum(l for l, _ in losses) / 3, rel=1e-4)


def test_validation_recall_counts_identical_captions_as_one_answer(trained_model_dir, shapes_dir):
    """When every caption is the same text, any text is a right answer for any image."""
    from dataclasses import replace
    from jointspace.data.manifest import read_manifest
    from jointspace.data.pairs import PairDataset
    from jointspace.train.step import training_objective
    from jointspace.train.trainer import validate
    model = jointspace.load(trained_model_dir)
    records = [replace(r, fields={**r.fields, "text": "a red circle"})
               for r in read_manifest(shapes_dir / "train.csv").records[:12]]
    out = validate(model, training_objective(model.config), PairDataset(records, model.towers),
                   batch_size=4, records=records)
    assert out["val_image_to_text_R@1"] == 1.0
    strict = validate(model, training_objective(model.config), PairDataset(records, model.towers),
                      batch_size=4)
    assert strict["val_image_to_text_R@1"] < 1.0  # without groups, only row i counts


def test_multi_source_sampler_is_deterministic_and_weighted():
    from jointspace.train.sampler import MultiSourceBatchSampler
    full = list(MultiSourceBatchSampler([40, 20], [3, 1], 4, seed=2, max_steps=400))
    assert list(MultiSourceBatchSampler([40, 20], [3, 1], 4, seed=2, max_steps=400, start_step=123)) == full[123:]
    from_first = sum(1 for b in full if b[0] < 40) / len(full)
    assert 0.68 < from_first < 0.82  # weight 3:1
    assert all((min(b) >= 40) == (max(b) >= 40) for b in full)  # a batch never mixes sources
    first_epoch = [i for b in full if b[0] < 40 for i in b][:40]
    assert sorted(first_epoch) == list(range(40))  # each source walks whole epochs
