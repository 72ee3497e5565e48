import csv
import random

from PIL import Image

from jointspace.data import shapes
from jointspace.data.shapes import (HELD_OUT_COMBOS, TEST_TEMPLATES, TRAIN_TEMPLATES, ShapesSpec,
                                    generate_records, render, write_shapes)


def _rows(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def test_same_seed_same_bytes(tmp_path, shapes_dir):
    again = tmp_path / "again"
    write_shapes(again, ShapesSpec(n=120, seed=3))
    for split in shapes.SPLITS:
        a, b = _rows(shapes_dir / f"{split}.csv"), _rows(again / f"{split}.csv")
        assert a == b
        for row in a[:5]:
            assert (shapes_dir / row["image"]).read_bytes() == (again / row["image"]).read_bytes()


def test_other_seed_differs():
    a = generate_records(ShapesSpec(n=50, seed=0), "train")
    b = generate_records(ShapesSpec(n=50, seed=1), "train")
    assert [t for _, t in a] != [t for _, t in b]


def test_split_sizes_and_columns(shapes_dir):
    sizes = {s: len(_rows(shapes_dir / f"{s}.csv")) for s in shapes.SPLITS}
    assert sizes == {"train": 96, "val": 12, "test": 12}
    assert set(_rows(shapes_dir / "train.csv")[0]) == {"id", "image", "text", "label"}


def test_held_out_combos_never_in_train_or_val():
    spec = ShapesSpec(n=3000, seed=0)
    for split in ("train", "val"):
        for scene, _ in generate_records(spec, split):
            assert not any((s.colour, s.kind) in HELD_OUT_COMBOS for s in scene.shapes)
    test_mains = [(sc.shapes[0].colour, sc.shapes[0].kind) for sc, _ in generate_records(spec, "test")]
    share = sum(c in HELD_OUT_COMBOS for c in test_mains) / len(test_mains)
    assert 0.25 < share < 0.45  # about a third of test scenes have an unseen main combination


def _template_prefixes(templates):
    return {t.split("{")[0] for t in templates if not t.startswith("{")}


def test_test_captions_use_only_held_out_templates():
    spec = ShapesSpec(n=2000, seed=0)
    train_caps = [t for _, t in generate_records(spec, "train")]
    test_caps = [t for _, t in generate_records(spec, "test")]
    # held-out templates carry words that training never uses
    for marker in ("showing", "together with", "coloured"):
        assert not any(marker in c for c in train_caps)
        assert any(marker in c for c in test_caps)
    assert all(any(m in c for m in ("showing", "together with", "coloured")) for c in test_caps)
    assert len(TEST_TEMPLATES) and len(TRAIN_TEMPLATES)


def test_label_names_the_largest_shape():
    for scene, text in generate_records(ShapesSpec(n=200, seed=5), "train"):
        main = scene.shapes[0]
        assert scene.label == f"{main.colour} {main.kind}"
        assert main.colour in text
        assert all(shapes.SIZES[s.size] < shapes.SIZES[main.size] for s in scene.shapes[1:])


def test_render_draws_the_colour():
    scene = shapes.sample_scene(random.Random(0), "train")
    image = render(scene, 64)
    assert image.size == (64, 64) and image.mode == "RGB"
    colours = {c for _, c in image.getcolors(64 * 64)}
    assert shapes.COLOURS[scene.shapes[0].colour] in colours
    assert isinstance(image, Image.Image)
