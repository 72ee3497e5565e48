"""What a device can do, asked by towers (inference precision) and training (autocast)."""
from __future__ import annotations

import torch


def native_bf16(device: torch.device) -> bool:
    """Whether ``device`` runs bf16 matrix work natively: where bf16 autocast pays
    (``bench/train_step.py`` measures it); on AVX2-only CPUs it is slower than fp32."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((line for line in f if line.startswith("flags")), "").split()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags
