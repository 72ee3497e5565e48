"""results.json's ``metrics``: the headline figures under flat, stable keys (CLIP_benchmark's
names where it has one), so a table of runs or a CI check reads one level."""
from __future__ import annotations

from typing import Any

from .pairs import DEFAULT_PAIR, direction_keys


def flat_metrics(results: dict[str, Any]) -> dict[str, float]:
    """The headline numbers under flat, stable keys, named as CLIP_benchmark names them
    where it has a name: for the pair ``a:b``, ``<a>_retrieval_recall@5`` is Recall@5
    of retrieving ``a`` items from ``b`` queries (``image_retrieval_recall@5`` is
    text→image), then ``<a>_retrieval_map@10``, ``<a>_retrieval_median_rank``, ``…_mean_rank``,
    ``<a>_retrieval_csls_recall@K``, ``<a>_retrieval_by_label_recall@K``, and
    zero-shot ``acc1``, ``acc5``, ``mean_per_class_recall``."""
    a, b = results.get("pair", DEFAULT_PAIR)
    out: dict[str, float] = {}
    for target, direction in zip((a, b), direction_keys((a, b))) if "retrieval" in results else ():
        block = results["retrieval"][direction]
        for key, value in block.items():
            name = (key.replace("R@", "recall@").replace("mAP@", "map@")
                    if key != "median_rank" else key)
            out[f"{target}_retrieval_{name}"] = value
        by_label = results.get("retrieval_by_label")
        if by_label:
            for key, value in by_label[direction].items():
                if key.startswith("R@"):
                    out[f"{target}_retrieval_by_label_{key.replace('R@', 'recall@')}"] = value
    z = results.get("zero_shot")
    if z:
        out.update(acc1=z["top1"], acc5=z["top5"], mean_per_class_recall=z["mean_per_class_recall"])
    for key, value in results.get("geometry", {}).items():
        if isinstance(value, (int, float)):
            out[key] = value
    if "linear_probe" in results:
        out["linear_probe_acc1"] = results["linear_probe"]["acc1"]
        out["knn_acc1"] = results["knn"]["acc1"]
    return out
