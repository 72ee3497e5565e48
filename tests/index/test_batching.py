"""Concurrent queries share batches, get their own vectors, and one bad query fails alone."""
import threading
import time

import numpy as np
import pytest

import jointspace
from jointspace.errors import DataError
from jointspace.index.batching import QueryBatcher


def test_concurrent_queries_are_batched_and_match_one_by_one(trained_model_dir):
    model = jointspace.load(trained_model_dir)
    texts = [f"a {c} {s}" for c in ("red", "blue", "green", "yellow") for s in ("circle", "square",
                                                                                "star", "big box")]
    alone = model.encode_text(texts)

    def slow_encode(modality, items):  # long enough that the others queue up behind it
        time.sleep(0.05)
        return model.encode(modality, list(items))
    batcher = QueryBatcher(slow_encode)
    out = [None] * len(texts)
    barrier = threading.Barrier(len(texts))

    def worker(i):
        barrier.wait()
        out[i] = batcher.encode("text", texts[i])
    threads = [threading.Thread(target=worker, args=(i,)) for i in range(len(texts))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    np.testing.assert_allclose(np.stack(out), alone, atol=1e-5)  # each got its own vector
    assert sum(batcher.batches) == len(texts) and max(batcher.batches) > 1
    assert len(batcher.batches) < len(texts)


def test_a_bad_query_fails_alone():
    def encode(modality, items):
        if any(item == "bad" for item in items):
            raise DataError("cannot decode 'bad'")
        return np.array([[len(item), 0.0] for item in items])
    batcher = QueryBatcher(encode)
    batcher._busy = True  # hold the model so that all three queue into one batch
    results, errors = {}, {}

    def worker(item):
        try:
            results[item] = batcher.encode("text", item)
        except DataError as e:
            errors[item] = str(e)
    threads = [threading.Thread(target=worker, args=(x,)) for x in ("ab", "bad", "abcd")]
    for t in threads:
        t.start()
    time.sleep(0.2)
    with batcher._cv:
        batcher._busy = False
        batcher._cv.notify_all()
    for t in threads:
        t.join()
    assert batcher.batches[0] == 3  # tried together first
    assert results["ab"][0] == 2 and results["abcd"][0] == 4
    assert errors == {"bad": "cannot decode 'bad'"}
    with pytest.raises(DataError):
        batcher.encode("text", "bad")
