"""Moved to :mod:`jointspace.modalities.audio_io` (audio decoding is the audio plug-in's);
this name stays for code written against earlier versions."""
from ..modalities.audio_io import *  # noqa: F401,F403
from ..modalities.audio_io import (AUDIO_SUFFIXES, CLIP_FRACTION, CLIP_LEVEL, MAX_RATE,  # noqa: F401
                                   MAX_SECONDS, MIN_RATE, SAMPLE_RATE, SILENCE_PEAK, DecodedAudio,
                                   check_audio, decode_audio, resample, resampling_ratio,
                                   samples_problem)
