"""What every tower around a ``transformers`` backbone shares (``hf`` text, ``hf_vision``):
a backbone that may be missing at construction and is (re)built from a model folder's
own ``config.json``, weights held aside until then, and the bf16 / int8 / fused fp32
inference copies.

The contract (when the backbone is built, which copy of the config wins, what the speed
options mean) is written out in :mod:`.hf_text`'s docstring under *Model folders* and
*Speed options*; a subclass builds its backbone from a folder, calls
:meth:`HFBackboneTower._adopt_backbone` with one built from a saved config, and runs it
through :meth:`HFBackboneTower._runner`.
"""
from __future__ import annotations

import contextlib
import copy
import threading
import warnings
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..errors import ConfigError, JointspaceError
from ..progress import logger
from . import fused_cpu
from .base import Adapter, Tower
from .hf_loading import PRECISIONS, native_bf16_device


@dataclass
class InferenceOptions:
    """The speed options of a tower config (a base for its dataclass)."""

    #: inference precision of the backbone: fp32, bf16 (a bfloat16 copy), auto (bf16 where native)
    precision: str = "fp32"
    #: int8 dynamic quantisation of the backbone's Linear layers for inference (CPU; it takes
    #: precedence over precision there)
    quantize: bool = False

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise ConfigError(f"precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")


