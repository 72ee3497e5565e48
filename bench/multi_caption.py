"""The multi-caption retrieval protocol on a COCO-style manifest built from a test split.

Each image of a test manifest is written on three rows with three different
captions (the original, "a picture of " + it, it + ", photographed"), then the
model is evaluated on the one-caption and the three-caption manifests, and the
three-caption figures are recomputed three ways on the same embeddings:
jointspace's ``evaluate`` (the protocol), CLIP_benchmark's ``recall_at_k`` with
a positive-pairs matrix (the reference), and the per-row protocol that treats
every row's image as an item of its own (what jointspace did before).

    python bench/multi_caption.py demo_out/model demo_out/data/test.csv
"""
from __future__ import annotations

import argparse
import csv
import importlib.util
import tempfile
from pathlib import Path

import numpy as np
import torch

from jointspace.eval import evaluate
from jointspace.eval.embed import embed_manifest
from jointspace.eval.retrieval import item_identity, retrieval_metrics

VARIANTS = ("{}", "a picture of {}", "{}, photographed")


def _clip_benchmark():
    spec = importlib.util.find_spec("clip_benchmark")
    if spec is None:
        raise SystemExit("pip install --no-deps clip-benchmark==1.6.2 (the reference)")
    path = Path(spec.submodule_search_locations[0]) / "metrics" / "zeroshot_retrieval.py"
    module_spec = importlib.util.spec_from_file_location("clip_benchmark_retrieval", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module


def three_captions(manifest: Path, out: Path) -> Path:
    with open(manifest, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    with open(out, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, ["id", "image", "text", "label"])
        writer.writeheader()
        for r in rows:
            for j, variant in enumerate(VARIANTS):
                writer.writerow({"id": f"{r.get('id', '')}-{j}", "image": str(manifest.parent / r["image"]),
                                 "text": variant.format(r["text"]), "label": r.get("label", "")})
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("model", type=Path)
    parser.add_argument("manifest", type=Path)
    args = parser.parse_args()
    ks = (1, 5, 10)
    with tempfile.TemporaryDirectory() as tmp:
        coco = three_captions(args.manifest, Path(tmp) / "three.csv")
        single = evaluate(args.model, args.manifest, tasks=["retrieval"], report=False)
        multi = evaluate(args.model, coco, tasks=["retrieval"], report=False)
        emb = embed_manifest(args.model, coco, ["image", "text"])
    images = [item_identity(r.fields["image"]) for r in emb.records]
    captions = [r.fields["text"] for r in emb.records]
    image_emb, text_emb = emb.embeddings["image"], emb.embeddings["text"]
    per_row = retrieval_metrics(image_emb, text_emb, captions, ks, include_strict=False)
    # the reference: distinct images as the gallery, positives by identical caption
    distinct = sorted(set(images))
    first = [images.index(p) for p in distinct]
    positive = np.zeros((len(captions), len(distinct)), dtype=bool)
    by_caption: dict[str, set[int]] = {}
    for row, caption in enumerate(captions):
        by_caption.setdefault(caption, set()).add(distinct.index(images[row]))
    for row, caption in enumerate(captions):
        positive[row, list(by_caption[caption])] = True
    cb = _clip_benchmark()
    scores = torch.from_numpy(text_emb.astype(np.float64) @ image_emb[first].astype(np.float64).T)
    pos = torch.from_numpy(positive)
    reference = {"text_to_image": {f"R@{k}": (cb.recall_at_k(scores, pos, k) > 0).float().mean().item()
                                   for k in ks},
                 "image_to_text": {f"R@{k}": (cb.recall_at_k(scores.T, pos.T, k) > 0).float().mean().item()
                                   for k in ks}}
    fmt = lambda block: " / ".join(f"{block[f'R@{k}']:.3f}" for k in ks)  # noqa: E731
    print(f"{'R@1 / R@5 / R@10':<52} {'text→image':<22} image→text")
    for name, block in ((f"one caption per image ({single['n']} rows)", single["retrieval"]),
                        (f"three captions per image, jointspace ({multi['n']} rows)", multi["retrieval"]),
                        ("three captions, CLIP_benchmark recall_at_k", reference),
                        ("three captions, per-row protocol (before)", per_row)):
        print(f"{name:<52} {fmt(block['text_to_image']):<22} {fmt(block['image_to_text'])}")


if __name__ == "__main__":
    main()
