"""Frozen backbones cost nothing twice: their features, cached per distinct input.

A tower whose backbone is frozen (``trainable`` ``head``, ``adapter`` or
``none``) maps an input to the same features every time (its frozen parts run
in eval mode), so the trainer computes them once per distinct input and
feeds the cached rows to the head. The cache lives on disk, keyed by the
tower's *fingerprint* (a hash of its kind, options, frozen weights and
assets) and by each input's *content* (the text, or a hash of the file's
bytes), so it is reused across epochs and across runs, and an edited file
or a changed tower never reads stale features.
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from ..fileio import atomic_write_text, fsync_dir, fsync_file
from ..progress import logger, progress
from ..towers import Tower

KEYS_FILE, FEATURES_FILE = "keys.json", "features.npy"


def default_cache_dir() -> Path:
    """``$JOINTSPACE_CACHE`` or ``$XDG_CACHE_HOME/jointspace`` (``~/.cache/jointspace``)."""
    if os.environ.get("JOINTSPACE_CACHE"):
        return Path(os.environ["JOINTSPACE_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "jointspace"


def tower_fingerprint(tower: Tower, spec: Any, asset_dir: Path | None = None) -> str:
    """A hash of what decides a frozen tower's features: kind, options, frozen weights, assets."""
    h = hashlib.sha256(json.dumps([spec.name, spec.options], sort_keys=True, default=str).encode())
    head = {id(p) for m in tower.head_modules() for p in m.parameters()}
    for name, t in sorted(tower.state_dict(keep_vars=True).items()):
        if id(t) in head:
            continue
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    if asset_dir is not None and asset_dir.is_dir():
        for path in sorted(p for p in asset_dir.rglob("*") if p.is_file()):
            h.update(path.name.encode())
            h.update(path.read_bytes())
    return h.hexdigest()[:24]


def content_key(item: Any, is_file: bool) -> str:
    """``sha1:<hash of the file's bytes>`` for a file item, else ``text:<the item>``."""
    if is_file:
        return "sha1:" + hashlib.sha1(Path(item).read_bytes()).hexdigest()
    return "text:" + str(item)


class FeatureCache:
    """Features of one frozen tower, on disk under ``root/<fingerprint>/``."""

    def __init__(self, tower: Tower, fingerprint: str, root: Path | None,
                 is_file: bool = False) -> None:
        self.tower, self.fingerprint, self.is_file = tower, fingerprint, is_file
        self.folder = None if root is None else Path(root) / fingerprint
        self.index: dict[str, int] = {}
        self.features = np.zeros((0, 0), dtype=np.float32)
        if self.folder is not None and (self.folder / KEYS_FILE).is_file():
            try:
                keys = json.loads((self.folder / KEYS_FILE).read_text())
                self.features = np.load(self.folder / FEATURES_FILE)
                if len(keys) <= len(self.features):  # rows past the keys: a kill mid-save
                    self.features = self.features[:len(keys)]
                    self.index = {k: i for i, k in enumerate(keys)}
            except (OSError, ValueError) as e:  # a damaged cache is recomputed, not trusted
                logger.warning("feature cache %s unreadable (%s); recomputing", self.folder, e)
                self.index, self.features = {}, np.zeros((0, 0), dtype=np.float32)

    @torch.no_grad()
    def lookup(self, items: Sequence[Any], batch_size: int = 256, desc: str = "features"
               ) -> torch.Tensor:
        """``[len(items), width]`` features, computing (and saving) only what is missing."""
        keys = [content_key(it, self.is_file) for it in items]
        todo = {k: it for k, it in zip(keys, items) if k not in self.index}
        if todo:
            self._compute(list(todo), list(todo.values()), batch_size, desc)
        rows = np.fromiter((self.index[k] for k in keys), dtype=np.int64, count=len(keys))
        return torch.from_numpy(self.features[rows])

    def _compute(self, keys: list[str], items: list[Any], batch_size: int, desc: str) -> None:
        tower = self.tower
        was_training = tower.training
        tower.eval()
        device = next(tower.parameters()).device
        order = list(range(len(items)))
        if None not in (lengths := [tower.sort_key(it) for it in items]):
            order.sort(key=lengths.__getitem__)
        out: list[np.ndarray] = [None] * len(items)  # type: ignore[list-item]
        try:
            for start in progress(range(0, len(order), batch_size), desc=desc, unit="batch"):
                idx = order[start:start + batch_size]
                x = tower.collate([tower.preprocess_one(items[i]) for i in idx]).to(device)
                feats = tower.features(x).float().cpu().numpy()
                for j, i in enumerate(idx):
                    out[i] = feats[j]
        finally:
            tower.train(was_training)
        new = np.stack(out).astype(np.float32)
        start = len(self.index)
        self.features = new if start == 0 else np.concatenate([self.features, new])
        self.index.update({k: start + i for i, k in enumerate(keys)})
        self._save()

    def _save(self) -> None:
        if self.folder is None:
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        # features first, keys last: keys.json names only rows that are on disk
        fd, tmp = tempfile.mkstemp(prefix=".features-", suffix=".npy", dir=self.folder)
        with os.fdopen(fd, "wb") as f:
            np.save(f, self.features)
        fsync_file(tmp)
        os.replace(tmp, self.folder / FEATURES_FILE)
        fsync_dir(self.folder)
        keys = sorted(self.index, key=self.index.__getitem__)
        atomic_write_text(self.folder / KEYS_FILE, json.dumps(keys))
