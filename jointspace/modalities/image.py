"""The image modality: files Pillow decodes, one decoding path for every reader.

Every image a tower, a manifest check, a shard reader or an upload sees goes
through :func:`decode_image` / :func:`open_image`: EXIF orientation applied,
high-bit-depth and transparent images converted as :func:`to_rgb8` documents,
JPEGs draft-decoded no smaller than a tower needs. Uploads and shard members are
decoded from bytes with a pixel bound read from the header before any decoding
(a small PNG can hold a picture that takes gigabytes).
"""
from __future__ import annotations

import io
import re
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageOps

from ..errors import DataError
from .base import MODALITIES, Modality, Preview, TooLarge

#: the first bytes of the image formats an upload may be (offset, bytes)
MAGIC = ((0, b"\x89PNG\r\n\x1a\n"), (0, b"\xff\xd8\xff"), (0, b"GIF87a"), (0, b"GIF89a"),
         (8, b"WEBP"), (0, b"BM"), (0, b"II*\x00"), (0, b"MM\x00*"))
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")

# single-channel modes whose values run 0–65535 (16-bit PNG/TIFF/PGM)
_SIXTEEN_BIT = ("I;16", "I;16L", "I;16B", "I;16N", "I")
_ALPHA_MODES = ("LA", "La", "PA", "RGBA", "RGBa")


