"""The built-in "shapes" dataset: scenes of coloured shapes with captions.

Everything is generated from a seed, so tests and the demo need no download.
Each scene has one *main* shape (the largest, which the label names) and up to
two smaller ones, on a plain background. Captions come from a small grammar
with paraphrase templates and synonyms.

Generalisation, not memorisation, is what the test split measures:

* some colour–kind combinations (:data:`HELD_OUT_COMBOS`) never appear in the
  train or validation splits, as main or as secondary shape; about a third of
  the test scenes have one as their main shape;
* test captions come only from templates that training never sees
  (:data:`TEST_TEMPLATES`).

Unseen words: the ``test_words`` split
--------------------------------------
Training, validation and test captions name colours, kinds and sizes only with
the words of :data:`COLOURS`, :data:`KINDS`, :data:`SIZES` and :data:`SYNONYMS`.
:data:`HELD_OUT_WORDS` gives other English words for the same values
(*crimson*, *lozenge*, *six-sided figure*, *huge*, …) that no generated caption
of those three splits contains, not even one word of a multi-word phrase.

``test_words.csv`` holds the *same rows* as ``test.csv`` – same ids, the same
image files, the same labels – and each caption uses the *same template* as
the test caption of its row, with every colour, kind and size (of the main and
of the secondary shapes) named by a held-out word instead. Row by row the two
captions differ only in vocabulary, so comparing text→image and image→text
retrieval on ``test.csv`` against ``test_words.csv`` measures how much a text
tower understands words it never saw paired with images – where a pretrained
text tower (MiniLM) can differ from one trained from scratch.

:func:`class_names` stays canonical (``"red circle"``). Zero-shot
classification on ``test_words.csv`` therefore gives the same numbers as on
``test.csv`` – same images, same labels, same class prompts; it measures only
the image features. The comparison that matters for unseen words is
retrieval with the held-out-word captions.

A shifted split: ``test_shifted``
---------------------------------
With ``ShapesSpec(shifted=True)`` (``jointspace data shapes --shifted``),
``test_shifted.csv`` holds the test scenes, captions and labels again, rendered
with a photographic background, other scales and resolutions, blur, noise and
JPEG artefacts: see :mod:`jointspace.data.shifted`.
"""
from __future__ import annotations

import csv
import io
import json
import random
from dataclasses import asdict, dataclass
from pathlib import Path

from PIL import Image

from ..fileio import atomic_write_text
from ..progress import progress
from .scenes import BACKGROUNDS, COLOURS, KINDS, SIZES, Scene, Shape, draw_shapes, polygon  # noqa: F401
from .shifted import TEST_SHIFTED, render_shifted

#: the built-in dataset is a dataset like any a user brings: its manifests have these
#: columns and its files these formats (what ``jointspace data shapes`` documents)
USER_FACING_DEFAULTS = ("image", "text", "audio", ".png", ".jpg", ".wav")

