"""Encoding queries for many threads at once, batched without added waiting.

A server answers each request on its own thread. Encoding their queries one
by one wastes the model: a batch of 32 short texts costs a few times one, not
32 times. :class:`QueryBatcher` batches opportunistically: a query that finds
the model idle is encoded at once (no latency is added when traffic is low);
queries that arrive while an encode runs wait for it and are then encoded
together. One worker thread runs the model: it is never used concurrently,
and the math library keeps one team of threads (PyTorch's OpenMP pool is per
calling thread; forty server threads calling it in turn made forty teams
fighting over two cores, and encoding ran 3–4× slower). If a batch fails
(one undecodable upload), each of its queries is retried alone, so one bad
query fails only its own request.
"""
from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np


@dataclass
class _Query:
    modality: str
    item: Any
    done: threading.Event
    vector: np.ndarray | None = None
    error: BaseException | None = None


class QueryBatcher:
    """Thread-safe ``encode(modality, item) -> vector`` over ``encode_many(modality, items)``."""

    def __init__(self, encode_many: Callable[[str, Sequence[Any]], np.ndarray],
                 max_batch: int = 64) -> None:
        self.encode_many, self.max_batch = encode_many, max_batch
        self._cv = threading.Condition()
        self._queue: list[_Query] = []
        self._worker: threading.Thread | None = None
        self.batches: deque[int] = deque(maxlen=10_000)  # sizes of the latest batches run

    def encode(self, modality: str, item: Any) -> np.ndarray:
        query = _Query(modality, item, done=threading.Event())
        with self._cv:
            self._queue.append(query)
            if self._worker is None or not self._worker.is_alive():
                self._worker = threading.Thread(target=self._work, name="jointspace-encoder",
                                                daemon=True)
                self._worker.start()
            self._cv.notify()
        query.done.wait()
        if query.error is not None:
            raise query.error
        return query.vector

    def _work(self) -> None:
        while True:
            with self._cv:
                while not self._queue:
                    self._cv.wait()
                modality = self._queue[0].modality
                batch = [q for q in self._queue if q.modality == modality][:self.max_batch]
                taken = set(map(id, batch))
                self._queue = [q for q in self._queue if id(q) not in taken]
            self._run(batch)

    def _run(self, batch: list[_Query]) -> None:
        self.batches.append(len(batch))
        try:
            try:
                vectors = self.encode_many(batch[0].modality, [q.item for q in batch])
                for q, v in zip(batch, vectors):
                    q.vector = v
            except Exception:
                for q in batch:  # find the culprit: each query alone
                    try:
                        q.vector = self.encode_many(q.modality, [q.item])[0]
                    except Exception as e:  # noqa: BLE001  (handed to the caller of this query)
                        q.error = e
        finally:  # whatever happened, no caller waits forever
            for q in batch:
                if q.vector is None and q.error is None:
                    q.error = RuntimeError("encoding the query was interrupted")
                q.done.set()


__all__ = ["QueryBatcher"]
