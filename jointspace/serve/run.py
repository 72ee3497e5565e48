"""Running the app: one process, or several worker processes behind one port.

Throughput of text search is bound by the text tower. In one process the
tower's batches share the interpreter lock with the HTTP and search threads,
and its math threads spin on a core the rest of the server wants; worker
processes with one math thread each answer more requests under load, at a
little more latency for a lone query (``bench/serve_load.py`` measures both;
the README has the figures). Each worker holds its own copy of the index and the
model (memory × workers); the collection is read-only to them, so they need no
coordination. Workers are started by uvicorn (its supervisor restarts one that
dies) and build the app from an environment variable, as spawned processes
must.

Readiness with workers: each worker has its own model, so its own warm-up and its
own ready flag, and the kernel hands each connection to any worker. So a worker warms
up in its app's lifespan startup, before uvicorn lets it accept (``create_app(...,
warm_before_serving=True)``): whichever worker answers ``/readyz`` is warm, and so is
the one answering the next query. Until the first worker is warm the port refuses
connections (uvicorn listens once a worker's startup is done); a worker still warming
(one restarted, say) takes none. One process (``workers=1``) answers at once instead,
with ``/readyz`` 503 until it is warm.

>>> serve("runs/col", port=8000)                         # doctest: +SKIP
>>> serve("runs/col", workers=2, threads=1)              # doctest: +SKIP
"""
from __future__ import annotations

import json
import os
import socket
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from fastapi import FastAPI

from ..errors import JointspaceError
from ..extras import require
from ..index import Collection
from .app import create_app

#: how the parent hands the app's settings to spawned workers
SETTINGS_ENV = "JOINTSPACE_SERVE_SETTINGS"
LOOPBACK = ("127.0.0.1", "localhost", "::1")


def set_threads(threads: int | None) -> None:
    """Math threads of this process (PyTorch's pool, and faiss's)."""
    if not threads:
        return
    import torch
    faiss = require("faiss", "index", "jointspace serve --threads")

    torch.set_num_threads(threads)
    faiss.omp_set_num_threads(threads)


def app_from_environment() -> FastAPI:
    """The app of one worker process, from the settings its parent put in the environment."""
    raw = os.environ.get(SETTINGS_ENV)
    if not raw:
        raise JointspaceError(f"${SETTINGS_ENV} is not set: start workers with jointspace serve --workers N")
    settings = json.loads(raw)
    set_threads(settings.pop("threads", None))
    collection = settings.pop("collection")
    api_key = os.environ.get("JOINTSPACE_API_KEY") or None
    # warm before accepting: a probe answered by this worker must hold for its queries
    settings.setdefault("warm_before_serving", True)
    return create_app(collection, api_key=api_key, **settings)


def serve(collection: str | Path | Collection, host: str = "127.0.0.1", port: int = 8000,
          api_key: str | None = None, workers: int = 1, threads: int | None = None,
          **kwargs: Any) -> None:
    """Serve ``collection`` with uvicorn until interrupted.

    ``workers`` processes share the port; ``threads`` is each one's math threads
    (default: all cores for one worker, cores ÷ workers for several). The key
    defaults to ``$JOINTSPACE_API_KEY``; ``kwargs`` go to :func:`create_app` (``model=DIR``:
    the collection's model folder, if it moved). A collection that cannot be queried (its
    model gone or replaced) raises :class:`~jointspace.errors.JointspaceError` before the
    port opens; ``/readyz`` answers 200 once the model has warmed up (with several workers,
    each warms up before it accepts a request: see the module docstring)."""
    uvicorn = require("uvicorn", "serve", "jointspace serve")

    from ..progress import logger
    if not isinstance(workers, int) or workers < 1:
        raise JointspaceError(f"workers must be an integer ≥ 1, got {workers!r}")
    if threads is not None and (not isinstance(threads, int) or threads < 1):
        raise JointspaceError(f"threads must be an integer ≥ 1, got {threads!r}")
    api_key = api_key or os.environ.get("JOINTSPACE_API_KEY") or None
    where = f"http://{host}:{port}"

    def announce() -> None:
        logger.info("serving %s at %s with %d worker%s (API docs: %s/docs)%s", collection, where,
                    workers, "s" if workers > 1 else "", where,
                    "; an API key is required" if api_key else "")
        if host not in LOOPBACK and not api_key:
            logger.warning("listening on %s without an API key: anyone who can reach it can "
                           "search", host)
    if workers == 1:
        set_threads(threads)
        app = create_app(collection, api_key=api_key, **kwargs)
        announce()
        uvicorn.run(app, host=host, port=port, log_level="warning")
        return
    if isinstance(collection, Collection):  # its model and device would not reach the workers
        raise JointspaceError("with workers > 1 pass the collection's folder: each worker opens "
                              "it (and the model it names) itself")
    # a wrong folder, or a model that moved, fails here, once, not in every worker
    Collection.open(collection, model=kwargs.get("model")).check_model()
    announce()
    threads = threads or max(1, (os.cpu_count() or 1) // workers)
    if kwargs.get("model") is not None:
        kwargs["model"] = str(Path(kwargs["model"]).resolve())
    handed = {SETTINGS_ENV: json.dumps({"collection": str(collection), "threads": threads, **kwargs})}
    if api_key:
        handed["JOINTSPACE_API_KEY"] = api_key  # the workers' environment; never on a command line
    before = {name: os.environ.get(name) for name in handed}
    os.environ.update(handed)
    try:
        uvicorn.run("jointspace.serve.run:app_from_environment", factory=True, workers=workers,
                    host=host, port=port, log_level="warning")
    finally:  # a notebook that served keeps the environment it had
        for name, value in before.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


__all__ = ["app_from_environment", "serve"]


@contextmanager
def serving_in_thread(app: FastAPI, timeout: float = 30.0) -> Iterator[str]:
    """``app`` served by uvicorn on a free loopback port in a daemon thread, for a notebook,
    a script or a test: yields its base URL, stops it on exit.

    >>> with serving_in_thread(create_app("runs/col")) as url:  # doctest: +SKIP
    ...     requests.post(f"{url}/search", json={"text": "a red circle"})
    """
    import uvicorn
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the server did not start")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
