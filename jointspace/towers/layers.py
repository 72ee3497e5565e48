"""Building blocks shared by the transformer towers."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class PreNormEncoder(nn.TransformerEncoder):
    """``nn.TransformerEncoder`` of pre-norm GELU layers whose training forward
    calls ``scaled_dot_product_attention`` once per layer on views of the packed
    QKV projection, with the padding mask as one broadcast boolean mask.

    That skips ``nn.MultiheadAttention``'s reshuffling copies and per-head float
    masks (``bench/train_step.py`` measures what that buys).
    Parameters and their names are the parent's, so saved weights load
    unchanged. In eval mode it keeps PyTorch's fused inference path; in train
    mode it always takes this path, with or without grad, so the no-graph and
    replayed passes of cached-negative accumulation run the same code.
    """

    def forward(self, src: torch.Tensor, mask: torch.Tensor | None = None,
                src_key_padding_mask: torch.Tensor | None = None,
                is_causal: bool | None = None) -> torch.Tensor:
        if mask is not None or not self.training:
            return super().forward(src, mask=mask, src_key_padding_mask=src_key_padding_mask,
                                   is_causal=is_causal)
        b, n, w = src.shape
        keep = None if src_key_padding_mask is None else (~src_key_padding_mask).view(b, 1, 1, n)
        x = src
        for layer in self.layers:
            attn = layer.self_attn
            heads = attn.num_heads
            qkv = F.linear(layer.norm1(x), attn.in_proj_weight, attn.in_proj_bias)
            q, k, v = qkv.view(b, n, 3, heads, w // heads).permute(2, 0, 3, 1, 4)
            a = F.scaled_dot_product_attention(q, k, v, attn_mask=keep,
                                               dropout_p=attn.dropout if self.training else 0.0)
            x = x + layer.dropout1(attn.out_proj(a.transpose(1, 2).reshape(b, n, w)))
            h = layer.linear2(layer.dropout(layer.activation(layer.linear1(layer.norm2(x)))))
            x = x + layer.dropout2(h)
        return x if self.norm is None else self.norm(x)


def transformer_encoder(width: int, layers: int, heads: int, mlp_ratio: float = 4.0,
                        dropout: float = 0.0) -> nn.TransformerEncoder:
    """A pre-norm transformer encoder (batch first, GELU); see :class:`PreNormEncoder`."""
    layer = nn.TransformerEncoderLayer(
        d_model=width, nhead=heads, dim_feedforward=int(width * mlp_ratio), dropout=dropout,
        activation="gelu", batch_first=True, norm_first=True)
    return PreNormEncoder(layer, num_layers=layers, enable_nested_tensor=False)


def conv_bn_relu(c_in: int, c_out: int, kernel: int, stride: int) -> list[nn.Module]:
    """A same-padded convolution (no bias: batch norm follows), batch norm, ReLU."""
    return [nn.Conv2d(c_in, c_out, kernel, stride=stride, padding=(kernel - 1) // 2, bias=False),
            nn.BatchNorm2d(c_out), nn.ReLU(inplace=True)]
