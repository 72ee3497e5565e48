"""The shapes generator, checked on what it writes: captions parsed back with the
templates, colours read from the pixels, held-out combinations and held-out words
looked for in the text, train/val/test pinned to the outputs the README reports on."""
import csv
import hashlib
import random
import re
from collections import Counter

import numpy as np
import pytest
from PIL import Image

from jointspace.data import shapes
from jointspace.data.shapes import (BACKGROUNDS, COLOURS, HELD_OUT_COMBOS, HELD_OUT_WORDS, SYNONYMS,
                                    TEST_TEMPLATES, TEST_WORDS, TRAIN_TEMPLATES, ShapesSpec,
                                    generate_records, render, write_shapes)

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


def _pattern(template, fields=FIELDS):
    parts = re.split(r"\{(\w+)\}", template)  # literal, field, literal, field, …
    regex = "".join(re.escape(p) if i % 2 == 0 else f"(?P<{p}>{fields[p]})" for i, p in enumerate(parts))
    return re.compile(regex)


def parse(caption, templates, fields=FIELDS):
    """The fields of every template of ``templates`` that the whole caption matches."""
    return [(t, m.groupdict()) for t in templates if (m := _pattern(t, fields).fullmatch(caption))]


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


# -- held-out words: the test_words split ----------------------------------------------
WORDS_SPEC = ShapesSpec(n=3000, seed=0)  # 2400 train, 300 val, 300 test scenes (text only, fast)
TOKEN = re.compile(r"[a-z]+")  # a word; hyphens split too: "three-sided" is "three", "sided"
HELD_VALUE = {w: value for value, words in HELD_OUT_WORDS.items() for w in words}
HELD_COLOUR = {w: v for w, v in HELD_VALUE.items() if v in COLOURS}
HELD_KIND = {w: v for w, v in HELD_VALUE.items() if v in shapes.KINDS}
HELD_SIZE = {w: v for w, v in HELD_VALUE.items() if v in shapes.SIZES}
HELD_FIELDS = {**FIELDS, "colour": _alt(HELD_COLOUR), "kind": _alt(HELD_KIND), "size": _alt(HELD_SIZE)}
HELD_OTHER = re.compile(  # one secondary shape, as test_words names it
    f"a (?P<size>{_alt(HELD_SIZE)}) (?P<colour>{_alt(HELD_COLOUR)}) (?P<kind>{_alt(HELD_KIND)})")
MENTIONS_HELD_OUT = re.compile(rf"\b{_alt(HELD_VALUE)}\b")
HELD_TOKENS = {t for w in HELD_VALUE for t in TOKEN.findall(w)}
# every word that names a colour, kind or size in train/val/test captions
TRAINING_WORDS = [*COLOURS, *shapes.KINDS, *shapes.SIZES, *(w for ws in SYNONYMS.values() for w in ws)]
ATTRIBUTE_TOKENS = {t for w in TRAINING_WORDS for t in TOKEN.findall(w)}


def _tokens(text):
    return set(TOKEN.findall(text.lower()))


def test_held_out_words_cover_every_value_and_are_new_vocabulary():
    assert set(HELD_OUT_WORDS) == {*COLOURS, *shapes.KINDS, *shapes.SIZES}
    assert all(HELD_OUT_WORDS.values())
    assert len(HELD_VALUE) == sum(map(len, HELD_OUT_WORDS.values()))  # no word names two values
    # no word of a held-out phrase is a word of the grammar the other splits are built from
    grammar = [*TRAINING_WORDS, *BACKGROUNDS, *TRAIN_TEMPLATES, *TEST_TEMPLATES,
               "on the left on the right at the top at the bottom in the middle"]
    vocabulary = {t for text in grammar for t in TOKEN.findall(re.sub(r"\{\w+\}", " ", text))}
    for phrase in HELD_VALUE:
        assert not _tokens(phrase) & vocabulary, phrase
    assert "sized" in vocabulary and "shape" in vocabulary  # the check sees inside "mid-sized", "round shape"


def test_no_held_out_word_in_any_train_val_or_test_caption(shapes_dir):
    for split in shapes.SPLITS:
        texts = [text for _, text in generate_records(WORDS_SPEC, split)]
        texts += [r["text"] for r in _rows(shapes_dir / f"{split}.csv")]
        assert len(texts) >= 300
        for text in texts:
            assert not MENTIONS_HELD_OUT.search(text), f"{split} caption {text!r} has a held-out word"
            assert not _tokens(text) & HELD_TOKENS, f"{split} caption {text!r} shares a held-out word's word"


