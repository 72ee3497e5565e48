"""The browser tests' shared check (``chromium`` in tests/conftest.py): a missing browser
fails them under CI and skips them loudly elsewhere, never quietly (issue 18)."""
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

CONFTEST = Path(__file__).resolve().parent / "conftest.py"


def _run(tmp_path: Path, ci: str | None) -> subprocess.CompletedProcess:
    """A one-test session (using ``chromium``) with this conftest and no chromium."""
    folder = tmp_path / ("ci" if ci else "local")
    folder.mkdir()
    shutil.copy(CONFTEST, folder / "conftest.py")
    (folder / "test_uses_chromium.py").write_text("def test_page(chromium):\n    pass\n")
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    env.update(JOINTSPACE_TEST_CHROMIUM=str(tmp_path / "no-chromium"), JOINTSPACE_QUIET="1",
               OMP_NUM_THREADS="2", **({"CI": ci} if ci else {}))
    return subprocess.run([sys.executable, "-m", "pytest", "-ra", "-p", "no:cacheprovider",
                           "-o", "addopts=", "--rootdir", str(folder), str(folder)],
                          cwd=folder, env=env, capture_output=True, text=True, timeout=240)


def test_a_missing_browser_skips_loudly_outside_ci(tmp_path):
    proc = _run(tmp_path, None)
    out = proc.stdout
    assert proc.returncode == 0, out + proc.stderr
    assert "1 skipped, 1 warning" in out, out
    assert "SKIPPED" in out and "browser test NOT RUN: no " in out and "no-chromium" in out, out
    assert "PytestWarning: browser test NOT RUN" in out, out  # in the warnings summary too


@pytest.mark.parametrize("ci", ["true", "1"])
def test_a_missing_browser_fails_under_ci(tmp_path, ci):
    proc = _run(tmp_path, ci)
    out = proc.stdout
    assert proc.returncode == 1 and "1 error" in out and "skipped" not in out, out + proc.stderr
    assert "no-chromium on this machine under CI" in out, out
