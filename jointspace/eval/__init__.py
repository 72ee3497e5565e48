"""Evaluation: embed once, then retrieval, zero-shot, probes, geometry, and comparing spaces.

Each metric is a pure function over embeddings (:mod:`.retrieval`, :mod:`.ranking`,
:mod:`.zeroshot`, :mod:`.probe`, :mod:`.geometry`, :mod:`.similarity`);
:func:`evaluate` and :func:`compare` embed a manifest once and run them.
"""
from .compare import compare
from .embed import embed_manifest
from .geometry import geometry_metrics
from .retrieval import positive_ranks, recall_at_k, retrieval_metrics
from .run import evaluate
from .similarity import compare_spaces

__all__ = ["compare", "compare_spaces", "embed_manifest", "evaluate", "geometry_metrics",
           "positive_ranks", "recall_at_k", "retrieval_metrics"]
