"""The ``runtime: openvino`` option: a backbone's forward run by OpenVINO on the CPU
whenever no gradient flows through it (inference, validation, the frozen-feature cache,
a frozen backbone under a trained head); a forward that needs the backbone's gradients
runs torch.

PyTorch's eager CPU forward runs a ViT's matrix products through MKL and each LayerNorm,
GELU and softmax as a kernel of its own; OpenVINO compiles the whole graph once (fused
attention, layer norm and activations, oneDNN kernels chosen for this CPU). Measured on
2 cores of an AVX-512 CPU (``bench/image_embed.py``), its ViT-B/16 fp32 forward ran at
~180 GFLOP/s against torch's ~115–130.

The graph is converted from the module itself (``openvino.convert_model`` with an example
input). The trace fixes any Python branch on the input's shape, so callers key a graph by
input size; the batch dimension stays free. ``fp32`` is compiled with OpenVINO's f32 hint
(its default on bf16-capable CPUs is bf16) and matches the torch forward to ~1e-5;
``bf16`` uses the CPU's bf16 instructions. OpenVINO's telemetry sends nothing without an
opt-in consent file, and conversion needs no network.
"""
from __future__ import annotations

import importlib.util
import threading
import time
import warnings
from typing import Any

import numpy as np
import torch
from torch import nn

from ..errors import ConfigError, JointspaceError
from ..extras import require
from ..progress import logger

RUNTIMES = ("torch", "openvino")
#: held while a graph is looked up or compiled (compiles are rare; calls have their own lock)
COMPILE_LOCK = threading.RLock()
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
    if runtime == "openvino" and importlib.util.find_spec("openvino") is None:
        require("openvino", "openvino", "runtime: openvino")  # raises, naming the extra


class CompiledForward:
    """``module``'s forward (one float tensor in, one out) compiled by OpenVINO for the CPU;
    call it with a CPU tensor of any batch size."""

    def __init__(self, module: nn.Module, example: torch.Tensor, precision: str,
                 threads: int | None = None, label: str = "") -> None:
        ov = require("openvino", "openvino", "runtime: openvino")
        if precision not in _PRECISION_HINTS:
            raise ConfigError(f"runtime: openvino runs fp32 or bf16, not {precision!r}")
        if example.device.type != "cpu":
            raise ConfigError(f"runtime: openvino runs on the CPU; the tower is on {example.device} "
                              "(use runtime: torch there)")
        started = time.perf_counter()
        name = label or type(module).__name__
        modes = [(m, m.training) for m in module.modules()]  # each as it was, not the wrapper's
        module.eval()
        settings = {"INFERENCE_PRECISION_HINT": _PRECISION_HINTS[precision],
                    "PERFORMANCE_HINT": "LATENCY",  # one request at a time, all threads on it
                    "INFERENCE_NUM_THREADS": str(threads or torch.get_num_threads())}
        try:
            with torch.no_grad(), warnings.catch_warnings():
                # the trace fixes Python branches on shapes: callers key a graph by input size
                warnings.simplefilter("ignore", torch.jit.TracerWarning)
                # share_weights=False: the graph owns copies of the weights, so no OpenVINO object
                # holds torch memory or Python references that the two could free in either order
                graph = ov.convert_model(module, example_input=example.detach().float(),
                                         share_weights=False)
            self.compiled = ov.Core().compile_model(graph, "CPU", settings)
        except Exception as e:  # OpenVINO's own errors (an op it cannot convert, …) have no common base
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise JointspaceError(f"OpenVINO could not convert or compile {name}: "
                                  f"{first[:300]}; use runtime: torch for this model") from e
        finally:
            for m, training in modes:
                m.training = training
        self.precision = precision
        self._lock = threading.Lock()  # one infer request: threads sharing a model take turns
        logger.info("OpenVINO compiled %s (%s) in %.1f s", name,
                    precision, time.perf_counter() - started)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        array = np.ascontiguousarray(x.detach().float().numpy())
        with self._lock:
            out: Any = self.compiled(array)[0]  # an array of its own (share_outputs=False)
        return torch.from_numpy(np.asarray(out, dtype=np.float32))