def test_test_words_captions_name_every_shape_in_held_out_words_with_the_test_template():
    test = generate_records(WORDS_SPEC, "test")
    words = generate_records(WORDS_SPEC, TEST_WORDS)
    assert len(words) == len(test) == 300
    templates, used = Counter(), Counter()
    for (scene, text), (w_scene, w_text) in zip(test, words):
        assert w_scene == scene  # the test scene itself, so the test image
        matches = parse(w_text, TEST_TEMPLATES, HELD_FIELDS)
        assert matches, f"test_words caption {w_text!r} fits no test template in held-out words"
        # the template of the test caption of the row: only the words differ
        assert [t for t, _ in matches] == [t for t, _ in parse(text, TEST_TEMPLATES)]
        assert MENTIONS_HELD_OUT.search(w_text)
        assert not _tokens(w_text) & ATTRIBUTE_TOKENS, f"{w_text!r} names an attribute with a training word"
        (template, fields), = matches
        (_, test_fields), = parse(text, TEST_TEMPLATES)
        main = scene.shapes[0]
        assert (HELD_COLOUR[fields["colour"]], HELD_KIND[fields["kind"]]) == (main.colour, main.kind)
        assert f"{HELD_COLOUR[fields['colour']]} {HELD_KIND[fields['kind']]}" == scene.label
        if "size" in fields:
            assert HELD_SIZE[fields["size"]] == main.size
        for field in ("bg", "where"):
            assert fields.get(field) == test_fields.get(field)
        if "others" in fields:  # the secondary shapes, in held-out words too
            others = [HELD_OTHER.fullmatch(part) for part in fields["others"].split(" and ")]
            assert all(others), fields["others"]
            assert [(HELD_SIZE[m["size"]], HELD_COLOUR[m["colour"]], HELD_KIND[m["kind"]]) for m in others] \
                == [(s.size, s.colour, s.kind) for s in scene.shapes[1:]]
        templates[template] += 1
        used.update(w for w in HELD_VALUE if re.search(rf"\b{re.escape(w)}\b", w_text))
    assert set(templates) == set(TEST_TEMPLATES)
    assert set(used) == set(HELD_VALUE), set(HELD_VALUE) - set(used)  # every held-out word is tested


def test_test_words_manifest_is_the_test_rows_with_new_captions(shapes_dir):
    test, words = _rows(shapes_dir / "test.csv"), _rows(shapes_dir / f"{TEST_WORDS}.csv")
    assert len(words) == len(test) == 12 and set(words[0]) == {"id", "image", "text", "label"}
    for t, w in zip(test, words):
        assert (w["id"], w["image"], w["label"]) == (t["id"], t["image"], t["label"])
        assert w["text"] != t["text"]
        (_, fields), = parse(w["text"], TEST_TEMPLATES, HELD_FIELDS)
        assert w["label"] == f"{HELD_COLOUR[fields['colour']]} {HELD_KIND[fields['kind']]}"
    assert [w["text"] for w in words] == [text for _, text in generate_records(FIXTURE_SPEC, TEST_WORDS)]
    assert not (shapes_dir / "images" / TEST_WORDS).exists()  # no images of its own


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
    manifests = write_shapes(again, FIXTURE_SPEC)
    assert manifests == {split: again / f"{split}.csv" for split in (*shapes.SPLITS, TEST_WORDS)}
    for split in manifests:
        assert (shapes_dir / f"{split}.csv").read_bytes() == manifests[split].read_bytes()
        for row in _rows(manifests[split]):
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
    # test_words record i: test scene i, its own caption; the same for the same seed only
    words = generate_records(ShapesSpec(n=500, seed=7), TEST_WORDS)
    assert words[:5] == generate_records(ShapesSpec(n=50, seed=7), TEST_WORDS)
    assert [s for s, _ in words] == [s for s, _ in generate_records(ShapesSpec(n=500, seed=7), "test")]
    other = generate_records(ShapesSpec(n=500, seed=8), TEST_WORDS)
    assert sum(a != b for a, b in zip(words, other)) > 0.9 * len(words)


# What the README's measured results were produced from, pinned by digests computed with the
# generator before test_words existed: adding splits must not move train, val or test. The
# digests cover ids, image paths, captions, labels and every scene's exact geometry (which
# is all the images are drawn from) without depending on Pillow's PNG bytes. If a change here
# is deliberate, every reported number has to be measured again.
PINNED = {
    "demo (n=7000, seed=0) train/val/test scenes and captions":
        "fa694a05b3d461670ba8ff5aa2b677ea6d2dba960075205922f8ea9a03402420",
    "fixture train.csv": "de2683923486c19630143b9ebbcbb70fccf6d5dda2ec26433cbbb7a9f0799e79",
    "fixture val.csv": "86284ead6199786fc7a4a223dce9453ceda3735081faff352468069f18cdfe2d",
    "fixture test.csv": "e9d6c5c733b2b1231e767105b69d09377929809f35c0b61231081889174775ae",
    # test_words is pinned too, so that its results stay comparable across versions
    "demo (n=7000, seed=0) test_words scenes and captions":
        "c401505b34548218a840f4232bc538bd74522fb52e619be574189e9aa09fc565",
}


def _digest(spec, splits):
    h = hashlib.sha256()
    for split in splits:
        for scene, text in generate_records(spec, split):
            h.update(f"{split}\t{scene!r}\t{text}\n".encode())
    return h.hexdigest()


def test_outputs_are_pinned(shapes_dir):
    demo = ShapesSpec(n=7000, seed=0)
    found = {"demo (n=7000, seed=0) train/val/test scenes and captions": _digest(demo, shapes.SPLITS),
             "demo (n=7000, seed=0) test_words scenes and captions": _digest(demo, [TEST_WORDS])}
    for split in shapes.SPLITS:
        found[f"fixture {split}.csv"] = hashlib.sha256((shapes_dir / f"{split}.csv").read_bytes()).hexdigest()
    assert found == PINNED


def test_split_sizes_and_columns(shapes_dir):
    sizes = {s: len(_rows(shapes_dir / f"{s}.csv")) for s in shapes.SPLITS}
    assert sizes == {"train": 96, "val": 12, "test": 12}
    rows = _rows(shapes_dir / "train.csv")
    assert set(rows[0]) == {"id", "image", "text", "label"}
    assert len({r["id"] for r in rows}) == len(rows)
    assert all((shapes_dir / r["image"]).is_file() for r in rows)
    with Image.open(shapes_dir / rows[0]["image"]) as im:
        assert im.size == (64, 64) and im.mode == "RGB"
