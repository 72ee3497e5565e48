"""The distribution-shifted test split (``test_shifted``): the test scenes, captions and
labels, rendered on photographs, rescaled, blurred, noisy and as JPEG, from the seed."""
import csv
import hashlib
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from jointspace.data.shapes import BACKGROUNDS, ShapesSpec, generate_records, render, write_shapes
from jointspace.data.shifted import JPEG_QUALITY, SHIFTED_SIZES, TEST_SHIFTED, render_shifted

SPEC = ShapesSpec(n=200, seed=5, shifted=True)  # 20 test scenes


def _rows(path):
    with open(path) as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def shifted_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("shifted")
    manifests = write_shapes(out, SPEC)
    assert manifests[TEST_SHIFTED] == out / f"{TEST_SHIFTED}.csv"
    return out


def test_same_scenes_captions_and_labels_as_the_test_split(shifted_dir):
    test, shifted = _rows(shifted_dir / "test.csv"), _rows(shifted_dir / f"{TEST_SHIFTED}.csv")
    assert len(shifted) == len(test) == 20
    assert [r["text"] for r in shifted] == [r["text"] for r in test]
    assert [r["label"] for r in shifted] == [r["label"] for r in test]
    # what the test generator gives for those scenes, not just a copy of the file
    records = generate_records(ShapesSpec(n=200, seed=5), "test")
    assert [r["text"] for r in shifted] == [text for _, text in records]
    assert [r["label"] for r in shifted] == [scene.label for scene, _ in records]
    assert generate_records(SPEC, TEST_SHIFTED) == records
    assert all(r["image"] == f"images/{TEST_SHIFTED}/{r['id']}.jpg" for r in shifted)
    assert not set(r["id"] for r in shifted) & set(r["id"] for r in test)


def test_images_are_jpegs_of_other_sizes_on_non_uniform_backgrounds(shifted_dir):
    sizes, corner_spread, differs = set(), [], []
    for row, (scene, _) in zip(_rows(shifted_dir / f"{TEST_SHIFTED}.csv"),
                               generate_records(SPEC, TEST_SHIFTED), strict=True):
        image = Image.open(shifted_dir / row["image"])
        assert image.format == "JPEG" and image.mode == "RGB"
        assert image.size[0] == image.size[1] in SHIFTED_SIZES
        sizes.add(image.size[0])
        pixels = np.asarray(image, dtype=np.float32)
        clean = np.asarray(render(scene, image.size[0]), dtype=np.float32)
        # where the clean rendering shows only its flat background colour (shapes are
        # rescaled by at most 1.25, so a few of these pixels may be shape)
        background = (clean == BACKGROUNDS[scene.background]).all(axis=2)
        corner_spread.append(pixels[background].std(axis=0).mean())
        differs.append(np.abs(pixels - clean).mean())
    assert len(sizes) >= 3  # several resolutions, not the training 64 px only
    # the standard renderer's background is one flat colour (std 0); these are not
    flat = np.asarray(render(generate_records(SPEC, "test")[0][0], 64), dtype=np.float32)[:8, :8]
    assert flat.reshape(-1, 3).std(axis=0).max() == 0
    assert min(corner_spread) > 3 and np.median(corner_spread) > 8, corner_spread
    assert min(differs) > 10, differs  # every image differs clearly from its clean rendering


def test_background_is_a_tinted_photo_and_shapes_keep_their_colour():
    scene, _ = generate_records(SPEC, "test")[0]
    image, quality = render_shifted(scene, "5/test_shifted/0")
    assert JPEG_QUALITY[0] <= quality <= JPEG_QUALITY[1]
    # the main shape's centre still shows its colour, up to noise and blur
    from jointspace.data.shapes import COLOURS
    main = scene.shapes[0]
    size = image.size[0]
    centre = np.asarray(image, dtype=np.float32)[int(main.y * size) - 1:int(main.y * size) + 2,
                                                  int(main.x * size) - 1:int(main.x * size) + 2]
    assert np.abs(centre.reshape(-1, 3).mean(axis=0) - COLOURS[main.colour]).max() < 40
    assert scene.background in BACKGROUNDS


def test_deterministic_from_the_seed(shifted_dir, tmp_path):
    again = write_shapes(tmp_path / "again", SPEC)

    def digest(folder):
        return {p.name: hashlib.sha256(p.read_bytes()).hexdigest()
                for p in sorted((folder / "images" / TEST_SHIFTED).iterdir())}

    assert digest(shifted_dir) == digest(tmp_path / "again")
    assert again[TEST_SHIFTED].read_text() == (shifted_dir / f"{TEST_SHIFTED}.csv").read_text()
    other = write_shapes(tmp_path / "other", ShapesSpec(n=200, seed=6, shifted=True))
    assert digest(tmp_path / "other") != digest(shifted_dir)
    # the standard splits do not change with the flag
    plain = write_shapes(tmp_path / "plain", ShapesSpec(n=200, seed=5))
    assert TEST_SHIFTED not in plain
    for split in ("train", "val", "test"):
        assert plain[split].read_text() == (shifted_dir / f"{split}.csv").read_text()


def test_data_command_flag(tmp_path):
    out = tmp_path / "cli"
    subprocess.run([sys.executable, "-m", "jointspace.cli", "data", "shapes", "--out", str(out),
                    "--n", "60", "--seed", "5", "--shifted"], check=True, capture_output=True)
    rows = _rows(out / f"{TEST_SHIFTED}.csv")
    assert len(rows) == 6 and all((out / r["image"]).is_file() for r in rows)
