"""The training loop: AdamW, warmup + cosine, clipping, validation, atomic
checkpoints, exact resume, and ``torchrun`` for several processes.

Everything a run writes lives in its output folder, which is also the model
folder: ``config.json``, ``model.safetensors``, ``tokenizer.json``,
``run.json`` (the full run config, written as the ``run`` extra of
:meth:`JointModel.save`), ``log.jsonl`` (one JSON object per logged
step), ``checkpoint.pt`` and ``quarantine-*.jsonl`` for rejected rows.
Ctrl-C (or SIGTERM) finishes the current step and writes a checkpoint first.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch.utils.data import ConcatDataset, DataLoader

from ..config import RunConfig, from_dict, modality_of, to_dict
from ..data.manifest import OnBadRow
from ..data.shards import is_shard_source
from ..data.stream import POSITION_KEY, stream_summary
from ..data.pairs import PairDataset
from ..errors import ConfigError, JointspaceError
from ..eval.retrieval import group_field, group_keys, item_identity, retrieval_metrics
from ..model import JointModel, resolve_device
from ..objectives import LOCAL, Objective
from ..progress import logger, progress
from .checkpoint import CHECKPOINT_FILE, load_checkpoint, rng_state, save_checkpoint, set_rng_state
from .data_fingerprint import check_resume_data, data_fingerprint
from .distributed import (DistInfo, barrier, broadcast_parameters, init_distributed,
                          on_main_then_share, sync_batch_norms)
from .init import init_from_model, model_card
from .interrupt import ignore_stop_signals, stop_on_signal
from .run_folder import LOG_FILE, check_fresh, repair_for_resume
from .sampler import MultiSourceBatchSampler, StepBatchSampler
from .schedule import warmup_cosine
from .sources import Source, datasets, frozen_features, read_sources
from .streams import StreamSource, gather_positions, open_stream, prepare_items, read_all, stream_loader
from .step import (Objectives, StepOutput, build_optimizer, embeddings_loss, resolve_precision,
                   train_step, training_objectives)


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


@torch.no_grad()
def validate(model: JointModel, objectives: Objectives | Objective, dataset: PairDataset,
             batch_size: int, records: Sequence[Any] | None = None,
             max_items: int = 2048) -> dict[str, float]:
    """Loss and Recall@1 both ways for every pair, on the first ``max_items`` items,
    on this process alone.

    The loss is the size-weighted mean over batches (a short last batch, with
    fewer negatives and a lower ``ln B`` baseline, counts for its rows only).
    With the dataset's manifest ``records``, recall follows evaluation's
    protocol (:mod:`jointspace.eval.retrieval`: a file on several rows is one
    item, a row's group or exact caption is its key); without them it is strict.
    """
    model.eval()
    device = next(model.parameters()).device
    # the other processes are not validating: no collectives
    if isinstance(objectives, Objective):
        local: Objectives | Objective = objectives.with_group(LOCAL)
    else:
        local = {k: o.with_group(LOCAL) for k, o in objectives.items()}
    n = min(len(dataset), max_items)
    loader = DataLoader(torch.utils.data.Subset(dataset, range(n)), batch_size=batch_size,
                        collate_fn=dataset.collate)
    loss_sum, loss_rows, embs = 0.0, 0, {}
    for batch in loader:
        emb = model(_to(batch, device))
        for m, e in emb.items():
            embs.setdefault(m, []).append(e.float().cpu())
        rows = len(next(iter(batch.values())))
        if rows > 1:  # one row has no negatives
            loss_sum += float(embeddings_loss(model, local, emb)) * rows
            loss_rows += rows
    model.train()
    out = {"val_loss": loss_sum / loss_rows if loss_rows else float("nan")}
    rows = None if records is None else list(records[:n])
    for pair in model.pairs:
        if pair.a not in embs or pair.b not in embs:
            continue
        ea, eb = torch.cat(embs[pair.a]).numpy(), torch.cat(embs[pair.b]).numpy()
        keys = None if rows is None else group_keys(rows, group_field((pair.a, pair.b)))[0]
        a_ids = None if rows is None else [item_identity(r.fields[pair.a]) for r in rows]
        r = retrieval_metrics(ea, eb, keys, (1,), image_keys=a_ids, include_strict=False,
                              names=(pair.a, pair.b))
        for direction in (f"{pair.b}_to_{pair.a}", f"{pair.a}_to_{pair.b}"):
            out[f"val_{direction}_R@1"] = r[direction]["R@1"]
    return out


def _to(batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    return {m: x.to(device, non_blocking=True) for m, x in batch.items()}


def _device(name: str, info: DistInfo) -> torch.device:
    if name == "auto" and torch.cuda.is_available():
        return torch.device(f"cuda:{info.local_rank}")
    return resolve_device(name)


def _check(run: RunConfig, info: DistInfo) -> None:
    cfg = run.train
    per_process = cfg.batch_size // info.world_size
    if cfg.batch_size % info.world_size or per_process % cfg.accum_steps:
        raise ConfigError(f"train.batch_size {cfg.batch_size} must split evenly into "
                          f"{info.world_size} process(es) × {cfg.accum_steps} sub-batch(es)")
    if not run.model.resolved_pairs():
        raise ConfigError(f"training needs at least one pair; model.towers has only "
                          f"{', '.join(run.model.towers)} and model.pairs is empty (pair a "
                          "modality with itself as text and text@other_column)")


def train(run: RunConfig, data: str | Path | Sequence[str | Path], out: str | Path, *,
          val_data: str | Path | None = None, data_weights: Sequence[float] | None = None,
          resume: bool = False, on_bad_row: OnBadRow = "skip",
          columns: dict[str, str] | None = None, init_from: str | Path | None = None,
          stop_after: int | None = None, accept_changed_data: bool = False) -> TrainResult:
    """Train a joint model on paired manifests and write the model folder ``out``.

    ``data`` is one manifest or several; with several, each step draws its
    batch from one of them with probability proportional to ``data_weights``
    (default: their sizes), and each trains the pairs whose fields it has.

    ``resume=True`` continues from ``out/checkpoint.pt`` with the run config
    saved there and reaches the same weights as an uninterrupted run (CPU).
    The checkpoint records a fingerprint of the training data (manifest bytes,
    each file's path, size and mtime; each shard's): resuming on data that
    differs raises :class:`DataError` naming the change, unless
    ``accept_changed_data=True`` (then it warns and resumes).
    ``stop_after`` ends the run after that optimiser step as if it had been
    killed right after a checkpoint (for time-boxed runs and tests).
    ``columns`` maps a field to the manifests' column that holds it
    (``{"image": "filepath", "text": "caption"}``). ``init_from`` takes the
    towers (weights and assets) that a model folder has for the same
    modalities; each tower's ``trainable`` then says what of it trains. Under
    ``torchrun`` each process trains on its share of every contrastive batch;
    process 0 writes the folder.

    >>> result = train(load_run_config(), "shapes/train.csv", "runs/m")  # doctest: +SKIP
    """
    job = _TrainingRun(run, out, resume)
    taken = job.build_model(init_from)
    job.read_data(data, val_data, on_bad_row, columns, accept_changed_data)
    job.write_folder(taken)
    job.build_optimiser()
    job.build_loaders(data_weights)
    job.loop(stop_after)
    return job.finish()


class _TrainingRun:
    """The state of one call of :func:`train`, set up step by step (in this order: the
    order fixes the RNG draws, so a run is bit-identical to its resumed twin), then
    trained by :meth:`loop`, which logs through :meth:`log_step` and saves through
    :meth:`checkpoint`."""

    model: JointModel
    objectives: Objectives
    stream: StreamSource | None
    sources: list[Source]
    val_source: Source | None
    fingerprint: dict[str, Any]
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    val_dataset: Any
    loader: Any

    def __init__(self, run: RunConfig, out: str | Path, resume: bool) -> None:
        """The config (a resumed run's from its checkpoint), checked, and the device."""
        self.info = init_distributed()
        self.out = Path(out)
        self.checkpoint_path = self.out / CHECKPOINT_FILE
        self.state: dict[str, Any] | None = None  # the checkpoint resumed from
        if resume:
            self.state = load_checkpoint(self.checkpoint_path)
            run = from_dict(RunConfig, self.state["run"], where=f"{self.checkpoint_path}:run")
        else:
            check_fresh(self.out)
        self.run, self.cfg = run, run.train
        _check(run, self.info)
        self.device = _device(self.cfg.device, self.info)
        self.precision = resolve_precision(self.cfg.precision, self.device)
        self.out.mkdir(parents=True, exist_ok=True)
        self.start_step = self.step = 0
        self.positions: dict[int, tuple] = {}  # stream slot → position of the last sample trained on
        self.last_loss, self.validation = float("nan"), {}

    def build_model(self, init_from: str | Path | None) -> list[str]:
        """The seeded model (before reading data: a config error should not wait for it) and
        its objectives; returns the modalities whose towers came from ``init_from``."""
        torch.manual_seed(self.cfg.seed)
        self.model = JointModel(self.run.model)
        taken = (init_from_model(self.model, init_from)
                 if init_from is not None and self.state is None else [])
        self.objectives = training_objectives(self.run.model)
        return taken

    def read_data(self, data: str | Path | Sequence[str | Path], val_data: str | Path | None,
                  on_bad_row: OnBadRow, columns: dict[str, str] | None,
                  accept_changed_data: bool) -> None:
        """The training sources (manifests, or one stream of shards), their fingerprint
        (checked against the checkpoint's on resume) and the validation source."""
        paths = [data] if isinstance(data, (str, Path)) else list(data)
        self.stream = _stream_of(paths, self.run)
        self.sources = (read_sources(paths, self.run, self.out, on_bad_row, columns)
                        if self.stream is None else [])
        self.fingerprint = on_main_then_share(lambda: data_fingerprint(self.sources, self.stream))
        if self.state is not None:
            check_resume_data(self.state.get("data"), self.fingerprint, self.sources,
                              self.checkpoint_path, accept_changed_data)
        self.val_source = _val_source(val_data, self.run, self.out, on_bad_row, columns, self.stream)

    def write_folder(self, taken: Sequence[str]) -> None:
        """A fresh run's process 0 prepares the towers (tokenizers …) on the training data and
        writes the model folder without weights; the others (and a resumed run) read it."""
        model, stream, info = self.model, self.stream, self.info
        if self.state is None and info.is_main:
            for m, tower in model.towers.items():
                if m in taken:
                    continue
                if stream is not None:  # items are read from the stream only for a tower that learns
                    tower.prepare([x for f in stream.fields if modality_of(f) == m
                                   for x in prepare_items(stream, f)] if tower.learns_from_data else [])
                else:
                    tower.prepare([r.fields[f] for s in self.sources for f in s.fields
                                   if modality_of(f) == m for r in s.manifest.records])
            model.save(self.out, extra={"run": to_dict(self.run)}, weights=False,
                       card=model_card(model, self.run))
        barrier()
        if self.state is not None or not info.is_main:
            model.load_assets(self.out)
        for m, counts in model.parameter_counts().items():
            logger.info("%s: %s trainable, %s frozen parameters", m, f"{counts['trainable']:,}",
                        f"{counts['frozen']:,}")

    def build_optimiser(self) -> None:
        """The model on its device and in step on every process, AdamW with warmup + cosine;
        on resume, every state (weights, optimiser, schedule, RNG) from the checkpoint."""
        cfg, model, state = self.cfg, self.model, self.state
        model.to(self.device)
        sync_batch_norms(model)  # batch statistics of the whole contrastive batch
        broadcast_parameters(model)
        self.optimizer = build_optimizer(model, cfg.lr, cfg.weight_decay)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda s: warmup_cosine(s, cfg.warmup_steps, cfg.max_steps))
        if state is None:
            return
        model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        set_rng_state(state["rng"])
        self.start_step = self.step = state["step"]
        if self.info.is_main:
            repair_for_resume(self.out, self.start_step)
            logger.info("resuming %s at step %d of %d", self.out, self.start_step, cfg.max_steps)

    def build_loaders(self, data_weights: Sequence[float] | None) -> None:
        """The training loader (from the start step on) and process 0's validation set."""
        cfg, info, state, val_source = self.cfg, self.info, self.state, self.val_source
        features = (frozen_features(self.model, self.run, self.out,
                                    self.sources + ([val_source] if val_source else []), info)
                    if self.stream is None else [{}])  # streamed items are not paths the cache can key
        self.val_dataset = (datasets(self.model, [val_source], features[-1:])
                            if val_source and info.is_main else None)
        if self.stream is not None:
            self.loader = stream_loader(self.model, self.stream, self.run, self.out, info,
                                        state.get("stream") if state else None,
                                        cfg.max_steps - self.start_step)
            if state and state.get("stream"):
                self.positions = {int(k): tuple(v) for k, v in state["stream"]["positions"].items()}
        else:
            self.loader = _manifest_loader(self.model, self.sources, features[:len(self.sources)],
                                           data_weights, cfg, self.start_step, info, self.device)

    def loop(self, stop_after: int | None) -> None:
        """Train up to ``max_steps`` (or to ``stop_after``), logging and checkpointing as
        configured; Ctrl-C or SIGTERM on any process checkpoints, then raises
        :class:`KeyboardInterrupt`."""
        cfg = self.cfg
        self.model.train()
        self.started = time.perf_counter()
        self.window_start, self.window_items = time.perf_counter(), 0
        self.bar = progress(desc="train", total=cfg.max_steps, unit="step",
                            disable=not self.info.is_main)
        self.bar.update(self.start_step)
        self.log = open(self.out / LOG_FILE, "a", encoding="utf-8") if self.info.is_main else None
        try:
            with stop_on_signal() as stop:
                for step, batch in enumerate(self.loader, start=self.start_step + 1):
                    self.step = step
                    self.log_step(self.train_one(batch))
                    interrupted = stop.any_rank()
                    stopping = interrupted or (stop_after is not None and step >= stop_after)
                    if self._due(cfg.checkpoint_every) or stopping:
                        self.checkpoint()
                    if interrupted and step < cfg.max_steps:
                        logger.warning("stopped at step %d of %d; checkpoint written: continue "
                                       "with --resume (--out %s)", step, cfg.max_steps, self.out)
                        raise KeyboardInterrupt(f"stopped at step {step}")
                    if stopping:
                        break
        finally:
            self.bar.close()
            if self.log is not None:
                self.log.close()

    def _due(self, every: int) -> bool:
        """Whether this step is one of every ``every`` steps, or the last."""
        return self.step % every == 0 or self.step == self.cfg.max_steps

    def train_one(self, batch: dict[str, Any]) -> StepOutput:
        """One optimiser step on ``batch``; a loss that is not finite ends the run."""
        self.positions.update(batch.pop(POSITION_KEY, {}))
        result = train_step(self.model, self.objectives, self.optimizer, _to(batch, self.device),
                            accum_steps=self.cfg.accum_steps, precision=self.precision,
                            grad_clip=self.cfg.grad_clip)
        self.scheduler.step()
        self.last_loss = result.loss
        if not np.isfinite(self.last_loss):
            raise JointspaceError(f"loss became {self.last_loss} at step {self.step}; "
                                  "lower train.lr or check the data")
        self.window_items += self.cfg.batch_size
        self.bar.update(1)
        return result

    def log_step(self, result: StepOutput) -> None:
        """Every ``log_every`` steps the training figures, every ``eval_every`` the
        validation's, as one line of ``log.jsonl`` (process 0)."""
        record = self._training_record(result) if self._due(self.cfg.log_every) else {}
        if self.val_dataset is not None and self._due(self.cfg.eval_every):
            self.validation = validate(self.model, self.objectives, self.val_dataset,
                                       self.cfg.batch_size, self.val_source.manifest.records)
            record = {"step": self.step, **record, **self.validation}
            logger.info("step %d: %s", self.step,
                        ", ".join(f"{k} {v:.3f}" for k, v in self.validation.items()))
        if record and self.log is not None:
            self.log.write(json.dumps(record) + "\n")
            self.log.flush()

    def _training_record(self, result: StepOutput) -> dict[str, Any]:
        """Loss, learning rate, gradient norm, scale (and bias, and each pair's loss and
        scale) and the throughput since the last record."""
        model = self.model
        rate = self.window_items / max(1e-9, time.perf_counter() - self.window_start)
        self.window_start, self.window_items = time.perf_counter(), 0
        record = {"step": self.step, "loss": round(self.last_loss, 5),
                  "lr": self.scheduler.get_last_lr()[0], "grad_norm": result.grad_norm,
                  "scale": float(model.logit_scale.detach().exp()),
                  "samples_per_s": round(rate, 1)}
        if model.logit_bias is not None:
            record["bias"] = float(model.logit_bias.detach())
        if len(model.pairs) > 1:
            for key, value in result.pair_losses.items():
                record[f"loss_{key}"] = round(value, 5)
                record[f"scale_{key}"] = float(model.logit_scale_for(key).detach().exp())
        self.bar.set_postfix(loss=f"{self.last_loss:.3f}", samples_s=f"{rate:.0f}")
        return record

    def checkpoint(self) -> None:
        """Save everything a resume needs (process 0); a collective: every process calls it."""
        stream_state = (gather_positions(self.positions, self.info, self.cfg.num_workers)
                        if self.stream is not None else None)
        if self.info.is_main:
            save_checkpoint(self.checkpoint_path, {
                "step": self.step, "model": self.model.state_dict(),
                "optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
                "rng": rng_state(), "run": to_dict(self.run), "data": self.fingerprint,
                **({"stream": stream_state} if stream_state else {})})

    def finish(self) -> TrainResult:
        """A finished run's weights and card (process 0), and what the run did."""
        finished = self.step >= self.cfg.max_steps
        if finished and self.info.is_main:
            self.model.save(self.out, extra={"run": to_dict(self.run)},
                            card=model_card(self.model, self.run, self.validation))
        barrier()
        quarantined = sum(len(s.manifest.bad_rows)
                          for s in self.sources + ([self.val_source] if self.val_source else []))
        if self.stream is not None:
            bad_samples, bad_shards = stream_summary(self.out)
            quarantined += bad_samples
            if self.info.is_main and (bad_samples or bad_shards):
                logger.warning("stream: %d bad samples quarantined, %d shards skipped (see %s)",
                               bad_samples, bad_shards, self.out / "quarantine-stream-*.jsonl")
        return TrainResult(self.out, self.step, time.perf_counter() - self.started,
                           self.last_loss, self.validation, quarantined, finished)


def _stream_of(paths: Sequence[str | Path], run: RunConfig) -> StreamSource | None:
    if not any(is_shard_source(p) for p in paths):
        return None
    if len(paths) > 1:
        raise ConfigError("shards stream as a run's only --data source; mixing them with other "
                          f"sources is not supported (got {len(paths)} sources)")
    return open_stream(paths[0], run)


def _val_source(val_data: str | Path | None, run: RunConfig, out: Path, on_bad_row: OnBadRow,
                columns: dict[str, str] | None, stream: StreamSource | None) -> Source | None:
    if val_data is None:
        return None
    if is_shard_source(val_data):
        fields = stream.fields if stream is not None else run.model.fields()
        manifest = on_main_then_share(lambda: read_all(val_data, fields, run, out))
        return Source(Path(str(val_data)), fields, manifest)
    return read_sources([val_data], run, out, on_bad_row, columns)[0]


def _manifest_loader(model: JointModel, sources: list[Source], features: list, data_weights: Any,
                     cfg: Any, start_step: int, info: DistInfo, device: torch.device) -> DataLoader:
    dataset = datasets(model, sources, features)
    if len(sources) == 1:
        sampler = StepBatchSampler(len(dataset), cfg.batch_size, cfg.seed, cfg.max_steps,
                                   start_step, rank=info.rank, world_size=info.world_size)
    else:
        sizes = [len(s.manifest) for s in sources]
        sampler = MultiSourceBatchSampler(sizes, data_weights or sizes, cfg.batch_size, cfg.seed,
                                          cfg.max_steps, start_step, info.rank, info.world_size)
    collate = (dataset.datasets[0] if isinstance(dataset, ConcatDataset) else dataset).collate
    return DataLoader(dataset, batch_sampler=sampler, collate_fn=collate,
                      num_workers=cfg.num_workers, pin_memory=device.type == "cuda",
                      worker_init_fn=ignore_stop_signals if cfg.num_workers else None)
