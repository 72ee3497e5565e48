"""Stop a run cleanly on Ctrl-C or SIGTERM: finish the step, checkpoint, then stop.

The first signal sets a flag that the trainer checks between steps (so the
checkpoint never holds a half-applied optimiser step); a second Ctrl-C stops
at once. Under ``torchrun`` every process sees the flag through one all-reduce
per step, so all of them stop after the same step.
"""
from __future__ import annotations

import contextlib
import signal
import threading
from typing import Iterator

import torch
import torch.distributed as dist

from ..progress import logger
from .distributed import is_distributed


class StopFlag:
    """Set by a signal handler; read by the training loop."""

    def __init__(self) -> None:
        self.requested = False

    def any_rank(self) -> bool:
        """Whether any process was asked to stop (a collective when distributed)."""
        if not is_distributed():
            return self.requested
        flag = torch.tensor([1.0 if self.requested else 0.0])
        if dist.get_backend() == "nccl":
            flag = flag.cuda()
        dist.all_reduce(flag)
        return bool(flag.item() > 0)


def ignore_stop_signals(worker_id: int = 0) -> None:
    """DataLoader ``worker_init_fn``: Ctrl-C and SIGTERM reach the workers too (same
    process group); they must keep loading so the main process can finish its step."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


@contextlib.contextmanager
def stop_on_signal() -> Iterator[StopFlag]:
    """Install SIGINT / SIGTERM handlers for the duration of the block (main thread only)."""
    flag = StopFlag()
    if threading.current_thread() is not threading.main_thread():
        yield flag
        return

    def handler(signum: int, frame: object) -> None:
        if flag.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt  # second Ctrl-C: stop now
        flag.requested = True
        logger.warning("%s received: stopping after this step and writing a checkpoint "
                       "(Ctrl-C again to stop at once)", signal.Signals(signum).name)

    previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield flag
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
