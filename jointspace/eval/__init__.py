"""Evaluation: zero-shot classification and cross-modal retrieval."""
from .retrieval import positive_ranks, recall_at_k, retrieval_metrics
from .run import evaluate

__all__ = ["evaluate", "positive_ranks", "recall_at_k", "retrieval_metrics"]
