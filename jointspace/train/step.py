"""One optimiser step, with cached-negative accumulation and bf16 autocast.

Two batch sizes, named so they are never confused:

* the **contrastive batch** (``TrainConfig.batch_size``): how many pairs meet
  each other as negatives in one loss, i.e. what the objective sees;
* the **sub-batch** (``batch_size // accum_steps``): how many pairs go through
  the towers with a graph at once, i.e. what must fit in memory.

With ``accum_steps > 1`` the step follows GradCache (Gao et al., "Scaling Deep
Contrastive Learning Batch Size under Memory Limited Setup", 2021): embed every
sub-batch without a graph, take the loss and its gradient with respect to the
embeddings over the whole contrastive batch, then re-run each sub-batch with a
graph and push its slice of that gradient through the towers. The parameter
gradients equal those of one contrastive batch (not the weaker average of
sub-batch losses). Towers with batch norm see sub-batch statistics, so they
match only approximately, and their running statistics are updated once per
sub-batch (by the graph pass; the first pass leaves them as they were).
Dropout is replayed exactly: the CPU and the device RNG state are saved per
sub-batch and restored for its graph pass.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any, Iterator, Literal

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError
from ..devices import native_bf16  # noqa: F401 (re-exported)
from ..model import FEATURES_SUFFIX, JointModel, build_pair_objectives, build_training_objective
from ..config import ModelConfig, modality_of
from ..objectives import Objective
from .distributed import average_gradients

Precision = Literal["fp32", "bf16"]


Objectives = dict[str, Objective]


@dataclass
class StepOutput:
    loss: float
    grad_norm: float
    pair_losses: dict[str, float]


def training_objective(config: ModelConfig) -> Objective:
    """The first pair's objective (see :func:`jointspace.model.build_training_objective`)."""
    return build_training_objective(config)


def training_objectives(config: ModelConfig) -> Objectives:
    """Every pair's objective, by pair key (see :func:`jointspace.model.build_pair_objectives`)."""
    return build_pair_objectives(config)


def pair_losses(model: JointModel, objectives: Objectives | Objective,
                emb: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Each pair's loss (float32) for the pairs whose two fields are in ``emb``.

    ``objectives`` maps pair keys to objectives; a single objective serves every pair."""
    out = {}
    for pair in model.pairs:
        if pair.a in emb and pair.b in emb:
            objective = objectives if isinstance(objectives, Objective) else objectives[pair.key]
            out[pair.key] = objective(emb[pair.a].float(), emb[pair.b].float(),
                                      model.logit_scale_for(pair.key), model.logit_bias_for(pair.key))
    if not out:
        raise ConfigError(f"the batch has fields {', '.join(emb)} but no pair of the model "
                          f"({', '.join(p.key for p in model.pairs)}) has both of its fields")
    return out


def embeddings_loss(model: JointModel, objectives: Objectives | Objective,
                    emb: dict[str, torch.Tensor]) -> torch.Tensor:
    """The weighted sum of the pairs' losses, in float32."""
    return weighted_sum(model, pair_losses(model, objectives, emb))


def weighted_sum(model: JointModel, losses: dict[str, torch.Tensor]) -> torch.Tensor:
    """``Σ weight_p · loss_p`` over the pairs in ``losses``."""
    weights = {p.key: p.weight for p in model.pairs}
    return sum(weights[k] * loss for k, loss in losses.items())


def resolve_precision(precision: str, device: torch.device) -> Precision:
    """``"auto"`` → ``"bf16"`` where :func:`native_bf16`, else ``"fp32"``."""
    if precision == "auto":
        return "bf16" if native_bf16(device) else "fp32"
    if precision not in ("fp32", "bf16"):
        raise ConfigError(f"train.precision must be 'fp32', 'bf16' or 'auto', got {precision!r}")
    return precision  # type: ignore[return-value]


def autocast(precision: Precision, device: torch.device) -> contextlib.AbstractContextManager:
    if precision == "fp32":
        return contextlib.nullcontext()
    if precision == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    raise ConfigError(f"train.precision must be 'fp32' or 'bf16', got {precision!r}")


def build_optimizer(model: nn.Module, lr: float, weight_decay: float) -> torch.optim.AdamW:
    """AdamW without weight decay on gains, biases and the temperature (as in CLIP);
    the fused implementation where the parameters' device supports it."""
    params = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in params if p.ndim >= 2]
    rest = [p for p in params if p.ndim < 2]
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": rest, "weight_decay": 0.0}]
    try:
        return torch.optim.AdamW(groups, lr=lr, fused=True)
    except (RuntimeError, TypeError):
        return torch.optim.AdamW(groups, lr=lr)


