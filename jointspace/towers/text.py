"""A text tower trained from scratch: byte-level BPE tokenizer + small transformer.

The tokenizer (Hugging Face ``tokenizers``) is trained on the training captions
in :meth:`TextTransformerTower.prepare` and saved as ``tokenizer.json`` beside
the weights. Byte-level BPE encodes any string, so unseen words never fail.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
from torch import nn

from ..errors import DataError, JointspaceError
from .base import TOWERS, Tower
from .layers import transformer_encoder

PAD, BOS, EOS = "[PAD]", "[BOS]", "[EOS]"
TOKENIZER_FILE = "tokenizer.json"


def train_tokenizer(texts: Sequence[str], vocab_size: int) -> Tokenizer:
    """Train a lower-casing byte-level BPE tokenizer; ids 0, 1, 2 are PAD, BOS, EOS."""
    tokenizer = Tokenizer(models.BPE())
    tokenizer.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Lowercase()])
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[PAD, BOS, EOS],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    tokenizer.train_from_iterator(texts, trainer)
    return tokenizer


@dataclass
class TextTransformerConfig:
    vocab_size: int = 1024
    context_length: int = 32
    width: int = 128
    layers: int = 2
    heads: int = 4
    mlp_ratio: float = 4.0


@TOWERS.register("transformer")
class TextTransformerTower(Tower):
    """Token + position embeddings, bidirectional pre-norm encoder with a
    padding mask, mean pooling over real tokens, linear projection."""

    Config = TextTransformerConfig
    modality = "text"

    def __init__(self, config: TextTransformerConfig, embed_dim: int) -> None:
        super().__init__(config, embed_dim)
        self.tokenizer: Tokenizer | None = None
        self.token = nn.Embedding(config.vocab_size, config.width, padding_idx=0)
        self.pos = nn.Parameter(torch.randn(1, config.context_length, config.width) * 0.01)
        self.encoder = transformer_encoder(config.width, config.layers, config.heads, config.mlp_ratio)
        self.norm = nn.LayerNorm(config.width)
        self.proj = nn.Linear(config.width, embed_dim, bias=False)

    learns_from_data = True  # its tokenizer is trained on the training texts

    # -- preprocessing -------------------------------------------------------
    def prepare(self, items: Sequence[Any]) -> None:
        texts = [t for t in items if isinstance(t, str)]
        if not texts:
            raise DataError("cannot train a tokenizer: no training texts")
        self.tokenizer = train_tokenizer(texts, self.config.vocab_size)

    def save_assets(self, folder: Path) -> None:
        if self.tokenizer is None:
            raise JointspaceError("text tower has no tokenizer yet; call prepare() first")
        self.tokenizer.save(str(folder / TOKENIZER_FILE))

    def load_assets(self, folder: Path) -> None:
        path = folder / TOKENIZER_FILE
        if not path.is_file():
            raise JointspaceError(f"model folder {folder} lacks {TOKENIZER_FILE}")
        self.tokenizer = Tokenizer.from_file(str(path))

    def preprocess_one(self, item: Any) -> torch.Tensor:
        if not isinstance(item, str):
            raise DataError(f"expected a string, got {type(item).__name__}")
        if self.tokenizer is None:
            raise JointspaceError("text tower has no tokenizer yet; call prepare() first")
        n = self.config.context_length
        ids = [1] + self.tokenizer.encode(item).ids[: n - 2] + [2]
        out = torch.zeros(n, dtype=torch.long)
        out[: len(ids)] = torch.tensor(ids)
        return out

    # -- model ---------------------------------------------------------------
    def features(self, x: torch.Tensor) -> torch.Tensor:
        pad = x == 0
        h = self.token(x) + self.pos[:, : x.shape[1]]
        h = self.norm(self.encoder(h, src_key_padding_mask=pad))
        keep = (~pad).unsqueeze(-1).to(h.dtype)
        return (h * keep).sum(1) / keep.sum(1).clamp(min=1)
