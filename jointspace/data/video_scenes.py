"""What happens in a clip of the shapes video data, and how its captions say it.

A clip is a *plan*: a base timeline of per-frame shape states (:class:`Actor`)
and the *order* in which those base frames are shown. Every caption and label is
derived from what the shown order displays (where a shape is in the first shown
frame against the last, which shape is visible first), never from how the plan
was drawn, so a reordered plan is captioned correctly by construction.

Three kinds of clip:

* **solo**: the main shape moves (left, right, up, down), grows, shrinks or
  changes colour; sometimes a small second shape stays still beside it;
* **duet**: the main shape does one of those, and a small second shape does
  something of another family at the same time ("a red circle moves to the
  left while a blue square grows");
* **sequence**: one shape appears on an empty background, then another takes
  its place ("a red circle appears, then a blue square").

A **minimal pair** (:func:`partner`) is the same base frames in another order:
solo and duet clips reversed (moves left ↔ moves right, up ↔ down, grows ↔
shrinks, "from red to blue" ↔ "from blue to red"), sequence clips with their
two segments swapped. The two members show literally the same frames, so the
frame set alone cannot tell them apart; their captions use the same template
and the same synonyms (:class:`Wording`) and differ only in the direction
words or the order of the two shapes.

The ``label`` of a clip is the main shape's action as a noun phrase
(:data:`LABELS`, e.g. ``"shape moving to the left"``), so zero-shot
classification is action recognition: three of its class pairs (left/right,
up/down, growing/shrinking) differ only in time's direction, which a model that
ignores frame order cannot separate. In duet clips the second shape acts too;
the label names the main (larger, first-named) shape's action.
"""
from __future__ import annotations

import random
from dataclasses import dataclass, replace

from .scenes import BACKGROUNDS, COLOURS, KINDS, SIZES
from .shapes import SYNONYMS

MOVE_VERBS = (("moves", "moving"), ("slides", "sliding"), ("travels", "travelling"),
              ("drifts", "drifting"))
#: aligned by index, so a reversed clip's caption swaps "leftwards" for "rightwards"
DIRECTION_WORDS = {
    "left": ("to the left", "left", "leftwards"), "right": ("to the right", "right", "rightwards"),
    "up": ("up", "upwards", "towards the top"), "down": ("down", "downwards", "towards the bottom"),
}
SIZE_VERBS = {
    "grow": (("grows", "growing"), ("gets bigger", "getting bigger"), ("expands", "expanding")),
    "shrink": (("shrinks", "shrinking"), ("gets smaller", "getting smaller"),
               ("contracts", "contracting")),
}
COLOUR_VERBS = (("turns from {a} to {b}", "turning from {a} to {b}"),
                ("changes colour from {a} to {b}", "changing colour from {a} to {b}"),
                ("goes from {a} to {b}", "going from {a} to {b}"))
STILL_VERBS = (("stays still", "staying still"), ("does not move", "not moving"),
               ("stays where it is", "staying where it is"))
SOLO_TEMPLATES = ("{s} {v}", "{s} {v} on a {bg} background", "a clip of {s} {ving}", "{s} {ving}",
                  "in this video {s} {v}")
TWO_TEMPLATES = ("{s} {v} while {s2} {v2}", "{s} {v} and {s2} {v2}",
                 "a clip of {s} {ving} while {s2} {v2}", "{s} {ving} as {s2} {v2}")
SEQUENCE_TEMPLATES = ("{s} appears, then {s2}", "first {s} appears and then {s2}",
                      "{s} shows up, followed by {s2}", "{s} appears and then {s2} takes its place")
#: the label of a clip: its main shape's action (the zero-shot classes, :func:`class_names`)
LABELS = {
    "left": "shape moving to the left", "right": "shape moving to the right",
    "up": "shape moving up", "down": "shape moving down",
    "grow": "shape growing", "shrink": "shape shrinking",
    "colour": "shape changing colour", "sequence": "shape followed by another shape",
}
CLIP_KINDS = ("solo", "duet", "sequence")
MIN_FRAMES, MAX_FRAMES = 6, 64


def class_names() -> list[str]:
    """The zero-shot classes: every label a clip can have, in a fixed order."""
    return list(LABELS.values())


