"""Tiny random CLIP and SigLIP folders (built once per session; copy one before deleting it)."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from clip_folders import write_tiny_clip, write_tiny_siglip, write_tiny_siglip2


@pytest.fixture(scope="session")
def clip_source(tmp_path_factory) -> Path:
    return write_tiny_clip(tmp_path_factory.mktemp("hf") / "tiny-clip")


@pytest.fixture(scope="session")
def clip_legacy_eos_source(tmp_path_factory) -> Path:
    """CLIP with OpenAI's legacy ``eos_token_id: 2``: pooled at the highest token id."""
    return write_tiny_clip(tmp_path_factory.mktemp("hf") / "tiny-clip-eos2", seed=1, legacy_eos=True)


@pytest.fixture(scope="session")
def siglip_source(tmp_path_factory) -> Path:
    return write_tiny_siglip(tmp_path_factory.mktemp("hf") / "tiny-siglip")


@pytest.fixture(scope="session")
def siglip2_source(tmp_path_factory) -> Path:
    return write_tiny_siglip2(tmp_path_factory.mktemp("hf") / "tiny-siglip2")


@pytest.fixture(params=["clip", "siglip"])
def family_source(request, clip_source, siglip_source, tmp_path) -> tuple[str, Path]:
    """(family, a private copy of its tiny folder, which the test may delete)."""
    source = clip_source if request.param == "clip" else siglip_source
    copy = tmp_path / source.name
    shutil.copytree(source, copy)
    return request.param, copy