def to_rgb8(image: Image.Image) -> Image.Image:
    """Any Pillow mode → 8-bit RGB, without clipping high-bit-depth data.

    Policy:

    * ``I;16*`` (16-bit PNG/TIFF) and ``I`` (what Pillow makes of 16-bit PGM,
      already scaled to 0–65535) are taken as 0–65535 and divided by 257 with
      rounding, so 257·k → k and 65535 → 255. ``I`` values outside that range
      are clipped. (``convert("RGB")`` would clip everything above 255 to white.)
    * ``F`` is taken as 0.0–1.0 (the float-image convention), ×255, clipped.
    * Transparency (``LA``, ``RGBA``, ``PA``, palette or ``RGB``/``L`` with a
      ``transparency`` entry) is composited onto white, so fully transparent
      pixels become white whatever colour they happen to store.
    * Everything else (``1``, ``L``, ``P``, ``CMYK``, ``YCbCr``, ``LAB`` …) uses
      Pillow's own conversion. Pillow already decodes 16-bit RGB(A) PNGs to
      8-bit ``RGB``/``RGBA`` by keeping the high byte.
    """
    mode = image.mode
    if mode in _SIXTEEN_BIT:
        a = np.clip(np.asarray(image).astype(np.int64), 0, 65535)
        # integer round(v / 257): exact, and 257·k → k for every 8-bit k
        return Image.fromarray(((a * 255 + 32767) // 65535).astype(np.uint8), "L").convert("RGB")
    if mode == "F":
        a = np.nan_to_num(np.asarray(image, dtype=np.float64), nan=0.0)
        return Image.fromarray(np.rint(np.clip(a, 0.0, 1.0) * 255).astype(np.uint8), "L").convert("RGB")
    if mode in ("P", "L", "RGB", "1") and "transparency" in image.info:
        image = image.convert("RGBA")
        mode = "RGBA"
    if mode in _ALPHA_MODES:
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return image if mode == "RGB" else image.convert("RGB")


def decode_image(path: str | Path, min_size: int | None = None) -> Image.Image:
    """Decode an image file fully → upright 8-bit RGB.

    With ``min_size`` a JPEG is decoded by libjpeg at 1/2, 1/4 or 1/8 scale,
    the strongest reduction that keeps both sides ≥ ``min_size``
    (``Image.draft``), which makes huge photos several times cheaper to read;
    other formats decode in full.
    The drafted image is still decoded completely, so truncated files fail here.
    Raises ``FileNotFoundError`` or Pillow's errors; :func:`load_image` and
    ``check_image`` turn them into messages.
    """
    with Image.open(path) as im:
        if min_size is not None:
            # square request: after an EXIF 90° turn both sides must still be enough
            im.draft(None, (min_size, min_size))
        im.load()
        ImageOps.exif_transpose(im, in_place=True)
        rgb = to_rgb8(im)
        # closing the file also invalidates `im`, so never hand it back itself
        return rgb.copy() if rgb is im else rgb


def open_image(item: Any, min_size: int | None = None) -> Image.Image:
    """A path or PIL image → upright 8-bit RGB PIL image, the one way towers read images.

    EXIF orientation is applied, high-bit-depth and transparent images are
    converted as :func:`to_rgb8` documents, and a JPEG file is decoded no smaller
    than ``min_size`` (:func:`decode_image`). A PIL image passed in is not changed.
    Unreadable items raise :class:`~jointspace.errors.DataError`.
    """
    if isinstance(item, (str, Path)):
        try:
            return decode_image(item, min_size)
        except FileNotFoundError:
            raise DataError(f"image file not found: {item}") from None
        except Exception as e:
            raise DataError(f"image file cannot be decoded ({e}): {item}") from None
    if isinstance(item, Image.Image):
        return to_rgb8(ImageOps.exif_transpose(item))  # a copy: the caller's image is untouched
    raise DataError(f"expected an image path or PIL image, got {type(item).__name__}")


def check_image(path: Path, size: int = 1) -> str | None:
    """Why the image file cannot be used, or None if it decodes.

    It runs the same decoding as training and encoding (:func:`decode_image`:
    EXIF, bit depth, transparency), so an image that passes here loads later.
    JPEGs are decoded at reduced scale (at least ``size`` pixels a side, 1/8
    by default), which still reads every byte, so truncated files are caught.
    """
    try:
        decode_image(path, size)
    except FileNotFoundError:
        return f"image file not found: {path}"
    except Exception as e:  # PIL raises many types for corrupt data
        return f"image file cannot be decoded ({type(e).__name__}: {e}): {path}"
    return None


class ImageModality(Modality):
    """Images: PNG, JPEG, GIF, WebP, BMP, TIFF …; decoded to upright 8-bit RGB."""

    name = "image"
    is_file = True
    suffixes = IMAGE_SUFFIXES
    shard_keys = ("jpg", "jpeg", "png", "webp")
    default_tower = "convnet"
    preview_kind = "image"
    player_kind = "image"  # the detail view shows the whole picture
    uploadable = True

    def check(self, path: Any) -> str | None:
        return check_image(Path(path))

    def decode(self, source: str | Path | bytes, *, where: str = "",
               max_pixels: int | None = None, min_size: int | None = None) -> Image.Image:
        """A path or an image file's bytes → upright 8-bit RGB (``min_size``: JPEG draft
        decoding no smaller than that). ``max_pixels`` is checked on the header first."""
        name = where or (str(source) if not isinstance(source, bytes) else "image")
        data = io.BytesIO(source) if isinstance(source, bytes) else source
        try:
            if max_pixels is not None:
                with Image.open(data) as im:
                    w, h = im.size  # from the header: nothing decoded yet
                if w * h > max_pixels:
                    raise TooLarge(f"{name} is {w}×{h} pixels; at most {max_pixels} pixels are "
                                   "accepted (send a smaller image)")
                if isinstance(data, io.BytesIO):
                    data.seek(0)
            image = decode_image(data, min_size)
        except DataError:
            raise
        except FileNotFoundError:
            raise DataError(f"image file not found: {name}") from None
        except Exception as e:  # PIL raises many types for bad data
            reason = re.sub(r"\s*<_io\.\w+ object at 0x[0-9a-f]+>", "", str(e))  # no repr of bytes
            # the decoder's own words, not its exception's name (a server says this to its client)
            raise DataError(f"{name} is not a decodable image ({reason or type(e).__name__})") from None
        if min(image.size) < 1:
            raise DataError(f"{name}: the image is empty")
        return image

    def sniff(self, head: bytes) -> bool:
        if head[:4] == b"RIFF" and head[8:12] != b"WEBP":
            return False
        return any(head[o:o + len(m)] == m for o, m in MAGIC)

    def preview(self, path: str | Path, *, max_px: int = 256) -> Preview:
        """A JPEG thumbnail, at most ``max_px`` a side (the decoding of :func:`open_image`)."""
        image = open_image(Path(path), max_px)
        image.thumbnail((max_px, max_px))
        out = io.BytesIO()
        image.save(out, "JPEG", quality=85)
        return Preview("image", "image/jpeg", out.getvalue())

    def sample(self, folder: Path) -> Path:
        """A 64×64 grey JPEG file (decoded through :func:`open_image`, as a query's file is)."""
        path = Path(folder) / "warm-up.jpg"
        Image.new("RGB", (64, 64), "gray").save(path, "JPEG")
        return path


IMAGE = MODALITIES.register("image")(ImageModality())