@dataclass(frozen=True)
class Actor:
    """One shape over the base timeline: it goes from ``(x0, y0, r0, colour0)`` to
    ``(x1, y1, r1, colour1)``; ``ramp[t]`` (0–1) is how far along it is at base frame
    ``t`` and ``visible[t]`` whether it is drawn. Coordinates and radii are fractions
    of the frame side."""

    kind: str
    action: str  # "move", "size", "colour", "still" or "appear"
    colours: tuple[str, str]
    xs: tuple[float, float]
    ys: tuple[float, float]
    radii: tuple[float, float]
    ramp: tuple[float, ...]
    visible: tuple[bool, ...]

    def state(self, t: int) -> tuple[float, float, float, tuple[int, int, int]]:
        """Centre x, centre y, radius and RGB colour at base frame ``t``."""
        a = self.ramp[t]
        lerp = lambda p: p[0] + (p[1] - p[0]) * a  # noqa: E731
        c0, c1 = COLOURS[self.colours[0]], COLOURS[self.colours[1]]
        rgb = tuple(round(u + (v - u) * a) for u, v in zip(c0, c1))
        return lerp(self.xs), lerp(self.ys), lerp(self.radii), rgb  # type: ignore[return-value]


@dataclass(frozen=True)
class ClipPlan:
    """A clip: its background, actors (``actors[0]`` is the main one), kind, and the
    base frame each shown frame displays (``order``, a permutation)."""

    background: str
    actors: tuple[Actor, ...]
    kind: str
    order: tuple[int, ...]

    @property
    def frames(self) -> int:
        return len(self.order)

    @property
    def label(self) -> str:
        return LABELS[shown_action(self, 0)]


@dataclass(frozen=True)
class Wording:
    """The draws that pick one caption's words: a template index, and per actor a
    subject variant, a kind synonym and a verb synonym. A minimal pair's two members
    share their wordings, so their captions differ only where the clips do."""

    template: int
    subjects: tuple[int, ...]
    kinds: tuple[int, ...]
    verbs: tuple[int, ...]


def shown_action(plan: ClipPlan, i: int) -> str:
    """What actor ``i`` is seen doing in the shown order: ``"left"``, ``"right"``,
    ``"up"``, ``"down"``, ``"grow"``, ``"shrink"``, ``"colour"``, ``"still"`` or
    ``"sequence"`` (an actor of a sequence clip)."""
    actor = plan.actors[i]
    if actor.action == "appear":
        return "sequence"
    first, last = actor.state(plan.order[0]), actor.state(plan.order[-1])
    if actor.action == "move":
        dx, dy = last[0] - first[0], last[1] - first[1]
        if abs(dx) >= abs(dy):
            return "right" if dx > 0 else "left"
        return "down" if dy > 0 else "up"
    if actor.action == "size":
        return "grow" if last[2] > first[2] else "shrink"
    return actor.action


def shown_colours(plan: ClipPlan, i: int) -> tuple[str, str]:
    """Actor ``i``'s colour names in the first and the last shown frame."""
    actor = plan.actors[i]
    at = lambda t: actor.colours[0] if actor.ramp[t] < 0.5 else actor.colours[1]  # noqa: E731
    return at(plan.order[0]), at(plan.order[-1])


def appearance_order(plan: ClipPlan) -> list[int]:
    """The actors' indices in the order they are first seen in the shown frames."""
    first_seen = {}
    for k, t in enumerate(plan.order):
        for i, actor in enumerate(plan.actors):
            if actor.visible[t]:
                first_seen.setdefault(i, k)
    return sorted(first_seen, key=first_seen.__getitem__)


def partner(plan: ClipPlan) -> ClipPlan:
    """The other member of ``plan``'s minimal pair: the same base frames shown
    reversed, or, for a sequence clip, with its two shapes' segments swapped."""
    if plan.kind != "sequence":
        return replace(plan, order=plan.order[::-1])
    a, b = plan.actors
    blank = [t for t in plan.order if not a.visible[t] and not b.visible[t]]
    first, second = appearance_order(plan)
    seg = {i: [t for t in plan.order if plan.actors[i].visible[t]] for i in (0, 1)}
    return replace(plan, order=tuple(blank + seg[second] + seg[first]))


# ---------------------------------------------------------------- captions


def _size_name(r: float) -> str | None:
    return next((name for name, v in SIZES.items() if abs(v - r) < 1e-9), None)


