"""The two modalities an evaluation pairs, and which of them is text-like.

Which side of a pair is "the text" (whose exact items group retrieval rows, and
which zero-shot and the probes do not classify) is the modality plug-in's
:attr:`~jointspace.modalities.Modality.text_like`, never a name compared here.
"""
from __future__ import annotations

from typing import Iterable, Sequence

from ..config import modality_of
from ..errors import ConfigError
from ..modalities import MODALITIES

#: the pair evaluated when none is named (``jointspace eval`` without ``--pairs``,
#: ``evaluate()`` without ``pair=``, the metric functions without ``names=``, results
#: written before the pair was recorded): CLIP's protocol, images against their captions
USER_FACING_DEFAULTS = ("image", "text")
DEFAULT_PAIR: tuple[str, str] = ("image", "text")


def parse_pair(pair: tuple[str, str] | Sequence[str] | str) -> tuple[str, str]:
    """``"audio:text"`` or ``("audio", "text")`` → ``("audio", "text")``, checked."""
    names = tuple(pair.split(":")) if isinstance(pair, str) else tuple(pair)
    if len(names) != 2 or not all(names) or names[0] == names[1]:
        raise ConfigError(f"a pair names two different modalities, like image:text; got {pair!r}")
    return names  # type: ignore[return-value]


def is_text_like(field: str) -> bool:
    """Whether ``field`` (a modality, or a field such as ``text@paraphrase``) is of a
    registered text-like modality."""
    modality = modality_of(field)
    return modality in MODALITIES and MODALITIES.get(modality).text_like


def query_side(names: Sequence[str]) -> int:
    """The side of the pair zero-shot and the probes classify: the first unless it is
    text-like (``audio:text`` → 0, ``text:image`` → 1)."""
    return 1 if is_text_like(names[0]) else 0


def class_name_modality(modalities: Iterable[str]) -> str | None:
    """The modality zero-shot embeds class names with: the first text-like one among
    a model's ``modalities`` (its towers), or None when it has none."""
    return next((m for m in modalities if is_text_like(m)), None)


def direction_keys(names: Sequence[str]) -> tuple[str, str]:
    """The two retrieval directions of a pair ``(a, b)`` as results.json names them, in
    the order the reports show them: ``(b_to_a, a_to_b)`` (text→image first for image:text)."""
    a, b = names
    return f"{b}_to_{a}", f"{a}_to_{b}"
