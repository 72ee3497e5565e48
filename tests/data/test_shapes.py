"""The shapes generator, checked on what it writes: captions parsed back with the
templates, colours read from the pixels, held-out combinations looked for in the text."""
import csv
import random
import re
from collections import Counter

import numpy as np
import pytest
from PIL import Image

from jointspace.data import shapes
from jointspace.data.shapes import (BACKGROUNDS, COLOURS, HELD_OUT_COMBOS, SYNONYMS, TEST_TEMPLATES,
                                    TRAIN_TEMPLATES, ShapesSpec, generate_records, render, write_shapes)

FIXTURE_SPEC = ShapesSpec(n=120, seed=3)  # what conftest's shapes_dir holds


def _rows(path):
    with open(path) as f:
        return list(csv.DictReader(f))


# -- captions parsed back with the templates -------------------------------------------
def _alt(words):
    return "(?:" + "|".join(re.escape(w) for w in sorted(words, key=len, reverse=True)) + ")"


KIND_WORDS = {syn: kind for kind in shapes.KINDS for syn in SYNONYMS.get(kind, (kind,))}
SIZE_WORDS = {syn: size for size in shapes.SIZES for syn in SYNONYMS.get(size, (size,))}
WHERE = ("(?:(?:at the top|at the bottom)(?: on the left| on the right)?"
         "|on the left|on the right|in the middle)")
FIELDS = {"colour": _alt(COLOURS), "kind": _alt(KIND_WORDS), "size": _alt(SIZE_WORDS),
          "bg": _alt(BACKGROUNDS), "where": WHERE, "others": ".+"}


def _pattern(template):
    parts = re.split(r"\{(\w+)\}", template)  # literal, field, literal, field, …
    regex = "".join(re.escape(p) if i % 2 == 0 else f"(?P<{p}>{FIELDS[p]})" for i, p in enumerate(parts))
    return re.compile(regex)


def parse(caption, templates):
    """The fields of every template of ``templates`` that the whole caption matches."""
    return [(t, m.groupdict()) for t in templates if (m := _pattern(t).fullmatch(caption))]


def test_templates_disjoint_and_every_caption_parses_only_with_its_split():
    assert not set(TRAIN_TEMPLATES) & set(TEST_TEMPLATES)
    spec = ShapesSpec(n=2000, seed=0)
    for split, own, other in (("train", TRAIN_TEMPLATES, TEST_TEMPLATES),
                              ("val", TRAIN_TEMPLATES, TEST_TEMPLATES),
                              ("test", TEST_TEMPLATES, TRAIN_TEMPLATES)):
        used = Counter()
        for scene, text in generate_records(spec, split):
            matches = parse(text, own)
            assert matches, f"{split} caption {text!r} fits none of its templates"
            assert not parse(text, other), f"{split} caption {text!r} fits the other split's templates"
            used.update(t for t, _ in matches)
            main = scene.shapes[0]
            for _, fields in matches:  # the caption describes the main shape
                assert fields["colour"] == main.colour and KIND_WORDS[fields["kind"]] == main.kind
                if "size" in fields:
                    assert SIZE_WORDS[fields["size"]] == main.size
                if "bg" in fields:
                    assert fields["bg"] == scene.background
        assert set(used) == set(own)  # every template of the split is in use


def test_held_out_combos_absent_from_train_and_val_text_and_present_in_test(shapes_dir):
    spec = ShapesSpec(n=3000, seed=0)
    mention = re.compile("|".join(rf"\b{colour} {_alt(SYNONYMS.get(kind, (kind,)))}\b"
                                  for colour, kind in HELD_OUT_COMBOS))
    for split in ("train", "val"):
        for scene, text in generate_records(spec, split):
            # neither the caption (main or secondary shapes) nor the scene has one
            assert not mention.search(text), text
            assert not any((s.colour, s.kind) in HELD_OUT_COMBOS for s in scene.shapes)
        written = _rows(shapes_dir / f"{split}.csv")
        assert not any(mention.search(r["text"]) for r in written)
        assert not any(tuple(r["label"].split()) in HELD_OUT_COMBOS for r in written)
    test = generate_records(spec, "test")
    described = Counter()
    for scene, text in test:
        (_, fields), *_ = parse(text, TEST_TEMPLATES)
        described[(fields["colour"], KIND_WORDS[fields["kind"]])] += 1
    assert all(described[combo] >= 5 for combo in HELD_OUT_COMBOS)  # each one is tested
    share = sum(described[c] for c in HELD_OUT_COMBOS) / len(test)
    assert 0.25 < share < 0.45  # about a third of the test captions describe an unseen combination