def _a(phrase: str) -> str:
    return ("an " if phrase[0] in "aeiou" else "a ") + phrase


def _subject(plan: ClipPlan, i: int, wording: Wording) -> str:
    actor = plan.actors[i]
    variant = wording.subjects[i] % 3
    kinds = SYNONYMS.get(actor.kind, (actor.kind,))
    kind = "shape" if variant == 2 else kinds[wording.kinds[i] % len(kinds)]
    if actor.action == "colour":  # the colours go in the verb phrase
        return _a(kind)
    size = _size_name(actor.radii[0]) if actor.radii[0] == actor.radii[1] else None
    if variant == 1 and size is not None:
        return _a(f"{size} {actor.colours[0]} {kind}")
    return _a(f"{actor.colours[0]} {kind}")


def _verb(plan: ClipPlan, i: int, wording: Wording) -> tuple[str, str]:
    """Actor ``i``'s verb phrase, finite and as a participle."""
    action, v = shown_action(plan, i), wording.verbs[i]
    if action in DIRECTION_WORDS:
        finite, participle = MOVE_VERBS[v % len(MOVE_VERBS)]
        where = DIRECTION_WORDS[action][v % 3]
        return f"{finite} {where}", f"{participle} {where}"
    if action in SIZE_VERBS:
        return SIZE_VERBS[action][v % 3]
    if action == "colour":
        a, b = shown_colours(plan, i)
        return tuple(p.format(a=a, b=b) for p in COLOUR_VERBS[v % 3])  # type: ignore[return-value]
    return STILL_VERBS[v % 3]


def templates(plan: ClipPlan) -> tuple[str, ...]:
    """The caption templates a plan's captions are drawn from."""
    if plan.kind == "sequence":
        return SEQUENCE_TEMPLATES
    return TWO_TEMPLATES if len(plan.actors) > 1 else SOLO_TEMPLATES


def draw_wordings(rng: random.Random, plan: ClipPlan, n: int) -> tuple[Wording, ...]:
    """``n`` wordings for a plan's captions, each with its own template while there
    are templates enough (so a clip's captions differ)."""
    pool = templates(plan)
    picks = rng.sample(range(len(pool)), min(n, len(pool)))
    picks += [rng.randrange(len(pool)) for _ in range(n - len(picks))]
    m = len(plan.actors)
    return tuple(Wording(t, tuple(rng.randrange(3) for _ in range(m)),
                         tuple(rng.randrange(3) for _ in range(m)),
                         tuple(rng.randrange(12) for _ in range(m))) for t in picks)


def caption(plan: ClipPlan, wording: Wording) -> str:
    """The caption ``wording`` gives the shown clip."""
    template = templates(plan)[wording.template]
    if plan.kind == "sequence":
        first, second = appearance_order(plan)
        return template.format(s=_subject(plan, first, wording), s2=_subject(plan, second, wording))
    v, ving = _verb(plan, 0, wording)
    fields = dict(s=_subject(plan, 0, wording), v=v, ving=ving, bg=plan.background)
    if len(plan.actors) > 1:
        fields.update(s2=_subject(plan, 1, wording), v2=_verb(plan, 1, wording)[0])
    return template.format(**fields)


# ---------------------------------------------------------------- drawing plans


def _ramp(frames: int, hold: int = 0) -> tuple[float, ...]:
    """Progress 0 → 1 over ``frames`` base frames, flat for ``hold`` frames at each end."""
    span = max(frames - 1 - 2 * hold, 1)
    return tuple(min(max((t - hold) / span, 0.0), 1.0) for t in range(frames))


def _mover(rng: random.Random, kind: str, colour: str, r: float, frames: int) -> Actor:
    """A shape travelling 30 % or more of the frame along one axis, either way."""
    length = rng.uniform(0.3, 1 - 2 * r)
    start = rng.uniform(r, 1 - r - length)
    path = (start, start + length) if rng.random() < 0.5 else (start + length, start)
    across = rng.uniform(r, 1 - r)
    horizontal = rng.random() < 0.5
    xs, ys = (path, (across, across)) if horizontal else ((across, across), path)
    return Actor(kind, "move", (colour, colour), xs, ys, (r, r), _ramp(frames), (True,) * frames)


