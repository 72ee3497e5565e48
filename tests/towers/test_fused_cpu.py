"""The fused fp32 CPU copy equals the backbone it copies, family by family and activation
by activation, and really is fused (packed kernels, activations in them, CLIP's pruned
last layer)."""
from __future__ import annotations

import copy

import pytest
import torch
import transformers

from jointspace.towers import fused_cpu
from jointspace.towers.fused_cpu import FirstTokenCLIPLayer, PackedLinear, fused_copy, fused_summary

pytestmark = pytest.mark.skipif(not fused_cpu.available(), reason="torch built without oneDNN")

VIT = dict(image_size=32, patch_size=8, hidden_size=32, intermediate_size=48, num_hidden_layers=3,
           num_attention_heads=4)


def _clip(act: str = "quick_gelu"):
    return transformers.CLIPVisionModelWithProjection(
        transformers.CLIPVisionConfig(**VIT, hidden_act=act)).vision_model


BACKBONES = {
    # name: (build, first-token pruning, MLP activations fused per layer)
    "clip_quick_gelu": (_clip, "clip", True),
    "clip_gelu": (lambda: _clip("gelu"), "clip", True),
    "clip_relu": (lambda: _clip("relu"), "clip", True),
    "clip_silu": (lambda: _clip("silu"), "clip", True),
    "clip_gelu_new": (lambda: _clip("gelu_new"), "clip", False),  # written out in Python: not fused
    "siglip": (lambda: transformers.SiglipVisionModel(transformers.SiglipVisionConfig(**VIT)), "", True),
    "vit": (lambda: transformers.ViTModel(transformers.ViTConfig(**VIT)), "", True),
    "dinov2": (lambda: transformers.Dinov2Model(transformers.Dinov2Config(
        image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=3, num_attention_heads=4,
        mlp_ratio=2)), "", True),
}


def _pooled(module, pixels, **kw):
    return module(pixel_values=pixels, **kw).pooler_output


@pytest.mark.parametrize("name", list(BACKBONES))
def test_fused_copy_equals_its_backbone(name):
    build, prune, fuses = BACKBONES[name]
    torch.manual_seed(0)
    backbone = build().eval()
    with torch.no_grad():  # weights large enough that each activation's shape matters
        for p in backbone.parameters():
            p.mul_(3.0)
    pixels = torch.randn(5, 3, 32, 32)
    with torch.inference_mode():
        expected = _pooled(backbone, pixels)
        exact = _pooled(copy.deepcopy(backbone).double(), pixels.double()).float()
        fused = fused_copy(backbone, prune)
        got = _pooled(fused, pixels)
    # fp32 rounding only: as close to the float64 forward as transformers' own fp32 one
    # (a wrong activation or a wrong token is off by > 1e-2 here)
    own_error = (expected - exact).abs().max().item()
    assert (got - exact).abs().max().item() <= 2 * own_error + 1e-6 * exact.abs().max().item()
    torch.testing.assert_close(got, expected, atol=1e-3 * exact.abs().max().item(), rtol=0)
    summary = fused_summary(fused)
    linears = sum(type(m) is torch.nn.Linear for m in backbone.modules())
    # every plain Linear is packed (SigLIP's attention-pooling out_proj is a subclass, kept)
    assert summary["packed"] == linears and summary["plain"] == 0
    mlps = sum(hasattr(m, "fc1") and hasattr(m, "activation_fn") for m in backbone.modules())
    assert mlps >= 3  # one per layer (SigLIP: and its pooling head's)
    assert summary["fused"] == (mlps if fuses else 0)
    assert summary["first_token_layers"] == (1 if prune else 0)
    # the copy shares the backbone's other parameters and leaves the backbone unchanged
    assert not any(isinstance(m, PackedLinear) for m in backbone.modules())
    norms = [m for m in backbone.modules() if isinstance(m, torch.nn.LayerNorm)]
    assert any(p is norms[0].weight for p in fused.parameters())
    assert all(p.requires_grad for p in backbone.parameters())


def test_first_token_layer_matches_at_an_interpolated_size_and_batch_of_one():
    torch.manual_seed(1)
    backbone = _clip().eval()
    fused = fused_copy(backbone, "clip")
    with torch.inference_mode():
        for pixels in (torch.randn(1, 3, 48, 48), torch.randn(3, 3, 40, 56)):
            expected = _pooled(backbone, pixels, interpolate_pos_encoding=True)
            torch.testing.assert_close(_pooled(fused, pixels, interpolate_pos_encoding=True),
                                       expected, atol=1e-5, rtol=1e-5)
    assert isinstance(fused.encoder.layers[-1], FirstTokenCLIPLayer)
    assert not any(isinstance(m, FirstTokenCLIPLayer) for m in fused.encoder.layers[:-1])


def test_a_layer_of_another_shape_is_not_pruned():
    backbone = _clip().eval()
    del backbone.encoder.layers[-1].self_attn.q_proj  # not CLIP's attention any more
    assert not FirstTokenCLIPLayer.fits(backbone.encoder.layers[-1])
    assert fused_summary(fused_copy(backbone, "clip"))["first_token_layers"] == 0


def test_packed_linear_equals_linear_on_strided_and_3d_inputs():
    torch.manual_seed(2)
    linear = torch.nn.Linear(24, 40)
    packed = PackedLinear(linear)
    x = torch.randn(3, 7, 48)[:, :, ::2]  # not contiguous
    with torch.no_grad():
        torch.testing.assert_close(packed(x), linear(x), atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(packed(x[:, :1]), linear(x[:, :1]), atol=1e-5, rtol=1e-5)
