"""Learning-rate schedule: linear warmup, then cosine decay to zero."""
from __future__ import annotations

import math


def warmup_cosine(step: int, warmup_steps: int, max_steps: int) -> float:
    """Multiplier of the base learning rate at optimiser step ``step`` (0-based)."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = (step - warmup_steps) / max(1, max_steps - warmup_steps)
    return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