def _sizer(rng: random.Random, kind: str, colour: str, big: float, frames: int) -> Actor:
    """A shape whose radius goes from about a third of ``big`` to ``big`` or back."""
    small = big * rng.uniform(0.3, 0.45)
    x, y = rng.uniform(big, 1 - big), rng.uniform(big, 1 - big)
    radii = (small, big) if rng.random() < 0.5 else (big, small)
    return Actor(kind, "size", (colour, colour), (x, x), (y, y), radii, _ramp(frames),
                 (True,) * frames)


def _actor(rng: random.Random, action: str, kind: str, colour: str, size: str,
           frames: int) -> Actor:
    r = SIZES[size]
    if action == "move":
        return _mover(rng, kind, colour, r, frames)
    if action == "size":
        return _sizer(rng, kind, colour, r, frames)
    x, y = rng.uniform(r, 1 - r), rng.uniform(r, 1 - r)
    if action == "colour":
        other = rng.choice([c for c in COLOURS if c != colour])
        return Actor(kind, "colour", (colour, other), (x, x), (y, y), (r, r),
                     _ramp(frames, hold=frames // 4), (True,) * frames)
    return Actor(kind, "still", (colour, colour), (x, x), (y, y), (r, r), (0.0,) * frames,
                 (True,) * frames)


def _apart(a: Actor, b: Actor, frames: int) -> bool:
    """Whether two actors never touch (a gap of 2 % of the side at every frame)."""
    for t in range(frames):
        (xa, ya, ra, _), (xb, yb, rb, _) = a.state(t), b.state(t)
        if (xa - xb) ** 2 + (ya - yb) ** 2 <= (ra + rb + 0.02) ** 2:
            return False
    return True


def _sequence(rng: random.Random, background: str, frames: int) -> ClipPlan:
    """One shape alone after ``blank`` empty frames, then another in its place; the
    two differ in colour and kind so that their names always differ."""
    kinds, colours = rng.sample(KINDS, 2), rng.sample(list(COLOURS), 2)
    blank = rng.randint(1, max(1, frames // 6))
    shortest = max(2, min(3, (frames - blank) // 2))  # frames a segment shows at least
    first = rng.randint(shortest, frames - blank - shortest)
    actors = []
    for i, (lo, hi) in enumerate(((blank, blank + first), (blank + first, frames))):
        r = SIZES[rng.choice(("medium", "large"))]
        x, y = rng.uniform(r, 1 - r), rng.uniform(r, 1 - r)
        actors.append(Actor(kinds[i], "appear", (colours[i],) * 2, (x, x), (y, y), (r, r),
                            (0.0,) * frames, tuple(lo <= t < hi for t in range(frames))))
    return ClipPlan(background, tuple(actors), "sequence", tuple(range(frames)))


def sample_plan(rng: random.Random, frames: int) -> ClipPlan:
    """Draw one clip: half solo, a quarter duet, a quarter sequence; the main action
    moves half the time, changes size 30 % and colour 20 %."""
    if not MIN_FRAMES <= frames <= MAX_FRAMES:
        raise ValueError(f"frames must be {MIN_FRAMES}–{MAX_FRAMES}, not {frames}")
    background = rng.choice(list(BACKGROUNDS))
    kind = rng.choices(CLIP_KINDS, weights=(2, 1, 1))[0]
    if kind == "sequence":
        return _sequence(rng, background, frames)
    action = rng.choices(("move", "size", "colour"), weights=(5, 3, 2))[0]
    colour = rng.choice(list(COLOURS))
    main = _actor(rng, action, rng.choice(KINDS), colour, rng.choice(("medium", "large")), frames)
    actors = (main,)
    if kind == "duet" or rng.random() < 0.5:
        # duet: the second shape acts in another family; solo: it may stand still
        second_action = rng.choice([a for a in ("move", "size", "colour") if a != action]) \
            if kind == "duet" else "still"
        second_colour = rng.choice([c for c in COLOURS if c != colour])
        for _attempt in range(30):
            second = _actor(rng, second_action, rng.choice(KINDS), second_colour, "small", frames)
            if _apart(main, second, frames):
                actors = (main, second)
                break
    kind = "duet" if len(actors) > 1 and actors[1].action != "still" else "solo"
    return ClipPlan(background, actors, kind, tuple(range(frames)))
