"""The fused fp32 CPU copy of a frozen ``transformers`` vision backbone (``fused_cpu``).

On the CPU a ViT's time is its matrix products. PyTorch's eager ``nn.Linear`` runs MKL's
sgemm on the row-major weight at every call, then the MLP's activation as passes of its
own over the widest activation; measured on 2 cores of an AVX-512 CPU
(``bench/image_embed.py``), ~150 GFLOP/s. This copy changes how the same arithmetic is
run, not what it computes:

- every ``nn.Linear`` holds its weight pre-packed once in oneDNN's blocked layout and runs
  through ``torch.ops.mkldnn._linear_pointwise`` (~190 GFLOP/s on the same cores);
- an MLP ``fc1 → activation → fc2`` (CLIP, SigLIP, ViT, DINOv2) runs its activation inside the
  ``fc1`` kernel where oneDNN has it: GELU (erf or tanh), SiLU, ReLU, and CLIP's
  QuickGELU ``x·σ(1.702x)``, which is ``SiLU(1.702x) / 1.702``: ``fc1`` is scaled by
  1.702 and ``fc2``'s weight by 1/1.702;
- for CLIP, whose pooled output reads only the first token of the last layer, that layer
  computes its queries, attention output and MLP for that token alone (keys and values
  still from every token): ~7 % of a ViT-B/16's matrix products are never done.

Features equal the unfused forward to fp32 rounding (the tests: as close to a float64
forward as transformers' own fp32 one, for every family and activation; and to 1e-5 at
the tower). The copy shares the backbone's other parameters
and is rebuilt whenever a weight changes (see :meth:`.HFBackboneTower.drop_inference_copies`
for edits through ``.data``), so it only ever runs inference.
"""
from __future__ import annotations

import copy
import functools
import inspect

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import JointspaceError
from ..progress import logger

#: QuickGELU's constant: x·σ(1.702x)
QUICK_GELU = 1.702
#: a fused MLP must match its original on a random batch to this share of the output's scale
MLP_CHECK_TOLERANCE = 1e-4


def available() -> bool:
    """Whether this torch build has oneDNN's packed linear (the CPU wheels do) and oneDNN
    is not switched off (``torch.backends.mkldnn.enabled``)."""
    return (torch.backends.mkldnn.is_available() and bool(torch.backends.mkldnn.enabled)
            and hasattr(torch.ops.mkldnn, "_linear_pointwise"))


class PackedLinear(nn.Module):
    """``linear`` with its weight pre-packed for oneDNN, optionally with the activation
    ``attr`` (``none``, ``gelu`` + ``algorithm``, ``swish``, ``relu``) fused after it; the
    weight is first scaled by ``weight_scale`` and the bias by ``bias_scale``."""

    def __init__(self, linear: nn.Linear, attr: str = "none", algorithm: str = "",
                 weight_scale: float = 1.0, bias_scale: float = 1.0) -> None:
        super().__init__()
        with torch.no_grad():
            weight = linear.weight.detach().float() * weight_scale
            self.bias = None if linear.bias is None else linear.bias.detach().float() * bias_scale
            self.weight = torch.ops.mkldnn._reorder_linear_weight(weight, None)
        self.attr, self.algorithm = attr, algorithm
        self.in_features, self.out_features = linear.in_features, linear.out_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.ops.mkldnn._linear_pointwise(x, self.weight, self.bias, self.attr, [],
                                                  self.algorithm)

    def extra_repr(self) -> str:
        fused = "" if self.attr == "none" else f", {self.attr} {self.algorithm}".rstrip()
        return f"in_features={self.in_features}, out_features={self.out_features}{fused}"


def _fused_activation(activation: nn.Module) -> tuple[str, str, float] | None:
    """(oneDNN attr, algorithm, scale folded into fc1) for an activation module, or None
    where the kernel has no exact equal."""
    try:
        from transformers import activations
    except ImportError:  # pragma: no cover - the backbones come from transformers
        activations = None

    def hf(name: str) -> type | tuple:  # a class this transformers version may not have
        return getattr(activations, name, ())

    act = getattr(activation, "act", None)  # transformers' GELU modules: the function they call
    if isinstance(activation, hf("QuickGELUActivation")):
        return "swish", "", QUICK_GELU
    if isinstance(activation, hf("GELUActivation")) and act is F.gelu:
        return "gelu", "none", 1.0
    if (isinstance(activation, hf("GELUTanh")) and isinstance(act, functools.partial)
            and act.func is F.gelu and act.keywords == {"approximate": "tanh"}):
        return "gelu", "tanh", 1.0
    if isinstance(activation, hf("SiLUActivation")):
        return "swish", "", 1.0
    if type(activation) is nn.GELU:
        return "gelu", "none" if activation.approximate == "none" else "tanh", 1.0
    if type(activation) is nn.SiLU:
        return "swish", "", 1.0
    if type(activation) is nn.ReLU:
        return "relu", "", 1.0
    return None


