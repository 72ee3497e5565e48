"""The fused fp32 CPU copy of a frozen ``transformers`` vision backbone (``fused_cpu``).

On the CPU a ViT's time is its matrix products. PyTorch's eager ``nn.Linear`` runs MKL's
sgemm on the row-major weight at every call, then the MLP's activation as passes of its
own over the widest activation; measured on 2 cores of an AVX-512 CPU
(``bench/image_embed.py``), ~150 GFLOP/s. This copy changes how the same arithmetic is
run, not what it computes:

- every ``nn.Linear`` holds its weight pre-packed once in oneDNN's blocked layout and runs
  through ``torch.ops.mkldnn._linear_pointwise`` (~190 GFLOP/s on the same cores);
- an MLP ``fc1 → activation → fc2`` (CLIP, SigLIP, DINOv2) runs its activation inside the
  ``fc1`` kernel where oneDNN has it: GELU (erf or tanh), SiLU, ReLU, and CLIP's
  QuickGELU ``x·σ(1.702x)``, which is ``SiLU(1.702x) / 1.702``: ``fc1`` is scaled by
  1.702 and ``fc2``'s weight by 1/1.702;
- for CLIP, whose pooled output reads only the first token of the last layer, that layer
  computes its queries, attention output and MLP for that token alone (keys and values
  still from every token): 1/12 of a ViT-B/16's work is never done.

Features equal the unfused forward to ~1e-6 (rounding order only); the tests check every
family against ``transformers`` to 1e-5. The copy shares the backbone's other parameters
and is rebuilt whenever a weight changes, so it only ever runs inference.
"""
from __future__ import annotations

import copy
import functools

import torch
import torch.nn.functional as F
from torch import nn

#: QuickGELU's constant: x·σ(1.702x)
QUICK_GELU = 1.702


def available() -> bool:
    """Whether this torch build has oneDNN's packed linear (the CPU wheels do)."""
    return torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise")


class PackedLinear(nn.Module):
    """``linear`` with its weight pre-packed for oneDNN, optionally with the activation
    ``attr`` (``none``, ``gelu`` + ``algorithm``, ``swish``, ``relu``) fused after it and
    the weight and bias first scaled by ``scale``."""

    def __init__(self, linear: nn.Linear, attr: str = "none", algorithm: str = "",
                 scale: float = 1.0) -> None:
        super().__init__()
        with torch.no_grad():
            weight = linear.weight.detach().float() * scale
            bias = None if linear.bias is None else linear.bias.detach().float() * scale
            self.weight = torch.ops.mkldnn._reorder_linear_weight(weight, None)
        self.bias = bias
        self.attr, self.algorithm = attr, algorithm
        self.in_features, self.out_features = linear.in_features, linear.out_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.ops.mkldnn._linear_pointwise(x, self.weight, self.bias, self.attr, [],
                                                  self.algorithm)

    def extra_repr(self) -> str:
        return f"{self.in_features} → {self.out_features}, then {self.attr}"


def _fused_activation(activation: nn.Module) -> tuple[str, str, float] | None:
    """(oneDNN attr, algorithm, scale folded into fc1) for a ``transformers`` activation
    module, or None where the kernel has no exact equal."""
    name = type(activation).__name__
    act = getattr(activation, "act", None)  # transformers' GELU modules: the function they call
    if name == "QuickGELUActivation":
        return "swish", "", QUICK_GELU
    if name == "GELUActivation" and act is F.gelu:
        return "gelu", "none", 1.0
    if (name == "GELUTanh" and isinstance(act, functools.partial) and act.func is F.gelu
            and act.keywords == {"approximate": "tanh"}):
        return "gelu", "tanh", 1.0
    if isinstance(activation, nn.GELU):
        return "gelu", "none" if activation.approximate == "none" else "tanh", 1.0
    if isinstance(activation, nn.SiLU) or name == "SiLUActivation":
        return "swish", "", 1.0
    if isinstance(activation, nn.ReLU):
        return "relu", "", 1.0
    return None


