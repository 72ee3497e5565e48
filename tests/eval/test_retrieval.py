"""Retrieval metrics against an independent brute force (full score matrix, explicit
worst-case ordering), on data built to have duplicate groups and exact ties."""
import itertools
from types import SimpleNamespace

import numpy as np
import pytest

from jointspace.eval.retrieval import (chance_recall, group_keys, positive_ranks, recall_at_k,
                                       retrieval_metrics, strict_ceiling)


def _brute_ranks(scores, query_groups, gallery_groups):
    """Sort each query's gallery by score with every tie resolved against the query
    (items outside its group first); the rank is the position of the first item of
    its group. Pure Python over the full matrix."""
    ranks = []
    for i in range(scores.shape[0]):
        positive = [gallery_groups[j] == query_groups[i] for j in range(scores.shape[1])]
        order = sorted(range(scores.shape[1]), key=lambda j: (-scores[i, j], positive[j]))
        ranks.append(next(p for p, j in enumerate(order) if positive[j]))
    return np.array(ranks)


def _lattice_pairs(seed, n=60, d=6, n_groups=18):
    """Integer-valued embeddings (exact in float32, so exact ties), random groups, and
    rows copied both inside a group (a duplicate caption) and across groups."""
    rng = np.random.default_rng(seed)
    images = rng.integers(-2, 3, (n, d))
    texts = images + rng.integers(-2, 3, (n, d))  # correlated with the images
    groups = rng.integers(0, n_groups, n)
    for _ in range(n // 4):  # duplicate captions: same group, identical text rows
        i, j = rng.integers(0, n, 2)
        groups[j], texts[j] = groups[i], texts[i]
    for _ in range(n // 10):  # identical vectors in different groups: ties with negatives
        i, j = rng.integers(0, n, 2)
        images[j] = images[i]
    return images, texts, groups


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_group_aware_ranks_match_brute_force(seed):
    images, texts, groups = _lattice_pairs(seed)
    assert len(set(groups.tolist())) < len(groups)  # there are duplicates
    fi, ft = images.astype(np.float32) / 4, texts.astype(np.float32) / 4
    for q, g, s in ((ft, fi, texts @ images.T), (fi, ft, images @ texts.T)):
        # exact-tie data: positive and negative with the same score occur
        expected = _brute_ranks(s, groups, groups)
        for block in (1, 7, 1024):
            np.testing.assert_array_equal(positive_ranks(q, g, groups, groups, block=block), expected)
        # keys of any hashable type: strings give the same ranks as ints
        names = [f"caption {v}" for v in groups]
        np.testing.assert_array_equal(positive_ranks(q, g, names, names), expected)
        strict = _brute_ranks(s, np.arange(len(q)), np.arange(len(g)))
        np.testing.assert_array_equal(positive_ranks(q, g, block=5), strict)
        assert (expected <= strict).all() and (expected < strict).any()


def test_retrieval_metrics_match_brute_force():
    images, texts, groups = _lattice_pairs(3, n=80)
    fi, ft = images.astype(np.float32) / 4, texts.astype(np.float32) / 4
    got = retrieval_metrics(fi, ft, groups, ks=(1, 3, 10))
    for direction, s in (("text_to_image", texts @ images.T), ("image_to_text", images @ texts.T)):
        for view, (qg, gg) in ((got[direction], (groups, groups)),
                               (got["strict"][direction], (np.arange(80), np.arange(80)))):
            ranks = _brute_ranks(s, qg, gg)
            assert view == pytest.approx({"R@1": np.mean(ranks < 1), "R@3": np.mean(ranks < 3),
                                          "R@10": np.mean(ranks < 10),
                                          "median_rank": np.median(ranks + 1),
                                          "mean_rank": np.mean(ranks + 1)})
    assert got["n"] == 80 and got["n_groups"] == len(set(groups.tolist()))
    for direction in ("text_to_image", "image_to_text"):
        assert got["strict"]["chance"][direction] == pytest.approx(
            {"R@1": 1 / 80, "R@3": 3 / 80, "R@10": 10 / 80})
    assert recall_at_k(ft, fi, (1, 3), groups, groups) == {k: got["text_to_image"][k] for k in ("R@1", "R@3")}
    # without groups the headline is the strict figure
    plain = retrieval_metrics(fi, ft, ks=(1, 3, 10))
    assert plain["text_to_image"] == got["strict"]["text_to_image"]
    # the ceiling knows identical texts from their embeddings, without groups
    identical = [tuple(t) for t in texts.tolist()]
    assert plain["strict"]["ceiling"] == strict_ceiling(identical, (1, 3, 10))
    assert plain["strict"]["ceiling"]["image_to_text"]["R@1"] < 1


def test_asymmetric_query_and_gallery_groups():
    rng = np.random.default_rng(4)
    gallery = rng.integers(-2, 3, (30, 5))
    queries = rng.integers(-2, 3, (11, 5))
    gallery_groups = [f"k{v}" for v in rng.integers(0, 6, 30)]
    query_groups = [gallery_groups[j] for j in rng.integers(0, 30, 11)]
    expected = _brute_ranks(queries @ gallery.T, query_groups, gallery_groups)
    got = positive_ranks(queries.astype(np.float32), gallery.astype(np.float32), query_groups,
                         gallery_groups, block=4)
    np.testing.assert_array_equal(got, expected)


def _perfect_model(captions, noise=0.05, seed=0):
    """Each distinct caption is one random unit vector; each image is its caption's
    vector plus a tiny distinct perturbation (different scenes, same description)."""
    rng = np.random.default_rng(seed)
    distinct = sorted(set(captions))
    vectors = rng.standard_normal((len(distinct), 64))
    text = vectors[[distinct.index(c) for c in captions]]
    image = text + noise * rng.standard_normal(text.shape)
    unit = lambda x: (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)  # noqa: E731
    return unit(image), unit(text)


def test_perfect_model_with_duplicate_captions():
    # group sizes 1 (×10), 2 (×4), 3 (×2) and 7: 10 + 8 + 6 + 7 = 31 rows
    captions = ([f"single {i}" for i in range(10)] + [f"pair {i}" for i in range(4)] * 2
                + [f"triple {i}" for i in range(2)] * 3 + ["a red circle"] * 7)
    order = np.random.default_rng(1).permutation(len(captions))
    captions = [captions[i] for i in order]
    image, text = _perfect_model(captions)
    got = retrieval_metrics(image, text, captions)
    for direction in ("text_to_image", "image_to_text"):
        assert got[direction]["R@1"] == 1.0 and got[direction]["median_rank"] == 1.0
        # a perfect model reaches exactly the strict ceiling, no more and no less
        strict = {k: v for k, v in got["strict"][direction].items() if k.startswith("R@")}
        assert strict == pytest.approx(got["strict"]["ceiling"][direction])
    assert got["strict"]["text_to_image"]["R@1"] < 1 and got["strict"]["image_to_text"]["R@1"] < 1
    ceiling = got["strict"]["ceiling"]
    # image→text: only rows whose caption is unique (size ≤ k) can be hit strictly
    assert ceiling["image_to_text"] == pytest.approx({"R@1": 10 / 31, "R@5": 24 / 31, "R@10": 1.0})
    # text→image: the m identical queries share one ranking: min(k, m) of them hit
    assert ceiling["text_to_image"] == pytest.approx(
        {"R@1": (10 + 4 + 2 + 1) / 31, "R@5": (10 + 8 + 6 + 5) / 31, "R@10": 1.0})
    assert got["n_groups"] == 17


def test_strict_never_exceeds_the_ceiling():
    captions = [f"c{i % 13}" for i in range(50)] + [f"u{i}" for i in range(10)]
    for seed, noise in enumerate((0.01, 0.1, 0.3, 1.0, 3.0)):
        image, text = _perfect_model(captions, noise=noise, seed=seed)
        got = retrieval_metrics(image, text, captions, ks=(1, 2, 5, 10))
        for direction in ("text_to_image", "image_to_text"):
            for k, bound in got["strict"]["ceiling"][direction].items():
                assert got["strict"][direction][k] <= bound + 1e-12
                assert got[direction][k] >= got["strict"][direction][k]


def test_identical_rows_tie_exactly_in_float_data():
    # every gallery vector appears twice, in two different groups: the query's own row
    # and its twin score exactly the same, so the pessimistic rank is exactly 1
    rng = np.random.default_rng(5)
    base = rng.standard_normal((150, 37)).astype(np.float32)
    base /= np.linalg.norm(base, axis=1, keepdims=True)
    gallery = base[rng.permutation(np.repeat(np.arange(150), 2))]
    groups = np.arange(300)
    ranks = positive_ranks(gallery, gallery, groups, groups, block=64)
    assert (ranks == 1).all()
    assert (positive_ranks(gallery, gallery) == 1).all()


def test_chance_matches_enumeration():
    groups = ["a", "a", "a", "b", "b", "c"]
    n = len(groups)
    for k in (1, 2, 3, 4):
        hits = 0
        perms = list(itertools.permutations(range(n)))
        for perm in perms:
            top = set(perm[:k])
            hits += sum(any(groups[j] == g for j in top) for g in groups)
        expected = hits / (len(perms) * n)
        assert chance_recall(groups, groups, n, (k,))[f"R@{k}"] == pytest.approx(expected)
    assert chance_recall(None, None, 40, (1, 5, 50)) == pytest.approx({"R@1": 1 / 40, "R@5": 5 / 40,
                                                                      "R@50": 1.0})


def test_strict_ceiling_by_hand():
    keys = ["x", "x", "x", "y", "y", "z"]  # sizes 3, 3, 3, 2, 2, 1
    got = strict_ceiling(keys, (1, 2, 3))
    assert got["text_to_image"] == pytest.approx({"R@1": 3 / 6, "R@2": (2 + 2 + 1) / 6, "R@3": 1.0})
    assert got["image_to_text"] == pytest.approx({"R@1": 1 / 6, "R@2": 3 / 6, "R@3": 1.0})


def test_errors():
    x = np.eye(3, dtype=np.float32)
    with pytest.raises(ValueError, match="both query_groups and gallery_groups"):
        positive_ranks(x, x, [0, 1, 2])
    with pytest.raises(ValueError, match="no gallery item in their group"):
        positive_ranks(x, x, ["a", "b", "q"], ["a", "b", "c"])
    with pytest.raises(ValueError, match="NaN"):
        positive_ranks(x * np.nan, x)
    with pytest.raises(ValueError, match="equal shapes"):
        positive_ranks(x[:2], x)
    with pytest.raises(ValueError, match="group keys"):
        retrieval_metrics(x, x, ["a"])


def test_group_keys_prefer_the_group_column():
    rows = [SimpleNamespace(text="a cat"), SimpleNamespace(text="a cat", group=None),
            SimpleNamespace(text="a dog", group="g1"), SimpleNamespace(text="a cat", group="a cat")]
    keys, grouped_by = group_keys(rows)
    assert keys[0] == keys[1] != keys[3]  # a group value never collides with a caption
    assert keys[2] == ("group", "g1") and grouped_by == "group, else text"
    assert group_keys(rows[:2])[1] == "text" and group_keys(rows[2:])[1] == "group"


def _ceiling_brute_force(text_keys, image_keys, k):
    """Best strict R@k over every ranking, by trying every order (tiny cases only).

    text→image: the rows of one caption share one ranking of the distinct images.
    image→text: each image ranks the caption rows; identical captions tie, so the
    gallery is ordered by distinct caption, each caption's copies counted against
    the image unless they are its own rows."""
    n = len(text_keys)
    images, texts = sorted(set(image_keys)), sorted(set(text_keys))
    t2i = 0
    for t in texts:
        rows = [r for r in range(n) if text_keys[r] == t]
        t2i += max(sum(image_keys[r] in order[:k] for r in rows)
                   for order in itertools.permutations(images))
    i2t = 0
    for i in images:
        own = {r for r in range(n) if image_keys[r] == i}
        best = n
        for order in itertools.permutations(texts):
            before = 0
            for t in order:
                rows = [r for r in range(n) if text_keys[r] == t]
                if own & set(rows):  # the first caption group holding one of its rows
                    best = min(best, before + sum(r not in own for r in rows))
                    break
                before += len(rows)
        i2t += best < k
    return t2i / n, i2t / len(images)


def test_strict_ceiling_with_repeated_images_matches_brute_force():
    """COCO-style rows: one image with several captions, captions shared across images."""
    rng = np.random.default_rng(4)
    for trial in range(30):
        n = int(rng.integers(2, 9))
        texts = [f"t{x}" for x in rng.integers(0, 4, n)]
        images = [f"i{x}" for x in rng.integers(0, 4, n)]
        for k in (1, 2, 3, 5):
            got = strict_ceiling(texts, (k,), image_keys=images)
            t2i, i2t = _ceiling_brute_force(texts, images, k)
            assert got["text_to_image"][f"R@{k}"] == pytest.approx(t2i), (texts, images, k)
            assert got["image_to_text"][f"R@{k}"] == pytest.approx(i2t), (texts, images, k)
    # one image with five distinct captions is one gallery item: nothing caps it
    five = strict_ceiling([f"c{j}" for j in range(5)], (1, 5), image_keys=["img"] * 5)
    assert five == {"text_to_image": {"R@1": 1.0, "R@5": 1.0}, "image_to_text": {"R@1": 1.0, "R@5": 1.0}}
    # two images sharing their only caption: each caption row can find only one of them first
    shared = strict_ceiling(["c", "c"], (1, 2), image_keys=["a", "b"])
    assert shared["text_to_image"] == {"R@1": 0.5, "R@2": 1.0}
    assert shared["image_to_text"] == {"R@1": 0.0, "R@2": 1.0}


def test_any_pair_of_modalities_names_the_directions_and_keeps_the_numbers():
    rng = np.random.default_rng(4)
    a, b = rng.standard_normal((30, 8)), rng.standard_normal((30, 8))
    groups = [i // 3 for i in range(30)]
    default = retrieval_metrics(a, b, groups, text_keys=groups)
    named = retrieval_metrics(a, b, groups, text_keys=groups, names=("audio", "text"))
    assert named["audio_to_text"] == default["image_to_text"]
    assert named["text_to_audio"] == default["text_to_image"]
    assert named["strict"]["ceiling"]["audio_to_text"] == default["strict"]["ceiling"]["image_to_text"]
    with pytest.raises(ValueError, match="two different modalities"):
        retrieval_metrics(a, b, names=("audio", "audio"))


def test_parse_pair():
    from jointspace.errors import ConfigError
    from jointspace.eval.run import parse_pair
    assert parse_pair("audio:text") == parse_pair(["audio", "text"]) == ("audio", "text")
    for bad in ("audio", "audio:audio", "a:b:c", ":text"):
        with pytest.raises(ConfigError, match="two different modalities"):
            parse_pair(bad)
