"""Collections: embedded items + metadata on disk, searchable by any modality.

Layout of a collection folder::

    collection.json        pointer: current version, model folder, modality, dim, count
    v-<n>/embeddings.npy   float32 [N, dim] unit vectors
    v-<n>/items.jsonl      one JSON object per row: id, path, text, label …

A write builds a whole new version folder, then replaces ``collection.json``
with one atomic rename, so a kill at any moment leaves the previous version
readable. Search is exact (a matrix product) for now; an ANN store plugs in
behind the same :class:`Collection` API.
"""
from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..data.manifest import (BadRow, Manifest, OnBadRow, Record, check_image, read_manifest,
                             write_quarantine)
from ..errors import DataError, JointspaceError
from ..fileio import atomic_write_json, fsync_dir, fsync_file
from ..model import JointModel, load, resolve_device
from ..progress import logger, progress

POINTER_FILE = "collection.json"
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"}


@dataclass(frozen=True)
class Hit:
    """One search result: rank (1-based), cosine score, and the item's metadata."""

    rank: int
    score: float
    item: dict[str, Any]


class Collection:
    """An opened collection; use :func:`build_collection` to make one.

    >>> col = Collection.open("runs/demo/collection")  # doctest: +SKIP
    >>> col.search_text("a red circle", k=5)            # doctest: +SKIP
    """

    def __init__(self, path: Path, info: dict[str, Any], embeddings: np.ndarray,
                 items: list[dict[str, Any]], device: str | None = None) -> None:
        self.path, self.info, self.embeddings, self.items = path, info, embeddings, items
        self.device = device
        self._model: JointModel | None = None

    def __len__(self) -> int:
        return len(self.items)

    @classmethod
    def open(cls, path: str | Path, *, device: str | None = None) -> "Collection":
        """Open a collection; queries are embedded on ``device`` ("auto": CUDA if present)."""
        path = Path(path)
        pointer = path / POINTER_FILE
        if not pointer.is_file():
            raise JointspaceError(f"not a collection (no {POINTER_FILE}): {path}")
        info = json.loads(pointer.read_text())
        version = path / info["version"]
        embeddings = np.load(version / "embeddings.npy", mmap_mode="r")
        with open(version / "items.jsonl", encoding="utf-8") as f:
            items = [json.loads(line) for line in f]
        if len(items) != len(embeddings):
            raise JointspaceError(f"collection {path} is inconsistent: {len(items)} items, "
                                  f"{len(embeddings)} vectors")
        return cls(path, info, embeddings, items, device)

    @property
    def model(self) -> JointModel:
        """The model the collection was embedded with (loaded on first use)."""
        if self._model is None:
            self._model = load(self.info["model"]).to(resolve_device(self.device))
        return self._model

    def search_vector(self, query: np.ndarray, k: int = 10) -> list[Hit]:
        """Exact top-k by cosine similarity for one unit query vector."""
        if query.shape != (self.embeddings.shape[1],):
            raise JointspaceError(f"query has shape {query.shape}; the collection holds "
                                  f"{self.embeddings.shape[1]}-dim vectors")
        scores = np.asarray(self.embeddings @ query.astype(np.float32))
        k = min(k, len(scores))
        if k <= 0:
            return []
        top = np.argpartition(-scores, k - 1)[:k]
        top = top[np.argsort(-scores[top], kind="stable")]
        return [Hit(i + 1, float(scores[j]), self.items[j]) for i, j in enumerate(top)]

    def search(self, *, text: str | None = None, image: Any = None, k: int = 10,
               text_weight: float = 0.5) -> list[Hit]:
        """Search by text, by image, or by both (weighted mean of the two unit vectors)."""
        parts = []
        if text is not None:
            if not text.strip():
                raise JointspaceError("the text query is empty")
            parts.append((text_weight, self.model.encode_text([text])[0]))
        if image is not None:
            parts.append((1 - text_weight if parts else 1.0, self.model.encode_image([image])[0]))
        if not parts:
            raise JointspaceError("give a text query, an image query, or both")
        query = sum(w * v for w, v in parts)
        return self.search_vector(query / np.linalg.norm(query), k)

    def search_text(self, text: str, k: int = 10) -> list[Hit]:
        return self.search(text=text, k=k)

    def search_image(self, image: Any, k: int = 10) -> list[Hit]:
        return self.search(image=image, k=k)


