"""Zero-shot classification: class names → prompt embeddings → nearest class."""
from __future__ import annotations

from typing import Sequence

import numpy as np

from ..errors import ConfigError
from ..model import JointModel
from ..vectors import top_k
from .pairs import class_name_modality

DEFAULT_TEMPLATES = ("a {label}", "a picture of a {label}", "there is a {label}")


def class_embeddings(model: JointModel, classes: Sequence[str],
                     templates: Sequence[str] = DEFAULT_TEMPLATES, dim: int | None = None,
                     batch_size: int = 256, modality: str | None = None) -> np.ndarray:
    """One unit vector per class: the renormalised mean of its prompt embeddings
    (prompt ensembling, as in CLIP), embedded as ``modality`` (default: the model's
    first text-like tower, :func:`.pairs.class_name_modality`)."""
    modality = modality or class_name_modality(model.modalities)
    if modality is None:
        raise ConfigError(f"zero-shot embeds class names with a text-like tower; this model has "
                          f"{', '.join(model.modalities)}")
    prompts = [t.format(label=c) for c in classes for t in templates]
    emb = model.encode(modality, prompts, dim=dim, batch_size=batch_size)
    emb = emb.reshape(len(classes), len(templates), -1).mean(1)
    return emb / np.linalg.norm(emb, axis=1, keepdims=True)


def zero_shot_metrics(query_emb: np.ndarray, labels: Sequence[str], classes: Sequence[str],
                      class_emb: np.ndarray) -> dict:
    """Top-1 / top-5 accuracy, the per-class top-1 (recall) and its mean over the
    classes present (balanced accuracy), and the confusion matrix
    (``confusion[true][predicted]``, rows and columns in ``classes`` order) of
    query embeddings (images, sounds …) against class embeddings."""
    index = {c: i for i, c in enumerate(classes)}
    unknown = sorted({l for l in labels if l not in index})
    if unknown:
        raise ValueError(f"labels not among the classes: {unknown[:5]}")
    y = np.array([index[l] for l in labels])
    scores = query_emb @ class_emb.T
    top5 = top_k(scores, 5)  # ties in class order
    correct = top5[:, 0] == y
    per_class = {c: float(correct[y == i].mean()) for i, c in enumerate(classes) if (y == i).any()}
    # confusion[true][predicted] over all classes, in the order given
    confusion = np.zeros((len(classes), len(classes)), dtype=np.int64)
    np.add.at(confusion, (y, top5[:, 0]), 1)
    return {"top1": float(correct.mean()), "top5": float((top5 == y[:, None]).any(1).mean()),
            "mean_per_class_recall": float(np.mean(list(per_class.values()))),
            "chance_top1": 1 / len(classes), "n_classes": len(classes), "n": int(len(y)),
            "per_class_top1": per_class, "classes": list(classes), "confusion": confusion.tolist()}
