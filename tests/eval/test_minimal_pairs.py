"""The minimal-pairs test and mean rank, against brute force; end to end on generated clips
(``evaluate(pair="video:text")``: retrieval, zero-shot, the pairs, the report's posters)."""
import json
import re

import numpy as np
import pytest
import torch

from jointspace.errors import DataError
from jointspace.eval.minimal_pairs import TIE_TOLERANCE, minimal_pair_metrics, read_pair_ids
from jointspace.eval.retrieval import retrieval_metrics

NAMES = ("video", "text")


def _unit(x):
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _rows(seed=0, n_pairs=6, n_single=3):
    """Rows of clips with 1–3 captions each: ``n_pairs`` pairs, ``n_single`` unpaired clips,
    shuffled; every caption distinct. Returns clip ids, pair ids, labels and embeddings."""
    rng = np.random.default_rng(seed)
    clips = [(f"c{i}", f"p{i // 2}" if i < 2 * n_pairs else "") for i in range(2 * n_pairs + n_single)]
    rows = [(clip, pair, k) for clip, pair in clips for k in range(rng.integers(1, 4))]
    rows = [rows[i] for i in rng.permutation(len(rows))]
    clip_vec = {c: rng.standard_normal(8) for c, _ in clips}
    video = _unit(np.stack([clip_vec[c] for c, _, _ in rows]))
    text = _unit(video + 1.2 * rng.standard_normal(video.shape))  # noisy captions
    labels = [f"label {int(c[1:]) % 3}" for c, _, _ in rows]
    return [c for c, _, _ in rows], [p for _, p, _ in rows], labels, video.astype(np.float32), \
        text.astype(np.float32)


def _brute(ids, pairs, labels, video, text):
    """The figures by loops over Python floats, from the definitions in the module docstring."""
    clips = sorted({c for c, p in zip(ids, pairs) if p})
    twin = {c: next(d for d in clips if d != c and pairs[ids.index(d)] == pairs[ids.index(c)])
            for c in clips}
    rows_of = {c: [i for i, x in enumerate(ids) if x == c] for c in clips}
    vec = {c: video[rows_of[c][0]].astype(np.float64) for c in clips}
    score = lambda c, i: float(np.dot(vec[c], text[i].astype(np.float64)))  # noqa: E731
    won = lambda a, b: 0.5 if abs(a - b) <= TIE_TOLERANCE else float(a > b)  # noqa: E731
    per_clip = {c: np.mean([won(score(c, i), score(c, j)) for i in rows_of[c] for j in rows_of[twin[c]]])
                for c in clips}
    per_caption = {c: [won(score(c, i), score(twin[c], i)) for i in rows_of[c]] for c in clips}
    # pairs-only gallery, multi-caption protocol: a clip's rank is that of its best caption
    # among all paired captions; a caption's that of its clip among the paired clips
    rows = [i for c in clips for i in rows_of[c]]
    v2t = [1 + sum(score(c, j) >= max(score(c, i) for i in rows_of[c]) for j in rows if ids[j] != c)
           for c in clips]
    t2v = [1 + sum(score(d, i) >= score(ids[i], i) for d in clips if d != ids[i]) for i in rows]
    by_label = {}
    for c in clips:
        by_label.setdefault(labels[rows_of[c][0]], []).append(c)
    return {"video_to_text": float(np.mean(list(per_clip.values()))),
            "text_to_video": float(np.mean([w for ws in per_caption.values() for w in ws])),
            "ranks": {"video_to_text": v2t, "text_to_video": t2v},
            "by_label": {label: np.mean([per_clip[c] for c in cs]) for label, cs in by_label.items()},
            "n_captions": len(rows), "n_items": len(clips)}


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_two_way_accuracy_and_pairs_only_recall_match_brute_force(seed):
    ids, pairs, labels, video, text = _rows(seed)
    got = minimal_pair_metrics(video, text, ids, pairs, NAMES, labels=labels, keys=list(range(len(ids))))
    want = _brute(ids, pairs, labels, video, text)
    assert got["n_pairs"] == 6 and got["n_items"] == want["n_items"] == 12
    assert got["n_captions"] == want["n_captions"] and got["skipped_pairs"] == 0
    for d in ("video_to_text", "text_to_video"):
        assert got["two_way"][d] == pytest.approx(want[d])
        ranks = np.array(want["ranks"][d])
        block = got["retrieval"][d]
        assert block["R@1"] == pytest.approx(np.mean(ranks == 1))
        assert block["mean_rank"] == pytest.approx(ranks.mean())
        assert block["median_rank"] == pytest.approx(np.median(ranks))
    assert got["retrieval"]["gallery"] == {"video": 12, "text": want["n_captions"]}
    assert {k: v["video_to_text"] for k, v in got["by_label"].items()} == pytest.approx(want["by_label"])
    assert got["chance"] == 0.5
    # the figures move with the embeddings: a model that sees order gets them right
    fixed = text.copy()
    fixed[:] = video  # every caption its clip's own vector
    perfect = minimal_pair_metrics(video, fixed, ids, pairs, NAMES)
    assert perfect["two_way"] == {"video_to_text": 1.0, "text_to_video": 1.0}


