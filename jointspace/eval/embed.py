"""Embed a manifest once: the vectors of every modality a task needs, with labels
and group keys, cached on disk so later evaluations cost no embedding.

The cache file ``embeddings-<model fingerprint>-<content key>.npz`` lives in
the evaluation's output folder. The model fingerprint
(:func:`~jointspace.model_io.model_fingerprint`) covers config, weights and
tower assets; the content key covers the manifest's kept rows (ids and
items), the modalities, and each referenced file's size and modification
time, so an edited caption, a retrained model or a replaced image never
reads stale vectors. Each distinct item is embedded once, so repeated
captions or files get identical vectors (and tie exactly in retrieval).
"""
from __future__ import annotations

import hashlib
import io
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from ..config import modality_of
from ..data.manifest import Manifest, OnBadRow, read_manifest
from ..fileio import atomic_write_bytes
from ..config import ModelConfig
from ..errors import JointspaceError
from ..model import JointModel, load, resolve_device
from ..model_io import folder_fingerprint, model_fingerprint, read_config
from ..progress import logger
from ..towers import MODALITIES
from .retrieval import item_identity


class ModelSource:
    """A model given as a folder or an object. Its config and fingerprint come without
    building it (a folder is hashed as files); the model itself is built on first use,
    so an evaluation whose embeddings are all cached never loads the weights."""

    def __init__(self, model: "JointModel | str | Path | ModelSource", device: str | None = None) -> None:
        if isinstance(model, ModelSource):
            model = model._model or model.folder
        self._model = model if isinstance(model, JointModel) else None
        self.folder = None if isinstance(model, JointModel) else Path(model)
        self.config: ModelConfig = model.config if isinstance(model, JointModel) else read_config(model)
        # a folder runs where "auto" says; a given model stays put unless told otherwise
        self.device = device if device is not None or self._model is not None else "auto"
        # resolved now, so a bad device name fails before any file is read
        self._resolved = resolve_device(self.device) if self.device is not None else None
        if self._model is not None and self._resolved is not None:
            self._model.to(self._resolved)
        self._fingerprint: str | None = None

    @property
    def fingerprint(self) -> str:
        if self._fingerprint is None:
            self._fingerprint = (folder_fingerprint(self.folder) if self._model is None
                                 else model_fingerprint(self._model))
        return self._fingerprint

    def check(self, modality: str) -> None:
        if modality not in self.config.towers:
            raise JointspaceError(f"this model has no {modality!r} tower; it has: "
                                  f"{', '.join(self.config.towers)}")

    def get(self) -> JointModel:
        if self._model is None:
            self._model = load(self.folder).to(self._resolved)
        return self._model

    @property
    def device_name(self) -> str:
        if self._model is not None:
            return str(next(self._model.parameters()).device)
        return str(self._resolved)


def cached_array(cache_dir: str | Path | None, name: str, compute) -> tuple[np.ndarray, bool]:
    """``compute()``'s array, read from ``cache_dir/name.npy`` when there (else written
    there atomically); returns it and whether it came from the cache."""
    if cache_dir is None:
        return compute(), False
    path = Path(cache_dir) / f"{name}.npy"
    if path.is_file():
        try:
            return np.load(path, allow_pickle=False), True
        except (OSError, ValueError) as e:
            logger.warning("ignoring unreadable cache %s (%s)", path, e)
    value = compute()
    buffer = io.BytesIO()
    np.save(buffer, value, allow_pickle=False)
    atomic_write_bytes(path, buffer.getvalue())
    return value, False


@dataclass
class EmbeddedManifest:
    """Full-size unit vectors per field, row ``i`` for kept manifest row ``i``."""

    manifest: Manifest
    embeddings: dict[str, np.ndarray]
    #: each row's item per field as a string (a path or a text): equal strings, equal items
    items: dict[str, list[str]] = field(default_factory=dict)
    from_cache: bool = False

    @property
    def records(self) -> list:
        return self.manifest.records

    def labels(self) -> list[str] | None:
        """Every row's label, or None when some row has none."""
        labels = [r.label for r in self.records]
        return labels if all(label is not None for label in labels) else None