HELD_OUT_COMBOS = frozenset({
    ("red", "triangle"), ("green", "star"), ("blue", "hexagon"),
    ("yellow", "square"), ("purple", "circle"), ("orange", "diamond"),
})
SYNONYMS = {
    "circle": ("circle", "disc", "round shape"), "square": ("square", "box"),
    "triangle": ("triangle",), "diamond": ("diamond", "rhombus"), "star": ("star",),
    "hexagon": ("hexagon",), "small": ("small", "little", "tiny"),
    "medium": ("medium", "mid-sized"), "large": ("large", "big"),
}
TRAIN_TEMPLATES = (
    "a {size} {colour} {kind}",
    "a {colour} {kind} on a {bg} background",
    "a picture of a {size} {colour} {kind}",
    "there is a {colour} {kind} {where}",
    "a {size} {colour} {kind} {where}, and {others}",
    "{colour} {kind} {where}",
)
TEST_TEMPLATES = (
    "an image showing a {colour} {kind} {where}",
    "a {colour} {kind} together with {others}",
    "{size} {kind} coloured {colour} on {bg}",
)
SPLITS = ("train", "val", "test")
# Words that no train, val or test caption uses, not even one word of a phrase (so no
# "snow-white", "medium-sized" or "round disc"); kept apart from SYNONYMS, which every split
# may use. Every colour, kind and size has at least one. See the module docstring.
HELD_OUT_WORDS = {
    "red": ("crimson", "scarlet"), "green": ("emerald", "jade"),
    "blue": ("cobalt", "sapphire"), "yellow": ("golden", "lemon"),
    "purple": ("violet", "amethyst"), "orange": ("tangerine", "amber"),
    "cyan": ("turquoise", "aqua"), "white": ("ivory", "snowy"),
    "circle": ("dot", "ball"), "square": ("tile", "block"),
    "triangle": ("three-sided figure", "pyramid"), "diamond": ("lozenge", "kite"),
    "star": ("five-pointed figure", "pentagram"), "hexagon": ("six-sided figure", "honeycomb cell"),
    "small": ("miniature", "minuscule"), "medium": ("moderate", "average"),
    "large": ("huge", "enormous"),
}
TEST_WORDS = "test_words"  # the held-out-word twin of the test split (written by write_shapes)


def class_names() -> list[str]:
    """All ``"<colour> <kind>"`` labels, the zero-shot classes of the dataset."""
    return [f"{c} {k}" for c in COLOURS for k in KINDS]


def _where(shape: Shape) -> str:
    horizontal = "on the left" if shape.x < 0.4 else "on the right" if shape.x > 0.6 else ""
    vertical = "at the top" if shape.y < 0.4 else "at the bottom" if shape.y > 0.6 else ""
    return " ".join(p for p in (vertical, horizontal) if p) or "in the middle"


def _pick_combo(rng: random.Random, allow_held_out: bool) -> tuple[str, str]:
    while True:
        combo = (rng.choice(list(COLOURS)), rng.choice(KINDS))
        if allow_held_out or combo not in HELD_OUT_COMBOS:
            return combo


def sample_scene(rng: random.Random, split: str) -> Scene:
    """Draw one scene; ``split`` decides whether held-out combinations may appear."""
    if split == "test" and rng.random() < 1 / 3:
        main_combo = rng.choice(sorted(HELD_OUT_COMBOS))
    else:
        main_combo = _pick_combo(rng, allow_held_out=False)
    main_size = rng.choice(("medium", "large"))
    r_main = SIZES[main_size]
    shapes = [Shape(main_combo[1], main_combo[0], main_size,
                    rng.uniform(r_main, 1 - r_main), rng.uniform(r_main, 1 - r_main))]
    for _ in range(rng.choice((0, 1, 1, 2))):
        colour, kind = _pick_combo(rng, allow_held_out=split == "test")
        r = SIZES["small"]
        # keep secondary shapes off the main shape so the main one stays recognisable
        for _attempt in range(20):
            x, y = rng.uniform(r, 1 - r), rng.uniform(r, 1 - r)
            if all((x - s.x) ** 2 + (y - s.y) ** 2 > (SIZES[s.size] + r) ** 2 for s in shapes):
                shapes.append(Shape(kind, colour, "small", x, y))
                break
    return Scene(tuple(shapes), rng.choice(list(BACKGROUNDS)))