def test_labels_name_the_captioned_largest_shape(shapes_dir):
    for split in shapes.SPLITS:
        templates = TEST_TEMPLATES if split == "test" else TRAIN_TEMPLATES
        records = generate_records(FIXTURE_SPEC, split)
        for row, (scene, _) in zip(_rows(shapes_dir / f"{split}.csv"), records):
            (_, fields), *_ = parse(row["text"], templates)
            assert row["label"] == f"{fields['colour']} {KIND_WORDS[fields['kind']]}"
            assert all(shapes.SIZES[s.size] < shapes.SIZES[scene.shapes[0].size] for s in scene.shapes[1:])


# -- pixels ---------------------------------------------------------------------------
def _colour_name(rgb, palette, tolerance=3):
    names = [n for n, ref in palette.items() if np.abs(np.subtract(rgb, ref, dtype=int)).max() <= tolerance]
    assert len(names) == 1, f"pixel {rgb} is not one palette colour"
    return names[0]


def test_written_pixels_show_the_captioned_colour_and_background(shapes_dir):
    checked = 0
    for split in shapes.SPLITS:
        templates = TEST_TEMPLATES if split == "test" else TRAIN_TEMPLATES
        records = generate_records(FIXTURE_SPEC, split)
        for row, (scene, _) in zip(_rows(shapes_dir / f"{split}.csv"), records):
            pixels = np.asarray(Image.open(shapes_dir / row["image"]).convert("RGB"))
            size = pixels.shape[0]
            main = scene.shapes[0]
            centre = pixels[int(main.y * size), int(main.x * size)]
            (_, fields), *_ = parse(row["text"], templates)
            assert _colour_name(centre, COLOURS) == fields["colour"], row
            # the background is the commonest colour (shapes cover well under half)
            values, counts = np.unique(pixels.reshape(-1, 3), axis=0, return_counts=True)
            background = _colour_name(values[counts.argmax()], BACKGROUNDS)
            assert background == scene.background
            if "bg" in fields:
                assert fields["bg"] == background
            checked += 1
    assert checked == 120


def test_render_puts_each_shape_where_and_in_the_colour_the_scene_says():
    rng = random.Random(0)
    for _ in range(30):
        scene = shapes.sample_scene(rng, "test")
        image = np.asarray(render(scene, 96))
        for s in scene.shapes:
            assert _colour_name(image[int(s.y * 96), int(s.x * 96)], COLOURS) == s.colour
    blank = shapes.Scene((shapes.Shape("circle", "red", "large", 0.5, 0.5),), "grey")
    pixels = np.asarray(render(blank, 64))
    assert _colour_name(pixels[32, 32], COLOURS) == "red"
    assert _colour_name(pixels[2, 2], BACKGROUNDS) == "grey"
    # the circle's area, π r² of the image (r = 0.28): pixels nearer red than grey
    dist = lambda ref: np.linalg.norm(pixels.astype(float) - ref, axis=-1)  # noqa: E731
    red = (dist(COLOURS["red"]) < dist(BACKGROUNDS["grey"])).mean()
    assert red == pytest.approx(np.pi * 0.28 ** 2, rel=0.1)


# -- determinism and sizes ------------------------------------------------------------
def test_same_seed_same_bytes(tmp_path, shapes_dir):
    again = tmp_path / "again"
    write_shapes(again, FIXTURE_SPEC)
    for split in shapes.SPLITS:
        a, b = _rows(shapes_dir / f"{split}.csv"), _rows(again / f"{split}.csv")
        assert a == b
        for row in a:
            assert (shapes_dir / row["image"]).read_bytes() == (again / row["image"]).read_bytes()


def test_record_depends_only_on_seed_split_and_index():
    small = generate_records(ShapesSpec(n=50, seed=7), "train")
    large = generate_records(ShapesSpec(n=200, seed=7), "train")
    assert small == large[:len(small)]
    other_seed = generate_records(ShapesSpec(n=50, seed=8), "train")
    assert sum(a != b for a, b in zip(small, other_seed)) > 0.9 * len(small)
    # splits are drawn independently: val record i is not train record i
    val = generate_records(ShapesSpec(n=50, seed=7), "val")
    assert len(val) == 5 and all(v != t for v, t in zip(val, small))


def test_split_sizes_and_columns(shapes_dir):
    sizes = {s: len(_rows(shapes_dir / f"{s}.csv")) for s in shapes.SPLITS}
    assert sizes == {"train": 96, "val": 12, "test": 12}
    rows = _rows(shapes_dir / "train.csv")
    assert set(rows[0]) == {"id", "image", "text", "label"}
    assert len({r["id"] for r in rows}) == len(rows)
    assert all((shapes_dir / r["image"]).is_file() for r in rows)
    with Image.open(shapes_dir / rows[0]["image"]) as im:
        assert im.size == (64, 64) and im.mode == "RGB"