def _fuse_mlps(root: nn.Module) -> None:
    """Each ``fc1 → activation_fn → fc2`` MLP: the activation into fc1's kernel."""
    for module in list(root.modules()):
        fc1, fc2 = getattr(module, "fc1", None), getattr(module, "fc2", None)
        activation = getattr(module, "activation_fn", None)
        if not (type(fc1) is nn.Linear and type(fc2) is nn.Linear
                and isinstance(activation, nn.Module)):
            continue
        fused = _fused_activation(activation)
        if fused is None:
            continue
        attr, algorithm, scale = fused
        module.fc1 = PackedLinear(fc1, attr, algorithm, scale)
        module.fc2 = PackedLinear(fc2, scale=1.0 / scale) if scale != 1.0 else PackedLinear(fc2)
        module.activation_fn = nn.Identity()


def _pack_linears(module: nn.Module) -> None:
    """Each plain ``nn.Linear`` packed; subclasses are left (``nn.MultiheadAttention``'s
    out_proj, as in SigLIP's pooling head, is read as ``.weight`` by its owner)."""
    for name, child in module.named_children():
        if type(child) is nn.Linear:
            setattr(module, name, PackedLinear(child))
        else:
            _pack_linears(child)


class FirstTokenCLIPLayer(nn.Module):
    """A CLIP encoder layer that returns only its first token's output ``[B, 1, D]``:
    queries, attention output and MLP for that token; keys and values from all tokens."""

    def __init__(self, layer: nn.Module) -> None:
        super().__init__()
        self.layer = layer

    @staticmethod
    def fits(layer: nn.Module) -> bool:
        attention = getattr(layer, "self_attn", None)
        return (all(hasattr(layer, a) for a in ("layer_norm1", "layer_norm2", "mlp"))
                and attention is not None
                and all(hasattr(attention, a) for a in ("q_proj", "k_proj", "v_proj", "out_proj",
                                                        "num_heads", "head_dim", "scale")))

    def forward(self, hidden_states: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        layer, attention = self.layer, self.layer.self_attn
        batch, tokens, width = hidden_states.shape
        heads, head_dim = attention.num_heads, attention.head_dim
        normed = layer.layer_norm1(hidden_states)
        query = attention.q_proj(normed[:, :1]).view(batch, 1, heads, head_dim).transpose(1, 2)
        key = attention.k_proj(normed).view(batch, tokens, heads, head_dim).transpose(1, 2)
        value = attention.v_proj(normed).view(batch, tokens, heads, head_dim).transpose(1, 2)
        attended = F.scaled_dot_product_attention(query, key, value, scale=attention.scale)
        first = hidden_states[:, :1] + attention.out_proj(attended.transpose(1, 2).reshape(batch, 1, width))
        return first + layer.mlp(layer.layer_norm2(first))


def _clip_encoder_layers(backbone: nn.Module) -> nn.ModuleList | None:
    encoder = getattr(backbone, "encoder", None)
    layers = getattr(encoder, "layers", None)
    return layers if isinstance(layers, nn.ModuleList) and len(layers) else None


def fused_copy(backbone: nn.Module, first_token: str = "") -> nn.Module:
    """The fused inference copy of ``backbone`` (fp32, on the CPU), sharing its parameters
    other than the Linear weights. ``first_token="clip"``: the backbone is a CLIP vision
    transformer whose pooled output reads the first token alone, so its last layer
    computes only that token (its ``last_hidden_state`` is then ``[B, 1, D]``)."""
    params = {id(p): p for p in backbone.parameters()}
    params.update({id(b): b for b in backbone.buffers()})
    clone = copy.deepcopy(backbone, params).eval()  # the memo shares tensors: no transient copy
    if first_token == "clip":
        layers = _clip_encoder_layers(clone)
        if layers is not None and FirstTokenCLIPLayer.fits(layers[-1]):
            layers[-1] = FirstTokenCLIPLayer(layers[-1])
    _fuse_mlps(clone)
    _pack_linears(clone)
    return clone


def fused_summary(module: nn.Module) -> dict[str, int]:
    """How many Linear layers the copy packs and fuses and how many layers it prunes."""
    packed = [m for m in module.modules() if isinstance(m, PackedLinear)]
    return {"packed": len(packed), "fused": sum(m.attr != "none" for m in packed),
            "plain": sum(type(m) is nn.Linear for m in module.modules()),
            "first_token_layers": sum(isinstance(m, FirstTokenCLIPLayer) for m in module.modules())}

