"""The shapes world's vocabulary and geometry: shape kinds, colours, backgrounds,
sizes, a scene, and how its shapes are drawn (shared by the clean renderer in
:mod:`.shapes`, the shifted one in :mod:`.shifted` and the sounds of :mod:`.sounds`)."""
from __future__ import annotations

import math
from dataclasses import dataclass

from PIL import Image, ImageDraw

KINDS = ("circle", "square", "triangle", "diamond", "star", "hexagon")
COLOURS = {
    "red": (220, 40, 40), "green": (40, 180, 60), "blue": (50, 90, 230),
    "yellow": (240, 220, 40), "purple": (150, 60, 200), "orange": (250, 140, 20),
    "cyan": (40, 210, 220), "white": (245, 245, 245),
}
BACKGROUNDS = {"black": (10, 10, 10), "grey": (110, 110, 110), "brown": (90, 60, 30)}
SIZES = {"small": 0.13, "medium": 0.2, "large": 0.28}  # radius as a fraction of the image

@dataclass(frozen=True)
class Shape:
    kind: str
    colour: str
    size: str
    x: float  # centre, as a fraction of the width
    y: float


@dataclass(frozen=True)
class Scene:
    shapes: tuple[Shape, ...]  # shapes[0] is the main shape
    background: str

    @property
    def label(self) -> str:
        return f"{self.shapes[0].colour} {self.shapes[0].kind}"


def polygon(kind: str, cx: float, cy: float, r: float) -> list[tuple[float, float]]:
    if kind == "square":
        h = r * 0.85
        return [(cx - h, cy - h), (cx + h, cy - h), (cx + h, cy + h), (cx - h, cy + h)]
    if kind == "diamond":
        return [(cx, cy - r), (cx + r * 0.75, cy), (cx, cy + r), (cx - r * 0.75, cy)]
    if kind == "triangle":
        return [(cx + r * math.cos(a), cy + r * math.sin(a))
                for a in (-math.pi / 2, math.pi / 6, 5 * math.pi / 6)]
    if kind == "hexagon":
        return [(cx + r * math.cos(k * math.pi / 3), cy + r * math.sin(k * math.pi / 3))
                for k in range(6)]
    if kind == "star":
        return [(cx + (r if k % 2 == 0 else r * 0.45) * math.cos(-math.pi / 2 + k * math.pi / 5),
                 cy + (r if k % 2 == 0 else r * 0.45) * math.sin(-math.pi / 2 + k * math.pi / 5))
                for k in range(10)]
    raise ValueError(f"unknown shape kind {kind!r}")


def draw_shapes(image: Image.Image, scene: Scene, scale: float = 1.0) -> None:
    """Draw ``scene``'s shapes onto ``image`` (square, any size) in place; radii × ``scale``."""
    side = image.size[0]
    draw = ImageDraw.Draw(image)
    for shape in scene.shapes:
        cx, cy, r = shape.x * side, shape.y * side, SIZES[shape.size] * side * scale
        fill = COLOURS[shape.colour]
        if shape.kind == "circle":
            draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=fill)
        else:
            draw.polygon(polygon(shape.kind, cx, cy, r), fill=fill)
