"""The training loop: AdamW, warmup + cosine, clipping, validation, atomic
checkpoints and exact resume.

Everything a run writes lives in its output folder, which is also the model
folder: ``config.json``, ``model.safetensors``, ``tokenizer.json``,
``run.json`` (the full run config), ``log.jsonl`` (one JSON object per logged
step), ``checkpoint.pt`` and ``quarantine-*.jsonl`` for rejected rows.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from ..config import RunConfig, from_dict, to_dict
from ..data.manifest import Manifest, OnBadRow, read_manifest
from ..data.pairs import PairDataset
from ..errors import JointspaceError
from ..eval.retrieval import recall_at_k
from ..model import JointModel
from ..objectives import Objective, build_objective
from ..progress import logger, progress
from .checkpoint import CHECKPOINT_FILE, load_checkpoint, rng_state, save_checkpoint, set_rng_state
from .sampler import StepBatchSampler
from .schedule import warmup_cosine

LOG_FILE = "log.jsonl"
RUN_FILE = "run.json"


@dataclass
class TrainResult:
    """What a call to :func:`train` did."""

    model_dir: Path
    steps: int
    seconds: float
    last_loss: float
    validation: dict[str, float] = field(default_factory=dict)
    quarantined: int = 0
    finished: bool = True


def anchor_pairs(modalities: list[str]) -> list[tuple[str, str]]:
    """Pairs the loss is taken over: the anchor (image if present) with every other modality."""
    anchor = "image" if "image" in modalities else modalities[0]
    return [(anchor, m) for m in modalities if m != anchor]


def contrastive_loss(model: JointModel, objective: Objective,
                     batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Embed a batch and sum the objective over the anchor pairs."""
    emb = model(batch)
    return sum(objective(emb[a], emb[b], model.logit_scale, model.logit_bias)
               for a, b in anchor_pairs(list(emb)))


def _optimizer(model: JointModel, cfg) -> torch.optim.AdamW:
    # As in CLIP: no weight decay on gains, biases and the temperature.
    decay = [p for p in model.parameters() if p.ndim >= 2]
    rest = [p for p in model.parameters() if p.ndim < 2]
    return torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                              {"params": rest, "weight_decay": 0.0}], lr=cfg.lr)


@torch.no_grad()
def validate(model: JointModel, objective: Objective, dataset: PairDataset,
             batch_size: int, max_items: int = 2048) -> dict[str, float]:
    """Mean loss over full batches and Recall@1 both ways on up to ``max_items`` items."""
    model.eval()
    n = min(len(dataset), max_items)
    loader = DataLoader(torch.utils.data.Subset(dataset, range(n)), batch_size=batch_size,
                        collate_fn=dataset.collate)
    losses, embs = [], {}
    for batch in loader:
        emb = model(batch)
        for m, e in emb.items():
            embs.setdefault(m, []).append(e)
        if len(next(iter(batch.values()))) == batch_size:
            losses.append(float(sum(objective(emb[a], emb[b], model.logit_scale, model.logit_bias)
                                    for a, b in anchor_pairs(list(emb)))))
    model.train()
    out = {"val_loss": float(np.mean(losses)) if losses else float("nan")}
    for a, b in anchor_pairs(list(embs)):
        ea, eb = torch.cat(embs[a]).numpy(), torch.cat(embs[b]).numpy()
        out[f"val_{b}_to_{a}_R@1"] = recall_at_k(eb, ea, (1,))["R@1"]
        out[f"val_{a}_to_{b}_R@1"] = recall_at_k(ea, eb, (1,))["R@1"]
    return out


def _read(path: str | Path, out: Path, run: RunConfig, on_bad_row: OnBadRow,
          modalities: list[str]) -> Manifest:
    return read_manifest(path, required=tuple(modalities), on_bad_row=on_bad_row,
                         quarantine_dir=out, max_text_chars=run.train.max_text_chars)


def _truncate_log(log_path: Path, step: int) -> None:
    """Drop log lines written after the checkpoint we resume from."""
    if not log_path.is_file():
        return
    keep = [line for line in log_path.read_text().splitlines()
            if line.strip() and json.loads(line).get("step", 0) <= step]
    log_path.write_text("".join(line + "\n" for line in keep))


