"""Frozen backbones cost nothing twice: their features, cached per distinct input.

A tower whose backbone is frozen (``trainable`` ``head``, ``adapter`` or
``none``) maps an input to the same features every time (its frozen parts run
in eval mode), so the trainer computes them once per distinct input and
feeds the cached rows to the head. The cache lives on disk, keyed by the
tower's *fingerprint* (a hash of its kind, options, frozen weights and
assets) and by each input's *content* (the text, or a hash of the file's
bytes), so it is reused across epochs and across runs, and an edited file
or a changed tower never reads stale features.

Each tower's cache is one file, ``entry.npz``: its keys, their features and a
SHA-256 of both, replaced atomically, so keys and features always come from
the same write, and a damaged entry is recomputed, not trusted. Adding to it
happens under an exclusive lock on ``.lock`` in the same folder
(``fcntl.flock``), so two runs sharing a cache take turns: the second reads
what the first computed and adds only what it still misses. Where ``fcntl``
is missing (Windows) there is no lock: concurrent runs may each compute, and
the last write wins, but every entry read back is still consistent.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import torch

from ..fileio import atomic_write
from ..progress import logger, progress
from ..towers import Tower

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: no lock, see the module docstring
    fcntl = None  # type: ignore[assignment]

ENTRY_FILE, LOCK_FILE = "entry.npz", ".lock"
LEGACY_FILES = ("keys.json", "features.npy")  # the two-file layout before entry.npz


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


def _digest(keys_blob: bytes, features: np.ndarray) -> bytes:
    h = hashlib.sha256(keys_blob)
    h.update(json.dumps([list(features.shape), str(features.dtype)]).encode())
    h.update(np.ascontiguousarray(features).tobytes())
    return h.digest()


def write_entry(folder: Path, keys: Sequence[str], features: np.ndarray) -> Path:
    """Write keys, features and their digest as one file, atomically."""
    features = np.ascontiguousarray(features, dtype=np.float32)
    if len(keys) != len(features):
        raise ValueError(f"{len(keys)} keys for {len(features)} feature rows")
    blob = json.dumps(list(keys)).encode("utf-8")
    digest = _digest(blob, features)
    return atomic_write(folder / ENTRY_FILE, lambda f: np.savez(
        f, keys=np.frombuffer(blob, dtype=np.uint8), features=features,
        digest=np.frombuffer(digest, dtype=np.uint8)))


def read_entry(folder: Path) -> tuple[list[str], np.ndarray] | None:
    """The keys and features of ``folder/entry.npz``; None when there is none, or (with a
    warning) when it is damaged: keys and features that do not match their digest."""
    path = folder / ENTRY_FILE
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            blob, features, digest = z["keys"].tobytes(), z["features"], z["digest"].tobytes()
        keys = json.loads(blob.decode("utf-8"))
        if _digest(blob, features) != digest:
            raise ValueError("keys and features do not match their checksum")
        if not (isinstance(keys, list) and features.ndim == 2 and len(keys) == len(features)
                and len(set(keys)) == len(keys)):
            raise ValueError(f"{len(keys)} keys for features of shape {features.shape}")
    except Exception as e:  # noqa: BLE001 - zip, JSON, key and shape errors alike: recompute
        logger.warning("feature cache %s is damaged (%s: %s); recomputing it", path,
                       type(e).__name__, e)
        return None
    return keys, features


@contextlib.contextmanager
def cache_lock(folder: Path) -> Iterator[None]:
    """An exclusive inter-process lock on ``folder`` (no-op where ``fcntl`` is missing)."""
    folder.mkdir(parents=True, exist_ok=True)
    if fcntl is None:  # pragma: no cover
        yield
        return
    with open(folder / LOCK_FILE, "a+b") as f:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX)  # released on close, or by the kernel on a kill
        try:
            yield
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)


class FeatureCache:
    """Features of one frozen tower, on disk in ``root/<fingerprint>/entry.npz``."""

    def __init__(self, tower: Tower, fingerprint: str, root: Path | None,
                 is_file: bool = False) -> None:
        self.tower, self.fingerprint, self.is_file = tower, fingerprint, is_file
        self.folder = None if root is None else Path(root) / fingerprint
        self.index: dict[str, int] = {}
        self.features = np.zeros((0, 0), dtype=np.float32)
        self._seen: tuple | None = None  # the entry file this state was read from (its stat)
        if self.folder is not None:
            self._merge_disk()

    def _stat(self) -> tuple | None:
        assert self.folder is not None
        try:
            st = (self.folder / ENTRY_FILE).stat()
        except FileNotFoundError:
            return None
        return st.st_ino, st.st_size, st.st_mtime_ns

    def _append(self, keys: Sequence[str], features: np.ndarray) -> None:
        start = len(self.index)
        self.features = features if start == 0 else np.concatenate([self.features, features])
        self.index.update({k: start + i for i, k in enumerate(keys)})

    @torch.no_grad()
    def lookup(self, items: Sequence[Any], batch_size: int = 256, desc: str = "features"
               ) -> torch.Tensor:
        """``[len(items), width]`` features, computing (and saving) only what is missing."""
        keys = [content_key(it, self.is_file) for it in items]
        todo = {k: it for k, it in zip(keys, items) if k not in self.index}
        if todo and self.folder is None:
            self._append(list(todo), self._compute(list(todo.values()), batch_size, desc))
        elif todo:
            with cache_lock(self.folder):  # another run may have added them meanwhile
                on_disk = self._merge_disk()
                todo = {k: it for k, it in todo.items() if k not in self.index}
                if todo:
                    self._append(list(todo), self._compute(list(todo.values()), batch_size, desc))
                if len(self.index) != on_disk:
                    self._save()
        rows = np.fromiter((self.index[k] for k in keys), dtype=np.int64, count=len(keys))
        return torch.from_numpy(self.features[rows])

    def _merge_disk(self) -> int:
        """Take what is on disk now, keep the rows only this process has; return the
        number of rows on disk."""
        assert self.folder is not None
        stat = self._stat()
        if stat is not None and stat == self._seen:
            return len(self.index)  # unchanged since we read it (and we wrote nothing since)
        entry = read_entry(self.folder) if stat is not None else None
        self._seen = stat if entry is not None else None
        mine, own = sorted(self.index, key=self.index.__getitem__), self.features
        self.index, self.features = {}, np.zeros((0, 0), dtype=np.float32)
        if entry is not None:
            self.index = {k: i for i, k in enumerate(entry[0])}
            self.features = entry[1]
        on_disk = len(self.index)
        extra = [i for i, k in enumerate(mine) if k not in self.index]
        if extra:
            self._append([mine[i] for i in extra], own[extra])
        return on_disk

    def _save(self) -> None:
        assert self.folder is not None
        write_entry(self.folder, sorted(self.index, key=self.index.__getitem__), self.features)
        self._seen = self._stat()
        for name in LEGACY_FILES:  # the old layout is never read again
            (self.folder / name).unlink(missing_ok=True)

    def _compute(self, items: list[Any], batch_size: int, desc: str) -> np.ndarray:
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
        return np.stack(out).astype(np.float32)
