"""Evaluation: zero-shot classification and cross-modal retrieval."""
from .run import evaluate

__all__ = ["evaluate"]
