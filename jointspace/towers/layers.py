"""Building blocks shared by the transformer towers."""
from __future__ import annotations

from torch import nn


def transformer_encoder(width: int, layers: int, heads: int, mlp_ratio: float = 4.0,
                        dropout: float = 0.0) -> nn.TransformerEncoder:
    """A pre-norm transformer encoder (batch first, GELU). PyTorch dispatches its
    attention to fused scaled-dot-product kernels."""
    layer = nn.TransformerEncoderLayer(
        d_model=width, nhead=heads, dim_feedforward=int(width * mlp_ratio), dropout=dropout,
        activation="gelu", batch_first=True, norm_first=True)
    return nn.TransformerEncoder(layer, num_layers=layers, enable_nested_tensor=False)
