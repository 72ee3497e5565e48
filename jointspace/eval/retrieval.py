"""Cross-modal retrieval: Recall@K when item ``i`` of each side is a pair."""
from __future__ import annotations

from typing import Sequence

import numpy as np


def positive_ranks(queries: np.ndarray, gallery: np.ndarray, block: int = 1024) -> np.ndarray:
    """0-based rank of gallery item ``i`` for query ``i`` (ties count against it).

    Memory is O(block · N), not O(N²).
    """
    if queries.shape != gallery.shape:
        raise ValueError(f"paired retrieval needs equal shapes, got {queries.shape} and {gallery.shape}")
    ranks = np.empty(len(queries), dtype=np.int64)
    for start in range(0, len(queries), block):
        sims = queries[start:start + block] @ gallery.T
        rows = np.arange(sims.shape[0])
        positive = sims[rows, start + rows]
        # strictly better items plus equal-scoring others: a pessimistic rank
        ranks[start:start + block] = (sims >= positive[:, None]).sum(1) - 1
    return ranks


def recall_at_k(queries: np.ndarray, gallery: np.ndarray, ks: Sequence[int] = (1, 5, 10)) -> dict[str, float]:
    """``{"R@1": …, "R@5": …}``: the fraction of queries whose pair ranks in the top k."""
    ranks = positive_ranks(queries, gallery)
    return {f"R@{k}": float((ranks < k).mean()) for k in ks}


def retrieval_metrics(image_emb: np.ndarray, text_emb: np.ndarray,
                      ks: Sequence[int] = (1, 5, 10)) -> dict[str, dict[str, float]]:
    """Text→image and image→text Recall@K, with the chance level for reference."""
    n = len(image_emb)
    return {
        "text_to_image": recall_at_k(text_emb, image_emb, ks),
        "image_to_text": recall_at_k(image_emb, text_emb, ks),
        "chance": {f"R@{k}": min(1.0, k / n) for k in ks},
        "n": n,
    }
