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
    gate = threading.Event()

    def encode(modality, items):
        gate.wait()  # the first batch holds the model until all three queries are queued
        if any(item == "bad" for item in items):
            raise DataError("cannot decode 'bad'")
        return np.array([[len(item), 0.0] for item in items])
    batcher = QueryBatcher(encode)
    results, errors = {}, {}

    def worker(item):
        try:
            results[item] = batcher.encode("text", item)
        except DataError as e:
            errors[item] = str(e)
    threads = [threading.Thread(target=worker, args=(x,)) for x in ("first", "ab", "bad", "abcd")]
    threads[0].start()
    time.sleep(0.2)
    for t in threads[1:]:
        t.start()
    time.sleep(0.2)
    gate.set()
    for t in threads:
        t.join()
    assert list(batcher.batches)[:2] == [1, 3]  # the three queued ones were tried together
    assert results["ab"][0] == 2 and results["abcd"][0] == 4 and results["first"][0] == 5
    assert errors == {"bad": "cannot decode 'bad'"}
    with pytest.raises(DataError):
        batcher.encode("text", "bad")