def _same_mlp(fc1: nn.Module, activation: nn.Module, fc2: nn.Module,
              fused1: PackedLinear, fused2: PackedLinear) -> bool:
    """Whether the fused pair computes what ``fc2(activation(fc1(x)))`` does, on a fixed
    random batch: a guard against an activation that only looks like one oneDNN has."""
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(8, fc1.in_features, generator=generator)
    with torch.no_grad():
        expected = fc2(activation(fc1(x)))
        got = fused2(fused1(x))
    return bool((got - expected).abs().max() <= MLP_CHECK_TOLERANCE * (expected.abs().max() + 1e-6))


def _fuse_mlps(root: nn.Module) -> None:
    """Each ``fc1 → activation_fn → fc2`` MLP: the activation into fc1's kernel (QuickGELU
    as SiLU of fc1 scaled by 1.702, fc2's weight — not its bias — scaled back)."""
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
        fused1 = PackedLinear(fc1, attr, algorithm, weight_scale=scale, bias_scale=scale)
        fused2 = PackedLinear(fc2, weight_scale=1.0 / scale)
        if not _same_mlp(fc1, activation, fc2, fused1, fused2):
            logger.warning("fused_cpu: the %s activation of %s does not match oneDNN's %s; "
                           "left unfused", type(activation).__name__, type(module).__name__, attr)
            continue
        module.fc1, module.fc2, module.activation_fn = fused1, fused2, nn.Identity()


def _pack_linears(module: nn.Module) -> None:
    """Each plain ``nn.Linear`` packed; subclasses are left (``nn.MultiheadAttention``'s
    out_proj, as in SigLIP's pooling head, is read as ``.weight`` by its owner)."""
    for name, child in module.named_children():
        if type(child) is nn.Linear:
            setattr(module, name, PackedLinear(child))
        else:
            _pack_linears(child)


class ClsOnlyCLIPLayer(nn.Module):
    """A CLIP encoder layer that returns only its first (CLS) token's output ``[B, 1, D]``:
    queries, attention output and MLP for that token; keys and values from all tokens."""

    def __init__(self, layer: nn.Module) -> None:
        super().__init__()
        self.layer = layer

    @staticmethod
    def fits(layer: nn.Module) -> bool:
        """A CLIP layer as transformers 5 writes it: these submodules, and a forward that
        returns the hidden states alone (4.x layers took ``output_attentions`` and returned
        a tuple)."""
        attention = getattr(layer, "self_attn", None)
        return (all(hasattr(layer, a) for a in ("layer_norm1", "layer_norm2", "mlp"))
                and attention is not None
                and all(hasattr(attention, a) for a in ("q_proj", "k_proj", "v_proj", "out_proj",
                                                        "num_heads", "head_dim", "scale"))
                and "output_attentions" not in inspect.signature(type(layer).forward).parameters)

    def forward(self, hidden_states: torch.Tensor, attention_mask: torch.Tensor | None = None,
                **kwargs) -> torch.Tensor:
        if attention_mask is not None or kwargs.get("output_attentions"):
            raise JointspaceError("the fused CPU copy of a CLIP vision model takes no attention "
                                  "mask and gives no attention weights; run the backbone itself")
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


def _encoder_layers(backbone: nn.Module) -> nn.ModuleList | None:
    layers = getattr(getattr(backbone, "encoder", None), "layers", None)
    return layers if isinstance(layers, nn.ModuleList) and len(layers) else None


def fused_copy(backbone: nn.Module, cls_only_last_layer: bool = False) -> nn.Module:
    """The fused inference copy of ``backbone`` (fp32, on the CPU).

    It shares the backbone's parameters other than the Linear weights (so never move,
    cast or unfreeze the copy: that would change the backbone), sees no hooks registered
    on the backbone, and is valid until a weight changes. ``cls_only_last_layer``: the
    backbone is a CLIP vision transformer whose pooled output reads the CLS token alone,
    so its last layer computes only that token: ``last_hidden_state`` is then
    ``[B, 1, D]`` and ``hidden_states`` / ``attentions`` lack the last layer."""
    params = {id(p): p for p in backbone.parameters()}
    params.update({id(b): b for b in backbone.buffers()})
    clone = copy.deepcopy(backbone, params).eval()  # the memo shares tensors: no transient copy
    if cls_only_last_layer:
        layers = _encoder_layers(clone)
        if layers is not None and ClsOnlyCLIPLayer.fits(layers[-1]):
            layers[-1] = ClsOnlyCLIPLayer(layers[-1])
    _fuse_mlps(clone)
    _pack_linears(clone)
    return clone


def fused_summary(module: nn.Module) -> dict[str, int]:
    """How many Linear layers the copy packs and fuses, how many it leaves, and how many
    layers it computes for the CLS token alone."""
    packed = [m for m in module.modules() if isinstance(m, PackedLinear)]
    return {"packed": len(packed), "fused": sum(m.attr != "none" for m in packed),
            "plain": sum(type(m) is nn.Linear for m in module.modules()),
            "cls_only_layers": sum(isinstance(m, ClsOnlyCLIPLayer) for m in module.modules())}
