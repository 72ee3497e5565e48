"""Modality plug-ins: everything that depends on what an item is (see :mod:`.base`).

Importing this package registers the built-in image, audio, text and video plug-ins.
"""
from .base import (MODALITIES, ItemCheck, Modality, Preview, TooLarge, decode_with_limits,
                   modality_for_shard_key, modality_for_suffix, sniff)
from . import audio, image, text  # noqa: F401,E402 (registers the built-in plug-ins)
from . import video  # noqa: F401,E402 (PyAV is imported when a clip is read, not here)

__all__ = ["MODALITIES", "ItemCheck", "Modality", "Preview", "TooLarge", "decode_with_limits",
           "modality_for_shard_key",
           "modality_for_suffix", "sniff"]
