"""Row-stripe bookkeeping shared by the memory-bounded objectives.

The blockwise losses never hold the ``B × B`` logit matrix: they walk over
stripes of ``block`` rows against all ``B`` columns, reusing two preallocated
``[block, B]`` float32 buffers, so their extra memory is ``O(B · block)``.
"""
from __future__ import annotations

import contextlib
from typing import Iterator

import torch

#: elements in one stripe buffer chosen by :func:`choose_block_size` (16 MiB in float32):
#: big enough for efficient matrix products, small enough to stay near the caches.
STRIPE_ELEMENTS = 1 << 22
MIN_BLOCK, MAX_BLOCK = 256, 1024


def choose_block_size(n_rows: int, n_cols: int, dim: int) -> int:
    """Rows per stripe for an ``n_rows × n_cols`` logit matrix of ``dim``-wide embeddings.

    Aims at :data:`STRIPE_ELEMENTS` per stripe, rounded to a multiple of 64 and
    kept within ``[256, 1024]``: below ~256 rows the products become
    bandwidth-bound (every stripe re-reads and re-writes the ``n_cols × dim``
    gradient accumulator), above ~1024 the buffers stop fitting the caches
    without making the products faster. Narrow embeddings make the products
    cheap relative to the elementwise work, so ``dim < 256`` halves the target.

    >>> choose_block_size(16384, 16384, 512)
    256
    >>> choose_block_size(100, 100, 512)
    100
    """
    target = STRIPE_ELEMENTS // (2 if dim < 256 else 1)
    block = max(MIN_BLOCK, min(MAX_BLOCK, (target // max(n_cols, 1)) // 64 * 64))
    return max(1, min(block, n_rows))


def stripes(n_rows: int, block: int) -> Iterator[tuple[int, int]]:
    """``(start, stop)`` of consecutive row stripes covering ``range(n_rows)``."""
    for start in range(0, n_rows, block):
        yield start, min(start + block, n_rows)


def compute_dtype(x: torch.Tensor) -> torch.dtype:
    """float64 stays float64; everything else (float32, bf16, fp16) runs in float32."""
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def no_autocast(device: torch.device) -> contextlib.AbstractContextManager:
    """Disable autocast inside a loss so its products and reductions stay in float32."""
    try:
        return torch.autocast(device_type=device.type, enabled=False)
    except RuntimeError:  # device types without autocast support
        return contextlib.nullcontext()


def resolve_block(block_size: int | None, n_rows: int, n_cols: int, dim: int) -> int:
    """``block_size`` if given (validated), else :func:`choose_block_size`."""
    if block_size is None:
        return choose_block_size(n_rows, n_cols, dim)
    if block_size < 1:
        raise ValueError(f"block_size must be a positive number of rows, got {block_size}")
    return min(block_size, max(n_rows, 1))


def check_pair(a: torch.Tensor, b: torch.Tensor) -> None:
    """Raise a clear error unless ``a`` and ``b`` are matching ``[B, d]`` batches."""
    if a.dim() != 2 or a.shape != b.shape:
        raise ValueError(f"expected paired embeddings of shape [B, d], got {tuple(a.shape)} "
                         f"and {tuple(b.shape)}")
    if not (a.is_floating_point() and b.is_floating_point()):
        raise TypeError("embeddings must be floating point")
