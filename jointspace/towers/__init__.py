"""Towers: one per modality, registered by name (``TOWERS.get("vit")``)."""
from .base import MODALITIES, TOWERS, Modality, Tower, build_tower
from . import text, vision  # noqa: F401  (register "transformer", "convnet", "vit")
from . import audio, hf_text  # noqa: F401  (register "audio_conv", "hf", "minilm")
from . import hf_vision  # noqa: F401  (register "hf_vision": pretrained HF image encoders)
from . import hf_clip_text  # noqa: F401  (register "hf_clip_text": the text half of CLIP / SigLIP)
from . import efficientnet_lite  # noqa: F401  (register "efficientnet_lite": ImageNet EfficientNet-Lite)
from . import video  # noqa: F401  (register "video_frames": frames through an image tower, then time)

__all__ = ["MODALITIES", "TOWERS", "Modality", "Tower", "build_tower"]
