"""The ``runtime: openvino`` option: a frozen backbone's inference run by OpenVINO on the CPU.

PyTorch's eager CPU forward runs a ViT's matrix products through MKL and each LayerNorm,
GELU and softmax as a kernel of its own; OpenVINO compiles the whole graph once (fused
attention, layer norm and activations, oneDNN kernels chosen for this CPU) and, measured
on a 2-core AVX-512 CPU (``bench/image_embed.py``), runs a ViT-B/16 forward in fp32 at
about the CPU's fp32 peak. Only inference is affected: training, or any forward that
needs gradients, runs the torch module as always.

The graph is converted from the module itself (``openvino.convert_model`` with an example
input; every dimension stays dynamic, so one compiled model serves any batch and any
image size, but a branch on the input's shape is fixed by the trace, so callers
compile one graph per input size) and compiled with the precision asked for: ``f32`` is exact to ~1e-6 of the
torch forward; ``bf16`` uses the CPU's bf16 instructions. OpenVINO's telemetry sends
nothing without an opt-in consent file, and conversion needs no network.
"""
from __future__ import annotations

import time
import warnings
from typing import Any

import numpy as np
import torch
from torch import nn

from ..errors import ConfigError
from ..extras import require
from ..progress import logger

RUNTIMES = ("torch", "openvino")
#: the tower's precision → OpenVINO's inference precision hint (f32 must be said: on CPUs
#: with bf16 instructions OpenVINO's default is bf16)
_PRECISION_HINTS = {"fp32": "f32", "bf16": "bf16"}


def check_runtime(runtime: str, quantize: bool) -> None:
    """Raise :class:`ConfigError` for an unknown ``runtime`` or one that cannot honour ``quantize``."""
    if runtime not in RUNTIMES:
        raise ConfigError(f"runtime must be one of {', '.join(RUNTIMES)}, got {runtime!r}")
    if runtime == "openvino" and quantize:
        raise ConfigError("quantize is torch's int8 dynamic quantisation; it does not combine with "
                          "runtime: openvino (use precision: bf16 there, or runtime: torch)")


class CompiledForward:
    """``module``'s forward (one float tensor in, one out) compiled by OpenVINO for the CPU;
    call it with a CPU tensor of any batch size."""

    def __init__(self, module: nn.Module, example: torch.Tensor, precision: str,
                 threads: int | None = None) -> None:
        ov = require("openvino", "openvino", "runtime: openvino")
        if precision not in _PRECISION_HINTS:
            raise ConfigError(f"runtime: openvino runs fp32 or bf16, not {precision!r}")
        started = time.perf_counter()
        was_training = module.training
        module.eval()
        try:
            with torch.no_grad(), warnings.catch_warnings():
                # the trace fixes Python branches on shapes: callers key a graph by input size
                warnings.simplefilter("ignore", torch.jit.TracerWarning)
                graph = ov.convert_model(module, example_input=example.detach().cpu().float())
        finally:
            module.train(was_training)
        settings = {"INFERENCE_PRECISION_HINT": _PRECISION_HINTS[precision],
                    "PERFORMANCE_HINT": "LATENCY",  # one request at a time, all threads on it
                    "INFERENCE_NUM_THREADS": str(threads or torch.get_num_threads())}
        self.compiled = ov.Core().compile_model(graph, "CPU", settings)
        self.precision = precision
        logger.info("OpenVINO compiled the %s forward (%s) in %.1f s", type(module).__name__,
                    precision, time.perf_counter() - started)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if x.device.type != "cpu":
            raise ConfigError(f"runtime: openvino runs on the CPU; the input is on {x.device}")
        array = np.ascontiguousarray(x.detach().float().numpy())
        out: Any = self.compiled(array)[0]
        return torch.from_numpy(np.array(out, dtype=np.float32, copy=True))