def train(run: RunConfig, data: str | Path, out: str | Path, *, val_data: str | Path | None = None,
          resume: bool = False, on_bad_row: OnBadRow = "skip",
          stop_after: int | None = None) -> TrainResult:
    """Train a joint model on a paired manifest and write the model folder ``out``.

    ``resume=True`` continues from ``out/checkpoint.pt`` with the run config
    saved there and reaches the same weights as an uninterrupted run (CPU).
    ``stop_after`` ends the run after that optimiser step as if it had been
    killed right after a checkpoint (for time-boxed runs and tests).

    >>> result = train(load_run_config(), "shapes/train.csv", "runs/m")  # doctest: +SKIP
    """
    out = Path(out)
    checkpoint_path = out / CHECKPOINT_FILE
    state: dict[str, Any] | None = None
    if resume:
        state = load_checkpoint(checkpoint_path)
        run = from_dict(RunConfig, state["run"], where=f"{checkpoint_path}:run")
    elif checkpoint_path.exists():
        raise JointspaceError(f"{out} already holds a training run; pass --resume to continue "
                              "it or choose another --out")
    cfg = run.train
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(cfg.seed)
    model = JointModel(run.model)  # before reading data: a config error should not wait for it
    objective = build_objective(run.model.objective.name, **run.model.objective.options)
    modalities = list(run.model.towers)
    train_set = _read(data, out, run, on_bad_row, modalities)
    val_set = _read(val_data, out, run, on_bad_row, modalities) if val_data else None
    if state is None:
        for m, tower in model.towers.items():
            tower.prepare([getattr(r, m) for r in train_set.records])
        model.save(out, extra={"run": to_dict(run)}, weights=False)
    else:
        for tower in model.towers.values():
            tower.load_assets(out)
    optimizer = _optimizer(model, cfg)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: warmup_cosine(s, cfg.warmup_steps, cfg.max_steps))
    start_step = 0
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        set_rng_state(state["rng"])
        start_step = state["step"]
        _truncate_log(out / LOG_FILE, start_step)
        logger.info("resuming %s at step %d of %d", out, start_step, cfg.max_steps)

    dataset = PairDataset(train_set.records, model.towers)
    val_dataset = PairDataset(val_set.records, model.towers) if val_set else None
    sampler = StepBatchSampler(len(dataset), cfg.batch_size, cfg.seed, cfg.max_steps, start_step)
    loader = DataLoader(dataset, batch_sampler=sampler, collate_fn=dataset.collate,
                        num_workers=cfg.num_workers, persistent_workers=False)

    def checkpoint(step: int) -> None:
        save_checkpoint(checkpoint_path, {
            "step": step, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(), "rng": rng_state(), "run": to_dict(run)})

    model.train()
    started = time.perf_counter()
    window_start, window_items = time.perf_counter(), 0
    last_loss, validation, step = float("nan"), {}, start_step
    bar = progress(desc="train", total=cfg.max_steps, unit="step")
    bar.update(start_step)
    with open(out / LOG_FILE, "a", encoding="utf-8") as log:
        for step, batch in enumerate(loader, start=start_step + 1):
            loss = contrastive_loss(model, objective, batch)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            optimizer.step()
            scheduler.step()
            last_loss = float(loss.detach())
            if not np.isfinite(last_loss):
                raise JointspaceError(f"loss became {last_loss} at step {step}; "
                                      "lower train.lr or check the data")
            window_items += cfg.batch_size
            bar.update(1)
            record: dict[str, Any] = {}
            if step % cfg.log_every == 0 or step == cfg.max_steps:
                rate = window_items / max(1e-9, time.perf_counter() - window_start)
                window_start, window_items = time.perf_counter(), 0
                record = {"step": step, "loss": round(last_loss, 5),
                          "lr": scheduler.get_last_lr()[0], "grad_norm": float(grad_norm),
                          "scale": float(model.logit_scale.detach().exp()), "samples_per_s": round(rate, 1)}
                bar.set_postfix(loss=f"{last_loss:.3f}", samples_s=f"{rate:.0f}")
            if val_dataset is not None and (step % cfg.eval_every == 0 or step == cfg.max_steps):
                validation = validate(model, objective, val_dataset, cfg.batch_size)
                record = {"step": step, **record, **validation}
                logger.info("step %d: %s", step, ", ".join(f"{k} {v:.3f}" for k, v in validation.items()))
            if record:
                log.write(json.dumps(record) + "\n")
                log.flush()
            stopping = stop_after is not None and step >= stop_after
            if step % cfg.checkpoint_every == 0 or step == cfg.max_steps or stopping:
                checkpoint(step)
            if stopping:
                break
    bar.close()
    finished = step >= cfg.max_steps
    if finished:
        model.save(out, extra={"run": to_dict(run)})
    return TrainResult(out, step, time.perf_counter() - started, last_loss, validation,
                       len(train_set.bad_rows) + (len(val_set.bad_rows) if val_set else 0), finished)
