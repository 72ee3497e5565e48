"""Queries: terms of any modality, and how several are composed into one.

A query is a list of :class:`Term` s, each an item of some modality (a text,
an image, an audio clip, or a raw vector) with a weight; negative weights
push results away ("an image of this, but red, not blurry").

**Calibration.** Cosine scores from different modalities live on different
scales: an image query's similarities to other images spread over
[0.3, 1.0] while a text query's similarities to images sit in a narrow band
around 0.2, so a plain weighted sum of the two is decided by the image term
alone. Each term's scores are therefore standardised over the collection:
``z_t(x) = (q_t·x − q_t·μ) / σ_t`` with ``μ`` the mean of the collection's
vectors and ``σ_t² = q_tᵀ Σ q_t`` the variance of the term's scores (``Σ``
their covariance, estimated on a sample of up to 20,000 items). A weighted
sum of z-scores is still linear in ``x``:

    Σ_t w_t z_t(x) = x · u − c,   u = Σ_t w_t q_t / σ_t,   c = Σ_t w_t (q_t·μ) / σ_t

so a composed, calibrated query is one vector ``u`` searched in the same
index as a single query. Its score reads as "standard deviations above the
collection's average, summed over the terms". A single-term query is
scored by its plain cosine (calibrating one term does not change its order).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..errors import DataError, JointspaceError
from ..modalities import MODALITIES

CALIBRATION_SAMPLE = 20_000


@dataclass(frozen=True)
class Term:
    """One part of a query: ``modality`` is a tower's modality or ``"vector"``
    (``value`` is then a query vector of the collection's dimension). ``checked``: the
    value already passed :func:`file_problem` where it was made (a server's upload, whose
    message names the form field), so the search does not decode it again to check it."""

    modality: str
    value: Any
    weight: float = 1.0
    checked: bool = field(default=False, compare=False, repr=False)


@dataclass(frozen=True)
class Calibration:
    """Mean and covariance of a collection's vectors of one modality."""

    mean: np.ndarray
    cov: np.ndarray

    @classmethod
    def fit(cls, vectors: np.ndarray) -> "Calibration":
        if len(vectors) < 2:
            raise JointspaceError("calibrating a composed query needs at least 2 items in the "
                                  "collection")
        x = np.asarray(vectors, dtype=np.float64)
        return cls(x.mean(axis=0), np.cov(x, rowvar=False))

    def scale(self, query: np.ndarray) -> tuple[float, float]:
        """``(mean, std)`` of ``query``'s scores over the collection."""
        q = np.asarray(query, dtype=np.float64)
        std = float(np.sqrt(max(q @ self.cov @ q, 1e-12)))
        return float(q @ self.mean), std


def compose(vectors: Sequence[np.ndarray], weights: Sequence[float],
            calibration: Calibration | None) -> tuple[np.ndarray, float]:
    """One search vector ``u`` and offset ``c`` so that ``x·u − c`` is the composed score.

    Without ``calibration`` the score is the plain weighted sum of cosines.
    """
    if not vectors:
        raise JointspaceError("a query needs at least one term")
    if all(w == 0 for w in weights):
        raise JointspaceError("every term of the query has weight 0")
    u = np.zeros(len(vectors[0]), dtype=np.float64)
    offset = 0.0
    for q, w in zip(vectors, weights):
        q = np.asarray(q, dtype=np.float64)
        if calibration is None:
            u += w * q
        else:
            mean, std = calibration.scale(q)
            u += w * q / std
            offset += w * mean / std
    return u.astype(np.float32), offset


def check_terms(terms: Sequence[Term], modalities: Sequence[str]) -> list[Term]:
    """Validate the terms of a query against the modalities a model can encode."""
    terms = list(terms)
    if not terms:
        raise JointspaceError("the query is empty: give text, an image, audio, a vector or terms")
    for i, term in enumerate(terms):
        where = f"query term {i + 1} ({term.modality})"
        if term.modality != "vector" and term.modality not in modalities:
            raise JointspaceError(f"{where}: the model has no {term.modality!r} tower; it encodes "
                                  f"{', '.join(modalities)} (or give a 'vector')")
        if not isinstance(term.weight, (int, float)) or not np.isfinite(term.weight):
            raise JointspaceError(f"{where}: weight must be a finite number, got {term.weight!r}")
        problem = None if term.checked else file_problem(term.modality, term.value)
        if problem:
            raise DataError(f"{where}: {problem}")
    return terms


def file_problem(modality: str, value: Any) -> str | None:
    """Why a query's item cannot be used, or None, as its modality's plug-in says: a path
    of a file modality gets the plug-in's ``check``, the one indexing and training apply to
    every file of it (audio: undecodable, empty or silent; images: not decodable), so a file
    refused there is refused as a query, from the CLI, Python or HTTP; any other value its
    ``check_value`` (an empty text; an array of audio samples, NumPy or torch, gets the
    silence rule; a PIL image passes)."""
    plugin = MODALITIES.get(modality) if modality in MODALITIES else None
    if plugin is None:
        return None
    if plugin.is_file and isinstance(value, (str, Path)):
        found = plugin.check(value)
        return getattr(found, "problem", found)
    return plugin.check_value(value)


__all__ = ["CALIBRATION_SAMPLE", "Calibration", "Term", "check_terms", "compose", "file_problem"]
