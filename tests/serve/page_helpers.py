"""What the browser tests of the search page share: a server on a free port in a thread,
and a wait that works under the page's Content-Security-Policy (Playwright's own
``wait_for_function`` would need ``unsafe-eval``: this polls with ``page.evaluate``)."""
import socket
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import uvicorn

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"


@contextmanager
def running(app):
    """``app`` served by uvicorn on a free loopback port, in a thread: its base URL."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the server did not start"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def wait_until(page, expression, timeout=20.0):
    deadline = time.monotonic() + timeout
    while not page.evaluate(expression):
        assert time.monotonic() < deadline, f"timed out waiting for {expression}"
        page.wait_for_timeout(50)
