"""The state of a run's output folder: fresh, resumable, finished or abandoned.

A run folder is also the model folder. Before a run starts we decide what the
folder holds so that a second run never mixes its log into another run's, and
on resume we repair what a kill may have left half-written (a partial last log
line, temporary files of an interrupted save).
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

from ..errors import JointspaceError
from ..fileio import atomic_write_text
from ..model import CONFIG_FILE, WEIGHTS_FILE
from ..progress import logger
from .checkpoint import CHECKPOINT_FILE

LOG_FILE = "log.jsonl"
RUN_FILE = "run.json"


def never_trained(out: Path) -> bool:
    """Whether ``out`` holds only what a run writes before its first step (``run.json``,
    ``config.json``, the card, tower assets, quarantine files): no checkpoint, no
    weights, no logged step. Such a run (one that failed on its data or config, or was
    killed while reading) left nothing to resume or to lose."""
    if not (out / RUN_FILE).is_file() or (out / CHECKPOINT_FILE).exists() or (out / WEIGHTS_FILE).exists():
        return False
    log = out / LOG_FILE
    return not log.exists() or not log.read_text(encoding="utf-8", errors="replace").strip()


def check_fresh(out: Path) -> None:
    """Refuse to start a new run in a folder that already holds one; a run that never
    trained (:func:`never_trained`) is started over: its quarantine files and empty log
    are removed (they describe the data it read, not the retry's), its other files
    rewritten."""
    if never_trained(out):
        logger.info("%s holds a run that stopped before its first step; starting over there", out)
        for leftover in [*out.glob("quarantine-*.jsonl"), out / LOG_FILE]:
            leftover.unlink(missing_ok=True)
        return
    if (out / CHECKPOINT_FILE).exists():
        if (out / WEIGHTS_FILE).exists():
            raise JointspaceError(f"{out} already holds a trained model; choose another --out")
        raise JointspaceError(f"{out} already holds a training run; pass --resume to continue "
                              "it or choose another --out")
    leftovers = [name for name in (LOG_FILE, RUN_FILE, CONFIG_FILE, WEIGHTS_FILE)
                 if (out / name).exists()]
    if leftovers:
        raise JointspaceError(
            f"{out} already holds a training run that stopped before its first checkpoint "
            f"(it has {', '.join(leftovers)} but no {CHECKPOINT_FILE}), so it cannot be resumed; "
            "delete the folder or choose another --out")


def repair_for_resume(out: Path, step: int) -> None:
    """Make ``out`` consistent with a checkpoint at ``step``: drop log lines written
    after it (and a last line cut off mid-write) and temporary files of a killed save."""
    for tmp in list(out.glob(".save-*")) + list(out.glob(".*.tmp")):
        logger.info("removing %s, left by an interrupted write", tmp)
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            tmp.unlink(missing_ok=True)
    log_path = out / LOG_FILE
    if not log_path.is_file():
        return
    keep, dropped = [], 0
    for number, line in enumerate(log_path.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            dropped += 1
            logger.warning("%s line %d is incomplete (a kill mid-write); dropping it", log_path, number)
            continue
        if isinstance(record, dict) and record.get("step", 0) <= step:
            keep.append(line)
    atomic_write_text(log_path, "".join(line + "\n" for line in keep))
