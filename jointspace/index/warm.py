"""Warming a collection up: one query in each modality the model takes, through the
decoding a query's item gets, and one search of each indexed store, so that the first
real query costs what any does (a server does this before it reports ready).

:class:`WarmingUp` is that part of :class:`~jointspace.index.Collection`.
"""
from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np

from ..errors import JointspaceError
from ..modalities import MODALITIES
from .query import file_problem


class WarmingUp:
    """A mixin of :class:`~jointspace.index.Collection` (its ``model_modalities()``, query
    batcher, ``modalities``, ``store()``, ``dim`` and ``search_vectors()``)."""

    def warm_up(self) -> float:
        """Encode one query in each modality the model takes and search each indexed store
        once. Each query is its plug-in's :meth:`~jointspace.modalities.Modality.sample`
        (a modality whose plug-in has none is skipped), taken the way a query's item is:
        a file written to a temporary folder is checked, then decoded by the tower — the
        audio a 44.1 kHz WAV, so the decoder (soundfile) and the resampler
        (``scipy.signal``) are loaded here, not by the first real clip; the image a JPEG,
        through :func:`~jointspace.modalities.image.open_image`. Returns the seconds it took."""
        started = time.perf_counter()
        with tempfile.TemporaryDirectory(prefix="jointspace-warm-up-") as tmp:
            for modality in self.model_modalities():
                plugin = MODALITIES.get(modality) if modality in MODALITIES else None
                item = plugin.sample(Path(tmp)) if plugin is not None else None
                if item is None:
                    continue
                problem = file_problem(modality, item)  # what a query's item goes through
                if problem:
                    raise JointspaceError(f"warming up {modality}: {problem}")
                self._batcher.encode(modality, item)
        probe = np.full(self.dim, self.dim ** -0.5, np.float32)
        for modality in self.modalities:
            if self.store(modality).count():
                self.search_vectors(probe, 1, target=modality)
        return time.perf_counter() - started


__all__ = ["WarmingUp"]
