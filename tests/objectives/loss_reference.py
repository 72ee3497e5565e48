"""Reference computations and comparison helpers for the objective tests."""
from __future__ import annotations

import importlib.metadata
import importlib.util
import math

import pytest
import torch
import torch.nn.functional as F

MAX_LOG_SCALE = math.log(100.0)


def unit_pair(n: int, d: int, seed: int = 0, dtype: torch.dtype = torch.float32):
    """Paired random unit vectors; positives correlated like a partly trained model."""
    g = torch.Generator().manual_seed(seed)
    a = F.normalize(torch.randn(n, d, generator=g, dtype=torch.float64), dim=-1)
    b = F.normalize(a + 1.2 * torch.randn(n, d, generator=g, dtype=torch.float64), dim=-1)
    return a.to(dtype), b.to(dtype)


def ref_infonce(a, b, logit_scale, label_smoothing: float = 0.0):
    """Plain full-matrix CLIP loss (mean of both cross-entropies)."""
    scale = logit_scale.clamp(max=MAX_LOG_SCALE).exp()
    logits = scale * a @ b.T
    labels = torch.arange(a.shape[0])
    return 0.5 * (F.cross_entropy(logits, labels, label_smoothing=label_smoothing)
                  + F.cross_entropy(logits.T, labels, label_smoothing=label_smoothing))


def ref_sigmoid(a, b, logit_scale, logit_bias):
    """Plain full-matrix SigLIP loss: −Σ log σ(z_ij · logit_ij) / B."""
    scale = logit_scale.clamp(max=MAX_LOG_SCALE).exp()
    logits = scale * a @ b.T + logit_bias
    labels = 2 * torch.eye(a.shape[0], dtype=logits.dtype) - 1
    return -F.logsigmoid(labels * logits).sum() / a.shape[0]


def value_and_grads(fn, *tensors):
    """``fn(*leaves)`` and the gradients of every leaf (fresh leaves, any dtype)."""
    leaves = [t.detach().clone().requires_grad_() for t in tensors]
    loss = fn(*leaves)
    loss.backward()
    return loss.detach(), [leaf.grad for leaf in leaves]


def rel_err(x: torch.Tensor, ref: torch.Tensor) -> float:
    """Norm-wise relative error (absolute when the reference is zero)."""
    x, ref = x.detach().double(), ref.detach().double()
    denom = ref.norm()
    return float((x - ref).norm() / denom) if denom > 0 else float(x.norm())


def assert_close(ours, ref, tol: float, what: str = "") -> None:
    err = rel_err(ours, ref)
    assert err <= tol, f"{what}: relative error {err:.2e} > {tol:.0e}"


def load_openclip_loss():
    """OpenCLIP's loss.py, loaded by file path (``import open_clip`` needs torchvision)."""
    try:
        dist = importlib.metadata.distribution("open-clip-torch")
    except importlib.metadata.PackageNotFoundError:
        pytest.fail("open-clip-torch is not installed; the OpenCLIP comparison needs it: "
                    "pip install --no-deps open-clip-torch==3.3.0  (never with its dependencies)",
                    pytrace=False)
    path = dist.locate_file("open_clip/loss.py")
    spec = importlib.util.spec_from_file_location("_openclip_loss", str(path))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
