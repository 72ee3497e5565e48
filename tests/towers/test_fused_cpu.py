"""The fused fp32 CPU copy equals the backbone it copies, family by family and activation
by activation, and really is fused (packed kernels, activations in them, CLIP's pruned
last layer)."""
from __future__ import annotations

import copy

import pytest
import torch
import transformers

from jointspace.errors import JointspaceError
from jointspace.towers import fused_cpu
from jointspace.towers.fused_cpu import ClsOnlyCLIPLayer, PackedLinear, fused_copy, fused_summary

pytestmark = pytest.mark.skipif(not fused_cpu.available(), reason="torch built without oneDNN")

VIT = dict(image_size=32, patch_size=8, hidden_size=32, intermediate_size=48, num_hidden_layers=3,
           num_attention_heads=4)


def _clip(act: str = "quick_gelu"):
    return transformers.CLIPVisionModelWithProjection(
        transformers.CLIPVisionConfig(**VIT, hidden_act=act)).vision_model


BACKBONES = {
    # name: (build, CLS-only last layer, MLP activations fused)
    "clip_quick_gelu": (_clip, True, True),
    "clip_gelu": (lambda: _clip("gelu"), True, True),
    "clip_relu": (lambda: _clip("relu"), True, True),
    "clip_silu": (lambda: _clip("silu"), True, True),
    "clip_gelu_new": (lambda: _clip("gelu_new"), True, False),  # written out in Python: not fused
    "siglip": (lambda: transformers.SiglipVisionModel(transformers.SiglipVisionConfig(**VIT)), False, True),
    "vit": (lambda: transformers.ViTModel(transformers.ViTConfig(**VIT)), False, True),
    "dinov2": (lambda: transformers.Dinov2Model(transformers.Dinov2Config(
        image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=3, num_attention_heads=4,
        mlp_ratio=2)), False, True),
}


def _randomise(module: torch.nn.Module, scale: float = 3.0) -> torch.nn.Module:
    """Weights large enough that each activation's shape matters, and biases not zero
    (transformers initialises them to zero, which hides any mistake made with a bias)."""
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, p in module.named_parameters():
            p.mul_(scale).add_(torch.randn(p.shape, generator=generator) * 0.2)
    return module.eval()


def _pooled(module, pixels, **kw):
    return module(pixel_values=pixels, **kw).pooler_output


@torch.inference_mode()
def _assert_as_exact(fused, backbone, pixels, **kw) -> None:
    """fp32 rounding only: ``fused`` is as close to the float64 forward as transformers'
    own fp32 one (a wrong activation, bias or token is off by > 1e-2 here)."""
    expected = _pooled(backbone, pixels, **kw)
    exact = _pooled(copy.deepcopy(backbone).double(), pixels.double(), **kw).float()
    got = _pooled(fused, pixels, **kw)
    scale = exact.abs().max().item()
    own_error = (expected - exact).abs().max().item()
    assert (got - exact).abs().max().item() <= 2 * own_error + 1e-6 * scale
    torch.testing.assert_close(got, expected, atol=1e-3 * scale, rtol=0)


@pytest.mark.parametrize("name", list(BACKBONES))
def test_fused_copy_equals_its_backbone(name):
    build, prune, fuses = BACKBONES[name]
    torch.manual_seed(0)
    backbone = _randomise(build())
    pixels = torch.randn(5, 3, 32, 32)
    with torch.inference_mode():
        fused = fused_copy(backbone, prune)
    _assert_as_exact(fused, backbone, pixels)
    summary = fused_summary(fused)
    linears = sum(type(m) is torch.nn.Linear for m in backbone.modules())
    # every plain Linear is packed (SigLIP's attention-pooling out_proj is a subclass, kept)
    assert summary["packed"] == linears and summary["plain"] == 0
    mlps = sum(hasattr(m, "fc1") and hasattr(m, "activation_fn") for m in backbone.modules())
    assert mlps >= 3  # one per layer (SigLIP: and its pooling head's)
    assert summary["fused"] == (mlps if fuses else 0)
    assert summary["cls_only_layers"] == int(prune)
    # the copy shares the backbone's other parameters and leaves the backbone unchanged
    assert not any(isinstance(m, PackedLinear) for m in backbone.modules())
    norms = [m for m in backbone.modules() if isinstance(m, torch.nn.LayerNorm)]
    assert any(p is norms[0].weight for p in fused.parameters())
    assert all(p.requires_grad for p in backbone.parameters())


def test_first_token_layer_matches_at_an_interpolated_size_and_batch_of_one():
    torch.manual_seed(1)
    backbone = _randomise(_clip())
    fused = fused_copy(backbone, True)
    for pixels in (torch.randn(1, 3, 48, 48), torch.randn(3, 3, 40, 56)):
        _assert_as_exact(fused, backbone, pixels, interpolate_pos_encoding=True)
    assert isinstance(fused.encoder.layers[-1], ClsOnlyCLIPLayer)
    assert not any(isinstance(m, ClsOnlyCLIPLayer) for m in fused.encoder.layers[:-1])


def test_a_layer_of_another_shape_is_not_pruned():
    backbone = _clip().eval()
    assert ClsOnlyCLIPLayer.fits(backbone.encoder.layers[-1])
    del backbone.encoder.layers[-1].self_attn.q_proj  # not CLIP's attention any more
    assert not ClsOnlyCLIPLayer.fits(backbone.encoder.layers[-1])
    assert fused_summary(fused_copy(backbone, True))["cls_only_layers"] == 0


def test_cls_only_layer_refuses_what_it_cannot_give():
    fused = fused_copy(_clip().eval(), True)
    with torch.inference_mode(), pytest.raises(JointspaceError, match="no attention mask"):
        fused(pixel_values=torch.randn(1, 3, 32, 32), output_attentions=True)


def test_packed_linear_equals_linear_on_strided_2d_3d_and_4d_inputs():
    torch.manual_seed(2)
    linear = torch.nn.Linear(24, 40)
    torch.nn.init.normal_(linear.bias)
    packed = PackedLinear(linear)
    x = torch.randn(3, 7, 48)[:, :, ::2]  # not contiguous
    with torch.no_grad():
        for inputs in (x, x[:, :1], x[0], torch.randn(2, 3, 5, 24)):
            torch.testing.assert_close(packed(inputs), linear(inputs), atol=1e-5, rtol=1e-5)
        # weight and bias scale apart; the activation runs in the kernel
        scaled = PackedLinear(linear, "relu", weight_scale=2.0, bias_scale=-1.0)
        expected = torch.relu(2.0 * (x @ linear.weight.T) - linear.bias)
        torch.testing.assert_close(scaled(x), expected, atol=1e-5, rtol=1e-5)


class _LooksLikeQuickGELU(transformers.activations.QuickGELUActivation):
    """A subclass that computes something else: the fused kernel must not stand in for it."""

    def forward(self, x):
        return torch.tanh(x)


def test_an_activation_that_only_looks_fusable_is_left_as_it_is(caplog):
    backbone = _randomise(_clip())
    for layer in backbone.encoder.layers:
        layer.mlp.activation_fn = _LooksLikeQuickGELU()
    pixels = torch.randn(2, 3, 32, 32)
    with torch.inference_mode():
        fused = fused_copy(backbone, True)
    _assert_as_exact(fused, backbone, pixels)
    assert fused_summary(fused)["fused"] == 0 and fused_summary(fused)["plain"] == 0
    assert "left unfused" in caplog.text
