"""A small served collection, one per test module."""
import shutil

import pytest

from jointspace.index import index_source


@pytest.fixture(scope="module")
def col_dir(trained_model_dir, shapes_dir, tmp_path_factory):
    """12 images with texts and labels, from a folder this module owns (its root)."""
    folder = tmp_path_factory.mktemp("serve")
    shutil.copytree(shapes_dir / "images" / "test", folder / "data" / "images" / "test")
    shutil.copy(shapes_dir / "test.csv", folder / "data" / "test.csv")
    index_source(folder / "col", trained_model_dir, folder / "data" / "test.csv")
    return folder / "col"
