"""How ``transformers`` holds each vision family the ``hf_vision`` tower opens, and the
one-tensor forward that gives a family's pooled output (run by torch, or converted by
OpenVINO for ``runtime: openvino``)."""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..errors import JointspaceError

IDENTITY = "identity"


@dataclass(frozen=True)
class VisionFamily:
    """How ``transformers`` holds one family: the class that reads a folder's weights,
    where in it the backbone and the pretrained projection are (``identity``: the pooled
    output is already in the joint space; ``""``: none), the image processor a folder
    naming none uses, whether ``forward`` takes ``interpolate_pos_encoding``, and whether
    a model without ``pooler_output`` pools its first token (ViT without pooler)."""

    loader: str
    processor: str
    backbone: str = ""
    projection: str = ""
    interpolate: bool = False
    first_token: bool = False


#: the vision config's model_type → its family
FAMILIES = {
    "clip_vision_model": VisionFamily("CLIPVisionModelWithProjection", "CLIPImageProcessor",
                                      backbone="vision_model", projection="visual_projection",
                                      interpolate=True),
    "siglip_vision_model": VisionFamily("SiglipVisionModel", "SiglipImageProcessor",
                                        projection=IDENTITY, interpolate=True),
    "vit": VisionFamily("ViTModel", "ViTImageProcessor", interpolate=True, first_token=True),
    "dinov2": VisionFamily("Dinov2Model", "BitImageProcessor"),  # interpolates by itself
    "convnext": VisionFamily("ConvNextModel", "ConvNextImageProcessor"),
}
#: whole-model model_types whose vision_config the tower takes
WHOLE_MODELS = ("clip", "siglip")


class PooledOutput(nn.Module):
    """pixel values → the family's pooled output (``pooler_output``, or the first token
    where the model has no pooler): one tensor in and out, so OpenVINO can convert it."""

    def __init__(self, backbone: nn.Module, interpolate: bool, first_token: bool, family: str) -> None:
        super().__init__()
        self.backbone, self.interpolate, self.first_token = backbone, interpolate, first_token
        self.family = family

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        kwargs = {"interpolate_pos_encoding": True} if self.interpolate else {}
        out = self.backbone(pixel_values=pixel_values, **kwargs)
        pooled = out.pooler_output
        if pooled is None:
            if not self.first_token:
                raise JointspaceError(f"the {self.family} backbone gives no pooled output")
            pooled = out.last_hidden_state[:, 0]
        return pooled
