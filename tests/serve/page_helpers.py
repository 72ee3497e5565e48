"""What the browser tests of the search page share: a server on a free port in a thread,
and a wait that works under the page's Content-Security-Policy (Playwright's own
``wait_for_function`` would need ``unsafe-eval``: this polls with ``page.evaluate``)."""
import time
from pathlib import Path

from jointspace.serve.run import serving_in_thread

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"


def running(app):
    """``app`` served on a free loopback port, in a thread: its base URL (a context manager)."""
    return serving_in_thread(app)


def wait_until(page, expression, timeout=20.0):
    deadline = time.monotonic() + timeout
    while not page.evaluate(expression):
        assert time.monotonic() < deadline, f"timed out waiting for {expression}"
        page.wait_for_timeout(50)
