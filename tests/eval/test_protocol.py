"""The multi-caption retrieval protocol (COCO / Flickr-style rows: several captions per
image, captions shared across images) against CLIP_benchmark's own ``recall_at_k``
with a positive-pairs matrix, on data where averaging by rows instead of images,
or the reverse, gives other numbers."""
import csv
import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch

from jointspace.eval import evaluate
from jointspace.eval.retrieval import retrieval_metrics

KS = (1, 2, 5, 10)


def _clip_benchmark():
    """CLIP_benchmark's metrics module, loaded by file path (its package imports need
    torchvision; this file needs torch and tqdm only)."""
    spec = importlib.util.find_spec("clip_benchmark")
    if spec is None:
        pytest.fail("clip-benchmark is missing: `make install` adds it with --no-deps")
    path = Path(spec.submodule_search_locations[0]) / "metrics" / "zeroshot_retrieval.py"
    module_spec = importlib.util.spec_from_file_location("clip_benchmark_retrieval", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module


def _reference(images: np.ndarray, texts: np.ndarray, positive: np.ndarray, ks=KS) -> dict:
    """CLIP_benchmark: text→image over caption rows against the distinct images,
    image→text over the images against the caption rows; a hit = any positive."""
    cb = _clip_benchmark()
    scores = torch.from_numpy(texts @ images.T)
    pos = torch.from_numpy(positive)
    return {"text_to_image": {f"R@{k}": (cb.recall_at_k(scores, pos, k) > 0).float().mean().item()
                              for k in ks},
            "image_to_text": {f"R@{k}": (cb.recall_at_k(scores.T, pos.T, k) > 0).float().mean().item()
                              for k in ks}}


def _coco_rows(seed: int):
    """16 images with 1, 2 or 5 captions; two captions each stand on two images' rows."""
    rng = np.random.default_rng(seed)
    n_captions = [1, 2, 5, 1, 2, 5, 1, 2, 5, 1, 2, 5, 1, 1, 2, 5]
    rows = [(f"img{i}.png", f"caption {i}.{j}") for i, m in enumerate(n_captions) for j in range(m)]
    rows += [("img0.png", "a shared caption"), ("img7.png", "a shared caption"),
             ("img2.png", "another shared one"), ("img3.png", "another shared one")]
    rows = [rows[i] for i in rng.permutation(len(rows))]
    image_names = sorted({im for im, _ in rows})
    captions = sorted({c for _, c in rows})
    d = 24
    image_vec = rng.standard_normal((len(image_names), d))
    # a caption sits near (one of) its images, so the figures are neither 0 nor 1
    caption_vec = np.stack([image_vec[image_names.index(next(im for im, c2 in rows if c2 == c))]
                            for c in captions]) + 3.0 * rng.standard_normal((len(captions), d))
    unit = lambda x: x / np.linalg.norm(x, axis=1, keepdims=True)  # noqa: E731
    image_vec, caption_vec = unit(image_vec), unit(caption_vec)
    image_rows = image_vec[[image_names.index(im) for im, _ in rows]]
    text_rows = caption_vec[[captions.index(c) for _, c in rows]]  # identical captions, identical rows
    return rows, image_names, image_vec, image_rows, text_rows


def _positives(rows, image_names, key_of_row):
    """[rows, images]: row r's caption is answered by image i when some row with r's key
    names image i."""
    positive = np.zeros((len(rows), len(image_names)), dtype=bool)
    for r in range(len(rows)):
        for s, (image, _) in enumerate(rows):
            if key_of_row[s] == key_of_row[r]:
                positive[r, image_names.index(image)] = True
    return positive


def _headline(block, ks=KS):
    """``{"text_to_image R@1": …}``: the recalls of both directions, flat."""
    return {f"{d} R@{k}": block[d][f"R@{k}"] for d in ("text_to_image", "image_to_text") for k in ks}


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_multi_caption_retrieval_matches_clip_benchmark(seed):
    rows, image_names, image_vec, image_rows, text_rows = _coco_rows(seed)
    captions = [c for _, c in rows]
    images = [im for im, _ in rows]
    got = retrieval_metrics(image_rows, text_rows, captions, KS, image_keys=images)
    expected = _reference(image_vec, text_rows, _positives(rows, image_names, captions))
    assert _headline(got) == pytest.approx(_headline(expected))
    assert got["gallery"] == {"image": 16, "text": len(rows)}
    # strict: only a row's own image answers its caption, only an image's own rows answer it
    strict = _reference(image_vec, text_rows, _positives(rows, image_names, list(range(len(rows)))))
    assert _headline(got["strict"]) == pytest.approx(_headline(strict))
    # the per-row protocol (each row an image of its own) gives other numbers on this data
    per_row = retrieval_metrics(image_rows, text_rows, captions, KS)
    assert _headline(per_row) != pytest.approx(_headline(expected))


def test_group_and_label_keys_match_clip_benchmark():
    rows, image_names, image_vec, image_rows, text_rows = _coco_rows(3)
    images = [im for im, _ in rows]
    # a group column: images 0-3 are one scene, the rest a scene each
    groups = [f"scene {min(image_names.index(im), 3)}" for im in images]
    got = retrieval_metrics(image_rows, text_rows, groups, KS, image_keys=images,
                            text_keys=[c for _, c in rows])
    assert _headline(got) == pytest.approx(_headline(_reference(
        image_vec, text_rows, _positives(rows, image_names, groups))))
    labels = [f"label {image_names.index(im) % 3}" for im in images]
    by_label = retrieval_metrics(image_rows, text_rows, labels, KS, image_keys=images,
                                 include_strict=False)
    assert _headline(by_label) == pytest.approx(_headline(_reference(
        image_vec, text_rows, _positives(rows, image_names, labels))))


def _shapes_rows(shapes_dir):
    with open(shapes_dir / "test.csv") as f:
        return list(csv.DictReader(f))


def test_evaluate_on_a_coco_style_manifest(trained_model_dir, shapes_dir, tmp_path):
    """Images of 1, 2 and 5 captions, some captions on two images, and one image's path
    spelled three ways: evaluate() against CLIP_benchmark on independent embeddings."""
    import jointspace
    source = _shapes_rows(shapes_dir)
    counts = [1, 2, 5, 1, 2, 5, 1, 2, 5, 1, 2, 5]
    spellings = {0: lambda p: p, 1: lambda p: f"./{p}", 2: lambda p: f"{Path(p).parent}/../"
                 f"{Path(p).parent.name}/{Path(p).name}"}
    variants = ["{}", "a picture of {}", "{}, photographed", "there is {}", "{} on a plain ground"]
    rows = []
    for i, (r, m) in enumerate(zip(source, counts)):
        for j in range(m):
            path = str(Path(shapes_dir) / spellings[j % 3](r["image"])) if i == 2 else str(
                Path(shapes_dir) / r["image"])
            rows.append({"id": f"{i}-{j}", "image": path, "text": variants[j].format(r["text"]),
                         "label": r["label"], "scene": i})
    rows.append({**rows[0], "id": "s0", "text": "two scenes share this caption"})
    rows.append({**rows[5], "id": "s1", "text": "two scenes share this caption"})
    manifest = tmp_path / "coco.csv"
    with open(manifest, "w", newline="") as f:
        writer = csv.DictWriter(f, ["id", "image", "text", "label"], extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    results = evaluate(trained_model_dir, manifest, batch_size=4)  # spellings in other batches
    r = results["retrieval"]
    assert r["gallery"] == {"image": 12, "text": len(rows)}  # one image however it is spelled
    model = jointspace.load(trained_model_dir)
    scenes = sorted({row["scene"] for row in rows})
    images = model.encode_image([str(Path(shapes_dir) / source[s]["image"]) for s in scenes],
                                batch_size=5).astype(np.float64)
    texts = np.concatenate([model.encode_text([row["text"]]) for row in rows]).astype(np.float64)
    positive = np.zeros((len(rows), len(scenes)), dtype=bool)
    for a, row in enumerate(rows):
        for other in rows:
            if other["text"] == row["text"]:
                positive[a, other["scene"]] = True
    expected = _reference(images, texts, positive, (1, 5, 10))
    for direction in ("text_to_image", "image_to_text"):
        assert {k: r[direction][k] for k in ("R@1", "R@5", "R@10")} == pytest.approx(expected[direction])
    # the label view: an image is answered by every caption of its label
    labels = [row["label"] for row in rows]
    by_label = np.array([[labels[a] == source[s]["label"] for s in scenes] for a in range(len(rows))])
    expected = _reference(images, texts, by_label, (1, 5, 10))
    for direction in ("text_to_image", "image_to_text"):
        assert {k: results["retrieval_by_label"][direction][k] for k in ("R@1", "R@5", "R@10")} == \
            pytest.approx(expected[direction])


def test_same_content_under_two_names_is_reported_and_the_ceiling_follows_the_texts():
    rng = np.random.default_rng(7)
    image = rng.standard_normal((6, 8)).astype(np.float32)
    image[5] = image[4]  # the same bytes under two paths: two items that tie
    text = rng.standard_normal((6, 8)).astype(np.float32)
    text[1] = text[0]  # one caption on two rows
    groups = ["g0", "g1", "g2", "g3", "g4", "g5"]  # a group column: not the captions
    got = retrieval_metrics(image, text, groups, (1,), image_keys=[f"i{j}" for j in range(6)])
    assert got["identical_items"] == {"image": 1}
    # the ceiling knows rows 0 and 1 share a caption from their embeddings, not from groups
    assert got["strict"]["ceiling"]["image_to_text"]["R@1"] == pytest.approx(4 / 6)
    assert got["strict"]["ceiling"]["text_to_image"]["R@1"] == pytest.approx(5 / 6)


def test_validation_during_training_uses_the_protocol(trained_model_dir, shapes_dir):
    """One image on rows of different validation batches: one gallery item, no error."""
    from dataclasses import replace
    import jointspace
    from jointspace.data.manifest import read_manifest
    from jointspace.data.pairs import PairDataset
    from jointspace.train.step import training_objective
    from jointspace.train.trainer import validate
    model = jointspace.load(trained_model_dir)
    records = read_manifest(shapes_dir / "val.csv").records[:10]
    records[9] = replace(records[9], fields={**records[9].fields, "image": records[0].fields["image"]})
    out = validate(model, training_objective(model.config), PairDataset(records, model.towers),
                   batch_size=4, records=records)
    image = model.encode_image([r.fields["image"] for r in records], batch_size=1)
    text = model.encode_text([r.fields["text"] for r in records])
    captions = [r.fields["text"] for r in records]
    ids = [str(r.fields["image"]) for r in records]
    expected = retrieval_metrics(image, text, captions, (1,), image_keys=ids, include_strict=False)
    assert expected["gallery"]["image"] == 9
    assert out["val_text_to_image_R@1"] == pytest.approx(expected["text_to_image"]["R@1"])
    assert out["val_image_to_text_R@1"] == pytest.approx(expected["image_to_text"]["R@1"])