def test_an_order_blind_model_scores_exactly_chance():
    ids, pairs, labels, video, text = _rows(3)
    blind = video.copy()
    for i, (c, p) in enumerate(zip(ids, pairs)):
        if p:  # both members of a pair: one embedding, up to rounding noise
            first = next(j for j, (d, q) in enumerate(zip(ids, pairs)) if q == p)
            blind[i] = video[first] + (1e-7 if c.endswith(("1", "3", "5", "7", "9")) else 0)
    got = minimal_pair_metrics(blind, text, ids, pairs, NAMES)
    assert got["two_way"] == {"video_to_text": 0.5, "text_to_video": 0.5}


def test_incomplete_and_malformed_pairs():
    ids, pairs, labels, video, text = _rows(4, n_pairs=3, n_single=1)  # c0…c5 paired, c6 not
    keep = [i for i, c in enumerate(ids) if c != "c1"]  # c0's twin quarantined
    got = minimal_pair_metrics(video[keep], text[keep], [ids[i] for i in keep], [pairs[i] for i in keep],
                               NAMES)
    assert got["n_pairs"] == 2 and got["skipped_pairs"] == 1 and got["n_items"] == 4
    three = ["p0" if c == "c6" else p for c, p in zip(ids, pairs)]
    with pytest.raises(DataError, match=r"test.csv: minimal pair 'p0' names 3 items; a minimal pair is two"):
        minimal_pair_metrics(video, text, ids, three, NAMES, where="test.csv")
    with pytest.raises(DataError, match="test.csv: a stands on rows of two minimal pairs, 'p0' and 'p1'"):
        minimal_pair_metrics(video[:3], text[:3], ["a", "a", "b"], ["p0", "p1", "p0"], NAMES,
                             where="test.csv")
    nothing = minimal_pair_metrics(video[:1], text[:1], ids[:1], ["p0"], NAMES)
    assert nothing == {"column": "pair", "n_pairs": 0, "skipped_pairs": 1}


def test_read_pair_ids(tmp_path):
    path = tmp_path / "m.csv"
    path.write_text("text,pair\na,p1\nb,\nc, p1 \n")
    assert read_pair_ids(path, [2, 3, 4]) == ["p1", "", "p1"]
    assert read_pair_ids(path, [4]) == ["p1"]
    path.write_text("text,pair\na,\n")
    assert read_pair_ids(path, [2]) is None
    path.write_text("text\na\n")
    assert read_pair_ids(path, [2]) is None
    jsonl = tmp_path / "m.jsonl"
    jsonl.write_text('{"text": "a", "pair": 7}\n{"text": "b"}\n')
    assert read_pair_ids(jsonl, [1, 2]) == ["7", ""]


def test_mean_rank_matches_brute_force_under_the_multi_caption_protocol():
    rng = np.random.default_rng(5)
    clips = rng.integers(0, 9, 30)  # 30 caption rows over at most 9 clips
    vec = _unit(rng.standard_normal((9, 6)))
    video, text = vec[clips], _unit(vec[clips] + rng.standard_normal((30, 6)))
    got = retrieval_metrics(video, text, list(range(30)), image_keys=[f"c{c}" for c in clips],
                            names=NAMES, include_strict=False)
    distinct = sorted(set(clips.tolist()))
    t2v = [1 + sum(vec[d] @ text[i] >= vec[clips[i]] @ text[i] for d in distinct if d != clips[i])
           for i in range(30)]
    v2t = [1 + sum(vec[c] @ text[j] >= max(vec[c] @ text[i] for i in np.flatnonzero(clips == c))
                   for j in np.flatnonzero(clips != c)) for c in distinct]
    assert got["text_to_video"]["mean_rank"] == pytest.approx(np.mean(t2v))
    assert got["video_to_text"]["mean_rank"] == pytest.approx(np.mean(v2t))
    assert got["video_to_text"]["median_rank"] == pytest.approx(np.median(v2t))
    assert got["gallery"] == {"video": len(distinct), "text": 30}


# ----------------------------------------------------------------------------- end to end
def _clip_model(temporal):
    from jointspace.config import ModelConfig, TowerSpec
    from jointspace.model import JointModel
    torch.manual_seed(0)
    frame = {"name": "convnet", "options": {"image_size": 32, "widths": [8]}}
    model = JointModel(ModelConfig(embed_dim=16, towers={
        "video": TowerSpec("video_frames", {"frame_tower": frame, "frames": 8, "temporal": temporal,
                                            "width": 16, "heads": 2, "layers": 1}),
        "text": TowerSpec("transformer", {"vocab_size": 300, "width": 16, "layers": 1, "heads": 2,
                                          "context_length": 24})}))
    return model.eval()


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    from jointspace.data.video_shapes import VideoSpec, write_video_shapes
    out = tmp_path_factory.mktemp("clips")
    return write_video_shapes(out, VideoSpec(n=60, frames=8, frame_size=32, workers=1))


