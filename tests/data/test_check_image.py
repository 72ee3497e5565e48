"""check_image (read time) and load_image (use time) must agree, and checking is cheap."""
import numpy as np
import pytest
from PIL import Image, JpegImagePlugin

from jointspace.data.manifest import check_image
from jointspace.errors import DataError
from jointspace.towers.vision import load_image


def _huge_jpeg_bytes(tmp_path, side: int = 6000) -> bytes:
    rng = np.random.default_rng(1)
    detail = rng.integers(0, 256, (200, 200, 3), dtype=np.uint8)
    Image.fromarray(detail).resize((side, side), Image.BICUBIC).save(tmp_path / "huge.jpg", quality=90)
    return (tmp_path / "huge.jpg").read_bytes()


def _unusual_images(folder):
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.new("RGB", (40, 20), (10, 20, 30)).save(folder / "exif.jpg", exif=exif.tobytes())
    Image.fromarray(np.arange(4096, dtype=np.uint16).reshape(64, 64) * 16).save(folder / "g16.png")
    Image.new("CMYK", (16, 16), (0, 255, 255, 0)).save(folder / "cmyk.jpg")
    Image.new("LA", (16, 16), (100, 50)).save(folder / "la.png")
    p = Image.new("P", (16, 16), 1)
    p.putpalette([0, 0, 0, 255, 0, 0])
    p.save(folder / "p.png", transparency=0)
    Image.fromarray(np.full((8, 8), 0.5, np.float32), "F").save(folder / "f.tif")
    (folder / "g16.pgm").write_bytes(b"P5 2 2 65535\n" + bytes(8))
    return sorted(folder.iterdir())


def test_every_image_that_validates_loads(tmp_path):
    for path in _unusual_images(tmp_path):
        assert check_image(path) is None, path
        assert load_image(path, 32).shape == (3, 32, 32)


def test_truncated_huge_jpeg_fails_both(tmp_path):
    data = _huge_jpeg_bytes(tmp_path)
    for name, cut in (("half.jpg", len(data) // 2), ("tail.jpg", len(data) - 10)):
        (tmp_path / name).write_bytes(data[:cut])
        assert "cannot be decoded" in check_image(tmp_path / name) and "truncated" in check_image(tmp_path / name)
        with pytest.raises(DataError, match="cannot be decoded"):
            load_image(tmp_path / name, 64)


def test_check_image_decodes_huge_jpegs_at_reduced_scale(tmp_path, monkeypatch):
    _huge_jpeg_bytes(tmp_path)
    decoded_sizes = []
    draft = JpegImagePlugin.JpegImageFile.draft

    def spy(self, mode, size):
        result = draft(self, mode, size)
        decoded_sizes.append(self.size)
        return result

    monkeypatch.setattr(JpegImagePlugin.JpegImageFile, "draft", spy)
    assert check_image(tmp_path / "huge.jpg") is None
    assert decoded_sizes == [(750, 750)]  # 1/8 of 6000: a 64th of the pixels
    assert check_image(tmp_path / "huge.jpg", size=1000) is None
    assert decoded_sizes[-1] == (1500, 1500)  # never below the size asked for


def test_missing_and_garbage(tmp_path):
    assert check_image(tmp_path / "nope.jpg").startswith("image file not found")
    (tmp_path / "junk.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    assert "cannot be decoded" in check_image(tmp_path / "junk.jpg")