def embed_manifest(model: JointModel | ModelSource, manifest: str | Path | Manifest, fields: Sequence[str], *,
                   batch_size: int = 256, cache_dir: str | Path | None = None,
                   on_bad_row: OnBadRow = "skip", columns: Mapping[str, str] | None = None,
                   quarantine_dir: str | Path | None = None,
                   fingerprint: str | None = None) -> EmbeddedManifest:
    """Read ``manifest`` (requiring ``fields``) and embed each field with its tower.

    With ``cache_dir`` the vectors are read from / written to the cache there
    (module docstring). ``fingerprint`` saves recomputing the model's hash when
    the caller already has it. Progress bars while embedding.

    >>> emb = embed_manifest(jointspace.load("runs/m"), "test.csv", ["image", "text"])  # doctest: +SKIP
    >>> emb.embeddings["image"].shape  # doctest: +SKIP
    (700, 128)
    """
    source = model if isinstance(model, ModelSource) else ModelSource(model)
    fields = list(dict.fromkeys(fields))
    for f in fields:
        source.check(modality_of(f))  # a clear error before any file is read
    data = manifest if isinstance(manifest, Manifest) else read_manifest(
        manifest, required=tuple(fields), on_bad_row=on_bad_row, columns=columns,
        quarantine_dir=quarantine_dir)
    items = {f: [str(r.fields[f]) for r in data.records] for f in fields}
    path = None
    if cache_dir is not None:
        fingerprint = fingerprint or source.fingerprint
        path = Path(cache_dir) / f"embeddings-{fingerprint}-{_content_key(data, items)}.npz"
        if path.is_file():
            try:
                with np.load(path) as npz:
                    embeddings = {f: npz[f] for f in fields}
                logger.info("embeddings of %s read from %s", data.path, path)
                return EmbeddedManifest(data, embeddings, items, from_cache=True)
            except (OSError, KeyError, ValueError) as e:  # a damaged file is recomputed
                logger.warning("ignoring unreadable embedding cache %s (%s)", path, e)
    embeddings = {f: _embed_distinct(source.get(), modality_of(f), items[f], batch_size) for f in fields}
    if path is not None:
        _save(path, embeddings)
    return EmbeddedManifest(data, embeddings, items)


def _embed_distinct(model: JointModel, modality: str, items: list[str], batch_size: int) -> np.ndarray:
    """Each distinct item embedded once (a file once however its path is spelled), so
    rows naming one item carry bitwise-identical vectors."""
    is_file = MODALITIES.get(modality).is_file
    ids = [item_identity(Path(x)) if is_file else x for x in items]
    first: dict[str, int] = {}  # identity → its index among the distinct items
    distinct: list[str] = []
    rows = np.empty(len(items), dtype=np.int64)
    for row, (item, i) in enumerate(zip(items, ids)):
        if i not in first:
            first[i] = len(distinct)
            distinct.append(item)
        rows[row] = first[i]
    emb = model.encode(modality, distinct, batch_size=batch_size, show_progress=True)
    return emb[rows]


def _content_key(data: Manifest, items: dict[str, list[str]]) -> str:
    h = hashlib.sha256()
    h.update(json.dumps([[r.id for r in data.records], items], ensure_ascii=False).encode())
    for f, values in items.items():
        if MODALITIES.get(modality_of(f)).is_file:
            for value in sorted(set(values)):
                st = os.stat(value)
                h.update(f"{value}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:16]


def _save(path: Path, embeddings: dict[str, np.ndarray]) -> None:
    buffer = io.BytesIO()
    np.savez(buffer, **embeddings)
    atomic_write_bytes(path, buffer.getvalue())  # a kill mid-write leaves no half cache


__all__ = ["EmbeddedManifest", "ModelSource", "cached_array", "embed_manifest"]