def _images_in_folder(folder: Path, out: Path) -> Manifest:
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not files:
        raise DataError(f"no image files ({', '.join(sorted(IMAGE_SUFFIXES))}) under {folder}")
    records, bad = [], []
    for line, f in enumerate(progress(files, desc=f"check {folder.name}", unit="img", leave=False), 1):
        err = check_image(f)
        rel = str(f.relative_to(folder))
        if err:
            bad.append(BadRow(line, err, {"image": rel}))
        else:
            records.append(Record(id=rel, line=line, fields={"image": f}))
    manifest = Manifest(folder, records, bad)
    if bad:
        logger.warning("%s: %d unreadable images quarantined", folder, len(bad))
        manifest.quarantine_path = write_quarantine(manifest, out)
    return manifest


def build_collection(model_dir: str | Path, source: str | Path, collection: str | Path,
                     *, batch_size: int = 256, on_bad_row: OnBadRow = "skip",
                     columns: dict[str, str] | None = None, device: str | None = None) -> Collection:
    """Embed the images of a folder (recursively) or a manifest into a collection.

    The model folder is recorded (absolute) so search embeds queries the same way.
    Unreadable images are quarantined to ``collection/quarantine-*.jsonl``.
    Embedding runs on ``device`` (default and "auto": CUDA when available, else CPU).
    """
    model_dir = Path(model_dir).resolve()
    model = load(model_dir).to(resolve_device(device))
    source, out = Path(source), Path(collection)
    out.mkdir(parents=True, exist_ok=True)
    if source.is_dir():
        data = _images_in_folder(source, out)
    elif source.is_file():
        data = read_manifest(source, required=("image",), on_bad_row=on_bad_row, quarantine_dir=out,
                             columns=columns, optional=("text",))
    else:
        raise DataError(f"index source not found: {source}")
    if not data.records:
        raise DataError(f"nothing to index: every row of {source} was rejected")
    embeddings = model.encode_image([r.image for r in data.records], batch_size=batch_size,
                                    show_progress=True)
    items = [{k: v for k, v in {"id": r.id, "path": str(r.image), "text": r.text,
                                  "label": r.label}.items() if v is not None} for r in data.records]
    _write_version(out, embeddings, items, {"model": str(model_dir), "modality": "image",
                                            "dim": int(embeddings.shape[1]), "source": str(source)})
    return Collection.open(out, device=device)


def _write_version(out: Path, embeddings: np.ndarray, items: Sequence[dict],
                   info: dict[str, Any]) -> None:
    pointer = out / POINTER_FILE
    previous = json.loads(pointer.read_text())["version"] if pointer.is_file() else None
    number = 1 + max([int(p.name[2:]) for p in out.glob("v-*") if p.name[2:].isdigit()] or [0])
    version = out / f"v-{number}"
    version.mkdir()
    np.save(version / "embeddings.npy", embeddings.astype(np.float32))
    with open(version / "items.jsonl", "w", encoding="utf-8") as f:
        for item in items:
            f.write(json.dumps(item) + "\n")
    for name in ("embeddings.npy", "items.jsonl"):  # on disk before the pointer names them
        fsync_file(version / name)
    fsync_dir(version)
    fsync_dir(out)
    atomic_write_json(pointer, {**info, "version": version.name, "count": len(items)})
    if previous and previous != version.name:
        shutil.rmtree(out / previous, ignore_errors=True)


__all__ = ["Collection", "Hit", "build_collection"]