def _caption_fields(scene: Scene, rng: random.Random, split: str,
                    template: str | None = None) -> tuple[str, dict[str, str]]:
    """The template and its fields for one caption.

    For train, val and test the draws happen in a fixed order (secondary shapes'
    words, template, main size, main kind) that the README's results depend on;
    ``test_words`` also draws the colours, from :data:`HELD_OUT_WORDS`.
    """
    held_out = split == TEST_WORDS
    if template is None:
        templates = TEST_TEMPLATES if split in ("test", TEST_WORDS) else TRAIN_TEMPLATES
        if len(scene.shapes) == 1:  # templates that mention other shapes need some
            templates = tuple(t for t in templates if "{others}" not in t)
    vocabulary = HELD_OUT_WORDS if held_out else SYNONYMS
    word = lambda w: rng.choice(vocabulary.get(w, (w,)))  # noqa: E731
    colour = word if held_out else (lambda c: c)
    main = scene.shapes[0]
    others = " and ".join(f"a {word(s.size)} {colour(s.colour)} {word(s.kind)}" for s in scene.shapes[1:])
    if template is None:
        template = rng.choice(templates)
    size, kind = word(main.size), word(main.kind)
    return template, dict(size=size, colour=colour(main.colour), kind=kind, bg=scene.background,
                          where=_where(main), others=others)


def _format(template: str, fields: dict[str, str]) -> str:
    return " ".join(template.format(**fields).split())


def caption(scene: Scene, rng: random.Random, split: str) -> str:
    """A caption from the split's templates, with random synonyms.

    ``split="test_words"`` takes a test template and names every colour, kind
    and size with a word of :data:`HELD_OUT_WORDS`.
    """
    return _format(*_caption_fields(scene, rng, split))


def render(scene: Scene, size: int = 64) -> Image.Image:
    """Draw a scene as an RGB image (rendered at 2× and downsampled for smooth edges)."""
    big = size * 2
    image = Image.new("RGB", (big, big), BACKGROUNDS[scene.background])
    draw_shapes(image, scene)
    return image.resize((size, size), Image.LANCZOS)


@dataclass(frozen=True)
class ShapesSpec:
    """What to generate: ``n`` scenes in all, split by ``fractions`` (train, val, test)."""

    n: int = 6000
    seed: int = 0
    image_size: int = 64
    fractions: tuple[float, float, float] = (0.8, 0.1, 0.1)
    #: also write each scene's sound (:mod:`jointspace.data.sounds`) and an ``audio`` column
    audio: bool = False
    #: also write ``test_shifted``: the test scenes rendered with a distribution shift
    #: (:mod:`jointspace.data.shifted`)
    shifted: bool = False


def split_sizes(spec: ShapesSpec) -> dict[str, int]:
    n_val = round(spec.n * spec.fractions[1])
    n_test = round(spec.n * spec.fractions[2])
    return {"train": spec.n - n_val - n_test, "val": n_val, "test": n_test, TEST_WORDS: n_test,
            TEST_SHIFTED: n_test}


def generate_records(spec: ShapesSpec, split: str) -> list[tuple[Scene, str]]:
    """The (scene, caption) pairs of one split; record ``i`` depends only on (seed, split, i).

    ``"test_words"`` record ``i`` has the scene of test record ``i`` and a
    caption from the same template with held-out words (drawn from its own
    generator, so the test records are unaffected). ``"test_shifted"`` records are the
    test records themselves (only their rendering differs).
    """
    if split == TEST_SHIFTED:
        return generate_records(spec, "test")
    records = []
    for i in range(split_sizes(spec)[split]):
        if split == TEST_WORDS:
            rng = random.Random(f"{spec.seed}/test/{i}")
            scene = sample_scene(rng, "test")
            template, _ = _caption_fields(scene, rng, "test")
            words_rng = random.Random(f"{spec.seed}/{TEST_WORDS}/{i}")
            records.append((scene, _format(*_caption_fields(scene, words_rng, TEST_WORDS, template))))
            continue
        rng = random.Random(f"{spec.seed}/{split}/{i}")
        scene = sample_scene(rng, split)
        records.append((scene, caption(scene, rng, split)))
    return records


