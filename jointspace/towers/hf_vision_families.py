"""How ``transformers`` holds each vision family the ``hf_vision`` tower opens."""
from __future__ import annotations

from dataclasses import dataclass

IDENTITY = "identity"


@dataclass(frozen=True)
class VisionFamily:
    """How ``transformers`` holds one family: the class that reads a folder's weights,
    where in it the backbone and the pretrained projection are (``identity``: the pooled
    output is already in the joint space; ``""``: none), the image processor a folder
    naming none uses, whether ``forward`` takes ``interpolate_pos_encoding``, and whether
    a model without ``pooler_output`` pools its first token (ViT without pooler), and
    whether the fused CPU copy may compute the last layer for the CLS token alone
    (:mod:`.fused_cpu`; CLIP, whose pooled output reads nothing else)."""

    loader: str
    processor: str
    backbone: str = ""
    projection: str = ""
    interpolate: bool = False
    first_token: bool = False
    cls_only_last_layer: bool = False


#: the vision config's model_type → its family
FAMILIES = {
    "clip_vision_model": VisionFamily("CLIPVisionModelWithProjection", "CLIPImageProcessor",
                                      backbone="vision_model", projection="visual_projection",
                                      interpolate=True, cls_only_last_layer=True),
    "siglip_vision_model": VisionFamily("SiglipVisionModel", "SiglipImageProcessor",
                                        projection=IDENTITY, interpolate=True),
    "vit": VisionFamily("ViTModel", "ViTImageProcessor", interpolate=True, first_token=True),
    "dinov2": VisionFamily("Dinov2Model", "BitImageProcessor"),  # interpolates by itself
    "convnext": VisionFamily("ConvNextModel", "ConvNextImageProcessor"),
}
#: whole-model model_types whose vision_config the tower takes
WHOLE_MODELS = ("clip", "siglip")
