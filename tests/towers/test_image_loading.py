"""load_image on real files: EXIF orientation, bit depth, transparency, huge JPEGs."""
import struct
import zlib

import numpy as np
import pytest
import torch
from PIL import Image, JpegImagePlugin

from jointspace.towers.vision import ImageTower, load_image


def _upright(w: int = 64, h: int = 32) -> Image.Image:
    """Four flat quadrants, wider than tall: any rotation or mirror shows."""
    a = np.zeros((h, w, 3), np.uint8)
    a[: h // 2, : w // 2] = (255, 0, 0)
    a[: h // 2, w // 2:] = (0, 255, 0)
    a[h // 2:, : w // 2] = (0, 0, 255)
    a[h // 2:, w // 2:] = (255, 255, 255)
    return Image.fromarray(a)


# orientation tag → how a camera stores the upright picture, and the turn that shows it upright
STORED = {6: Image.Transpose.ROTATE_90, 8: Image.Transpose.ROTATE_270}
DISPLAY = {6: Image.Transpose.ROTATE_270, 8: Image.Transpose.ROTATE_90}


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
@pytest.mark.parametrize("orientation", [6, 8])
def test_exif_orientation_is_applied(tmp_path, fmt, orientation):
    upright = _upright()
    exif = Image.Exif()
    exif[0x0112] = orientation  # Orientation
    path = tmp_path / f"sideways.{fmt.lower()}"
    upright.transpose(STORED[orientation]).save(path, fmt, exif=exif.tobytes(), quality=95)
    with Image.open(path) as im:  # the stored (sideways) pixels, turned by hand, without EXIF
        stored = Image.fromarray(np.asarray(im.convert("RGB")))
    assert stored.size == (32, 64)
    expected = load_image(stored.transpose(DISPLAY[orientation]), 32)
    if fmt == "PNG":  # lossless: that is exactly the picture we drew
        torch.testing.assert_close(expected, load_image(upright, 32))
    for item in (path, Image.open(path)):  # a path, and a PIL image passed in directly
        torch.testing.assert_close(load_image(item, 32), expected)


def test_pil_image_passed_in_is_not_changed(tmp_path):
    exif = Image.Exif()
    exif[0x0112] = 6
    _upright().transpose(STORED[6]).save(tmp_path / "s.png", exif=exif.tobytes())
    image = Image.open(tmp_path / "s.png")
    before = image.size
    load_image(image, 16)
    assert image.size == before and image.getexif()[0x0112] == 6


def _expected_8bit(v: np.ndarray) -> np.ndarray:
    return np.rint(v.astype(np.float64) / 257).astype(np.uint8)


def _full_range_gray16() -> np.ndarray:
    """256×256 holding every 16-bit value 0 … 65535 once, row-major."""
    return np.arange(65536, dtype=np.uint16).reshape(256, 256)


@pytest.mark.parametrize("fmt", ["PNG", "TIFF"])
def test_16bit_grayscale_is_scaled_not_clipped(tmp_path, fmt):
    v = _full_range_gray16()
    path = tmp_path / f"g16.{fmt.lower()}"
    Image.fromarray(v).save(path, fmt)
    assert Image.open(path).mode == "I;16"  # the file really is 16-bit
    got = load_image(path, 256)
    assert got.shape == (3, 256, 256)
    for channel in got:
        np.testing.assert_array_equal(channel.numpy(), _expected_8bit(v))
    assert (got == 255).float().mean() < 0.01  # convert("RGB") made 99.6% of it white


def test_16bit_pgm_mode_i_is_scaled(tmp_path):
    v = _full_range_gray16()
    path = tmp_path / "g16.pgm"
    path.write_bytes(b"P5 256 256 65535\n" + v.astype(">u2").tobytes())
    assert Image.open(path).mode == "I"
    np.testing.assert_array_equal(load_image(path, 256)[0].numpy(), _expected_8bit(v))


def test_float_image_is_taken_as_0_to_1(tmp_path):
    v = np.linspace(-0.5, 1.5, 64 * 64, dtype=np.float32).reshape(64, 64)
    Image.fromarray(v, "F").save(tmp_path / "f.tif")
    got = load_image(tmp_path / "f.tif", 64)[0].numpy()
    np.testing.assert_array_equal(got, np.rint(np.clip(v.astype(np.float64), 0, 1) * 255).astype(np.uint8))


def _png16(a: np.ndarray, colour_type: int) -> bytes:
    """A 16-bit PNG written by hand (Pillow cannot write 16-bit RGB)."""
    h, w = a.shape[:2]
    raw = b"".join(b"\x00" + a[y].astype(">u2").tobytes() for y in range(h))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", w, h, 16, colour_type, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw))
            + chunk(b"IEND", b""))


def test_16bit_rgb_and_rgba_png(tmp_path):
    k = np.arange(256, dtype=np.uint16).reshape(16, 16)
    rgb = np.stack([k, 255 - k, k // 2], -1) * 257  # 257·k is exactly k in 8 bits
    (tmp_path / "rgb16.png").write_bytes(_png16(rgb, 2))
    got = load_image(tmp_path / "rgb16.png", 16).permute(1, 2, 0).numpy()
    np.testing.assert_array_equal(got, (rgb // 257).astype(np.uint8))
    rgba = np.concatenate([rgb, np.full((16, 16, 1), 65535, np.uint16)], -1)  # opaque
    (tmp_path / "rgba16.png").write_bytes(_png16(rgba, 6))
    got = load_image(tmp_path / "rgba16.png", 16).permute(1, 2, 0).numpy()
    np.testing.assert_array_equal(got, (rgb // 257).astype(np.uint8))


def test_transparency_is_composited_onto_white(tmp_path):
    rgba = np.zeros((8, 8, 4), np.uint8)  # transparent black …
    rgba[:4] = (255, 0, 0, 255)  # … under an opaque red top half
    rgba[4:, :4] = (0, 0, 255, 128)  # half-transparent blue in the bottom left
    Image.fromarray(rgba, "RGBA").save(tmp_path / "rgba.png")
    got = load_image(tmp_path / "rgba.png", 8).permute(1, 2, 0).numpy().astype(int)
    assert (got[:4] == (255, 0, 0)).all() and (got[4:, 4:] == 255).all()
    assert np.abs(got[4:, :4] - (127, 127, 255)).max() <= 1
    la = Image.fromarray(rgba[..., [0, 3]], "LA")
    got = load_image(la, 8).permute(1, 2, 0).numpy()
    assert (got[4:, 4:] == 255).all() and (got[:4] == 255).all()
    palette = Image.new("P", (8, 8), 0)
    palette.putpalette([0, 0, 0, 0, 200, 0])
    palette.paste(1, (0, 0, 8, 4))
    palette.save(tmp_path / "p.png", transparency=0)
    got = load_image(tmp_path / "p.png", 8).permute(1, 2, 0).numpy()
    assert (got[:4] == (0, 200, 0)).all() and (got[4:] == 255).all()


def test_cmyk_jpeg(tmp_path):
    Image.new("CMYK", (16, 16), (0, 255, 255, 0)).save(tmp_path / "c.jpg", quality=95)
    got = load_image(tmp_path / "c.jpg", 16).float().mean(dim=(1, 2))
    assert torch.allclose(got, torch.tensor([255.0, 0.0, 0.0]), atol=4)


def _huge_jpeg(path, side: int = 6000) -> None:
    rng = np.random.default_rng(0)
    detail = rng.integers(0, 256, (300, 300, 3), dtype=np.uint8)
    Image.fromarray(detail).resize((side, side), Image.BICUBIC).save(path, quality=90)


def test_huge_jpeg_is_drafted_and_matches_full_decode(tmp_path, monkeypatch):
    path = tmp_path / "huge.jpg"
    _huge_jpeg(path)
    decoded_sizes = []
    draft = JpegImagePlugin.JpegImageFile.draft

    def spy(self, mode, size):
        result = draft(self, mode, size)
        decoded_sizes.append(self.size)  # the size libjpeg will decode to
        return result

    monkeypatch.setattr(JpegImagePlugin.JpegImageFile, "draft", spy)
    got = load_image(path, 64).int()
    assert decoded_sizes == [(750, 750)]  # 1/8 scale: 750 ≥ 64, and 1/16 does not exist
    with Image.open(path) as im:  # the full decode, as before
        full = torch.from_numpy(np.asarray(im.convert("RGB").resize((64, 64), Image.BICUBIC)).copy())
    diff = (got - full.permute(2, 0, 1).int()).abs().float()
    # DCT-domain scaling vs a 6000→64 bicubic: a few grey levels at most (measured mean 0.1, max 1)
    assert diff.mean() <= 1.0 and diff.max() <= 4


def test_to_float_does_not_change_its_input():
    x = torch.linspace(0, 255, 3 * 4 * 4).reshape(1, 3, 4, 4)  # already float32
    before = x.clone()
    y = ImageTower.to_float(x)
    torch.testing.assert_close(x, before)
    torch.testing.assert_close(y, before / 127.5 - 1)
    u = before.to(torch.uint8)
    torch.testing.assert_close(ImageTower.to_float(u), u.float() / 127.5 - 1)
