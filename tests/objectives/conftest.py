"""Fixtures for the objective tests (helpers live in loss_reference.py, which
spawned worker processes can import by its unique name)."""
import pytest

from loss_reference import load_openclip_loss


@pytest.fixture(scope="session")
def openclip_loss():
    return load_openclip_loss()