def write_shapes(out_dir: str | Path, spec: ShapesSpec = ShapesSpec()) -> dict[str, Path]:
    """Render the dataset to ``out_dir`` and write one CSV manifest per split.

    Layout: ``images/<split>/<id>.png`` (train, val, test) plus ``train.csv``,
    ``val.csv``, ``test.csv`` and ``test_words.csv`` (columns ``id, image, text,
    label``; image paths relative to the manifest) and ``spec.json``. With
    ``spec.audio`` each scene's sound is written too, as ``audio/<split>/<id>.wav``,
    and the manifests gain an ``audio`` column (``id, image, text, audio, label``).
    ``test_words.csv`` has the rows of ``test.csv`` (same ids, images and
    labels) with captions in held-out words; it has no images of its own.
    With ``spec.shifted``, ``test_shifted.csv`` has the test scenes, captions and
    labels with images of their own, ``images/test_shifted/<id>.jpg``, rendered by
    :func:`~.shifted.render_shifted` (no audio column: the sounds are the test ones).
    Returns the manifest path of each split, ``"test_words"`` (and ``"test_shifted"``) included.

    >>> paths = write_shapes("/tmp/shapes", ShapesSpec(n=30))  # doctest: +SKIP
    """
    out = Path(out_dir)
    manifests = {}
    rows: dict[str, list[list[str]]] = {}
    header = ["id", "image", "text", "audio", "label"] if spec.audio else ["id", "image", "text", "label"]
    bar = progress(desc="render shapes" + (" and sounds" if spec.audio else ""), total=spec.n,
                   unit="scene")
    for split in SPLITS:
        (out / "images" / split).mkdir(parents=True, exist_ok=True)
        if spec.audio:
            from .sounds import synthesise, write_wav  # lazy: soundfile only when asked for
            (out / "audio" / split).mkdir(parents=True, exist_ok=True)
        rows[split] = []
        for i, (scene, text) in enumerate(generate_records(spec, split)):
            item_id = f"{split}-{i:06d}"
            rel = f"images/{split}/{item_id}.png"
            render(scene, spec.image_size).save(out / rel)
            row = [item_id, rel, text, scene.label]
            if spec.audio:
                sound = f"audio/{split}/{item_id}.wav"
                write_wav(out / sound, synthesise(scene, f"{spec.seed}/{split}/{i}"))
                row.insert(3, sound)
            rows[split].append(row)
            bar.update(1)
        manifests[split] = _write_manifest(out / f"{split}.csv", header, rows[split])
    bar.close()
    # the test rows again, captions in held-out words; the scenes are the test scenes
    words = [row[:2] + [text] + row[3:] for row, (_scene, text)
             in zip(rows["test"], generate_records(spec, TEST_WORDS), strict=True)]
    manifests[TEST_WORDS] = _write_manifest(out / f"{TEST_WORDS}.csv", header, words)
    if spec.shifted:
        manifests[TEST_SHIFTED] = _write_shifted(out, spec)
    (out / "spec.json").write_text(json.dumps(asdict(spec), indent=2))
    return manifests


def _write_shifted(out: Path, spec: ShapesSpec) -> Path:
    """``test_shifted.csv`` and its JPEGs: the test records, rendered with the shift."""
    (out / "images" / TEST_SHIFTED).mkdir(parents=True, exist_ok=True)
    rows = []
    for i, (scene, text) in enumerate(generate_records(spec, TEST_SHIFTED)):
        item_id = f"{TEST_SHIFTED}-{i:06d}"
        rel = f"images/{TEST_SHIFTED}/{item_id}.jpg"
        image, quality = render_shifted(scene, f"{spec.seed}/{TEST_SHIFTED}/{i}")
        image.save(out / rel, format="JPEG", quality=quality)
        rows.append([item_id, rel, text, scene.label])
    return _write_manifest(out / f"{TEST_SHIFTED}.csv", ["id", "image", "text", "label"], rows)


def _write_manifest(manifest: Path, header: list[str], rows: list[list[str]]) -> Path:
    text = io.StringIO(newline="")
    writer = csv.writer(text)
    writer.writerow(header)
    writer.writerows(rows)
    return atomic_write_text(manifest, text.getvalue())