class HFBackboneTower(Tower):
    """Base class: ``backbone`` (a ``transformers`` model, or None until a model folder
    supplies its config), ``unavailable`` (why ``path`` gave none), a trainable ``proj``."""

    pretrained = True

    def __init__(self, config: Any, embed_dim: int) -> None:
        super().__init__(config, embed_dim)
        self.register_module("backbone", None)
        self.unavailable: str | None = None  # why the backbone could not be built from path
        self._held: dict[str, torch.Tensor] | None = None  # weights waiting for load_assets
        self._fast: dict[Any, Any] = {}  # inference copy + key, its lock (not a submodule)
        self.register_load_state_dict_pre_hook(_hold_backbone_weights)

    def _check_backbone(self) -> None:
        if self.backbone is None:
            if self._held is not None:
                raise JointspaceError(f"the {self.modality} tower holds weights of another backbone; "
                                      "call load_assets(folder) with the model folder they came from")
            raise ConfigError(self.unavailable or f"{self.modality} tower has no backbone")

    def _device(self) -> torch.device:
        p = next(self.parameters(), None)
        return p.device if p is not None else torch.device("cpu")

    # -- speed options -------------------------------------------------------------
    def resolved_precision(self, device: torch.device) -> str:
        """``fp32`` or ``bf16``: the config's ``precision`` with ``auto`` decided for ``device``."""
        if self.config.precision == "auto":
            key = ("auto", device.type)
            if key not in self._fast:
                self._fast[key] = "bf16" if native_bf16_device(device) else "fp32"
            return self._fast[key]
        return self.config.precision

    def _runner(self, device: torch.device, input_grad: bool = False
                ) -> tuple[nn.Module, contextlib.AbstractContextManager]:
        """The module to run and the context to run it in: the fp32 backbone, under bf16
        autocast when gradients are needed, or a bf16 / int8 / fused fp32 inference copy
        (the fused one has no backward and no autocast kernels, so not for an
        ``input_grad`` input under grad, nor inside an autocast region)."""
        backbone = self.backbone
        precision = self.resolved_precision(device)
        needs_grad = torch.is_grad_enabled() and any(p.requires_grad for p in backbone.parameters())
        if backbone.training or needs_grad:
            self.drop_inference_copies()  # the weights are about to change: a copy would go stale
            if precision == "bf16":
                return backbone, torch.autocast(device_type=device.type, dtype=torch.bfloat16)
            return backbone, contextlib.nullcontext()
        kind = "int8" if self.config.quantize and device.type == "cpu" else precision
        if kind == "fp32" and self._fused_here(device, input_grad):
            kind = "fused"
        if kind == "fp32":
            self.drop_inference_copies()
            return backbone, contextlib.nullcontext()
        return self._inference_copy(kind), contextlib.nullcontext()

    def _fused_here(self, device: torch.device, input_grad: bool) -> bool:
        if device.type != "cpu" or not self._fuses_on_cpu():
            return False
        if input_grad and torch.is_grad_enabled() or torch.is_autocast_enabled("cpu"):
            return False
        return next(self.backbone.parameters()).dtype == torch.float32

    def _fuses_on_cpu(self) -> bool:
        """Whether fp32 CPU inference runs the fused copy (:mod:`.fused_cpu`); a subclass
        whose config has ``fused_cpu`` says so."""
        return False

    def _cls_only_last_layer(self) -> bool:
        """Whether the fused copy may compute the last layer for the CLS token alone (the
        pooled output reads nothing else)."""
        return False

    def drop_inference_copies(self) -> None:
        """Forget the bf16 / int8 / fused inference copies; the next call rebuilds them.
        Weight edits through ``param.data`` do not bump the version the copies are keyed
        by: call this after such an edit (in-place edits of the parameters themselves,
        ``load_state_dict`` and optimiser steps are seen)."""
        self._fast.pop("copy", None)

    def train(self, mode: bool = True) -> "HFBackboneTower":
        # a backbone about to train makes any copy stale; a frozen one keeps it (the feature
        # cache and encode toggle eval/train around every call)
        if mode and self.backbone is not None and any(p.requires_grad for p in self.backbone.parameters()):
            self.drop_inference_copies()
        return super().train(mode)

    def __getstate__(self) -> dict[str, Any]:
        # inference copies are rebuilt on demand; oneDNN's packed weights cannot be pickled
        # or deep-copied (DataLoader workers, copy.deepcopy of a model), nor can the lock
        state = dict(super().__getstate__())
        state["_fast"] = {}
        return state

    def _inference_copy(self, kind: str) -> nn.Module:
        with self._fast.setdefault("lock", threading.Lock()):  # threads asking at once build once
            return self._make_inference_copy(kind)

    def _make_inference_copy(self, kind: str) -> nn.Module:
        params = list(self.backbone.parameters())
        key = (kind, id(self.backbone), str(params[0].device), params[0].dtype,
               tuple((id(p), p.data_ptr(), p._version) for p in params))
        cached = self._fast.get("copy")
        if cached is not None and cached[0] == key:
            return cached[1]
        self._fast.pop("copy", None)  # free the old copy before making the new one
        with torch.no_grad():
            if kind == "fused":
                clone = fused_cpu.fused_copy(self.backbone, self._cls_only_last_layer())
            elif kind == "bf16":
                # deepcopy with the parameters pre-copied in bf16: no transient fp32 copy
                memo = {id(p): nn.Parameter(p.detach().to(torch.bfloat16), requires_grad=False)
                        for p in params}
                clone = copy.deepcopy(self.backbone, memo).to(torch.bfloat16).eval()
            else:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")  # torch.ao.quantization's deprecation notice
                    clone = torch.ao.quantization.quantize_dynamic(
                        self.backbone, {nn.Linear}, dtype=torch.qint8, inplace=False).eval()
            if kind != "fused":  # the fused copy shares the backbone's own parameters
                clone.requires_grad_(False)
        self._fast["copy"] = (key, clone)
        return clone

    # -- rebuilding from a model folder ----------------------------------------------
    def _adopt_backbone(self, model: nn.Module, width: int) -> None:
        """Make ``model`` (built from a saved config, no weights) the backbone, filled with
        the held-aside weights or else the current backbone's; refit the head to ``width``
        and re-apply ``trainable`` to the new parameters."""
        old = self.backbone
        state = self._held if self._held is not None else (old.state_dict() if old is not None else None)
        if state is not None:
            try:
                model.load_state_dict(state, strict=True)
            except RuntimeError as e:
                raise JointspaceError(f"the {self.modality} tower's weights do not fit its saved "
                                      f"config: {str(e).splitlines()[0]}") from None
        self.backbone = model.to(self._device())
        self._held = None
        self.drop_inference_copies()
        self._fit_head(width)
        self.set_trainable(self.trainable)  # new parameters: freeze what should be frozen
        self.train(self.training)

    def _fit_head(self, width: int) -> None:
        """Give the projection (and an adapter) the backbone's width; a tower built without
        its backbone learns the width only from the model folder."""
        device = self._device()
        if isinstance(self.proj, nn.Linear) and self.proj.in_features != width:
            self.proj = nn.Linear(width, self.embed_dim, bias=self.proj.bias is not None).to(device)
        if isinstance(self.adapter, Adapter) and self.adapter.norm.normalized_shape[0] != width:
            self.adapter = Adapter(width, self.adapter.down.out_features).to(device)

    def _fit_head_to_state(self, state_dict: dict[str, Any], prefix: str) -> None:
        """Reshape the head for incoming weights (called by the pre-hook when it holds the
        backbone's weights aside): by default the width of ``proj.weight``."""
        proj = state_dict.get(prefix + "proj.weight")
        if proj is not None and proj.ndim == 2:
            self._fit_head(int(proj.shape[1]))


def _hold_backbone_weights(module: HFBackboneTower, state_dict: dict[str, Any], prefix: str,
                           *args: Any) -> None:
    """Load-state-dict pre-hook: weights for a backbone this tower lacks (or built with
    another architecture) are set aside for ``load_assets`` to place."""
    head = prefix + "backbone."
    keys = [k for k in state_dict if k.startswith(head)]
    if not keys:
        return
    if module.backbone is not None:
        have = {k: tuple(v.shape) for k, v in module.backbone.state_dict().items()}
        incoming = {k[len(head):]: tuple(state_dict[k].shape) for k in keys}
        if have == incoming:
            return  # the usual case: load into the existing backbone
        logger.info("%s tower: saved weights are for another architecture than %s; rebuilding "
                    "from the model folder's config", module.modality, getattr(module, "source", ""))
    module._held = {k[len(head):]: state_dict.pop(k) for k in keys}
    module.backbone = None  # registered as None: its keys are neither loaded nor "unexpected"
    module.drop_inference_copies()
    module._fit_head_to_state(state_dict, prefix)
    module.set_trainable(module.trainable)
    module.train(module.training)