def split_batch(batch: dict[str, torch.Tensor], parts: int) -> list[dict[str, torch.Tensor]]:
    size = len(next(iter(batch.values())))
    if parts < 1 or size % parts:
        raise ConfigError(f"train.accum_steps ({parts}) must divide the contrastive batch ({size})")
    return [{m: x.narrow(0, i * (size // parts), size // parts) for m, x in batch.items()}
            for i in range(parts)]


def get_rng_states(device: torch.device) -> dict[str, Any]:
    """The CPU RNG state and, on a CUDA device, that device's RNG state."""
    states: dict[str, Any] = {"cpu": torch.get_rng_state()}
    if device.type == "cuda":
        states["cuda"] = torch.cuda.get_rng_state(device)
    return states


def set_rng_states(states: dict[str, Any], device: torch.device) -> None:
    """Restore what :func:`get_rng_states` saved."""
    torch.set_rng_state(states["cpu"])
    if "cuda" in states:
        torch.cuda.set_rng_state(states["cuda"], device)


@contextlib.contextmanager
def frozen_norm_statistics(model: nn.Module) -> Iterator[None]:
    """Run in train mode (batch statistics) but leave batch-norm running statistics
    as they were: the graph-free pass must not count a sub-batch a second time."""
    norms = [m for m in model.modules()  # batch norm of any rank, sync and lazy ones included
             if getattr(m, "track_running_stats", False) and getattr(m, "running_mean", None) is not None]
    saved = [{k: v.clone() for k, v in m.named_buffers(recurse=False) if v is not None}
             for m in norms]
    try:
        yield
    finally:
        with torch.no_grad():
            for m, buffers in zip(norms, saved):
                for name, value in buffers.items():
                    getattr(m, name).copy_(value)


def _embed_fields(model: JointModel, batch: dict[str, torch.Tensor]
                  ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Embeddings per field, plus the backbone features of towers whose backbone is
    frozen (so the replay pass can run only their trainable head)."""
    emb, features = {}, {}
    for f, x in batch.items():
        if f.endswith(FEATURES_SUFFIX):  # cached features of a frozen backbone
            f = f[:-len(FEATURES_SUFFIX)]
            features[f] = x
            emb[f] = F.normalize(model.towers[modality_of(f)].head(x), dim=-1)
            continue
        tower = model.towers[modality_of(f)]
        if tower.backbone_frozen:
            features[f] = tower.features(x)
            emb[f] = F.normalize(tower.head(features[f]), dim=-1)
        else:
            emb[f] = tower(x)
    return emb, features


def _cached_negative_backward(model: JointModel, objectives: Objectives | Objective,
                              batch: dict[str, torch.Tensor], accum_steps: int,
                              precision: Precision, device: torch.device
                              ) -> tuple[torch.Tensor, dict[str, float]]:
    subs = split_batch(batch, accum_steps)
    rng_states, cached, feats = [], [], []
    with torch.no_grad(), frozen_norm_statistics(model):
        for sub in subs:
            rng_states.append(get_rng_states(device))
            with autocast(precision, device):
                emb, features = _embed_fields(model, sub)
            cached.append(emb)
            feats.append(features)
    full = {m: torch.cat([c[m] for c in cached]).float().requires_grad_() for m in cached[0]}
    parts = pair_losses(model, objectives, full)
    loss = weighted_sum(model, parts)
    loss.backward()  # gradients of the embeddings (and of the temperatures / biases)
    sizes = [len(next(iter(s.values()))) for s in subs]
    grads = {m: torch.split(full[m].grad, sizes) for m in full}
    cuda = [device] if device.type == "cuda" else []
    # a frozen backbone is never run again: its head replays from the cached features,
    # and a tower with nothing to train is not replayed at all
    replayed = [f for f in full if model.towers[modality_of(f)].trainable != "none"]
    for i, sub in enumerate(subs):
        if not replayed:
            break
        with torch.random.fork_rng(devices=cuda):
            set_rng_states(rng_states[i], device)
            with autocast(precision, device):
                emb = {}
                for f in replayed:
                    tower = model.towers[modality_of(f)]
                    emb[f] = (F.normalize(tower.head(feats[i][f]), dim=-1) if f in feats[i]
                              else tower(sub[f]))
            surrogate = sum((emb[f].float() * grads[f][i]).sum() for f in emb)
            surrogate.backward()
    return loss.detach(), {k: float(v.detach()) for k, v in parts.items()}


def _backward(model: JointModel, objectives: Objectives | Objective,
              batch: dict[str, torch.Tensor], accum_steps: int, precision: Precision
              ) -> tuple[torch.Tensor, dict[str, float]]:
    device = model.logit_scale.device
    if accum_steps > 1:
        return _cached_negative_backward(model, objectives, batch, accum_steps, precision, device)
    with autocast(precision, device):
        emb, _ = _embed_fields(model, batch)
    parts = pair_losses(model, objectives, emb)
    loss = weighted_sum(model, parts)
    loss.backward()
    return loss.detach(), {k: float(v.detach()) for k, v in parts.items()}


def backward(model: JointModel, objectives: Objectives | Objective, batch: dict[str, torch.Tensor],
             *, accum_steps: int = 1, precision: Precision = "fp32") -> torch.Tensor:
    """Accumulate into ``.grad`` the gradients of the contrastive loss of ``batch``
    (directly, or by cached-negative accumulation over ``accum_steps``
    sub-batches); returns the detached loss (the pairs' weighted sum)."""
    return _backward(model, objectives, batch, accum_steps, precision)[0]


def train_step(model: JointModel, objectives: Objectives | Objective,
               optimizer: torch.optim.Optimizer, batch: dict[str, torch.Tensor], *,
               accum_steps: int = 1, precision: Precision = "fp32",
               grad_clip: float | None = None) -> StepOutput:
    """One optimiser step: zero gradients, :func:`backward`, average gradients
    across processes when distributed, clip, step, clamp the temperatures.

    ``batch`` is this process's share of the contrastive batch; the objectives
    gather the other processes' embeddings themselves.
    """
    optimizer.zero_grad(set_to_none=True)
    loss, parts = _backward(model, objectives, batch, accum_steps, precision)
    params = [p for p in model.parameters() if p.grad is not None]
    average_gradients(params)
    if grad_clip:
        grad_norm = torch.nn.utils.clip_grad_norm_(params, grad_clip)
    else:
        grad_norm = torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in params]))
    optimizer.step()
    model.clamp_logit_scale_()
    return StepOutput(float(loss), float(grad_norm), parts)