@pytest.fixture(scope="module")
def evaluated(clips, tmp_path_factory):
    from jointspace.data.manifest import read_manifest
    from jointspace.eval.run import evaluate
    out = {}
    for temporal in ("transformer", "mean"):
        model = _clip_model(temporal)
        model.towers["text"].prepare([r.text for r in read_manifest(clips["train"], required=("text",)).records])
        folder = tmp_path_factory.mktemp(temporal)
        out[temporal] = (model, folder, evaluate(model, clips["test"], pair="video:text", out_dir=folder))
    return out


def test_evaluate_runs_the_pair_test_on_generated_clips(clips, evaluated, capsys):
    import csv
    model, folder, results = evaluated["transformer"]
    rows = list(csv.DictReader(open(clips["test"])))
    assert results["pair"] == ["video", "text"] and results["n"] == len(rows) == 24
    assert {"retrieval", "zero_shot", "minimal_pairs"} <= set(results["tasks"])
    r = results["retrieval"]
    assert r["gallery"] == {"video": 12, "text": 24}  # two caption rows per clip: one item
    assert {"median_rank", "mean_rank"} <= set(r["video_to_text"]) and "mean_rank" in r["text_to_video"]
    assert results["metrics"]["video_retrieval_mean_rank"] == r["text_to_video"]["mean_rank"]
    assert results["zero_shot"]["n_classes"] == len({row["label"] for row in rows})
    # the pair figures from the model's own embeddings, by brute force
    base = clips["test"].parent
    video = model.encode("video", [str(base / row["video"]) for row in rows])
    text = model.encode("text", [row["text"] for row in rows])
    want = _brute([row["video"] for row in rows], [row["pair"] for row in rows],
                  [row["label"] for row in rows], video, text)
    m = results["minimal_pairs"]
    assert m["n_pairs"] == 5 and m["n_items"] == 10 and m["n_captions"] == 20
    assert m["two_way"]["video_to_text"] == pytest.approx(want["video_to_text"], abs=1e-6)
    assert m["two_way"]["text_to_video"] == pytest.approx(want["text_to_video"], abs=1e-6)
    assert m["two_way"] != {"video_to_text": 0.5, "text_to_video": 0.5}  # it sees order, if untrained
    on_disk = json.loads((folder / "results.json").read_text())
    assert on_disk["minimal_pairs"] == m
    from jointspace.cli.eval import print_results
    print_results(results)
    printed = capsys.readouterr().out
    assert "minimal pairs (5 pairs, 10 items, 20 captions): 2-way accuracy video_to_text" in printed
    assert "mean rank" in printed and "pairs-only gallery R@1: video_to_text" in printed


def test_mean_pooling_is_blind_to_order_end_to_end(evaluated):
    _, _, results = evaluated["mean"]
    # the twins are the same frames in another order: equal embeddings, exactly chance
    assert results["minimal_pairs"]["two_way"] == {"video_to_text": 0.5, "text_to_video": 0.5}


def test_the_report_shows_posters_and_the_pair_figures(evaluated):
    _, folder, results = evaluated["transformer"]
    page = (folder / "report.html").read_text()
    posters = re.findall(r"<img alt='[^']*' src='data:image/jpeg;base64,([A-Za-z0-9+/=]+)'>", page)
    assert len(posters) >= 8  # the clips, as their poster frames (not their file names)
    assert ".mp4</code>" not in page
    import base64
    import io
    from PIL import Image
    assert Image.open(io.BytesIO(base64.b64decode(posters[0]))).format == "JPEG"
    m = results["minimal_pairs"]
    assert "Minimal pairs: does order matter?" in page
    assert f"minimal pairs: 2-way accuracy video → text {m['two_way']['video_to_text']:.2f}" in page
    assert "R@1 in the pairs-only gallery, text → video" in page and "mean rank" in page
    blind = (evaluated["mean"][1] / "report.html").read_text()
    assert "2-way accuracy video → text 0.50, text → video 0.50 (chance 0.50)" in blind


def test_without_a_pair_column_the_test_is_skipped_or_refused(clips, tmp_path):
    import csv
    from jointspace.errors import ConfigError
    from jointspace.eval.run import evaluate
    rows = list(csv.DictReader(open(clips["test"])))
    bare = clips["test"].parent / "no_pairs.csv"  # beside the clips, so the paths resolve
    with open(bare, "w", newline="") as f:
        writer = csv.DictWriter(f, ["id", "video", "text", "label"], extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    model = _clip_model("transformer")
    model.towers["text"].prepare([r["text"] for r in rows])
    results = evaluate(model, bare, pair="video:text", tasks=None, report=False)
    assert "minimal_pairs" not in results and "minimal_pairs" not in results["tasks"]
    with pytest.raises(ConfigError, match=r"minimal_pairs needs a 'pair' column naming pairs in .*no_pairs.csv"):
        evaluate(model, bare, pair="video:text", tasks=["minimal_pairs"], report=False)
